"""The results frame every analysis reads, and the selections ("tables") they run on.

Why one module: the CLI, the published page and a user's notebook must analyse the same numbers.
Everything starts from the flat records frame (``harness.aggregate.records_frame`` / ``frame_for``)
or from its per-cell statistics (``harness.scores.cell_stats``: mean over seeds, interval, z,
rank); :func:`cell_table` accepts either. A *table* is one method and a set of tasks (a suite, a
task group, or the user's own list), exactly like a tab of the page.

Missing cells are never filled: a test that needs a complete backbone x task block gets the
largest one :func:`complete_block` finds and names what it left out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import BobError, did_you_mean


def load(*sweeps: str, results_root: str = "results") -> pd.DataFrame:
    """The records frame of ``sweeps`` (names, folders or compacted ``.parquet`` files), with the
    full records (the cost analyses read their ``adaptation`` blocks)."""
    from ..aggregate import frame_for

    df, _ = frame_for(list(sweeps), results_root, with_json=True)
    if df.empty:
        raise BobError(f"no records in {', '.join(sweeps)}; check the sweep names (`bob status SWEEP`)")
    return df


def is_stats(frame: pd.DataFrame) -> bool:
    """True for a per-cell statistics frame (``cell_stats``), False for a records frame."""
    return {"mean", "row", "task", "method"} <= set(frame.columns) and "primary_value" not in frame


def cell_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (method, task, backbone row): mean over seeds, interval, n, z, rank and ``good`` (the
    mean's goodness: larger is better whatever the metric's declared direction)."""
    from ..scores import cell_stats, goodness, rank_by_task, zscore_by_task

    stats = frame if is_stats(frame) else cell_stats(frame)
    if stats.empty:
        return stats.assign(good=pd.Series(dtype=float), z=pd.Series(dtype=float), rank=pd.Series(dtype=float))
    if "z" not in stats:
        stats = zscore_by_task(stats)
    if "rank" not in stats:
        stats = rank_by_task(stats)
    return stats.assign(good=goodness(stats).to_numpy())


@dataclass
class Table:
    """One method's cells on a set of tasks: what a significance test, a win rate or a correlation
    runs on. ``label`` names it in messages ("linear · vtab1k")."""

    method: str
    tasks: list[str]
    stats: pd.DataFrame
    label: str

    @property
    def rows(self) -> list[str]:
        return sorted(self.stats["row"].unique())

    def wide(self, value: str = "good") -> pd.DataFrame:
        """Tasks x backbone rows of ``value`` (NaN where a backbone lacks the task)."""
        return self.stats.pivot(index="task", columns="row", values=value).reindex(index=self.tasks).sort_index(axis=1)


def tab_of(group: str | None) -> str:
    """The page tab of a task group (``vtab1k/natural`` -> ``vtab1k``); the same rule as the page."""
    return (group or "other").split("/")[0]


def select(frame: pd.DataFrame, method: str | None = None, suite: str | None = None, group: str | None = None,
           tasks: Sequence[str] | None = None) -> Table:
    """The table of ``method`` restricted to a suite (``vtab1k``: its declared tasks, or the tasks
    whose group sits under that tab), a task group (``vtab1k/natural``) or an explicit task list.
    A name that matches nothing is a one-line error listing what there is."""
    stats = cell_table(frame)
    if stats.empty:
        raise BobError("no finished (ok) cells to analyse")
    methods = sorted(stats["method"].unique())
    if method is None:
        if len(methods) > 1:
            raise BobError(f"these records hold several methods ({', '.join(methods)}); pick one with --method")
        method = methods[0]
    if method not in methods:
        raise BobError(f"method '{method}' has no finished cells here{did_you_mean(method, methods)}; present: {', '.join(methods)}")
    sub = stats[stats["method"] == method]
    label = [method]
    if suite:
        from ..suites import suite_of_task

        declared = {t for t in sub["task"].unique() if (s := suite_of_task(t)) is not None and s.name == suite}
        by_tab = set(sub.loc[sub["task_group"].map(tab_of) == suite, "task"])
        keep = declared | by_tab
        if not keep:
            tabs = sorted(set(sub["task_group"].map(tab_of)))
            raise BobError(f"suite '{suite}' has no tasks in {method}'s records{did_you_mean(suite, tabs)}; present: {', '.join(tabs)}")
        sub = sub[sub["task"].isin(keep)]
        label.append(suite)
    if group:
        groups = sorted(sub["task_group"].dropna().unique())
        if group not in groups:
            raise BobError(f"task group '{group}' has no tasks in {method}'s records{did_you_mean(group, groups)}; present: {', '.join(groups)}")
        sub = sub[sub["task_group"] == group]
        label.append(group)
    if tasks:
        present = sorted(sub["task"].unique())
        unknown = [t for t in tasks if t not in present]
        if unknown:
            raise BobError(f"task '{unknown[0]}' has no finished cells for {method}{did_you_mean(unknown[0], present)}; present: {', '.join(present)}")
        sub = sub[sub["task"].isin(list(tasks))]
        label.append(f"{len(set(tasks))} selected tasks")
    if len(label) == 1:
        label.append("all tasks")
    return Table(method, sorted(sub["task"].unique()), sub.reset_index(drop=True), " · ".join(label))


@dataclass
class Block:
    """A complete backbone x task block (no missing cell) and what was left out to get it."""

    values: pd.DataFrame  # tasks x backbones
    left_out_rows: list[str] = field(default_factory=list)
    left_out_tasks: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.values.shape[0]

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def left_out_text(self) -> str:
        parts = []
        if self.left_out_rows:
            parts.append(f"{len(self.left_out_rows)} backbone(s) lacking tasks left out ({_names(self.left_out_rows)})")
        if self.left_out_tasks:
            parts.append(f"{len(self.left_out_tasks)} task(s) lacking backbones left out ({_names(self.left_out_tasks)})")
        return "; ".join(parts)


def _names(names: Iterable[str], at_most: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:at_most]) + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


def complete_block(wide: pd.DataFrame) -> Block:
    """The largest complete block found greedily: repeatedly drop the backbone or the task with
    the largest share of missing cells (fewest present cells breaks ties, then the name). Missing
    values are never imputed; a backbone dropped here is named, not ranked last."""
    values = wide.copy()
    rows_out: list[str] = []
    tasks_out: list[str] = []
    while values.size and values.isna().to_numpy().any():
        miss = values.isna()
        by_row = [(miss[c].mean(), -int((~miss[c]).sum()), 1, str(c)) for c in values.columns]
        by_task = [(miss.loc[t].mean(), -int((~miss.loc[t]).sum()), 0, str(t)) for t in values.index]
        worst = max(by_row + by_task)
        if worst[2] == 1:
            rows_out.append(worst[3])
            values = values.drop(columns=[worst[3]])
        else:
            tasks_out.append(worst[3])
            values = values.drop(index=[worst[3]])
    return Block(values, sorted(rows_out), sorted(tasks_out))


def row_labels(ok: pd.DataFrame) -> np.ndarray:
    """Each ok record's table row, as ``cell_stats`` names it: the backbone label, plus the
    hyper-parameters (its default label) when the backbone ran several settings with the method."""
    configs = ok.groupby(["method", "backbone_label"])["hparams"].transform("nunique").to_numpy()
    label = ok["backbone_label"].astype(str)
    return np.where(configs == 1, label, label + " " + ok["hparams"].astype(str))


def seed_values(df: pd.DataFrame) -> pd.DataFrame:
    """The ok records as (method, task, row, seed, value, good): one row per seed, with the same
    row labels as ``cell_stats`` (a backbone that ran several hyper-parameter settings gets one
    row per setting) and each value's goodness by its task's declared direction."""
    from ..scores import spec_of_row

    if is_stats(df):
        raise BobError("this analysis needs the records (seed values), not per-cell statistics; pass the records frame (harness.analysis.load)")
    ok = df[df["status"] == "ok"].reset_index(drop=True) if "status" in df else df.iloc[0:0]
    if ok.empty:
        return pd.DataFrame(columns=["method", "task", "row", "seed", "value", "good"])
    row = row_labels(ok)
    cache: dict[tuple, object] = {}
    goods = []
    for spec_json, metric, hib, value in zip(ok.get("primary_spec", pd.Series([None] * len(ok))), ok["primary_metric"],
                                             ok.get("higher_is_better", pd.Series([True] * len(ok))), ok["primary_value"].astype(float)):
        key = (spec_json, metric, hib)
        if key not in cache:
            cache[key] = spec_of_row({"primary_spec": spec_json, "primary_metric": metric, "higher_is_better": hib})
        goods.append(cache[key].goodness(value))
    return pd.DataFrame({"method": ok["method"], "task": ok["task"], "row": row, "seed": ok["seed"],
                         "value": ok["primary_value"].astype(float), "good": np.asarray(goods, dtype=float)})


def record_blocks(df: pd.DataFrame, key: str) -> pd.Series:
    """Per ok record, its ``key`` block (e.g. ``adaptation``) parsed from ``record_json`` ({} when absent)."""
    if "record_json" not in df:
        raise BobError(f"the records frame has no full records (record_json), so no '{key}' blocks; load it with harness.analysis.load")
    return df["record_json"].map(lambda text: (json.loads(text).get(key) or {}) if isinstance(text, str) else {})
