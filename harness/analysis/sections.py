"""The analyses on the published page (harness.sections): significance below every table, the
Pareto fronts, the task-structure heatmaps, and the leaderboard's own plots, each figure inline
(a ``data:`` URI, so the page works offline from its folder) and also written beside it as a PNG.

Blocks that belong to one method carry ``data-method``; the page shows only the selected method's.
Imported by ``harness.leaderboard`` (registration on import; matplotlib and scipy are imported
only when a board is published, so ``bob list`` stays fast).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pandas as pd

from ..sections import PublishContext, Section, esc, register_section, table_html, table_markdown
from .board import GROUP_POSTHOC, annotate_overall
from .frame import Table, cell_table, tab_of
from .significance import POSTHOC_TITLES, POSTHOCS, Significance, significance_of_table

DPI = 110


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(text)).strip("_") or "x"


def png_of(fig: Any) -> bytes:
    """The figure as PNG bytes (drawn once: inline on the page and as a file beside it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def img_html(png: bytes, alt: str, name: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="section-figure" alt="{esc(alt)}" data-file="{esc(name)}" src="data:image/png;base64,{data}">'


# -- significance -----------------------------------------------------------------------------------
def _significance_block(sig: Significance, method: str, tab: str, files: dict[str, bytes | str]) -> tuple[str, str]:
    """(html, markdown) of one table's significance analysis."""
    from .cd import cd_diagram

    verdict = sig.summary()[len(sig.label) + 2:]
    parts = [f'<p class="verdict"><b>{esc(sig.label)}</b>: {esc(verdict)}</p>']
    md = [f"**{sig.label}**: {verdict}", ""]
    if sig.ran:
        for posthoc in POSTHOCS if sig.friedman.rejected else (GROUP_POSTHOC,):  # not rejected: one diagram, one bar over all
            if sig.friedman.rejected and sig.pvalues.get(posthoc) is None:
                continue
            fig, _ = cd_diagram(sig, posthoc)
            name = f"cd_{slug(method)}_{slug(tab)}_{slug(posthoc)}.png"
            png = png_of(fig)
            files[name] = png
            parts.append(img_html(png, f"critical-difference diagram, {POSTHOC_TITLES[posthoc]}: {sig.label}", name))
            md.append(f"Critical-difference diagram ({POSTHOC_TITLES[posthoc]}): [{name}]({name})")
        rows = [{"backbone": r["backbone"], "rank": f"{r['mean_rank']:.2f}",
                 **{p: (r[f"group_{p}"] or None) if sig.pvalues.get(p) is not None or not sig.friedman.rejected else None for p in POSTHOCS}} for r in sig.table().to_dict("records")]
        cols = [("backbone", "backbone"), ("rank", "mean rank")] + [(p, f"{POSTHOC_TITLES[p]} group") for p in POSTHOCS]
        caption = "Backbones sharing a letter are not significantly different." + (f" CD (Nemenyi) = {sig.cd:.2f} ranks." if sig.cd else "")
        parts.append(table_html(rows, cols, caption=caption))
        md += ["", table_markdown(rows, cols), f"_{caption}_", ""]
    notes = [m for k, m in sig.messages.items() if k != "friedman"]
    for note in notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
        md.append(f"- {note}")
    parts.append(f'<p class="note assumptions">Assumptions: {esc(sig.assumptions)}</p>')
    md += [f"_Assumptions: {sig.assumptions}_", ""]
    return "\n".join(parts), "\n".join(md)


def _significance_rows(sig: Significance, method: str, tab: str) -> tuple[list[dict], list[dict]]:
    table = [{"method": method, "table": tab, "backbone": r["backbone"], "mean_rank": r["mean_rank"],
              **{f"group_{p}": r[f"group_{p}"] if sig.pvalues.get(p) is not None or not sig.friedman.rejected else "" for p in POSTHOCS},
              "friedman_stat": sig.friedman.statistic, "friedman_p": sig.friedman.pvalue, "n_tasks": sig.block.n,
              "n_backbones": sig.block.k, "alpha": sig.alpha} for r in sig.table().to_dict("records")] if sig.ran else []
    pairs = []
    for posthoc, p in sig.pvalues.items():
        if p is None:
            continue
        names = list(p.index)
        pairs += [{"method": method, "table": tab, "posthoc": posthoc, "a": a, "b": b, "p": float(p.loc[a, b])}
                  for i, a in enumerate(names) for b in names[i + 1:]]
    return table, pairs


def build_significance(ctx: PublishContext) -> list[Section]:
    """Below every table of the page (Overall and each task tab): Friedman, the CD diagrams and
    the groups, per method."""
    stats = cell_table(ctx.stats)
    blocks: dict[str, list[tuple[str, str, str]]] = {}  # tab -> [(method, html, md)]
    files: dict[str, dict[str, bytes | str]] = {}
    rows, pairs = [], []
    for method, sub in stats.groupby("method"):
        all_tasks = sorted(sub["task"].unique())
        tabs = sub["task_group"].map(tab_of)
        tables = [("overall", Table(method, all_tasks, sub.reset_index(drop=True), f"{method} · all tasks"))]
        tables += [(tab, Table(method, sorted(sub.loc[tabs == tab, "task"].unique()), sub[tabs == tab].reset_index(drop=True), f"{method} · {tab}"))
                   for tab in sorted(tabs.unique()) if sub.loc[tabs == tab, "task"].nunique() > 1]  # one task: nothing to test across tasks
        for tab, table in tables:
            out = files.setdefault(tab, {})
            if tab != "overall" and table.tasks == all_tasks:
                html = f'<p class="note">The {esc(tab)} tab holds every task of {esc(method)}: its significance analysis is the Overall tab\'s.</p>'
                blocks.setdefault(tab, []).append((method, html, ""))
                continue
            sig = significance_of_table(table)
            html, md = _significance_block(sig, method, tab, out)
            blocks.setdefault(tab, []).append((method, html, md))
            more_rows, more_pairs = _significance_rows(sig, method, tab)
            rows += more_rows
            pairs += more_pairs
    sections = []
    for tab, items in blocks.items():
        html = "\n".join(f'<div class="analysis-block" data-method="{esc(m)}">{h}</div>' for m, h, _ in items)
        md = "\n".join(m for _, _, m in items if m)
        title = "Significance: all tasks" if tab == "overall" else f"Significance: {tab}"
        sections.append(Section(tab=tab, title=title, html=html, markdown=md, files=files.get(tab, {})))
    if sections:
        sections[0].files["significance.csv"] = pd.DataFrame(rows).to_csv(index=False, float_format="%.6g") if rows else "method,table,backbone\n"
        sections[0].files["posthoc_pvalues.csv"] = pd.DataFrame(pairs).to_csv(index=False, float_format="%.6g") if pairs else "method,table,posthoc,a,b,p\n"
    return sections


# -- costs: Pareto fronts ---------------------------------------------------------------------------
def build_costs(ctx: PublishContext) -> list[Section]:
    """The Pareto fronts of each task tab whose tasks share one metric (costs from the records)."""
    from ..errors import BobError
    from .pareto import pareto_fronts, plot_pareto

    if ctx.df is None or "record_json" not in ctx.df:
        return []
    stats = cell_table(ctx.stats)
    tabs = stats["task_group"].map(tab_of)
    html, md, files, frames = [], [], {}, []
    for tab in sorted(tabs.unique()):
        tasks = sorted(stats.loc[tabs == tab, "task"].unique())
        try:
            fronts = pareto_fronts(ctx.df, tasks, label=f"{tab} ({len(tasks)} task{'s' if len(tasks) > 1 else ''})", stats=stats)
        except BobError as exc:
            html.append(f'<p class="note">{esc(tab)}: {esc(exc)}</p>')
            md.append(f"- {tab}: {exc}")
            continue
        frames.append(fronts.points.assign(table=tab))
        if not fronts.axes:
            continue
        name = f"pareto_{slug(tab)}.png"
        files[name] = png_of(plot_pareto(fronts))
        html.append(f'<h3>{esc(fronts.label)}</h3>' + img_html(files[name], f"Pareto fronts: {fronts.label}", name))
        md.append(f"**{fronts.label}** ([{name}]({name})), {fronts.metric}; Pareto-front members:")
        from ..aggregate import md_code  # names as code spans: a `|` or `<b>` in a name stays text

        rows = []
        for axis in fronts.axes:
            members = fronts.front(axis.key).sort_values(axis.key)
            text = ", ".join(f"{r.row}" + (f" ({r.method})" if fronts.points["method"].nunique() > 1 else "") for r in members.itertuples())
            rows.append({"cost": axis.label, "front": text})
            md.append(f"- {axis.label}: " + ", ".join(md_code(r.row) + (f" ({r.method})" if fronts.points["method"].nunique() > 1 else "")
                                                    for r in members.itertuples()))
        html.append(table_html(rows, [("cost", "cost"), ("front", "Pareto-front members (cheapest first)")]))
        for note in fronts.messages:
            html.append(f'<p class="note">{esc(note)}</p>')
            md.append(f"- _{note}_")
        md.append("")
    if not files:
        return []
    files["pareto.csv"] = pd.concat(frames).to_csv(index=False, float_format="%.6g")
    intro = ("<p class=\"note\">A point is one (method, backbone) with every task of the tab: its mean metric against a cost. "
             "Ringed points form the Pareto front (nothing else is both cheaper and better). Costs come from the records' "
             "<code>backbone_meta</code> and <code>adaptation</code> blocks; a cost a record lacks is missing, never zero.</p>")
    return [Section(tab="costs", title="Costs: Pareto fronts", html=intro + "\n".join(html), markdown="\n".join(md), files=files)]


# -- task structure ---------------------------------------------------------------------------------
def build_structure(ctx: PublishContext) -> list[Section]:
    """Per method, the clustered heatmaps of rank correlation between tasks and task families
    (HTML tables: fast to publish, and a hover shows the shared backbones behind each rho)."""
    from .correlation import correlation_of_stats

    stats = cell_table(ctx.stats)
    blocks, md, files, longs = [], [], {}, []
    for method, sub in stats.groupby("method"):
        parts, lines = [], []
        for by in ("task", "family"):
            items = sub["task"].nunique() if by == "task" else sub["task_group"].fillna("other").nunique()
            if items < 2:
                continue
            corr = correlation_of_stats(sub, method, by)
            what = "tasks" if by == "task" else "task families"
            longs.append(corr.long().assign(method=method))
            if corr.rho.notna().sum().sum() <= len(corr.rho):  # nothing off the diagonal
                parts.append(f'<p class="note">{esc(method)}, {what}: ' + esc("; ".join(corr.messages) or "no pair to correlate") + "</p>")
                lines.append(f"- {method}, {what}: " + ("; ".join(corr.messages) or "no pair to correlate"))
                continue
            parts.append(corr.to_html())  # an HTML heatmap: hover shows the shared backbones (Correlation.plot() draws it for a paper)
            pairs = corr.long().dropna(subset=["rho"])
            low, high = pairs.nsmallest(1, "rho").iloc[0], pairs.nlargest(1, "rho").iloc[0]
            line = (f"{method}, {what}: mean Spearman rho {pairs['rho'].mean():.2f} over {len(pairs)} pairs "
                    f"(shared backbones {int(pairs['shared_backbones'].min())}-{int(pairs['shared_backbones'].max())}); "
                    f"least alike {low['a']} ~ {low['b']} ({low['rho']:.2f}), most alike {high['a']} ~ {high['b']} ({high['rho']:.2f})")
            parts.append(f'<p class="note">{esc(line)}.' + "".join(f" {esc(m)}." for m in corr.messages) + "</p>")
            lines.append(f"- {line}")
        if parts:
            blocks.append(f'<div class="analysis-block" data-method="{esc(method)}">' + "\n".join(parts) + "</div>")
            md += lines
    if not blocks:
        return []
    files["task_correlation.csv"] = pd.concat(longs).to_csv(index=False, float_format="%.4f")
    intro = ("<p class=\"note\">Spearman correlation of the backbones' ranking between two tasks (over the backbones both have; "
             "n in each cell) and between task families (a backbone's family value: its mean z-score over the family's tasks). "
             "Ordered by average-linkage clustering on 1 &minus; rho.</p>")
    return [Section(tab="structure", title="Task structure: rank correlations", html=intro + "\n".join(blocks),
                    markdown="\n".join(md) + "\n\nAll pairs with their shared backbones: [task_correlation.csv](task_correlation.csv).", files=files)]


# -- the leaderboard's own plots ------------------------------------------------------------------------
def plots_section(out: Path, names: list[str]) -> list[Section]:
    """The plots ``bob publish`` writes (score vs params / GFLOPs, rank heatmap, ICL curves), on the
    page as inline images as well as files."""
    images = [img_html((Path(out) / n).read_bytes(), n, n) for n in names if (Path(out) / n).is_file()]
    if not images:
        return []
    md = "\n".join(f"- [{n}]({n})" for n in names)
    return [Section(tab="plots", title="Plots", html="\n".join(images), markdown=md, key="plots", order=200)]


register_section("analysis-significance", build_significance, order=40)
register_section("analysis-costs", build_costs, order=60)
register_section("analysis-structure", build_structure, order=70)

__all__ = ["annotate_overall", "build_costs", "build_significance", "build_structure", "plots_section"]
