"""Two named backbones, head to head: the paired difference per task and a bootstrap interval.

``bob compare A B`` answers "is A better than B here, and by how much?" on the tasks both ran
(paired by task). Per task: the difference of the seed means, with a percentile bootstrap interval
over seeds (each side's seeds resampled independently; needs two seeds of each). Over tasks: the
mean difference with a two-level bootstrap interval (tasks resampled, then seeds within each
drawn task), and the Wilcoxon signed-rank test over the per-task differences (scipy). Differences
are in the metric's own unit when every shared task declares the same metric, else in z units
(each task's difference divided by that task's standard deviation across the method's backbones,
the BoB scale). Positive always means A is better, whatever the metric's direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import BobError, did_you_mean
from ..scores import CI_LEVEL, N_BOOTSTRAP
from .frame import select, seed_values
from .significance import ALPHA, MIN_TASKS, wilcoxon_min_tasks

MIN_SEEDS = 2  # a seed interval needs two seeds of each backbone


@dataclass
class Comparison:
    a: str
    b: str
    method: str
    label: str
    unit: str
    per_task: pd.DataFrame  # task, diff, ci_low, ci_high, seeds_a, seeds_b, note
    mean_diff: float | None
    ci: tuple[float, float] | None
    wins: int
    losses: int
    ties: int
    wilcoxon_p: float | None
    alpha: float = ALPHA
    level: float = CI_LEVEL
    messages: list[str] = field(default_factory=list)
    fmt: str = ".3g"  # numbers in text: the metric's declared precision plus one digit

    @property
    def n_tasks(self) -> int:
        return len(self.per_task)

    @property
    def assumptions(self) -> str:
        seeds = sorted(set(self.per_task["seeds_a"]) | set(self.per_task["seeds_b"]))
        return (f"Paired by task ({self.n_tasks} shared tasks, {min(seeds)}-{max(seeds)} seeds per backbone and task); "
                f"difference = A - B in {self.unit}, positive = A better; {int(self.level * 100)}% percentile bootstrap "
                f"({N_BOOTSTRAP} resamples, RNG seed 0): per task over seeds, overall over tasks then seeds; "
                f"Wilcoxon signed-rank over the per-task differences (zero differences split).")

    def summary(self) -> str:
        head = f"{self.a} vs {self.b} ({self.label}): "
        if self.mean_diff is None:
            return head + "no shared task"
        f = "+" + self.fmt
        text = head + f"mean difference {self.mean_diff:{f}} {self.unit}"
        text += f" [{self.ci[0]:{f}}, {self.ci[1]:{f}}]" if self.ci else ""
        text += f"; A better on {self.wins}, worse on {self.losses}, tied on {self.ties} of {self.n_tasks} tasks"
        if self.wilcoxon_p is not None:
            text += f"; Wilcoxon p = {self.wilcoxon_p:.2g}"
        return text

    def to_text(self) -> str:
        """What ``bob compare`` prints: the per-task table, the summary, the assumptions, the messages."""
        rows, f = [], "+" + self.fmt
        for r in self.per_task.itertuples():
            interval = f"[{r.ci_low:{f}}, {r.ci_high:{f}}]" if not np.isnan(r.ci_low) else "-"
            rows.append(f"  {r.task:<32} {format(r.diff, f):>10}  {interval:<22} seeds {r.seeds_a}/{r.seeds_b}" + (f"  ({r.note})" if r.note else ""))
        head = f"  {'task':<32} {'A - B':>10}  {str(int(self.level * 100)) + '% interval':<22} seeds A/B"
        return "\n".join([f"A = {self.a}", f"B = {self.b}", f"method {self.method}; difference in {self.unit} (positive = A better)", head, *rows, "",
                          self.summary(), *self.messages, f"assumptions: {self.assumptions}"])


def _resolve(name: str, rows: list[str], labels: dict[str, str], backbones: dict[str, str]) -> str:
    """A table row from a row label, a backbone label or a backbone name (several rows: say which)."""
    if name in rows:
        return name
    hits = sorted({r for r in rows if labels.get(r) == name or backbones.get(r) == name})
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise BobError(f"'{name}' ran several settings here: {'; '.join(hits)}; name one of these rows")
    raise BobError(f"backbone '{name}' has no finished cells in this table{did_you_mean(name, rows)}; present: {', '.join(rows[:8])}"
                   + (" ..." if len(rows) > 8 else ""))


def compare(frame: pd.DataFrame, a: str, b: str, method: str | None = None, suite: str | None = None, group: str | None = None,
            tasks: list[str] | None = None, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL, alpha: float = ALPHA, seed: int = 0) -> Comparison:
    """Compare backbones ``a`` and ``b`` (row labels or backbone names) on one method's tasks.

    >>> from harness.analysis import compare, load
    >>> print(compare(load("my_sweep"), "timm:vit_base_patch16_224", "timm:resnet50", method="linear").to_text())
    """
    table = select(frame, method, suite, group, tasks)
    stats = table.stats
    rows = sorted(stats["row"].unique())
    labels = dict(zip(stats["row"], stats["backbone_label"])) if "backbone_label" in stats else {}
    names = dict(zip(stats["row"], stats["backbone"])) if "backbone" in stats else {}
    ra, rb = _resolve(a, rows, labels, names), _resolve(b, rows, labels, names)
    if ra == rb:
        raise BobError(f"'{a}' and '{b}' are the same row ({ra}); name two different backbones")
    seeds = seed_values(frame)
    seeds = seeds[(seeds["method"] == table.method) & seeds["task"].isin(table.tasks)]
    va = {t: g["good"].to_numpy() for t, g in seeds[seeds["row"] == ra].groupby("task")}
    vb = {t: g["good"].to_numpy() for t, g in seeds[seeds["row"] == rb].groupby("task")}
    shared = sorted(set(va) & set(vb))
    only = sorted(set(va) ^ set(vb))
    declared = stats.drop_duplicates("task").set_index("task")
    kinds = {(r.metric, r.direction, r.target if r.direction == "target" else None) for r in declared.loc[shared].itertuples()} if shared else set()
    fmt = ".2f"
    if len(kinds) <= 1:
        unit = (declared.loc[shared[0], "metric_label"] if shared and "metric_label" in declared else "metric units")
        scale = {t: 1.0 for t in shared}
        declared_fmt = str(declared.loc[shared[0], "fmt"]) if shared and "fmt" in declared else ""
        if declared_fmt.startswith(".") and declared_fmt.endswith("f") and declared_fmt[1:-1].isdigit():
            fmt = f".{int(declared_fmt[1:-1]) + 1}f"
        elif declared_fmt:
            fmt = ".3g"
    else:
        unit = "z (each task's difference / its std across the method's backbones)"
        sd = stats.groupby("task")["good"].std(ddof=0)
        scale = {t: (1.0 / sd[t] if sd[t] > 0 else 0.0) for t in shared}
    rng = np.random.default_rng(seed)
    pools, out = [], []
    for t in shared:
        xa, xb = va[t] * scale[t], vb[t] * scale[t]
        pool = _resampled_means(xa, n_boot, rng) - _resampled_means(xb, n_boot, rng)
        pools.append(pool)
        diff = float(xa.mean() - xb.mean())
        note, lo, hi = "", float("nan"), float("nan")
        if len(xa) >= MIN_SEEDS and len(xb) >= MIN_SEEDS:
            lo, hi = (float(v) for v in np.quantile(pool, [(1 - level) / 2, (1 + level) / 2]))
        else:
            short = " and ".join(f"{len(x)} seed of {side}" for side, x in (("A", xa), ("B", xb)) if len(x) < MIN_SEEDS)
            note = f"no interval: {short} (needs >= {MIN_SEEDS} each)"
        out.append({"task": t, "diff": diff, "ci_low": lo, "ci_high": hi, "seeds_a": len(xa), "seeds_b": len(xb), "note": note})
    per_task = pd.DataFrame(out, columns=["task", "diff", "ci_low", "ci_high", "seeds_a", "seeds_b", "note"])
    messages = []
    if only:
        messages.append(f"left out {len(only)} task(s) only one of them ran: {', '.join(only[:5])}" + (" ..." if len(only) > 5 else ""))
    if not shared:
        messages.append(f"no shared task: {ra} and {rb} never ran the same task with {table.method}")
        return Comparison(ra, rb, table.method, table.label, unit, per_task, None, None, 0, 0, 0, None, alpha, level, messages, fmt)
    diffs = per_task["diff"].to_numpy()
    ci = None
    if len(shared) >= MIN_TASKS:
        pool = np.stack(pools)  # tasks x n_boot
        pick_t = rng.integers(0, len(shared), size=(n_boot, len(shared)))
        pick_s = rng.integers(0, n_boot, size=(n_boot, len(shared)))
        means = pool[pick_t, pick_s].mean(axis=1)
        ci = tuple(float(v) for v in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    else:
        messages.append(f"no interval over tasks: needs >= {MIN_TASKS} shared tasks, has {len(shared)}; see the per-task seed intervals")
    p = None
    need = wilcoxon_min_tasks(2, alpha)
    if len(shared) >= need:
        from scipy import stats as ss

        if np.allclose(diffs, 0):
            p = 1.0
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                p = float(ss.wilcoxon(diffs, zero_method="zsplit").pvalue)
    else:
        messages.append(f"no Wilcoxon test: with {len(shared)} shared tasks no p-value can reach alpha = {alpha:g}; needs >= {need} tasks")
    tol = 1e-12 * max(1.0, float(np.abs(diffs).max()))
    return Comparison(ra, rb, table.method, table.label, unit, per_task, float(diffs.mean()), ci,
                      int((diffs > tol).sum()), int((diffs < -tol).sum()), int((np.abs(diffs) <= tol).sum()), p, alpha, level, messages, fmt)


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of ``values`` (the value itself, n_boot times, for a single seed)."""
    if len(values) < 2:
        return np.full(n_boot, float(values.mean()))
    return values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
