"""From records to tables: one row per backbone (and weights), one column per task.

Numbers are means over seeds; a cell with no ok record is missing ("—") and is never averaged
as zero: the row mean is shown only where every task is present.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from .metrics import STANDARD_METRICS, MetricSpec, record_primary_spec, spec_from
from .scores import task_specs
from .spec import canonical_json
from .store import ResultStore

MISSING = "—"

if TYPE_CHECKING:
    from .suites import GroupSpec, SuiteSpec


def backbone_label(record: dict[str, Any]) -> str:
    meta = record.get("backbone_meta") or {}
    weights = meta.get("weights") or record.get("weights")
    name = record.get("backbone")
    label = f"{name} (random-init)" if weights in ("random-init", "random") else name
    compress = (record.get("spec") or {}).get("compress")
    if compress:  # a compressed backbone is its own row, never averaged with its dense twin
        from .compress.config import compress_label

        label += f" <{compress_label(compress)}>"
    return label


def _compress_label(record: dict[str, Any]) -> str:
    from .compress.config import compress_label

    return compress_label((record.get("spec") or {}).get("compress") or {})


def check_record(record: dict[str, Any]) -> None:
    """The fields aggregation reads have the record schema's types (ValueError says which does not)."""
    status = record.get("status")
    if status not in ("ok", "failed", "skipped"):
        raise ValueError(f"status {status!r} is not ok, failed or skipped")
    for key in ("backbone", "method", "task"):
        value = record.get(key)
        if not (isinstance(value, str) and value) and (status == "ok" or value is not None):
            raise ValueError(f"{key} {value!r} is not a name")
    seed = record.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed {seed!r} is not an integer")
    for key in ("metrics", "backbone_meta", "spec", "task_meta", "metric_specs", "timing", "error", "environment", "primary_metric", "protocol"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise ValueError(f"{key} must be an object, got {type(record[key]).__name__}")
    hp = (record.get("spec") or {}).get("hparams")
    if hp is not None and not isinstance(hp, dict):
        raise ValueError("spec.hparams must be an object")
    if status == "ok":
        primary = record.get("primary_metric") or {}
        value = primary.get("value")
        if not isinstance(primary.get("name"), str) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"an ok record needs primary_metric {{name, numeric value}}, got {primary!r}")
    for key in ("params_m", "gflops"):
        value = (record.get("backbone_meta") or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"backbone_meta.{key} {value!r} is not a number")


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    meta = record.get("backbone_meta") or {}
    hp = (record.get("spec") or {}).get("hparams") or {}
    primary_spec = record_primary_spec(record)
    row = {
        "id": record.get("id"),
        "sweep": record.get("sweep"),
        "status": record.get("status"),
        "backbone": record.get("backbone"),
        "backbone_label": backbone_label(record),
        "weights": record.get("weights"),
        "weights_resolved": meta.get("weights"),
        "compress": _compress_label(record),
        "method": record.get("method"),
        "task": record.get("task"),
        "task_group": (record.get("task_meta") or {}).get("group"),
        "seed": record.get("seed"),
        "hparams": canonical_json(hp),
        "primary_metric": (record.get("primary_metric") or {}).get("name"),
        "primary_value": (record.get("primary_metric") or {}).get("value"),
        "higher_is_better": primary_spec.higher_is_better,
        "primary_spec": json.dumps(primary_spec.as_dict(), sort_keys=True),
        "family": meta.get("family"),
        "pretrain_method": meta.get("pretrain_method"),
        "pretrain_data": meta.get("pretrain_data"),
        "params_m": meta.get("params_m"),
        "gflops": meta.get("gflops"),
        "img_size": (record.get("hparams") or {}).get("img_size"),
        "wall_s": (record.get("timing") or {}).get("wall_s"),
        "error": (record.get("error") or {}).get("message"),
        "git_sha": (record.get("environment") or {}).get("git_sha"),
        "created": record.get("created"),
        "deterministic": bool((record.get("spec") or {}).get("deterministic", False)),
    }
    row["metric_specs"] = json.dumps(record.get("metric_specs") or {}, sort_keys=True)
    for key, value in (record.get("metrics") or {}).items():
        if isinstance(value, (int, float)):
            row[f"metric.{key}"] = value
    row["record_json"] = json.dumps(record, sort_keys=True, default=str)
    return row


def records_frame(stores: Iterable[ResultStore]) -> pd.DataFrame:
    """All records of ``stores`` as flat rows; a malformed record is a one-line error naming it."""
    from .errors import BobError

    rows = []
    for store in stores:
        for record in store.records():
            try:
                if not isinstance(record, dict):
                    raise TypeError(f"a record is a JSON object, got {type(record).__name__}")
                check_record(record)
                rows.append(flatten(record))
            except (AttributeError, TypeError, ValueError, KeyError, BobError) as exc:
                name = record.get("id") if isinstance(record, dict) else None
                raise BobError(f"{store.folder}: record {name!r} is malformed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                               "delete it and rerun its cell (`bob sweep` recomputes missing cells)") from None
    return pd.DataFrame(rows)


def frame_for(sweeps: list[str], results_root: str | Path = "results", with_json: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """The flat records of ``sweeps`` and their names. A sweep may be a folder of records, a sweep
    name, or a compacted ``.parquet`` file; ``results/<sweep>.parquet`` is used instead of the folder
    when it is at least as new as the folder (``bob results compact`` after the last record), which
    is what makes aggregating a million cells fast. ``with_json=False`` skips the full-record
    column that only ``publish`` needs."""
    from .store import resolve_store

    frames, names = [], []
    for sweep in sweeps:
        path = Path(sweep)
        folder = None
        if not (path.suffix == ".parquet" and path.is_file()):
            store = resolve_store(sweep, results_root)
            folder, path = store.folder, store.folder.parent / f"{store.folder.name}.parquet"
        if path.is_file() and (folder is None or path.stat().st_mtime >= folder.stat().st_mtime):
            import pyarrow.parquet as pq

            columns = [c for c in pq.read_schema(path).names if with_json or c != "record_json"]
            frames.append(pd.read_parquet(path, columns=columns))
            names.append(path.stem)
        else:
            frames.append(records_frame([ResultStore(folder)]))
            names.append(folder.name)
    frames = [f for f in frames if not f.empty]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), names


def atomic_write_parquet(df: pd.DataFrame, out: Path) -> Path:
    """``df`` as Parquet at ``out``, through a temp file and a rename (no reader sees half a file)."""
    from .atomic import atomic_write

    return atomic_write(out, lambda tmp: df.to_parquet(tmp, index=False))


def compact(store: ResultStore, out: Path | None = None) -> Path:
    """All records of a sweep in one Parquet file (``results/<sweep>.parquet``), written atomically."""
    return atomic_write_parquet(records_frame([store]), Path(out) if out else store.folder.parent / f"{store.sweep}.parquet")


def metric_table(df: pd.DataFrame, method: str, metric: str | None = None) -> pd.DataFrame:
    """Long table: (row label, task) -> mean, 95% bootstrap interval and n over seeds, from ok
    records of ``method``, with the metric's declaration (metric, direction, target, fmt). Rows are
    backbones, suffixed with their hyper-parameters when one backbone ran several settings
    (settings are never silently picked on the test split). ``metric`` picks a metric other than
    the records' primary one (e.g. a group's ``APr``)."""
    from .scores import SPEC_COLUMNS, cell_stats

    sub = df[df["method"] == method]
    if metric:
        col = f"metric.{metric}"
        if col not in sub:
            raise KeyError(metric)
        specs = [json.dumps(_declared(r, metric).as_dict(), sort_keys=True) for r in sub["metric_specs"]] if "metric_specs" in sub else None
        sub = sub.assign(primary_value=sub[col], primary_metric=metric, **({"primary_spec": specs} if specs is not None else {}))
        sub = sub[sub["primary_value"].notna()]
    stats = cell_stats(sub, hp_label=_short_hp)
    columns = ["row", "task", "mean", "ci_low", "ci_high", "n", *SPEC_COLUMNS]
    if stats.empty:
        return pd.DataFrame(columns=columns)
    return stats[columns + [c for c in ("n_deterministic",) if c in stats]]


def _declared(specs_json: str | None, metric: str) -> MetricSpec:
    declared = json.loads(specs_json or "{}").get(metric)
    if declared:
        return spec_from(metric, declared)
    return STANDARD_METRICS.get(metric) or MetricSpec(metric)


def _short_hp(hp_json: str) -> str:
    hp = json.loads(hp_json)
    return "[" + ", ".join(f"{k}={v}" for k, v in sorted(hp.items()) if k != "search") + "]" if hp else "[defaults]"


def format_cell(mean: float, half_width: float | None, n: int, fmt: str = ".1f") -> str:
    """``mean ± h`` where h is half the width of the 95% bootstrap interval over seeds."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if n and n > 1 and half_width is not None and not math.isnan(half_width):
        return f"{format(mean, fmt)} ± {format(half_width, fmt)}"
    return format(mean, fmt)


Layout = list[tuple["SuiteSpec | None", list[tuple["GroupSpec", list[str]]]]]


def task_layout(tasks: list[str]) -> Layout:
    """Tasks arranged as [(suite, [(group, [tasks])])] in the declared suites' own order; tasks of
    no declared suite form one last block (suite None). Reads declarations only (no data)."""
    from .suites import GroupSpec, suite_of_task

    suites: dict[str, SuiteSpec] = {}
    loose: list[str] = []
    for task in tasks:
        spec = suite_of_task(task)
        if spec is None:
            loose.append(task)
        else:
            suites[spec.name] = spec
    layout: Layout = []
    for name in sorted(suites):
        spec = suites[name]
        groups = [(g, [t for t in g.tasks if t in tasks]) for g in spec.groups]
        layout.append((spec, [(g, ts) for g, ts in groups if ts]))
    if loose:
        layout.append((None, [(GroupSpec("", "", tuple(loose)), loose)]))
    return layout


def _zscores(values: dict[tuple[str, str], float], specs: dict[str, MetricSpec]) -> dict[tuple[str, str], float]:
    """Per task, the z-score of each row's goodness across the rows of this table (ddof=0)."""
    out = {}
    for task, spec in specs.items():
        cells = {row: spec.goodness(v) for (row, t), v in values.items() if t == task and not math.isnan(v)}
        if not cells:
            continue
        arr = np.array(list(cells.values()), dtype=float)
        mu, sd = arr.mean(), arr.std()
        out.update({(row, task): (g - mu) / sd if sd > 0 else 0.0 for row, g in cells.items()})
    return out


def _same_metric(specs: list[MetricSpec]) -> MetricSpec | None:
    """The one declaration shared by ``specs`` (None when they differ: such values are not averaged)."""
    keys = {(s.name, s.direction, s.target) for s in specs}
    return specs[0] if len(keys) == 1 else None


def suite_markdown(df: pd.DataFrame, method: str, long: pd.DataFrame, suite: "SuiteSpec | None", groups: list[tuple["GroupSpec", list[str]]]) -> tuple[str, list[str]]:
    """Per-task columns, then one value per group and the suite's value, by the suite's declared rules.

    A group value is shown only when the row has every task of the group that this table holds;
    a group declared with ``metric`` averages that metric (e.g. APr) instead of the primary one;
    values of different metrics are never averaged (their mean z-score is shown instead)."""
    tasks = list(dict.fromkeys(t for _, ts in groups for t in ts))  # a task may sit in several groups (one per metric)
    stats = {(r.row, r.task): (r.mean, (r.ci_high - r.ci_low) / 2, int(r.n)) for r in long.itertuples()}
    det = {(r.row, r.task): (int(r.n_deterministic), int(r.n)) for r in long.itertuples()} if "n_deterministic" in long else {}
    specs = task_specs(long)
    rows = sorted({r for r, _ in stats})
    notes = []
    show_groups = bool(suite) and (suite.group_columns if suite.group_columns is not None else len(groups) > 1)
    if suite:
        for g, ts in groups:
            if len(ts) < len(g.tasks):
                notes.append(f"{g.title} mean over {len(ts)} of its {len(g.tasks)} tasks (the others have no results)")
    means = {k: v[0] for k, v in stats.items()}
    z = _zscores(means, specs)
    # one column per group: (title, spec or None for mean z, value per row)
    group_values: list[tuple[str, MetricSpec | None, dict[str, float]]] = []
    for g, ts in groups:
        if suite and g.metric:  # a named sub-metric (e.g. LVIS's APr) of the group's tasks
            sub = metric_table(df, method, g.metric) if f"metric.{g.metric}" in df else pd.DataFrame(columns=["row", "task", "mean"])
            sub = sub[sub["task"].isin(ts)]
            per = {(r.row, r.task): r.mean for r in sub.itertuples()}
            shared = _declared(None, g.metric) if sub.empty else next(iter(task_specs(sub).values()))
            values = {row: _mean_unless_missing([per.get((row, t), float("nan")) for t in ts]) for row in rows}
            group_values.append((g.title, shared, values))
            continue
        shared = _same_metric([specs[t] for t in ts])
        if shared is not None:
            values = {row: _mean_unless_missing([means.get((row, t), float("nan")) for t in ts]) for row in rows}
        else:
            values = {row: _mean_unless_missing([z.get((row, t), float("nan")) for t in ts]) for row in rows}
        group_values.append((g.title if shared is not None else f"{g.title} (mean z)", shared, values))
    suite_spec = _same_metric([specs[t] for t in tasks])
    by_group_means = bool(suite) and suite.rule == "mean_of_group_means"
    if by_group_means and all(s is not None for _, s, _ in group_values) and _same_metric([s for _, s, _ in group_values]) is not None:
        overall = {row: _mean_unless_missing([v[row] for _, _, v in group_values]) for row in rows}
        suite_header, overall_spec = "mean of group means", _same_metric([s for _, s, _ in group_values])
    elif suite_spec is not None:
        overall = {row: _mean_unless_missing([means.get((row, t), float("nan")) for t in tasks]) for row in rows}
        suite_header, overall_spec = "mean", suite_spec
    else:
        overall = {row: _mean_unless_missing([z.get((row, t), float("nan")) for t in tasks]) for row in rows}
        suite_header, overall_spec = "mean z", None
    header = ["backbone", *[md_escape(t.split("/", 1)[-1]) for t in tasks], *([title for title, _, _ in group_values] if show_groups else []), suite_header]
    table_rows = []
    for row in rows:
        values = {t: stats.get((row, t), (float("nan"), None, 0)) for t in tasks}
        cells = [format_cell(*values[t], fmt=specs[t].fmt) + deterministic_mark(*det.get((row, t), (0, 0))) for t in tasks]
        if show_groups:
            cells += [_format_summary(v[row], s) for _, s, v in group_values]
        o = overall[row]
        good = float("nan") if math.isnan(o) else (overall_spec.goodness(o) if overall_spec else o)
        table_rows.append((good, row, cells + [_format_summary(o, overall_spec)]))
    table_rows.sort(key=lambda r: (math.isnan(r[0]), -r[0] if not math.isnan(r[0]) else 0, r[1]))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join([md_code(row), *cells]) + " |" for _, row, cells in table_rows]
    if any(n for n, _ in det.values()):
        notes.append(DETERMINISTIC_NOTE)
    return "\n".join(lines) + "\n", notes


DETERMINISTIC_NOTE = ("(det) = every seed of the cell ran in deterministic mode (bit-identical metrics on the same hardware whatever "
                      "the executor); (det k/n) = k of its n seeds did; unmarked = default mode (the record's thread counts decide the last bits)")


def deterministic_mark(n_deterministic: int, n: int) -> str:
    """The per-cell marker of deterministic mode in text tables ('' for default-mode cells)."""
    if not n_deterministic:
        return ""
    return " (det)" if n_deterministic >= n else f" (det {n_deterministic}/{n})"


MD_PUNCTUATION = set("\\`*_[]<>|~$&")


def md_escape(text: Any) -> str:
    """A name as plain text in a Markdown table cell, shown as written: ``|`` would end the cell,
    ``<b>`` would be HTML, ``$`` math, ``*``/``_`` emphasis; each such character gets CommonMark's
    backslash escape (an underscore inside a word cannot emphasise and is left as it is)."""
    text = str(text)
    out = []
    for i, c in enumerate(text):
        if c == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(c)
        else:
            out.append("\\" + c if c in MD_PUNCTUATION else c)
    return "".join(out)


def md_code(text: Any) -> str:
    """A name as a code span in a table cell (shown literally): ``|`` escaped, since GFM splits
    cells before it reads code spans, and a fence longer than any run of backticks in the name."""
    import re

    text = str(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _format_summary(value: float, spec: MetricSpec | None) -> str:
    if value is None or math.isnan(value):
        return MISSING
    return format(value, spec.fmt) if spec else f"{value:+.2f}"


def _mean_unless_missing(values: list[float]) -> float:
    """The mean, or NaN when any value is missing (a missing task is never averaged as zero)."""
    return float("nan") if any(math.isnan(v) for v in values) else sum(values) / len(values)


def markdown_table(df: pd.DataFrame, method: str, long: pd.DataFrame, tasks: list[str]) -> str:
    if long.empty:
        return "_no finished cells_\n"
    parts = []
    for suite, groups in task_layout(tasks):
        table, notes = suite_markdown(df, method, long[long["task"].isin([t for _, ts in groups for t in ts])], suite, groups)
        title = suite.caption if suite else None
        parts.append((f"**{title}**\n\n" if title else "") + table + "".join(f"\n_Note: {n}._\n" for n in notes))
    return "\n".join(parts)


def csv_long(df: pd.DataFrame) -> str:
    frames = []
    for method in sorted(df.loc[df["status"] == "ok", "method"].dropna().unique()):
        long = metric_table(df, method)
        long.insert(0, "method", method)
        frames.append(long)
    if not frames:
        return "method,row,task,mean,ci_low,ci_high,n\n"
    return pd.concat(frames).to_csv(index=False, float_format="%.4f")


def aggregate_markdown(df: pd.DataFrame) -> str:
    """One table per method (metric: each record's primary metric, as its task declares it)."""
    if df.empty:
        return "_no records_\n"
    tasks = sorted(df["task"].dropna().unique())
    parts = []
    for method in sorted(df["method"].dropna().unique()):
        long = metric_table(df, method)
        present = [t for t in tasks if t in set(long["task"])] if not long.empty else []
        parts.append(f"### {method}\n\n" + markdown_table(df, method, long, present or tasks))
    return "\n".join(parts)


# -- adaptation views (VPT / V-PETL shape) -----------------------------------------------------------
def ok_stats(df: pd.DataFrame) -> pd.DataFrame:
    """``cell_stats`` of the ok records with per-task z-scores: what every table of a board reads."""
    from .scores import cell_stats, zscore_by_task

    stats = cell_stats(df) if not df.empty else pd.DataFrame()
    return zscore_by_task(stats) if not stats.empty else stats


def trainable_pct(df: pd.DataFrame, column: str = "metric.trainable_pct_with_head") -> dict[str, dict[str, float]]:
    """% of the backbone's parameters each method trained, per method and backbone label (mean over cells)."""
    if df.empty or column not in df:
        return {}
    ok = df[(df["status"] == "ok") & df[column].notna()]
    return {m: {b: float(v) for b, v in g.groupby("backbone_label")[column].mean().items()} for m, g in ok.groupby("method")}


def _method_rows(stats: pd.DataFrame, backbone: str) -> pd.DataFrame:
    """The stats of one backbone, with the method as the row label (plus the hyper-parameter
    suffix ``cell_stats`` gave the row when one method ran several settings on it)."""
    sub = stats[stats["backbone_label"] == backbone]
    return sub.assign(row=[m if r == backbone else f"{m} {r[len(backbone) + 1:]}" for m, r in zip(sub["method"], sub["row"])])


def _summary_columns(long: pd.DataFrame, rows: list[str], tasks: list[str], all_specs: dict[str, MetricSpec]) -> list[tuple[str, dict[str, str]]]:
    """Per declared suite: group means, the suite value by its rule, and the plain task mean where
    declared; tasks of no suite get their own columns and a mean. Values of one metric only."""
    means = {(r.row, r.task): r.mean for r in long.itertuples()}
    specs = {t: all_specs[t] for t in tasks}  # a task this backbone lacks: missing here, declared as elsewhere
    z = _zscores(means, specs)
    cols: list[tuple[str, dict[str, str]]] = []

    def column(title: str, ts: list[str]) -> None:
        shared = _same_metric([specs[t] for t in ts])
        source = means if shared else z
        values = {row: _mean_unless_missing([source.get((row, t), float("nan")) for t in ts]) for row in rows}
        cols.append((md_escape(title) if shared else f"{md_escape(title)} (mean z)", {row: _format_summary(v, shared) for row, v in values.items()}))

    for suite, groups in task_layout(tasks):
        present = [t for _, ts in groups for t in ts]
        if suite is None:
            for t in present:
                cols.append((md_escape(t.split("/", 1)[-1]), {row: _format_summary(means.get((row, t), float("nan")), specs[t]) for row in rows}))
            if len(present) > 1:
                column("mean", present)
            continue
        if len(suite.groups) > 1:
            for g, ts in groups:
                if not g.metric:  # a sub-metric group (e.g. APr) needs the full records: shown in the suite tables only
                    column(f"{suite.title} {g.title}", ts)
        if suite.rule == "mean_of_group_means" and len(groups) > 1:
            group_vals = {}
            for row in rows:
                parts = [_mean_unless_missing([means.get((row, t), float("nan")) for t in ts]) for _, ts in groups]
                group_vals[row] = _mean_unless_missing(parts)
            shared = _same_metric([specs[t] for t in present])
            cols.append((f"{suite.title} mean of group means", {row: _format_summary(v, shared) for row, v in group_vals.items()}))
            if suite.plain_mean:
                column(f"{suite.title} mean of {len(present)} tasks", present)
        else:
            column(f"{suite.title} mean", present)
    return cols


def method_view_markdown(df: pd.DataFrame, stats: pd.DataFrame | None = None) -> str:
    """Per backbone, rows = methods: suite/group means (VTAB-1k Natural / Specialized / Structured,
    the mean of group means and the plain task mean, both labelled; FGVC mean) and % trainable
    parameters (without and with the head), as the VPT / V-PETL tables report them."""
    stats = ok_stats(df) if stats is None else stats
    if stats.empty:
        return "_no finished cells_\n"
    tasks = sorted(stats["task"].unique())  # every table has the same columns: a task a backbone lacks shows as missing
    all_specs = task_specs(stats)
    pct = {column: trainable_pct(df, column) for column in ("metric.trainable_pct", "metric.trainable_pct_with_head")}
    parts = []
    for backbone in sorted(stats["backbone_label"].dropna().unique()):
        long = _method_rows(stats, backbone)
        rows = sorted(long["row"].unique())
        cols = _summary_columns(long, rows, tasks, all_specs)
        header = ["method", *[c for c, _ in cols], "% trainable", "% trainable (with head)"]
        lines = [f"#### {md_code(backbone)}", "", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for row in rows:
            method = row.split(" ", 1)[0]
            shares = [pct[c].get(method, {}).get(backbone) for c in pct]
            lines.append("| " + " | ".join([md_escape(row), *[vals[row] for _, vals in cols], *(MISSING if v is None else f"{v:.2f}" for v in shares)]) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def backbone_method_matrix(df: pd.DataFrame, stats: pd.DataFrame | None = None) -> str:
    """Rows = backbones, columns = methods; a cell is the mean of the method's primary metric over
    the tasks the method ran (shown only when the backbone has all of them; of one metric only,
    else the mean z-score across backbones)."""
    stats = ok_stats(df) if stats is None else stats
    if stats.empty:
        return "_no finished cells_\n"
    methods = sorted(stats["method"].unique())
    per_method = {}
    for method in methods:
        sub = stats[stats["method"] == method]
        uniform = len({(r.metric, r.direction, r.target if r.direction == "target" else None) for r in sub.itertuples()}) == 1
        per_method[method] = (sub, sub["task"].nunique(), uniform)
    lines = ["| " + " | ".join(["backbone", *map(md_escape, methods)]) + " |", "|" + "|".join(["---"] + ["---:"] * len(methods)) + "|"]
    for backbone in sorted(stats["backbone_label"].unique()):
        cells = []
        for method in methods:
            sub, n_tasks, uniform = per_method[method]
            mine = sub[sub["backbone_label"] == backbone]
            if mine.empty or mine["task"].nunique() < n_tasks:
                cells.append(MISSING)
            elif uniform:
                cells.append(format(mine["mean"].mean(), mine["fmt"].iloc[0] or ".1f"))
            else:
                cells.append(f"{mine['z'].mean():+.2f}")
        lines.append("| " + " | ".join([md_code(backbone), *cells]) + " |")
    notes = [f"{m}: mean {sub['metric'].iloc[0] if uniform else 'z'} over {n} task(s)" for m, (sub, n, uniform) in per_method.items()]
    return "\n".join(lines) + "\n\n_" + "; ".join(notes) + "._\n"


def methods_markdown(df: pd.DataFrame, stats: pd.DataFrame | None = None) -> str:
    stats = ok_stats(df) if stats is None else stats
    return ("## Adaptation methods per backbone\n\n" + method_view_markdown(df, stats) + "\n## Backbone x method\n\n" + backbone_method_matrix(df, stats))
