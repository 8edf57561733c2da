"""From records to tables: one row per backbone (and weights), one column per task.

Numbers are means over seeds; a cell with no ok record is missing ("—") and is never averaged
as zero: the row mean is shown only where every task is present.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .spec import canonical_json
from .store import ResultStore, atomic_write_text

MISSING = "—"


def backbone_label(record: dict[str, Any]) -> str:
    meta = record.get("backbone_meta") or {}
    weights = meta.get("weights") or record.get("weights")
    name = record.get("backbone")
    return f"{name} (random-init)" if weights in ("random-init", "random") else name


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    meta = record.get("backbone_meta") or {}
    hp = (record.get("spec") or {}).get("hparams") or {}
    row = {
        "id": record.get("id"),
        "sweep": record.get("sweep"),
        "status": record.get("status"),
        "backbone": record.get("backbone"),
        "backbone_label": backbone_label(record),
        "weights": record.get("weights"),
        "weights_resolved": meta.get("weights"),
        "method": record.get("method"),
        "task": record.get("task"),
        "task_group": (record.get("task_meta") or {}).get("group"),
        "seed": record.get("seed"),
        "hparams": canonical_json(hp),
        "primary_metric": (record.get("primary_metric") or {}).get("name"),
        "primary_value": (record.get("primary_metric") or {}).get("value"),
        "higher_is_better": (record.get("primary_metric") or {}).get("higher_is_better", True),
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
    }
    for key, value in (record.get("metrics") or {}).items():
        if isinstance(value, (int, float)):
            row[f"metric.{key}"] = value
    row["record_json"] = json.dumps(record, sort_keys=True, default=str)
    return row


def records_frame(stores: Iterable[ResultStore]) -> pd.DataFrame:
    rows = [flatten(r) for store in stores for r in store.records()]
    return pd.DataFrame(rows)


def atomic_write_parquet(df: pd.DataFrame, out: Path) -> Path:
    """``df`` as Parquet at ``out``, through a temp file and a rename (no reader sees half a file)."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def compact(store: ResultStore, out: Path | None = None) -> Path:
    """All records of a sweep in one Parquet file (``results/<sweep>.parquet``), written atomically."""
    return atomic_write_parquet(records_frame([store]), Path(out) if out else store.folder.parent / f"{store.sweep}.parquet")


def metric_table(df: pd.DataFrame, method: str, metric: str | None = None) -> pd.DataFrame:
    """Long table: (row label, task) -> mean, 95% bootstrap interval and n over seeds, from ok
    records of ``method``. Rows are backbones, suffixed with their hyper-parameters when one
    backbone ran several settings (settings are never silently picked on the test split)."""
    from .scores import cell_stats

    sub = df[df["method"] == method]
    if metric:
        col = f"metric.{metric}"
        if col not in sub:
            raise KeyError(metric)
        sub = sub.assign(primary_value=sub[col])
    stats = cell_stats(sub, hp_label=_short_hp)
    if stats.empty:
        return pd.DataFrame(columns=["row", "task", "mean", "ci_low", "ci_high", "n"])
    return stats[["row", "task", "mean", "ci_low", "ci_high", "n"]]


def _short_hp(hp_json: str) -> str:
    hp = json.loads(hp_json)
    return "[" + ", ".join(f"{k}={v}" for k, v in sorted(hp.items()) if k != "search") + "]" if hp else "[defaults]"


def format_cell(mean: float, half_width: float | None, n: int) -> str:
    """``mean ± h`` where h is half the width of the 95% bootstrap interval over seeds."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if n and n > 1 and half_width is not None and not math.isnan(half_width):
        return f"{mean:.1f} ± {half_width:.1f}"
    return f"{mean:.1f}"


def task_layout(tasks: list[str]) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """Tasks arranged as [(suite, [(group, [tasks])])] in the suites' own order; tasks of no suite
    go to suite ''. Uses only static registry metadata (no data is loaded)."""
    from .registry import TASKS

    suites: dict[str, dict[str, list[str]]] = {}
    order: dict[str, int] = {}
    for task in tasks:
        try:
            meta = TASKS.get(task).meta
        except Exception:
            meta = {}
        suite = meta.get("suite") or ""
        group = (meta.get("group") or "").split("/", 1)[-1] if suite else ""
        suites.setdefault(suite, {}).setdefault(group, []).append(task)
    try:
        from tasks.suites import SUITES, suite_config, suite_task_ids

        for suite in suites:
            if suite in SUITES:  # suites with a config know their task and group order
                order.update({t: i for i, t in enumerate(suite_task_ids(suite))})
                groups = suite_config(suite).get("group_order", [])
                suites[suite] = {g: sorted(suites[suite][g], key=lambda t: order.get(t, 0)) for g in groups if g in suites[suite]}
    except ImportError:
        pass
    return sorted(((k, list(v.items())) for k, v in suites.items()), key=lambda kv: (kv[0] == "", kv[0]))


def suite_markdown(long: pd.DataFrame, suite: str, groups: list[tuple[str, list[str]]]) -> tuple[str, list[str]]:
    """Per-task columns, then one mean per group and the suite mean.

    A group mean is shown only when the row has every task of the group that this table holds;
    the VTAB-1k mean is the mean of the group means (as in the VTAB and PEFT papers)."""
    tasks = [t for _, ts in groups for t in ts]
    stats = {(r.row, r.task): (r.mean, (r.ci_high - r.ci_low) / 2, int(r.n)) for r in long.itertuples()}
    rows = sorted({r for r, _ in stats})
    notes = []
    group_cols = [g for g, _ in groups] if suite in ("vtab1k", "fgvc") and (len(groups) > 1 or suite == "vtab1k") else []
    try:
        from tasks.suites import SUITES, suite_task_ids

        full = suite_task_ids(suite) if suite in SUITES else []
    except ImportError:
        full = []
    for g, ts in groups:
        all_in_group = [t for t in full if t.split("/", 1)[1] in _group_members(suite, g)] if full else ts
        if full and len(ts) < len(all_in_group):
            notes.append(f"{_group_title(g)} mean over {len(ts)} of its {len(all_in_group)} tasks (the others have no results)")
    suite_header = "mean of group means" if group_cols else "mean"
    header = ["backbone", *[t.split("/", 1)[-1] for t in tasks], *[_group_title(g) for g in group_cols], suite_header]
    table_rows = []
    for row in rows:
        values = {t: stats.get((row, t), (float("nan"), None, 0)) for t in tasks}
        group_means = [_mean_unless_missing([values[t][0] for t in ts]) for _, ts in groups]
        overall = _mean_unless_missing(group_means if group_cols else [values[t][0] for t in tasks])
        cells = [format_cell(*values[t]) for t in tasks] + [format_cell(m, None, 1) for m in (group_means if group_cols else [])]
        table_rows.append((overall, row, cells + [format_cell(overall, None, 1)]))
    table_rows.sort(key=lambda r: (math.isnan(r[0]), -r[0] if not math.isnan(r[0]) else 0, r[1]))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join([f"`{row}`", *cells]) + " |" for _, row, cells in table_rows]
    return "\n".join(lines) + "\n", notes


def _mean_unless_missing(values: list[float]) -> float:
    """The mean, or NaN when any value is missing (a missing task is never averaged as zero)."""
    return float("nan") if any(math.isnan(v) for v in values) else sum(values) / len(values)


def _group_title(group: str) -> str:
    return {"fgvc": "FGVC"}.get(group, group.capitalize())


def _group_members(suite: str, group: str) -> list[str]:
    from tasks.suites import suite_config

    return [t["name"] for t in suite_config(suite)["tasks"] if t["group"] == group]


def markdown_table(long: pd.DataFrame, tasks: list[str], first_header: str = "backbone") -> str:
    if long.empty:
        return "_no finished cells_\n"
    parts = []
    for suite, groups in task_layout(tasks):
        table, notes = suite_markdown(long[long["task"].isin([t for _, ts in groups for t in ts])], suite, groups)
        title = {"vtab1k": "VTAB-1k (top-1 %, test; Natural / Specialized / Structured means, then the mean of the three)", "fgvc": "FGVC (top-1 %, test)",
                 "icl": "In-context regression (squared error / d at k = 2d in-context examples; lower is better)"}.get(suite)
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
    """One table per method (metric: each record's primary metric, top-1 % for classification)."""
    if df.empty:
        return "_no records_\n"
    tasks = sorted(df["task"].dropna().unique())
    parts = []
    for method in sorted(df["method"].dropna().unique()):
        long = metric_table(df, method)
        present = [t for t in tasks if t in set(long["task"])] if not long.empty else []
        parts.append(f"### {method}\n\n" + markdown_table(long, present or tasks))
    return "\n".join(parts)
