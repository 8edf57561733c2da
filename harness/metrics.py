"""Metric declarations: what a number means and which way is better.

A task declares the metrics it is scored by (and a method the extra metrics it emits); every
record carries the declarations of its metrics (``record["metric_specs"]``), and scores,
tables, LaTeX, the HTML page, METHODOLOGY.md and wandb read them from there. Nothing in the
engine special-cases a metric by name: accuracy and AP are ``higher``, ICL error is ``lower``,
CrowS-Pairs / StereoSet ss are ``target`` 50 (ranked by the distance to 50), fairness gaps are
``target`` 0.

Ranking uses one transform, :meth:`MetricSpec.goodness`: the value itself (higher), its
negation (lower) or minus the distance to the target. A z-score of goodness is the z-score of
the value for a higher-is-better metric, so the BoB score of accuracy tables is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from .errors import BobError

DIRECTIONS = ("higher", "lower", "target")


@dataclass(frozen=True)
class MetricSpec:
    """One metric's declaration. ``fmt`` is a Python format spec for tables (``.1f``, ``.3f``).
    ``tolerance`` is the absolute band within which ``bob reproduce`` accepts a rerun of a
    non-deterministic cell (a metric whose run-to-run noise is known, e.g. a count that must match
    exactly: 0); unset, ``bob reproduce`` uses its relative default band."""

    name: str
    direction: str = "higher"
    target: float | None = None
    unit: str = ""
    fmt: str = ".1f"
    label: str = ""
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise BobError(f"metric '{self.name}': direction {self.direction!r} is not one of {', '.join(DIRECTIONS)}")
        if self.direction == "target" and (self.target is None or not isinstance(self.target, (int, float))):
            raise BobError(f"metric '{self.name}': direction 'target' needs a numeric target value (e.g. target: 50)")
        if self.direction != "target" and self.target is not None:
            raise BobError(f"metric '{self.name}': a target value ({self.target}) needs direction 'target', not {self.direction!r}")
        try:
            format(1.0, self.fmt)
        except ValueError:
            raise BobError(f"metric '{self.name}': display format {self.fmt!r} is not a Python format spec (e.g. '.1f')") from None
        if self.tolerance is not None and (isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float))
                                           or not self.tolerance >= 0):
            raise BobError(f"metric '{self.name}': tolerance {self.tolerance!r} must be a number >= 0 (the absolute band bob reproduce accepts)")

    @property
    def higher_is_better(self) -> bool:
        """For readers of the old record field: False only for lower-is-better metrics."""
        return self.direction != "lower"

    def goodness(self, value):
        """Larger is better, for every direction (works on floats, numpy arrays and pandas Series)."""
        if self.direction == "higher":
            return value
        if self.direction == "lower":
            return -value
        return -abs(value - self.target)

    def format(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return format(value, self.fmt)

    def title(self) -> str:
        return self.label or self.name

    def rule_text(self) -> str:
        """How this metric is ranked, in words (METHODOLOGY.md, captions)."""
        if self.direction == "higher":
            return "higher is better"
        if self.direction == "lower":
            return "lower is better (z-scores and ranks use the negated value)"
        return f"best at {self.target:g} (z-scores and ranks use the distance |x - {self.target:g}|, smaller is better)"

    def as_dict(self) -> dict[str, Any]:
        """The record's form; ``tolerance`` only when declared (records of metrics without one are unchanged)."""
        out = asdict(self)
        if out["tolerance"] is None:
            del out["tolerance"]
        return out


def spec_from(name: str, declaration: Any) -> MetricSpec:
    """A MetricSpec from a declaration: a MetricSpec, a mapping of its fields, or a direction word."""
    if isinstance(declaration, MetricSpec):
        return declaration
    if isinstance(declaration, str):
        return MetricSpec(name, declaration)
    if isinstance(declaration, Mapping):
        unknown = set(declaration) - {"name", "direction", "target", "unit", "fmt", "label", "tolerance"}
        if unknown:
            raise BobError(f"metric '{name}': unknown declaration key(s) {sorted(unknown)}; use direction, target, unit, fmt, label, tolerance")
        return MetricSpec(**{"name": name, **{k: v for k, v in declaration.items() if k != "name"}})
    raise BobError(f"metric '{name}': declare it as a mapping (direction, target, unit, fmt, label, tolerance), got {declaration!r}")


# Metrics emitted by the engine's own methods (classification and adaptation bookkeeping).
STANDARD_METRICS: dict[str, MetricSpec] = {
    "top1": MetricSpec("top1", "higher", unit="%", fmt=".1f", label="top-1 accuracy (%)"),
    "top5": MetricSpec("top5", "higher", unit="%", fmt=".1f", label="top-5 accuracy (%)"),
    "mean_per_class_recall": MetricSpec("mean_per_class_recall", "higher", unit="%", fmt=".1f", label="mean per-class recall (%)"),
}


def declared_specs(declarations: Mapping[str, Any] | None) -> dict[str, MetricSpec]:
    return {name: spec_from(name, d) for name, d in (declarations or {}).items()}


def resolve_specs(names: Iterable[str], *declaration_sets: Mapping[str, Any] | None, primary: str | None = None,
                  primary_higher_is_better: bool = True) -> dict[str, MetricSpec]:
    """The declaration of each metric in ``names``: the first of ``declaration_sets`` (task first,
    then method) that declares it, else a standard metric. The primary metric always gets one: a
    metric nobody declared falls back to the method's old ``higher_is_better`` flag."""
    sets = [declared_specs(d) for d in declaration_sets]
    out: dict[str, MetricSpec] = {}
    for name in names:
        for specs in (*sets, STANDARD_METRICS):
            if name in specs:
                out[name] = specs[name]
                break
    if primary and primary not in out:
        out[primary] = MetricSpec(primary, "higher" if primary_higher_is_better else "lower", fmt=".4g")
    return out


def record_primary_spec(record: Mapping[str, Any]) -> MetricSpec:
    """The primary metric's declaration from a record; records written before declarations
    existed carry only ``higher_is_better``, which maps to higher / lower."""
    primary = record.get("primary_metric") or {}
    name = primary.get("name") or "value"
    declared = (record.get("metric_specs") or {}).get(name)
    if declared:
        return spec_from(name, declared)
    if name in STANDARD_METRICS:
        return STANDARD_METRICS[name]
    return MetricSpec(name, "higher" if primary.get("higher_is_better", True) else "lower", fmt=".4g" if not primary.get("higher_is_better", True) else ".1f")
