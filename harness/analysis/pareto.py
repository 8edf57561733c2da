"""What does the extra accuracy cost? Pareto fronts of the primary metric against costs.

A point is one (method, backbone) row of a table whose tasks share one metric (V-PETL Bench's
plots: accuracy against parameters, memory, throughput); its value is the mean over the table's
tasks of the seed means, shown only for rows that have every task. Costs, averaged over the
row's records on those tasks:

- ``params`` / ``gflops``: the backbone's (``backbone_meta``);
- ``trainable``: trainable parameters including the head (``adaptation.trainable_params_with_head``,
  else ``trainable_params``);
- ``memory``: peak training memory (``adaptation.peak_memory_mb``; CUDA and CPU peaks are never
  mixed: the most common kind is kept and the others are counted as left out);
- ``throughput``: training images per second (``adaptation.train_images_per_s``; higher is better).

A cost a record does not carry is missing, never zero. A point is on the front when no other point
is at least as cheap and at least as good, and strictly better in one of the two.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BobError


@dataclass(frozen=True)
class CostAxis:
    key: str
    label: str
    lower_is_better: bool = True
    log: bool = True


COST_AXES = (
    CostAxis("params", "backbone parameters (M)"),
    CostAxis("gflops", "GFLOPs (forward)"),
    CostAxis("trainable", "trainable parameters (incl. head)"),
    CostAxis("memory", "peak training memory (MB)"),
    CostAxis("throughput", "training throughput (images/s)", lower_is_better=False),
)


def pareto_mask(cost: np.ndarray, good: np.ndarray) -> np.ndarray:
    """True for the points no other point dominates (cost <= and good >=, one of them strictly),
    for costs where lower is better and goods where higher is better. NaN points are never on the
    front. Sort-and-sweep, O(n log n): cheapest first; a point is on the front when it is the best
    of its cost and strictly better than everything cheaper (exact duplicates are both on it)."""
    cost, good = np.asarray(cost, dtype=float), np.asarray(good, dtype=float)
    mask = np.zeros(len(cost), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(cost) | np.isnan(good)))
    if not len(valid):
        return mask
    order = valid[np.lexsort((-good[valid], cost[valid]))]
    best_cheaper = -np.inf
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and cost[order[j]] == cost[order[i]]:
            j += 1
        same = order[i:j]
        top = good[same].max()
        if top > best_cheaper:
            mask[same[good[same] == top]] = True
            best_cheaper = top
        i = j
    return mask


@dataclass
class ParetoFronts:
    """Points (method, row, value, one column per cost, ``front_<cost>`` flags) of one table."""

    label: str
    metric: str
    higher_is_better: bool
    points: pd.DataFrame
    axes: list[CostAxis]
    messages: list[str] = field(default_factory=list)

    def front(self, axis: str) -> pd.DataFrame:
        return self.points[self.points[f"front_{axis}"]]

    def plot(self) -> Any:
        return plot_pareto(self)


def _record_costs(df: pd.DataFrame) -> pd.DataFrame:
    from .frame import record_blocks, row_labels

    ok = df[df["status"] == "ok"].reset_index(drop=True)
    blocks = record_blocks(ok, "adaptation")

    def pick(block: dict, *keys: str) -> float:
        for key in keys:
            value = block.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return float("nan")

    return pd.DataFrame({
        "method": ok["method"], "task": ok["task"], "row": row_labels(ok),
        "params": pd.to_numeric(ok["params_m"], errors="coerce"), "gflops": pd.to_numeric(ok["gflops"], errors="coerce"),
        "trainable": [pick(b, "trainable_params_with_head", "trainable_params") for b in blocks],
        "memory": [pick(b, "peak_memory_mb") for b in blocks],
        "memory_kind": [b.get("peak_memory_kind") for b in blocks],
        "throughput": [pick(b, "train_images_per_s") for b in blocks],
    })


def pareto_fronts(frame: pd.DataFrame, tasks: list[str] | None = None, label: str = "", stats: pd.DataFrame | None = None) -> ParetoFronts:
    """Fronts of every cost axis for the (method, backbone) rows over ``tasks`` (default: all
    tasks of the records). ``frame`` is the records frame (costs live in the records)."""
    from ..scores import spec_from_columns
    from .frame import cell_table, is_stats

    if is_stats(frame):
        raise BobError("Pareto fronts need the records (their adaptation blocks), not cell statistics; pass harness.analysis.load(...)")
    stats = cell_table(frame) if stats is None else stats
    tasks = sorted(tasks or stats["task"].unique())
    sub = stats[stats["task"].isin(tasks)]
    specs = {(r.metric, r.direction, r.target if r.direction == "target" else None) for r in sub.drop_duplicates("task").itertuples()}
    if len(specs) != 1:
        names = sorted({s[0] for s in specs})
        raise BobError(f"the tasks of {label or 'this selection'} use different metrics ({', '.join(names)}); draw Pareto fronts per task group")
    first = sub.iloc[0]
    spec = spec_from_columns(first["metric"], first["direction"], first["target"], first["fmt"])
    wide = sub.pivot_table(index=["method", "row"], columns="task", values="mean")
    complete = wide.dropna()
    messages = []
    if len(complete) < len(wide):
        messages.append(f"{len(wide) - len(complete)} of {len(wide)} (method, backbone) rows lack some of the {len(tasks)} tasks and are not plotted")
    points = pd.DataFrame({"method": complete.index.get_level_values(0), "row": complete.index.get_level_values(1),
                           "value": complete.mean(axis=1).to_numpy()})
    costs = _record_costs(frame)
    costs = costs[costs["task"].isin(tasks)]
    kinds = costs["memory_kind"].dropna()
    if kinds.nunique() > 1:
        keep = kinds.value_counts().index[0]
        messages.append(f"peak memory of different kinds ({', '.join(sorted(kinds.unique()))}): only {keep} is compared")
        costs.loc[costs["memory_kind"] != keep, "memory"] = np.nan
    means = costs.groupby(["method", "row"])[[a.key for a in COST_AXES]].mean()
    points = points.join(means, on=["method", "row"])
    good = spec.goodness(points["value"].to_numpy(dtype=float))
    axes = []
    for axis in COST_AXES:
        has = points[axis.key].notna()
        if has.sum() >= 2 and points.loc[has, axis.key].nunique() == 1:
            messages.append(f"{axis.label}: every point has the same value ({points.loc[has, axis.key].iloc[0]:g}); no trade-off to draw")
            points[f"front_{axis.key}"] = False
            continue
        if has.sum() < 2:
            if has.sum() < len(points):
                messages.append(f"{axis.label}: {'no' if not has.any() else 'only one'} point carries it; no front drawn")
            points[f"front_{axis.key}"] = False
            continue
        cost = points[axis.key].to_numpy(dtype=float)
        points[f"front_{axis.key}"] = pareto_mask(cost if axis.lower_is_better else -cost, good)
        axes.append(axis)
        if not has.all():
            messages.append(f"{axis.label}: {int((~has).sum())} point(s) do not record it (never counted as zero)")
    title = first["metric_label"] if isinstance(first.get("metric_label"), str) and first.get("metric_label") else spec.title()
    return ParetoFronts(label or "all tasks", title, spec.direction != "lower", points, axes, messages)


def plot_pareto(fronts: ParetoFronts) -> Any:
    """One panel per cost axis: every point by method, the front's members ringed and joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not fronts.axes:
        raise ValueError("no cost axis has two points: " + "; ".join(fronts.messages))
    import matplotlib.ticker as ticker

    n = len(fronts.axes)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.7 * nrows), squeeze=False)
    for extra in axs.flat[n:]:
        extra.set_visible(False)
    methods = sorted(fronts.points["method"].unique())
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colors = {m: palette(i % palette.N) for i, m in enumerate(methods)}
    one_row = fronts.points["row"].nunique() == 1
    for ax, axis in zip(axs.flat, fronts.axes):
        pts = fronts.points[fronts.points[axis.key].notna()]
        for m in methods:
            mine = pts[pts["method"] == m]
            ax.scatter(mine[axis.key], mine["value"], s=22, color=colors[m], alpha=0.75, label=m if len(methods) > 1 else None)
        front = pts[pts[f"front_{axis.key}"]].sort_values(axis.key)
        ax.scatter(front[axis.key], front["value"], s=90, facecolors="none", edgecolors="black", linewidths=1.2, label="Pareto front")
        ax.plot(front[axis.key], front["value"], color="black", lw=0.8, ls="--", drawstyle="steps-post" if axis.lower_is_better else "steps-pre")
        for r in front.itertuples():  # name what differs: the method, the backbone, or both
            name = str(r.row).replace("timm:", "").replace("$", r"\$")
            name = name[:28] + "…" if len(name) > 29 else name
            text = r.method if one_row and len(methods) > 1 else name + (f" · {r.method}" if len(methods) > 1 else "")
            ax.annotate(text, (getattr(r, axis.key), r.value), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if axis.log and (pts[axis.key] > 0).all() and pts[axis.key].max() > 20 * pts[axis.key].min():  # log only across decades
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.margins(x=0.15, y=0.12)
        ax.set(xlabel=axis.label + (" (higher is better)" if not axis.lower_is_better else ""), ylabel=fronts.metric)
        ax.grid(alpha=0.3)
    title = f"{fronts.label}: {fronts.metric} against cost (ringed: Pareto front)" + (f"; backbone {fronts.points['row'].iloc[0]}" if one_row else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    handles, labels = axs.flat[0].get_legend_handles_labels()
    if handles:
        fig.subplots_adjust(right=0.86)
        fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    return fig
