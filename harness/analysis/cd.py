"""Critical-difference diagrams (Demšar 2006), drawn by scikit-posthocs.

``scikit_posthocs.critical_difference_diagram`` draws the mean ranks and a crossbar over every
maximal set of backbones no pair of which differs significantly. Its quirks, worked around here:
- labels use ``{rank:.2g}``, which prints a mean rank of 10.5 as ``1e+01``: we pass ``.2f``;
- a crossbar is one line through its members' ranks, so with Wilcoxon-Holm (whose groups need not
  be contiguous in rank) a bar can pass over a backbone that is *not* in the group: we put a dot
  on each member (``crossbar_props={"marker": "o"}``, the library's documented option);
- it reads p-values, not decisions: a p-value exactly at alpha or NaN counts as "not different";
  we hand it the post-hoc p-values only when Friedman rejected (all ones otherwise, one bar);
- it draws the critical difference half a data unit above the axis, where the tick labels are
  (the bar and its label collide with them): we draw that bar ourselves, a fixed number of points
  above the axis;
- it sets no figure size and matplotlib reads ``$...$`` in a name as math: we size the figure by
  the number of backbones and escape dollars.
"""
from __future__ import annotations

from typing import Any

from .significance import POSTHOC_TITLES, Significance


def _label(name: str, width: int = 42) -> str:
    text = str(name).replace("$", r"\$")
    return text if len(text) <= width else text[: width - 1] + "…"


def cd_diagram(sig: Significance, posthoc: str = "nemenyi", ax: Any = None) -> tuple[Any, dict]:
    """(figure, the library's artists) of the diagram for ``posthoc`` (``nemenyi`` draws the
    critical difference as well). Raises ValueError when the Friedman test did not run: a diagram
    of nothing would look like a result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import scikit_posthocs as sp

    if not sig.ran:
        raise ValueError(sig.friedman.message or "the Friedman test did not run")
    k = len(sig.backbones)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * ((k + 1) // 2 + len([g for g in sig.groups.get(posthoc, []) if len(g) > 1]))))
    else:
        fig = ax.figure
    labels: list[str] = []
    for b in sig.backbones:  # truncated names stay distinct
        label = _label(b)
        while label in labels:
            label += "'"
        labels.append(label)
    ranks = pd.Series(sig.mean_ranks.to_numpy(), index=labels)
    matrix = sig.sig_matrix(posthoc)
    matrix.index = matrix.columns = ranks.index
    artists = sp.critical_difference_diagram(
        ranks, matrix, alpha=sig.alpha, ax=ax,
        label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
        label_props={"fontsize": 8}, crossbar_props={"marker": "o", "markersize": 3},
    )
    pad = 10
    if posthoc == "nemenyi" and sig.cd:
        from matplotlib.transforms import offset_copy

        above = offset_copy(ax.transData, fig=fig, y=24, units="points")
        start = float(ranks.min())
        ax.plot([start, start + sig.cd], [0, 0], color="k", lw=2, transform=above, clip_on=False)
        ax.plot([start, start], [0, 0], marker="|", color="k", ms=6, transform=above, clip_on=False)
        ax.plot([start + sig.cd, start + sig.cd], [0, 0], marker="|", color="k", ms=6, transform=above, clip_on=False)
        ax.text(start + sig.cd / 2, 0, f"CD = {sig.cd:.2f}", ha="center", va="bottom", fontsize=8,
                transform=offset_copy(ax.transData, fig=fig, y=27, units="points"))
        pad = 38
    verdict = f"Friedman p = {sig.friedman.pvalue:.2g}" + ("" if sig.friedman.rejected else ", not rejected: one group")
    ax.set_title(f"{sig.label}: {POSTHOC_TITLES.get(posthoc, posthoc)}, alpha = {sig.alpha:g}, "
                 f"{sig.block.n} tasks ({verdict})", fontsize=9, pad=pad + 14)
    return fig, artists


def diagram_groups(artists: dict, ranks: dict[str, float]) -> list[set[str]]:
    """The groups a drawn diagram shows: each crossbar's members, read back from its x data (the
    members' mean ranks). Used by the tests to check the drawing against the analysis."""
    by_rank: dict[float, list[str]] = {}
    for name, r in ranks.items():
        by_rank.setdefault(round(float(r), 9), []).append(name)
    out = []
    for lines in artists.get("crossbars", []):
        xs = {round(float(x), 9) for line in lines for x in line.get_xdata()}
        out.append({name for x in xs for name in by_rank.get(x, [])})
    return out
