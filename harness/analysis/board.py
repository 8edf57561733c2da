"""What the leaderboard's own tables carry from the analyses: the mean win rate and the
significance group of each backbone, beside the BoB score and the mean rank (leaderboard.md,
table.tex and the page's Overall tab), with one note per method saying how they were computed or
why there are no groups."""
from __future__ import annotations

import pandas as pd

from .frame import Table, cell_table, tab_of
from .significance import ALPHA, POSTHOC_TITLES, Significance, significance_of_table
from .winrate import task_win_rates

GROUP_POSTHOC = "nemenyi"  # the letters in the tables: Demšar's all-pairs test, the one the CD diagram draws


def method_tables(stats: pd.DataFrame) -> dict[str, Table]:
    """Per method, the table of all its tasks (what the overall tables rank)."""
    return {m: Table(m, sorted(sub["task"].unique()), sub.reset_index(drop=True), f"{m} · all tasks") for m, sub in stats.groupby("method")}


def group_note(sig: Significance, posthoc: str = GROUP_POSTHOC) -> str:
    """One line under a method's table: how the groups were found, or what is missing."""
    if not sig.ran:
        return f"No significance groups: {sig.friedman.message}."
    left = sig.block.left_out_text()
    left = f" ({left}: no group)" if left else ""
    if not sig.friedman.rejected:
        return (f"Significance: Friedman p = {sig.friedman.pvalue:.2g} over {sig.block.n} tasks x {sig.block.k} backbones does not reject at "
                f"alpha = {sig.alpha:g}: all in group a (not significantly different){left}.")
    return (f"Significance groups: backbones sharing a letter are not significantly different (Friedman p = {sig.friedman.pvalue:.2g} "
            f"over {sig.block.n} tasks x {sig.block.k} backbones, then {POSTHOC_TITLES[posthoc]}, alpha = {sig.alpha:g}){left}.")


def annotate_overall(overall: pd.DataFrame, stats: pd.DataFrame, alpha: float = ALPHA) -> tuple[pd.DataFrame, dict[str, str], dict[str, Significance]]:
    """``overall`` with ``win_rate`` and ``sig_group`` columns, the significance note per method
    (:func:`group_note`) and the significance results."""
    out = overall.copy()
    if out.empty or stats.empty:
        return out.assign(win_rate=pd.Series(dtype=float), sig_group=pd.Series(dtype=str)), {}, {}
    cells = cell_table(stats)
    win, group, notes, results = {}, {}, {}, {}
    for method, table in method_tables(cells).items():
        rates = task_win_rates(table.wide("good")).mean(axis=0, skipna=True)
        win.update({(method, r): float(v) for r, v in rates.items()})
        sig = significance_of_table(table, alpha)
        results[method] = sig
        marks = sig.letters(GROUP_POSTHOC) if sig.ran else {}
        group.update({(method, r): marks.get(r, "") for r in table.rows})
        notes[method] = group_note(sig)
    keys = list(zip(out["method"], out["row"]))
    out["win_rate"] = [win.get(k, float("nan")) for k in keys]
    out["sig_group"] = [group.get(k, "") for k in keys]
    return out, notes, results


__all__ = ["annotate_overall", "group_note", "method_tables", "tab_of"]
