"""Plan and run a sweep: which cells are done, which to run, which are skipped and why."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .grid import Expansion, Grid, expand
from .spec import RunSpec
from .store import ResultStore


@dataclass
class SweepPlan:
    grid: Grid
    store: ResultStore
    expansion: Expansion
    done: list[RunSpec] = field(default_factory=list)
    failed_before: list[RunSpec] = field(default_factory=list)
    to_run: list[RunSpec] = field(default_factory=list)
    retry_failed: bool = False

    def describe(self) -> str:
        e = self.expansion
        total = len(e.cells) + len(e.skipped)
        lines = [
            f"sweep '{self.grid.name}': {total} cells -> {len(self.to_run)} to run, {len(self.done)} done, "
            f"{len(self.failed_before)} failed before{' (rerun them with --retry-failed)' if self.failed_before and not self.retry_failed else ''}, "
            f"{len(e.skipped)} skipped" + (f", {e.excluded} excluded by rules" if e.excluded else "")
        ]
        reasons = Counter(reason for _, reason in e.skipped)
        for reason, count in reasons.items():
            lines.append(f"  skipped {count}: {reason}")
        lines.append(f"  results: {self.store.folder}")
        return "\n".join(lines)


def plan_sweep(grid: Grid, results_root: str | Path = "results", retry_failed: bool = False) -> SweepPlan:
    store = ResultStore(Path(results_root) / grid.name)
    expansion = expand(grid)
    plan = SweepPlan(grid, store, expansion, retry_failed=retry_failed)
    for spec in expansion.cells:
        status = store.status(spec.id)
        if status == "ok":
            plan.done.append(spec)
        elif status == "failed":
            plan.failed_before.append(spec)
            if retry_failed:
                plan.to_run.append(spec)
        else:
            plan.to_run.append(spec)
    return plan


def record_skipped(plan: SweepPlan) -> None:
    """Unsupported cells get a 'skipped' record so tables can say why a cell is empty."""
    from .runner import now_iso
    from .store import RECORD_SCHEMA

    for spec, reason in plan.expansion.skipped:
        if plan.store.status(spec.id) is None:
            plan.store.write(
                {
                    "schema": RECORD_SCHEMA,
                    "id": spec.id,
                    "sweep": plan.store.sweep,
                    "status": "skipped",
                    "spec": spec.as_dict(),
                    **{k: v for k, v in spec.as_dict().items() if k != "hparams"},
                    "metrics": {},
                    "error": {"type": "Unsupported", "message": reason, "traceback": None},
                    "created": now_iso(),
                }
            )


def summarise(records: list[dict[str, Any]]) -> Counter:
    return Counter(r.get("status", "?") for r in records)
