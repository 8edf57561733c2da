"""Battle-of-the-Backbones scoring: per-task z-scores, overall score, mean rank, seed intervals.

All functions take the flat records table of ``aggregate.records_frame`` (ok records only are
used) and return plain DataFrames, so the numbers in a leaderboard can be recomputed from the
records with a few lines of pandas. Comparisons are always within one method: a kNN number
is never z-scored against a fine-tuning number.
"""
from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np
import pandas as pd

from .metrics import MetricSpec, spec_from

PARAM_BUCKETS = ((0, 10, "<10M"), (10, 30, "10-30M"), (30, 100, "30-100M"), (100, 300, "100-300M"), (300, math.inf, ">=300M"))
N_BOOTSTRAP = 2000
CI_LEVEL = 0.95


def param_bucket(params_m: float | None) -> str:
    if params_m is None or (isinstance(params_m, float) and math.isnan(params_m)):
        return "unknown"
    for lo, hi, label in PARAM_BUCKETS:
        if lo <= params_m < hi:
            return label
    return "unknown"


_BOOT_INDEX: dict[tuple[int, int, int], np.ndarray] = {}


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (NaN, NaN with fewer than 2 values).

    Deterministic (fixed RNG seed) so that republishing the same records gives the same page. The
    resampling indices depend only on (n, n_boot, seed) and are drawn once per size: identical to
    ``default_rng(seed).choice(values, (n_boot, n))``, without redrawing them for every group."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    idx = _BOOT_INDEX.get((n, n_boot, seed))
    if idx is None:
        idx = _BOOT_INDEX[(n, n_boot, seed)] = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def filter_backbones(df: pd.DataFrame, family: str | None = None, pretrain: str | None = None, data: str | None = None,
                     min_params: float | None = None, max_params: float | None = None) -> pd.DataFrame:
    """Rows whose backbone metadata match (substring, case-insensitive; parameter range in millions)."""
    keep = pd.Series(True, index=df.index)
    for column, wanted in (("family", family), ("pretrain_method", pretrain), ("pretrain_data", data)):
        if wanted:
            keep &= df[column].fillna("").str.lower().str.contains(wanted.lower(), regex=False)
    if min_params is not None:
        keep &= df["params_m"].fillna(-1) >= min_params
    if max_params is not None:
        keep &= df["params_m"].fillna(math.inf) <= max_params
    return df[keep]


LEGACY_COLUMNS = ["method", "task", "row", "mean", "ci_low", "ci_high", "n", "higher_is_better", "backbone", "task_group", "family",
                  "pretrain_method", "pretrain_data", "weights", "params_m", "gflops"]
SPEC_COLUMNS = ["metric", "direction", "target", "fmt", "metric_label"]
EXTRA_COLUMNS = ["backbone_label"]  # the row's backbone with its weights label, without a hyper-parameter suffix


def cell_stats(df: pd.DataFrame, hp_label: Callable[[str], str] = str) -> pd.DataFrame:
    """One row per (method, task, backbone row): mean over seeds, 95% bootstrap interval, n seeds,
    and the primary metric's declaration (metric, direction, target, fmt, label) from the records.

    A backbone that ran several hyper-parameter settings gets one row per setting, named
    ``"<backbone> <hp_label(hparams json)>"``. Written for a million records: groups are found
    once (no per-group DataFrames), and the bootstrap draws are shared by all groups of one size,
    which gives exactly the numbers of a fresh ``default_rng(0)`` per group."""
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[0:0]
    if ok.empty:
        return pd.DataFrame(columns=[*LEGACY_COLUMNS, *SPEC_COLUMNS, *EXTRA_COLUMNS])
    ok = ok.reset_index(drop=True)
    configs = ok.groupby(["method", "backbone_label"])["hparams"].transform("nunique")
    labels = {hp: hp_label(hp) for hp in ok.loc[configs > 1, "hparams"].unique()}
    suffix = ok["hparams"].map(lambda hp: labels.get(hp, "")).astype(str)
    ok = ok.assign(row=np.where(configs.to_numpy() == 1, ok["backbone_label"].astype(str), ok["backbone_label"].astype(str) + " " + suffix))
    values = ok["primary_value"].astype(float).to_numpy()
    deterministic = ok["deterministic"].eq(True).to_numpy() if "deterministic" in ok else np.zeros(len(ok), dtype=bool)
    columns = {c: ok[c].to_numpy() if c in ok else np.full(len(ok), None) for c in
               ("backbone", "backbone_label", "task_group", "family", "pretrain_method", "pretrain_data", "weights_resolved", "params_m", "gflops",
                "primary_spec", "primary_metric", "higher_is_better")}
    spec_cache: dict[tuple, MetricSpec] = {}
    rows = []
    indices = ok.groupby(["method", "task", "row"], sort=True).indices
    for key in sorted(indices):
        method, task, label = key
        pos = indices[key]
        v = values[pos]
        lo, hi = bootstrap_ci(v)
        first = pos[0]
        spec_key = (columns["primary_spec"][first], columns["primary_metric"][first], columns["higher_is_better"][first])
        spec = spec_cache.get(spec_key)
        if spec is None:
            spec = spec_cache[spec_key] = spec_of_row({"primary_spec": spec_key[0], "primary_metric": spec_key[1], "higher_is_better": spec_key[2]})
        rows.append({"method": method, "task": task, "row": label, "mean": float(v.mean()), "ci_low": lo, "ci_high": hi, "n": len(v),
                     "higher_is_better": spec.higher_is_better,
                     "backbone": columns["backbone"][first], "task_group": columns["task_group"][first], "family": columns["family"][first],
                     "pretrain_method": columns["pretrain_method"][first], "pretrain_data": columns["pretrain_data"][first],
                     "weights": columns["weights_resolved"][first], "params_m": columns["params_m"][first], "gflops": columns["gflops"][first],
                     "metric": spec.name, "direction": spec.direction, "target": spec.target, "fmt": spec.fmt, "metric_label": spec.title(),
                     "backbone_label": columns["backbone_label"][first], "n_deterministic": int(deterministic[pos].sum())})
    return pd.DataFrame(rows)


def spec_of_row(row) -> MetricSpec:
    """The primary metric's declaration of a flat record row (see ``aggregate.flatten``)."""
    text = row.get("primary_spec") if hasattr(row, "get") else None
    if isinstance(text, str) and text:
        return spec_from(row.get("primary_metric") or "value", json.loads(text))
    return MetricSpec(row.get("primary_metric") or "value", "higher" if bool(row.get("higher_is_better", True)) else "lower")


def spec_from_columns(metric, direction, target, fmt) -> MetricSpec:
    """A MetricSpec from the declaration columns of a stats row (``SPEC_COLUMNS``)."""
    return MetricSpec(metric or "value", direction, None if direction != "target" else float(target), fmt=fmt or ".1f")


def task_specs(stats: pd.DataFrame) -> dict[str, MetricSpec]:
    """Each task's primary-metric declaration, from a stats / metric_table frame."""
    return {r.task: spec_from_columns(r.metric, r.direction, r.target, r.fmt) for r in stats.drop_duplicates("task").itertuples()}


def spec_of_stats(stats: pd.DataFrame) -> pd.Series:
    """Per stats row, its MetricSpec (rebuilt from the declaration columns)."""
    if "direction" not in stats:
        return pd.Series([MetricSpec("value", "higher" if h else "lower") for h in stats.get("higher_is_better", pd.Series(True, index=stats.index))],
                         index=stats.index)
    return pd.Series([spec_from_columns(m, d, t, f) for m, d, t, f in zip(stats["metric"], stats["direction"], stats["target"], stats["fmt"])],
                     index=stats.index)


def goodness(stats: pd.DataFrame, column: str = "mean") -> pd.Series:
    """Larger is better for every declared direction: the value, its negation, or minus the distance to the target."""
    specs = spec_of_stats(stats)
    return pd.Series([spec.goodness(v) for spec, v in zip(specs, stats[column].astype(float))], index=stats.index, dtype=float)


def zscore_by_task(stats: pd.DataFrame) -> pd.DataFrame:
    """Adds ``z``: per (method, task), the z-score across backbones (ddof=0) of the metric's
    goodness (value, -value, or -|value - target| as declared), so that z > 0 is always better.

    A task where every backbone scores the same (std 0) contributes z = 0 to everyone."""
    out = stats.copy()
    good = goodness(out)
    grouped = good.groupby([out["method"], out["task"]])
    mu, sd = grouped.transform("mean"), grouped.transform(lambda s: s.std(ddof=0))
    out["z"] = np.where(sd > 0, (good - mu) / sd.where(sd > 0, 1.0), 0.0)
    return out


def rank_by_task(stats: pd.DataFrame) -> pd.DataFrame:
    """Adds ``rank``: 1 = best on that (method, task) by the declared direction; ties share the average rank."""
    out = stats.copy()
    out["rank"] = goodness(out).groupby([out["method"], out["task"]]).rank(ascending=False, method="average")
    return out


def csv_columns(stats: pd.DataFrame) -> list[str]:
    """The published column order: the columns of bob 0.1 first (so old readers keep working), then the declarations."""
    first = [c for c in (*LEGACY_COLUMNS, "z", "rank") if c in stats]
    return first + [c for c in stats.columns if c not in first]


def overall_scores(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (method, backbone row): BoB score (mean z over the tasks it has), mean rank, task coverage.

    ``complete`` is False when the backbone lacks some of the method's tasks; those tasks are
    excluded from its means (never counted as zero) and the tables say so."""
    if stats.empty:
        return pd.DataFrame(columns=["method", "row", "score", "mean_rank", "n_tasks", "tasks_total", "complete"])
    scored = rank_by_task(zscore_by_task(stats))
    total = scored.groupby("method")["task"].nunique()
    meta_cols = ["backbone", "family", "pretrain_method", "pretrain_data", "weights", "params_m", "gflops"]
    rows = []
    for (method, row), group in scored.groupby(["method", "row"]):
        first = group.iloc[0]
        rows.append({"method": method, "row": row, "score": float(group["z"].mean()), "mean_rank": float(group["rank"].mean()),
                     "n_tasks": int(group["task"].nunique()), "tasks_total": int(total[method]),
                     **{c: first.get(c) for c in meta_cols}})
    out = pd.DataFrame(rows)
    out["complete"] = out["n_tasks"] == out["tasks_total"]
    out["param_bucket"] = out["params_m"].map(param_bucket)
    out["rank_in_bucket"] = out.groupby(["method", "param_bucket"])["score"].rank(ascending=False, method="min").astype(int)
    return out.sort_values(["method", "score"], ascending=[True, False]).reset_index(drop=True)
