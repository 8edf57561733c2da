"""HELM's mean win rate, beside the BoB score and the mean rank.

Rule (HELM, ``compute_aggregate_row_win_rates``, declared on the page and in leaderboard.md): on
each task, a backbone's win rate is the share of the *other backbones that have that task* it beats
(by the mean over seeds, in the metric's declared direction); a tie counts half a win. Its mean win
rate is the mean over the tasks it has. A missing cell is neither a loss nor a zero: that task
is simply not compared for that backbone, and a task with fewer than two backbones is skipped.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

RULE = ("HELM mean win rate: per task, the share of the other backbones with that task that a backbone beats "
        "(ties count half); averaged over the tasks it has. A missing cell is not compared (never a loss or a zero).")


def task_win_rates(wide: pd.DataFrame) -> pd.DataFrame:
    """Tasks x backbones of per-task win rates from tasks x backbones goodness values (NaN = missing)."""
    from scipy import stats as ss

    out = pd.DataFrame(np.nan, index=wide.index, columns=wide.columns)
    for task, values in wide.iterrows():
        present = values.dropna()
        if len(present) < 2:
            continue
        # ascending average ranks: rank - 1 = backbones beaten + half of those tied (HELM's wins)
        ranks = ss.rankdata(np.round(present.to_numpy(dtype=float), 12), method="average")
        out.loc[task, present.index] = (ranks - 1) / (len(present) - 1)
    return out


def mean_win_rate(wide: pd.DataFrame) -> pd.Series:
    """Per backbone, the mean over its tasks of the per-task win rate (NaN when never compared)."""
    return task_win_rates(wide).mean(axis=0, skipna=True).rename("win_rate")


def win_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """(method, row, win_rate, n_tasks) for every method of a records or cell-statistics frame."""
    from .frame import cell_table

    stats = cell_table(frame)
    rows = []
    for method, sub in stats.groupby("method"):
        wide = sub.pivot(index="task", columns="row", values="good")
        per_task = task_win_rates(wide)
        for row in wide.columns:
            rows.append({"method": method, "row": row, "win_rate": float(per_task[row].mean()) if per_task[row].notna().any() else float("nan"),
                         "n_tasks": int(per_task[row].notna().sum())})
    return pd.DataFrame(rows, columns=["method", "row", "win_rate", "n_tasks"])
