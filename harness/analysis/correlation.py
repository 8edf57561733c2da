"""Which tasks agree? Spearman correlation of backbone rankings between tasks and task families.

Battle of the Backbones asks whether a backbone that wins one task wins the others. Here, within
one method: for each pair of tasks, Spearman's rho (scipy) between the backbones' seed means
(goodness) over the backbones that have *both* tasks, with that number reported beside it (a
pair sharing fewer than three backbones gets no rho). Between task families (the declared task
groups), a backbone's family value is its mean z-score over the family's tasks, for backbones that
have all of them. The heatmap is ordered by average-linkage clustering on 1 - rho (scipy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MIN_SHARED = 3


@dataclass
class Correlation:
    label: str
    by: str  # "task" or "family"
    rho: pd.DataFrame
    shared: pd.DataFrame  # number of backbones behind each rho
    pvalue: pd.DataFrame
    messages: list[str] = field(default_factory=list)

    def order(self) -> list[str]:
        """Items in the clustered order (average linkage on 1 - rho; a missing rho counts as 0)."""
        names = list(self.rho.index)
        if len(names) < 3:
            return names
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        dist = (1.0 - self.rho.fillna(0.0).to_numpy(dtype=float)).clip(0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        dist = (dist + dist.T) / 2
        return [names[i] for i in leaves_list(linkage(squareform(dist, checks=False), method="average"))]

    def long(self) -> pd.DataFrame:
        """One row per pair: a, b, rho, shared backbones, p-value (the CSV beside the page)."""
        rows = []
        names = list(self.rho.index)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                rows.append({"by": self.by, "a": a, "b": b, "rho": self.rho.loc[a, b], "shared_backbones": int(self.shared.loc[a, b]),
                             "p": self.pvalue.loc[a, b]})
        return pd.DataFrame(rows, columns=["by", "a", "b", "rho", "shared_backbones", "p"])

    def plot(self) -> Any:
        return plot_correlation(self)

    def to_html(self) -> str:
        """The clustered heatmap as an HTML table (the page's, and a notebook's ``_repr_html_``):
        cells coloured by rho (blue -1, white 0, red +1; grey: no rho), hover for rho, the shared
        backbones and the p-value. Names are escaped."""
        from html import escape

        order = self.order()
        short = {o: (str(o).split("/", 1)[-1] if self.by == "task" else str(o)) for o in order}
        head = "".join(f'<th class="hm-col" title="{escape(str(o))}">{i + 1}</th>' for i, o in enumerate(order))
        body = []
        for i, a in enumerate(order):
            cells = []
            for b in order:
                r, n, p = self.rho.loc[a, b], int(self.shared.loc[a, b]), self.pvalue.loc[a, b]
                pair = f"{a} ~ {b}: "
                if np.isnan(r):
                    tip = pair + f"{n} shared backbone(s): no rho (needs >= {MIN_SHARED} that do not all tie)"
                    cells.append(f'<td class="hm-cell missing" style="background:#d9dce3" title="{escape(tip)}">\u2014</td>')
                    continue
                tip = pair + f"rho = {r:.2f} over {n} shared backbones" + ("" if np.isnan(p) else f", p = {p:.2g}")
                cells.append(f'<td class="hm-cell" data-rho="{r:.4f}" data-n="{n}" style="background:{_colour(r)};color:{"#fff" if abs(r) > 0.6 else "#1d2330"}" '
                             f'title="{escape(tip)}">{r:.2f}</td>')
            body.append(f'<tr><th class="hm-row" title="{escape(str(a))}">{i + 1}. {escape(short[a])}</th>{"".join(cells)}</tr>')
        what = "tasks" if self.by == "task" else "task families"
        caption = (f"{escape(self.label)}: Spearman rho between {what}, clustered (average linkage on 1 - rho); "
                   f"hover a cell for the number of shared backbones and the p-value.")
        return (f'<div class="heatmap-box"><table class="heatmap" data-by="{self.by}"><thead><tr><th></th>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table><p class="note">{caption}</p></div>')

    _repr_html_ = to_html


def _colour(r: float) -> str:
    """A diverging colour for rho in [-1, 1]: #2166ac (blue) - white - #b2182b (red)."""
    r = max(-1.0, min(1.0, float(r)))
    end = (0xB2, 0x18, 0x2B) if r > 0 else (0x21, 0x66, 0xAC)
    t = abs(r)
    return "#" + "".join(f"{round(255 + (c - 255) * t):02x}" for c in end)


def spearman_matrix(wide: pd.DataFrame, label: str = "", by: str = "task") -> Correlation:
    """Spearman rho between the columns of ``wide`` (backbones x items, NaN = missing) over the
    backbones each pair shares."""
    from scipy import stats as ss

    names = list(wide.columns)
    values = wide.to_numpy(dtype=float)
    present = ~np.isnan(values)
    k = len(names)
    rho, p = np.full((k, k), np.nan), np.full((k, k), np.nan)
    shared = (present.T.astype(int) @ present.astype(int))  # backbones behind each pair
    np.fill_diagonal(rho, 1.0)
    constant = set()
    for i in range(k):
        for j in range(i + 1, k):
            both = present[:, i] & present[:, j]
            if both.sum() < MIN_SHARED:
                continue
            x, y = values[both, i], values[both, j]
            flat = [names[c] for c, v in ((i, x), (j, y)) if np.all(v == v[0])]
            if flat:
                constant.update(flat)
                continue
            res = ss.spearmanr(x, y)
            rho[i, j] = rho[j, i] = float(res.statistic)
            p[i, j] = p[j, i] = float(res.pvalue)
    rho = pd.DataFrame(rho, index=names, columns=names)
    p = pd.DataFrame(p, index=names, columns=names)
    shared = pd.DataFrame(shared, index=names, columns=names)
    messages = []
    few = int(((shared < MIN_SHARED) & ~np.eye(len(names), dtype=bool)).to_numpy().sum() // 2)
    if few:
        messages.append(f"{few} pair(s) share fewer than {MIN_SHARED} backbones: no rho")
    if constant:
        messages.append(f"every backbone ties on {', '.join(sorted(constant)[:4])}: no ranking to correlate")
    return Correlation(label, by, rho, shared, p, messages)


def task_correlation(frame: pd.DataFrame, method: str | None = None, by: str = "task", suite: str | None = None,
                     group: str | None = None, tasks: list[str] | None = None) -> Correlation:
    """Rank correlation between the tasks (``by="task"``) or task families (``by="family"``) of one
    method's table.

    >>> from harness.analysis import load, task_correlation
    >>> task_correlation(load("my_sweep"), method="linear").plot()
    """
    from .frame import select

    table = select(frame, method, suite, group, tasks)
    return correlation_of_stats(table.stats, table.label, by)


def correlation_of_stats(stats: pd.DataFrame, label: str, by: str = "task") -> Correlation:
    if by == "task":
        wide = stats.pivot(index="row", columns="task", values="good")
        return spearman_matrix(wide, label, "task")
    if by != "family":
        raise ValueError(f"by must be 'task' or 'family', not {by!r}")
    families = stats.assign(family_of_task=stats["task_group"].fillna("other"))
    n_tasks = families.groupby("family_of_task")["task"].nunique()
    per = families.groupby(["row", "family_of_task"]).agg(z=("z", "mean"), n=("task", "nunique")).reset_index()
    per = per[per["n"] == per["family_of_task"].map(n_tasks)]  # a backbone's family value needs every task of the family
    wide = per.pivot(index="row", columns="family_of_task", values="z")
    return spearman_matrix(wide, label, "family")


def plot_correlation(corr: Correlation) -> Any:
    """The clustered heatmap: rho in colour (missing: grey), rho and the shared backbones written
    in each cell when the matrix is small enough to read, a dendrogram above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = corr.order()
    rho = corr.rho.loc[order, order].to_numpy(dtype=float)
    shared = corr.shared.loc[order, order].to_numpy()
    n = len(order)
    size = min(14.0, 2.5 + 0.42 * n)
    fig = plt.figure(figsize=(size + 1.2, size + 1.0))
    top = 0.12 if n >= 3 else 0.0
    ax = fig.add_axes([0.22, 0.05, 0.62, 0.8 - top])
    if n >= 3:
        from scipy.cluster.hierarchy import dendrogram, linkage
        from scipy.spatial.distance import squareform

        dist = (1.0 - corr.rho.fillna(0.0).to_numpy(dtype=float)).clip(0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        dendro = fig.add_axes([0.22, 0.85 - top, 0.62, top])
        dendrogram(linkage(squareform((dist + dist.T) / 2, checks=False), method="average"), ax=dendro, no_labels=True,
                   color_threshold=0, above_threshold_color="#5b6476")
        dendro.axis("off")
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#d9dce3")
    im = ax.imshow(np.ma.masked_invalid(rho), cmap=cmap, vmin=-1, vmax=1)
    labels = [str(o).split("/", 1)[-1] if corr.by == "task" else str(o) for o in order]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    if n <= 14:
        for i in range(n):
            for j in range(n):
                text = "—" if np.isnan(rho[i, j]) else f"{rho[i, j]:.2f}"
                ax.text(j, i, f"{text}\nn={shared[i, j]}", ha="center", va="center", fontsize=6,
                        color="white" if not np.isnan(rho[i, j]) and abs(rho[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, label="Spearman rho")
    ax.set_title(f"{corr.label}: rank correlation between {'tasks' if corr.by == 'task' else 'task families'} "
                 f"(n = shared backbones; grey: fewer than {MIN_SHARED})", fontsize=9)
    return fig
