"""``bob publish``: a leaderboard folder from one or more sweeps.

Writes ``leaderboards/<name>/``: ``index.html`` (self-contained, works offline), ``leaderboard.md``,
``leaderboard.csv``, ``results.parquet``, ``table.tex`` (booktabs), PNG plots and
``METHODOLOGY.md``. Every number is recomputed from the records by ``harness.scores``.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path

import pandas as pd

from .aggregate import MISSING, aggregate_markdown, atomic_write_parquet, md_code, md_escape, methods_markdown, records_frame, trainable_pct
from .errors import BobError
from .metrics import MetricSpec
from .scores import CI_LEVEL, N_BOOTSTRAP, PARAM_BUCKETS, cell_stats, csv_columns, goodness, overall_scores, rank_by_task, zscore_by_task
from .atomic import atomic_write_bytes
from .store import ResultStore, atomic_write_text

HERE = Path(__file__).parent
HEATMAP_ROWS = 60


def _num(value, digits=2):
    return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def task_tab(group: str | None) -> str:
    return (group or "other").split("/")[0]


# -- markdown -------------------------------------------------------------------------------------
def overall_markdown(overall: pd.DataFrame, method: str, note: str | None = None) -> str:
    """The overall table of one method; with the analysis columns (``win_rate``, ``sig_group``
    from ``harness.analysis.board.annotate_overall``) appended after the original ones."""
    sub = overall[overall["method"] == method]
    analysed = "win_rate" in sub and "sig_group" in sub
    lines = ["| # | backbone | BoB score | mean rank | tasks | params | size bucket (rank) |" + (" win rate | group |" if analysed else ""),
             "|---:|---|---:|---:|---:|---:|---|" + ("---:|:---:|" if analysed else "")]
    for i, r in enumerate(sub.itertuples(), 1):
        tasks = f"{r.n_tasks}/{r.tasks_total}" + ("" if r.complete else " *")
        extra = f" {_num(r.win_rate, 2)} | {r.sig_group or MISSING} |" if analysed else ""
        lines.append(f"| {i} | {md_code(r.row)} | {r.score:+.2f} | {r.mean_rank:.2f} | {tasks} | {_num(r.params_m, 1)}M | {r.param_bucket} ({r.rank_in_bucket}) |" + extra)
    text = "\n".join(lines) + "\n"
    if not sub["complete"].all():
        text += "\n_* this backbone lacks some tasks; its score and rank average only the tasks it has (missing tasks are excluded, never zero)._\n"
    if note:
        text += f"\n_{note}_\n"
    if analysed:
        from .analysis.winrate import RULE

        text += f"\n_Win rate: {RULE}_\n"
    return text


def backbone_meta_table(df: pd.DataFrame) -> str:
    ok = df[df["status"] == "ok"].drop_duplicates("backbone_label")
    lines = ["| backbone | family | pre-training | data | weights | params (M) | GFLOPs | input px |", "|---|---|---|---|---|---:|---:|---:|"]
    for r in ok.sort_values("backbone_label").itertuples():
        lines.append(f"| {md_code(r.backbone_label)} | {md_escape(r.family)} | {md_escape(r.pretrain_method)} | {md_escape(r.pretrain_data)} | {md_escape(r.weights_resolved)} | {_num(r.params_m)} | {_num(r.gflops, 3)} | {r.img_size} |")
    return "\n".join(lines) + "\n"


def leaderboard_markdown(df: pd.DataFrame, overall: pd.DataFrame, name: str, sweeps: list[str], stamp: str, sections: list | None = None,
                         notes: dict[str, str] | None = None) -> str:
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    random_init = sorted(df.loc[df["weights_resolved"] == "random-init", "backbone"].dropna().unique()) if not df.empty else []
    shas = sorted(df["git_sha"].dropna().unique()) if not df.empty else []
    md = [
        f"# Leaderboard: {name}", "",
        f"Sweeps: {', '.join(sweeps)} · cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f" · generated {stamp} · bob git {', '.join(s[:10] for s in shas) or 'unknown'}", "",
        f"Metrics: {metrics_sentence(df)}; `a ± h` = mean over seeds ± half the width of the 95% bootstrap "
        "interval. `—` = no finished cell (never counted as zero). BoB score = mean over tasks of the per-task z-score across "
        "backbones (within one method; z > 0 is better whatever the metric's direction). See [METHODOLOGY.md](METHODOLOGY.md).", "",
    ]
    if random_init:
        md += [f"**Random-init weights** (no pre-training; labelled `(random-init)`): {', '.join(md_code(b) for b in random_init)}.", ""]
    for method in sorted(overall["method"].unique()):
        md += [f"## {method}: overall", "", overall_markdown(overall, method, (notes or {}).get(method))]
    md += ["## Per task", "", aggregate_markdown(df),
           "Adaptation methods side by side (per backbone: suite means and % trainable parameters) and the backbone x method matrix: [methods.md](methods.md).", "",
           "## Backbones", "", backbone_meta_table(df)]
    for section in sections or []:  # the families' and analyses' own blocks (harness.sections)
        if section.markdown:
            md += [f"## {section.title}", "", section.markdown.rstrip(), ""]
    failed = df[df["status"] == "failed"] if not df.empty else df
    if len(failed):
        md += ["## Failed cells", "", *[f"- {md_code(r.backbone_label)} {r.method} {md_escape(r.task)} seed {r.seed}: {r.error}" for r in failed.itertuples()], ""]
    return "\n".join(md)


def primary_specs(df: pd.DataFrame) -> dict[str, MetricSpec]:
    """The declared primary metrics of the ok records, by metric name."""
    from .scores import spec_of_row

    ok = df[df["status"] == "ok"] if not df.empty else df
    out: dict[str, MetricSpec] = {}
    for _, row in ok.drop_duplicates("primary_metric").iterrows():
        spec = spec_of_row(row)
        out.setdefault(spec.name, spec)
    return out


def metrics_sentence(df: pd.DataFrame) -> str:
    specs = primary_specs(df)
    if not specs:
        return "none"
    return "; ".join(f"{s.title()} ({s.rule_text().split(' (')[0]})" for s in specs.values()) + ", each on its task's reported split"


# -- LaTeX ----------------------------------------------------------------------------------------
TEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def _tex(text: str) -> str:
    """A name as LaTeX text that prints exactly as written (every special character of LaTeX, and the
    ``< > |`` that the OT1 font would print as other glyphs)."""
    return "".join(TEX_SPECIALS.get(c, c) for c in str(text))


def _tex_det(n_deterministic: int, n: int) -> str:
    if not n_deterministic:
        return ""
    return r"$^{d}$" if n_deterministic >= n else rf"$^{{d\,{n_deterministic}/{n}}}$"


def leaderboard_tex(stats: pd.DataFrame, overall: pd.DataFrame, notes: dict[str, str] | None = None) -> str:
    """One booktabs table per method: tasks as columns, then the BoB score; best per column in bold.
    With the analysis columns in ``overall`` a last column carries the significance group letters
    (backbones sharing a letter are not significantly different) and the caption says how."""
    parts = ["% generated by `bob publish`; needs \\usepackage{booktabs}"]
    for method in sorted(stats["method"].unique()):
        sub = stats[stats["method"] == method]
        tasks = sorted(sub["task"].unique())
        wide = sub.pivot(index="row", columns="task", values="mean").reindex(columns=tasks)
        good = sub.assign(good=goodness(sub)).pivot(index="row", columns="task", values="good").reindex(columns=tasks)
        best = good.max()
        det = {(r.row, r.task): (int(r.n_deterministic), int(r.n)) for r in sub.itertuples()} if "n_deterministic" in sub else {}
        fmts = sub.drop_duplicates("task").set_index("task")["fmt"].to_dict() if "fmt" in sub else {}
        scores = overall[overall["method"] == method].set_index("row")["score"]
        groups = overall[overall["method"] == method].set_index("row")["sig_group"] if "sig_group" in overall else None
        order = scores.sort_values(ascending=False).index
        parts += [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(tasks) + 1) + ("c" if groups is not None else "") + "}", r"\toprule",
                  "Backbone & " + " & ".join(_tex(t.split("/", 1)[-1]) for t in tasks) + r" & Score" + (" & Group" if groups is not None else "") + r" \\", r"\midrule"]
        for row in order:
            cells = []
            for t in tasks:
                v = wide.loc[row, t]
                text = format(v, fmts.get(t) or ".1f") if not math.isnan(v) else "--"
                cells.append("--" if math.isnan(v) else (rf"\textbf{{{text}}}" if good.loc[row, t] == best[t] else text) + _tex_det(*det.get((row, t), (0, 0))))
            group = (" & " + (groups.get(row) or "--")) if groups is not None else ""
            parts.append(_tex(row) + " & " + " & ".join(cells) + f" & {scores[row]:+.2f}" + group + r" \\")
        note = (" " + _tex((notes or {}).get(method, ""))) if groups is not None else ""
        if any(n for n, _ in det.values()):
            note += r" $^{d}$: produced in deterministic mode (bit-identical on the same hardware whatever the executor)."
        parts += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(method)}: {_tex(_caption_metrics(sub))} per task (best in bold, by each metric's declared direction) and BoB score (mean z-score over tasks).{note}}}", r"\end{table}", ""]
    return "\n".join(parts)


def _caption_metrics(sub: pd.DataFrame) -> str:
    if "metric_label" not in sub:
        return "top-1 (%)"
    return ", ".join(dict.fromkeys(str(x) for x in sub["metric_label"].dropna()))


# -- plots ----------------------------------------------------------------------------------------
def write_plots(stats: pd.DataFrame, overall: pd.DataFrame, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - used for the log-axis labels

    written = []
    methods = sorted(overall["method"].unique())
    for x_col, label, fname in (("params_m", "parameters (M)", "score_vs_params.png"), ("gflops", "GFLOPs (forward, at the input size used)", "score_vs_gflops.png")):
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
        for ax, method in zip(axes[0], methods):
            sub = overall[(overall["method"] == method) & overall[x_col].notna()]
            ax.scatter(sub[x_col], sub["score"], s=30)
            for r in sub.itertuples():
                ax.annotate(_short_label(r.row), (getattr(r, x_col), r.score), fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.margins(x=0.25)
            ax.set(title=method + (" († = random-init)" if sub["weights"].eq("random-init").any() else ""), xlabel=label, ylabel="BoB score (mean z)")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
        written.append(fname)
    ranked = rank_by_task(stats)
    top = {m: set(overall[overall["method"] == m].nlargest(HEATMAP_ROWS, "score")["row"]) for m in methods}  # readable at any size
    shown = max((len(v) for v in top.values()), default=1)
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 1.5 + 0.35 * shown), squeeze=False)
    for ax, method in zip(axes[0], methods):
        sub = ranked[(ranked["method"] == method) & ranked["row"].isin(top[method])]
        grid = sub.pivot(index="row", columns="task", values="rank")
        im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [t.split("/", 1)[-1] for t in grid.columns], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [_short_label(r) for r in grid.index], fontsize=7)
        more = overall[overall["method"] == method]["row"].nunique() - len(top[method])
        ax.set_title(f"{method}: rank per task (1 = best)" + (f"; best {HEATMAP_ROWS} of {HEATMAP_ROWS + more} rows" if more > 0 else ""))
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out / "rank_heatmap.png", dpi=120)
    plt.close(fig)
    written.append("rank_heatmap.png")
    return written


def _short_label(row: str) -> str:
    """``timm:resnet18.a1_in1k (random-init)`` -> ``resnet18.a1_in1k †`` for plot labels."""
    label = row.replace("timm:", "").replace(" (random-init)", " †")
    return label if len(label) <= 36 else label[:35] + "…"


# -- HTML -----------------------------------------------------------------------------------------
def page_data(df: pd.DataFrame, stats: pd.DataFrame, overall: pd.DataFrame, name: str, stamp: str, sections: list | None = None,
              notes: dict[str, str] | None = None) -> dict:
    meta = {}
    for r in overall.itertuples():
        meta[r.row] = {"family": r.family, "pretrain": r.pretrain_method, "data": r.pretrain_data, "weights": r.weights,
                       "params_m": _clean(r.params_m), "gflops": _clean(r.gflops), "bucket": r.param_bucket}
    tabs: dict[str, list[str]] = {}
    for task, group in stats[["task", "task_group"]].drop_duplicates().itertuples(index=False):
        tabs.setdefault(task_tab(group), []).append(task)
    metrics = ({r.task: {"name": r.metric, "direction": r.direction, "target": _clean(r.target), "fmt": r.fmt, "label": r.metric_label}
                for r in stats.drop_duplicates("task").itertuples()} if "direction" in stats else {})
    cells = [{k: _clean(getattr(r, k)) for k in ("method", "task", "row", "mean", "ci_low", "ci_high", "n", "z", "n_deterministic") if hasattr(r, k)}
             for r in stats.itertuples()]
    for column, tab, spec, extra in sub_metric_columns(df, stats):  # e.g. detection's APr, fixed AP: columns beside the task's AP
        tabs[tab].append(column)
        metrics[column] = spec
        cells += extra
    return {
        "name": name, "generated": stamp, "methods": sorted(overall["method"].unique().tolist()),
        "tabs": {k: sorted(v) for k, v in sorted(tabs.items())}, "backbones": meta, "metrics": metrics,
        "overall": [{k: _clean(getattr(r, k)) for k in ("method", "row", "score", "mean_rank", "n_tasks", "tasks_total", "rank_in_bucket", "win_rate", "sig_group")
                     if hasattr(r, k)} for r in overall.itertuples()],
        "overall_notes": notes or {},
        "win_rate_rule": _win_rate_rule() if "win_rate" in overall else "",
        "cells": cells,
        "failed": int((df["status"] == "failed").sum()) if not df.empty else 0,
        "trainable": {m: {b: round(v, 4) for b, v in per.items()} for m, per in trainable_pct(df).items()},
        "sections": [s.as_page() for s in sections or []],
    }


def sub_metric_columns(df: pd.DataFrame, stats: pd.DataFrame) -> list[tuple[str, str, dict, list[dict]]]:
    """The page's extra columns for suite groups that declare a metric of their own (``APr``...):
    (column "<task> · <metric>", tab, the metric's declaration, cells with a per-column z-score).
    Shown, never folded into the BoB score (which ranks each task's primary metric)."""
    import numpy as np

    from .aggregate import metric_table
    from .scores import spec_from_columns
    from .suites import suite_of_task

    out, tables = [], {}
    present = stats[["task", "task_group"]].drop_duplicates()
    for task, group in present.itertuples(index=False):
        spec = suite_of_task(task)
        for g in (spec.groups if spec else ()):
            if not g.metric or task not in g.tasks or f"metric.{g.metric}" not in df:
                continue
            column, cells, declared = f"{task} · {g.title}", [], None
            for method in sorted(stats.loc[stats["task"] == task, "method"].unique()):
                if (method, g.metric) not in tables:  # one pass over the records per (method, metric), not per task
                    tables[method, g.metric] = metric_table(df, method, g.metric)
                table = tables[method, g.metric]
                table = table[table["task"] == task]
                if table.empty:
                    continue
                first = table.iloc[0]
                declared = {"name": g.metric, "direction": first["direction"], "target": _clean(first["target"]), "fmt": first["fmt"],
                            "label": first["metric_label"], "sub": True}
                goods = [spec_from_columns(r.metric, r.direction, r.target, r.fmt).goodness(r.mean) for r in table.itertuples()]
                mu, sd = float(np.mean(goods)), float(np.std(goods))
                for r, good in zip(table.itertuples(), goods):
                    cells.append({"method": method, "task": column, "row": r.row, "mean": _clean(r.mean), "ci_low": _clean(r.ci_low),
                                  "ci_high": _clean(r.ci_high), "n": _clean(r.n), "z": (good - mu) / sd if sd > 0 else 0.0})
            if cells:
                out.append((column, task_tab(group), declared, cells))
    return out


def _win_rate_rule() -> str:
    from .analysis.winrate import RULE

    return RULE


def leaderboard_html(data: dict) -> str:
    template = (HERE / "templates" / "leaderboard.html").read_text(encoding="utf-8")
    payload = json.dumps(data, sort_keys=True).replace("</", "<\\/")  # keep the JSON inert inside <script>
    return template.replace("__TITLE__", html.escape(data["name"])).replace("__DATA__", payload)


# -- methodology ----------------------------------------------------------------------------------
def _probe_solver_lines(df: pd.DataFrame) -> str:
    """The linear probe's solver and regularisation grid, and the MLP probe's head, as the records say (empty without such records)."""
    if df.empty:
        return ""
    seen = set()
    for r in df.loc[(df["status"] == "ok") & (df["method"] == "linear"), "record_json"]:
        p = json.loads(r).get("protocol", {})
        if p.get("solver") == "lbfgs":
            seen.add(f"lbfgs: L2-regularised multinomial logistic regression (scikit-learn's LogisticRegression(C) objective) solved by full-batch L-BFGS "
                      f"on standardised features, C grid {p.get('C_grid') or 'fixed'} swept on {p.get('selected_on')}, warm-started, chosen C refitted")
        elif p.get("solver") == "sgd":
            seen.add("sgd: the AdamW mini-batch probe (lr x wd on the validation split, fixed epochs)")
    out = "".join(f"   Linear probe solver ({line}); each record's `protocol` holds the chosen C and the convergence.\n" for line in sorted(seen))
    heads = sorted({json.loads(r).get("protocol", {}).get("head", "") for r in df.loc[(df["status"] == "ok") & (df["method"] == "mlp_probe"), "record_json"]} - {""})
    if heads:
        out += f"   MLP probe (`mlp_probe`): {'; '.join(heads)} on the standardised cached features, AdamW mini-batch training (lr x wd on the validation split, fixed epochs, refit).\n"
    return out


def methodology(df: pd.DataFrame, sweeps: list[str]) -> str:
    """METHODOLOGY.md, generated from the records and the declarations they carry, so it always
    says how each number was ranked."""
    from .analysis.winrate import RULE
    from .scores import spec_of_row
    from .suites import suite_of_task

    protocols = sorted({json.dumps({k: v for k, v in json.loads(r).get("protocol", {}).items() if k in ("tuned_on", "selected_on", "final_train_split", "reported_on")}, sort_keys=True)
                        for r in df.loc[df["status"] == "ok", "record_json"]}) if not df.empty else []
    buckets = ", ".join(label for _, _, label in PARAM_BUCKETS)
    metric_lines = []
    if not df.empty:
        ok = df[df["status"] == "ok"]
        for _, row in ok.drop_duplicates(["task", "primary_metric"]).sort_values("task").iterrows():
            spec = spec_of_row(row)
            unit = f" [{spec.unit}]" if spec.unit else ""
            metric_lines.append(f"   - `{row['task']}`: **{spec.name}**{unit} ({spec.title()}): {spec.rule_text()}.")
    suites = {}
    for task in (sorted(df["task"].dropna().unique()) if not df.empty else []):
        spec = suite_of_task(task)
        if spec is not None:
            suites[spec.name] = spec
    suite_lines = [f"   - {s.rule_text()}" for _, s in sorted(suites.items())] or ["   - (no declared suite: a table's mean is the plain mean over its tasks)"]
    nl = "\n"
    return f"""# How these numbers were computed

Source: the JSON records of sweep(s) {', '.join(sweeps)} (`results.parquet` here holds all of them,
one row per cell, with the full record in `record_json`). Nothing is typed in by hand.

1. **Cell.** One (backbone, weights, method, task, seed, hyper-parameters) run. Its number is the
   task's declared primary metric on the task's reported split. Hyper-parameters listed in a record's
   `protocol.search_space` were chosen on the validation split (`protocol.selected_on`, e.g.
   train800 -> val200 for VTAB-1k), the chosen setting was refitted on `protocol.final_train_split`
   (train800val200 for VTAB-1k) and scored on `protocol.reported_on`. Fixed settings say "no search".
   Protocols found in these records: {'; '.join(protocols) or 'none'}.
{_probe_solver_lines(df)}2. **Metrics and their direction** (declared by each task and carried in every record as
   `metric_specs`; a z-score or rank uses the metric's *goodness*: the value when higher is better,
   minus the value when lower is better, minus the distance to the target when the best value is a
   target such as 50):
{nl.join(metric_lines) or '   - none'}
3. **Seeds.** Per (method, task, backbone): the mean over seeds and a {int(CI_LEVEL * 100)}% percentile
   bootstrap interval of that mean ({N_BOOTSTRAP} resamples, fixed RNG seed 0); shown as `mean ± half-width`.
   With one seed no interval is shown.
4. **Per-task z-score.** Within one method and one task, each backbone's goodness is standardised
   across the backbones that have it: z = (g - mean) / std (population std, ddof = 0), so z > 0 is
   better for every direction; a task on which all backbones tie gives z = 0.
5. **BoB score.** The mean of a backbone's z-scores over the tasks it has (Battle of the Backbones).
   **Mean rank**: the mean over tasks of its rank (1 = best by the declared direction, ties averaged).
   Missing tasks are excluded from both means and flagged (`tasks` column, `*`); never counted as zero.
6. **Group and suite values** (declared by the task plugins), shown only when the backbone has every
   task of that group in the table; values of different metrics are never averaged (their mean
   z-score is shown instead, labelled "mean z"):
{nl.join(suite_lines)}
7. **Size buckets.** Parameter counts are measured on the feature extractor (no classifier);
   buckets: {buckets}; `rank in bucket` compares backbones of similar size.
8. **Weights.** `random-init` rows had no pre-training (asked for, or `auto` found no weights);
   they are labelled in every table. GFLOPs are measured at the input size the cell used
   (2 FLOPs per multiply-add).
9. **Significance** (`harness.analysis`, Demšar 2006). Per table (one method, its tasks or one tab's):
   the Friedman test over backbones across tasks (scipy; tasks are the samples, each value a
   backbone's seed mean, ranked within the task), on the largest complete backbone x task block
   (what is left out is named; nothing is imputed); only when it rejects at alpha = 0.05, the
   post-hoc Nemenyi test (critical-difference diagram) and pairwise Wilcoxon signed-rank tests
   with Holm's correction (scikit-posthocs). The `group` letters in the overall tables are
   Nemenyi's: backbones sharing a letter are not significantly different. With fewer than 3
   backbones or 5 tasks no test is run and the table says what is missing.
10. **Win rate** (HELM): {RULE}
11. **Costs and task structure.** Pareto fronts of each tab's mean metric against parameters,
   GFLOPs, trainable parameters, peak training memory and training throughput (from the records'
   `backbone_meta` and `adaptation` blocks; a missing cost is never zero); Spearman correlation of
   the backbone rankings between tasks and task families, over the backbones each pair shares.
"""


# -- publish --------------------------------------------------------------------------------------
def publish(stores: list[ResultStore], name: str, out_root: Path | str = "leaderboards", wandb_project: str | None = None) -> Path:
    return _publish(records_frame(stores), [s.sweep for s in stores], name, out_root, wandb_project)


def publish_frame(sweeps: list[str], name: str, out_root: Path | str = "leaderboards", results_root: str | Path = "results",
                  wandb_project: str | None = None, filters: dict[str, str] | None = None) -> Path:
    """``bob publish``: sweeps given as names, folders or compacted Parquet files (see ``aggregate.frame_for``).
    ``filters`` (family / pretrain / data substrings) keep only the matching backbones; z-scores and
    ranks are then computed among those backbones, and METHODOLOGY.md says so."""
    from .aggregate import frame_for
    from .scores import filter_backbones

    df, names = frame_for(sweeps, results_root, with_json=True)
    if filters:
        df = filter_backbones(df, **filters)
        if df.empty:
            raise BobError("no records match " + ", ".join(f"--{k} {v}" for k, v in filters.items()) + "; `bob aggregate` shows the backbones' metadata")
    return _publish(df, names, name, out_root, wandb_project, filters)


def _publish(df: pd.DataFrame, sweeps: list[str], name: str, out_root: Path | str, wandb_project: str | None,
             filters: dict[str, str] | None = None) -> Path:
    out = Path(out_root) / name
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stats = cell_stats(df) if not df.empty else cell_stats(pd.DataFrame(columns=["status"]))
    stats = rank_by_task(zscore_by_task(stats)) if not stats.empty else stats
    overall = overall_scores(stats)
    from .analysis.sections import annotate_overall, plots_section  # registers the analysis sections
    from .sections import PublishContext, build_sections

    overall, notes, _ = annotate_overall(overall, stats)
    plots: list[str] = []
    if not stats.empty:
        from .plots import plot_icl

        plots = write_plots(stats, overall, out) + [p.name for p in plot_icl([json.loads(r) for r in df["record_json"]], out)]
    sections = build_sections(PublishContext(df, stats, overall, name, out)) + plots_section(out, plots) if not stats.empty else []
    for section in sections:
        for fname, content in section.files.items():
            (atomic_write_text if isinstance(content, str) else atomic_write_bytes)(out / fname, content)
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(df, overall, name, sweeps, stamp, sections, notes))
    atomic_write_text(out / "leaderboard.csv", stats[csv_columns(stats)].to_csv(index=False, float_format="%.4f"))
    note = ("\n## Backbones shown\nOnly backbones matching " + ", ".join(f"{k} ~ '{v}'" for k, v in filters.items())
            + "; z-scores and ranks are computed among them.\n") if filters else ""
    atomic_write_text(out / "METHODOLOGY.md", methodology(df, sweeps) + note)
    atomic_write_text(out / "methods.md", f"# Methods: {name}\n\n" + methods_markdown(df, stats))
    if not stats.empty:
        atomic_write_text(out / "table.tex", leaderboard_tex(stats, overall, notes))
        atomic_write_text(out / "index.html", leaderboard_html(page_data(df, stats, overall, name, stamp, sections, notes)))
    atomic_write_parquet(df, out / "results.parquet")
    if wandb_project:
        from .wandb_logging import log_leaderboard

        log_leaderboard(wandb_project, name, overall, out, metrics={k: v.as_dict() for k, v in primary_specs(df).items()})
    return out
