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


def compact(store: ResultStore, out: Path | None = None) -> Path:
    """All records of a sweep in one Parquet file (``results/<sweep>.parquet``), written atomically."""
    import os
    import tempfile

    df = records_frame([store])
    out = Path(out) if out else store.folder.parent / f"{store.sweep}.parquet"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def metric_table(df: pd.DataFrame, method: str, metric: str | None = None) -> pd.DataFrame:
    """Long table: (row label, task) -> mean, std, n over seeds, from ok records of ``method``."""
    ok = df[(df["status"] == "ok") & (df["method"] == method)].copy()
    if ok.empty:
        return pd.DataFrame(columns=["row", "task", "mean", "std", "n"])
    col = f"metric.{metric}" if metric else "primary_value"
    if col not in ok:
        raise KeyError(metric)
    configs = ok.groupby("backbone_label")["hparams"].nunique()
    ok["row"] = [
        label if configs[label] == 1 else f"{label} {_short_hp(hp)}" for label, hp in zip(ok["backbone_label"], ok["hparams"])
    ]
    grouped = ok.groupby(["row", "task"])[col]
    out = grouped.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    return out


def _short_hp(hp_json: str) -> str:
    hp = json.loads(hp_json)
    return "[" + ", ".join(f"{k}={v}" for k, v in sorted(hp.items()) if k != "search") + "]" if hp else "[defaults]"


def wide_table(long: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame()
    wide = long.pivot(index="row", columns="task", values="mean").reindex(columns=tasks)
    wide["mean"] = wide[tasks].mean(axis=1, skipna=False)  # NaN unless every task is present
    return wide.sort_values("mean", ascending=False, na_position="last")


def format_cell(mean: float, std: float | None, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if n and n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.1f}"


def markdown_table(long: pd.DataFrame, tasks: list[str], first_header: str = "backbone") -> str:
    wide = wide_table(long, tasks)
    if wide.empty:
        return "_no finished cells_\n"
    stats = {(r.row, r.task): (r.mean, r.std, int(r.n)) for r in long.itertuples()}
    header = [first_header, *tasks, "mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row, values in wide.iterrows():
        cells = [format_cell(*stats[(row, t)]) if (row, t) in stats else MISSING for t in tasks]
        cells.append(format_cell(values["mean"], None, 1))
        lines.append("| " + " | ".join([f"`{row}`", *cells]) + " |")
    return "\n".join(lines) + "\n"


def csv_long(df: pd.DataFrame) -> str:
    frames = []
    for method in sorted(df.loc[df["status"] == "ok", "method"].dropna().unique()):
        long = metric_table(df, method)
        long.insert(0, "method", method)
        frames.append(long)
    if not frames:
        return "method,row,task,mean,std,n\n"
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
