"""Is the first backbone really better than the second? Friedman, Nemenyi and Wilcoxon-Holm.

The procedure of Demšar (2006, JMLR 7) for comparing several models over several data sets: the
Friedman test over backbones across tasks (scipy), and only when it rejects, post-hoc pairwise
tests (scikit-posthocs): Nemenyi (all pairs, mean ranks, drawn as the critical-difference
diagram) and the Wilcoxon signed-rank test with Holm's correction (Benavoli et al. 2016 argue for
it: a pair's verdict does not depend on which other backbones are in the table). No test statistic
is written here by hand.

Conventions, declared in every result (``assumptions``):
- a task's value for a backbone is its mean over seeds, turned into *goodness* by the metric's
  declared direction (larger is better), so rank 1 is the best backbone on that task;
- the tests need a complete block: backbones lacking tasks (or tasks lacking backbones) are left
  out and named, never imputed (``frame.complete_block``);
- with too few backbones or tasks a test is not run, and its result carries one line saying what
  is missing instead of a p-value (:class:`TestResult.message`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .frame import Block, Table, complete_block, select

ALPHA = 0.05
MIN_BACKBONES = 3  # the Friedman test compares at least three (two: `bob compare`)
MIN_TASKS = 5  # below this the chi-square approximation of the Friedman statistic says little (Demšar: n > 10, k > 5 is safe)
POSTHOCS = ("nemenyi", "wilcoxon-holm")
POSTHOC_TITLES = {"nemenyi": "Nemenyi", "wilcoxon-holm": "Wilcoxon-Holm"}


@dataclass
class TestResult:
    """One test on one table. ``pvalue`` is None exactly when ``message`` says why it was not run."""

    name: str
    statistic: float | None
    pvalue: float | None
    n_tasks: int
    n_backbones: int
    alpha: float
    message: str | None = None

    @property
    def ran(self) -> bool:
        return self.pvalue is not None

    @property
    def rejected(self) -> bool | None:
        return None if self.pvalue is None else bool(self.pvalue < self.alpha)

    def summary(self) -> str:
        if not self.ran:
            return self.message or f"{self.name}: not run"
        verdict = "rejects" if self.rejected else "does not reject"
        return (f"{self.name}: statistic {self.statistic:.3f}, p = {_p(self.pvalue)} over {self.n_tasks} tasks x "
                f"{self.n_backbones} backbones; {verdict} 'all backbones are equal' at alpha = {self.alpha:g}")


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def friedman_test(block: pd.DataFrame, alpha: float = ALPHA, label: str = "") -> TestResult:
    """The Friedman test (scipy.stats.friedmanchisquare) on a complete tasks x backbones block
    of goodness values. Needs >= 3 backbones and >= 5 tasks; otherwise the result names what is
    missing and carries no p-value."""
    from scipy import stats as ss

    n, k = block.shape
    where = f" ({label})" if label else ""
    if k < MIN_BACKBONES:
        return TestResult("Friedman", None, None, n, k, alpha,
                          f"Friedman test not run{where}: needs >= {MIN_BACKBONES} backbones with every task, has {k}"
                          + ("; compare two backbones with `bob compare A B`" if k == 2 else ""))
    if n < MIN_TASKS:
        return TestResult("Friedman", None, None, n, k, alpha,
                          f"Friedman test not run{where}: needs >= {MIN_TASKS} tasks that every compared backbone has, has {n}")
    values = block.to_numpy(dtype=float)
    if np.all(values == values[:, :1]):
        return TestResult("Friedman", None, None, n, k, alpha, f"Friedman test not run{where}: every backbone ties on every task")
    with np.errstate(invalid="ignore", divide="ignore"):
        res = ss.friedmanchisquare(*values.T)
    return TestResult("Friedman", float(res.statistic), float(res.pvalue), n, k, alpha)


def wilcoxon_min_tasks(k: int, alpha: float = ALPHA) -> int:
    """The fewest tasks with which the Wilcoxon signed-rank test, Holm-corrected over the
    k(k-1)/2 pairs, can reject at all: the smallest exact two-sided p-value is 2 / 2^n, and Holm
    multiplies the smallest of m p-values by m."""
    m = max(1, k * (k - 1) // 2)
    n = 1
    while 2.0 ** (1 - n) * m >= alpha:
        n += 1
    return n


def mean_ranks(block: pd.DataFrame) -> pd.Series:
    """Mean over tasks of each backbone's rank on the task (1 = best goodness; ties share the mean rank)."""
    from scipy import stats as ss

    ranks = ss.rankdata(-block.to_numpy(dtype=float), axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=block.columns, name="mean_rank").sort_values(kind="stable")


def nemenyi_pvalues(block: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Nemenyi p-values after Friedman (scikit_posthocs.posthoc_nemenyi_friedman)."""
    import scikit_posthocs as sp

    return sp.posthoc_nemenyi_friedman(block.astype(float))


def wilcoxon_holm_pvalues(block: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Wilcoxon signed-rank p-values over tasks, Holm-adjusted (scikit_posthocs.posthoc_wilcoxon).

    scikit-posthocs pairs observations by their order within each group, so the long frame is
    built with every backbone's tasks in the same order. Zero differences are split between the
    signs (``zsplit``, Demšar 2006 §3.1.3) so that two identical backbones get p = 1, not an error."""
    import scikit_posthocs as sp

    long = block.astype(float).melt(ignore_index=False, var_name="backbone", value_name="good")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = sp.posthoc_wilcoxon(long, val_col="good", group_col="backbone", zero_method="zsplit", p_adjust="holm")
    return p.reindex(index=block.columns, columns=block.columns).fillna(1.0)


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks, q_alpha * sqrt(k(k+1) / 6n) (Demšar eq. 5),
    with q_alpha the studentized range quantile / sqrt(2) from scipy."""
    from scipy import stats as ss

    q = ss.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def not_different_groups(pvalues: pd.DataFrame, alpha: float, order: list[str]) -> list[list[str]]:
    """The maximal sets of backbones in which no pair differs significantly (p >= alpha; a NaN
    p-value is no evidence of a difference) -- the crossbars of a critical-difference diagram,
    found as maximal cliques (networkx), like scikit-posthocs' diagram. Sorted by their best
    member's position in ``order``; a backbone different from all others is a group of its own."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(order)
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            p = pvalues.loc[a, b]
            if not (p < alpha):
                graph.add_edge(a, b)
    position = {name: i for i, name in enumerate(order)}
    groups = [sorted(c, key=position.__getitem__) for c in nx.find_cliques(graph)]
    return sorted(groups, key=lambda g: ([position[x] for x in g], len(g)))


def letters(groups: list[list[str]]) -> dict[str, str]:
    """A compact letter display: group i gets letter i ('a' = the group with the best member);
    backbones sharing a letter are not significantly different."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out: dict[str, str] = {}
    for i, group in enumerate(groups):
        mark = alphabet[i] if i < len(alphabet) else f"({i + 1})"
        for name in group:
            out[name] = out.get(name, "") + mark
    return out


@dataclass
class Significance:
    """The significance analysis of one table (method x tasks): Friedman, then the post-hoc tests.

    ``mean_ranks``: over the complete block (1 = best). ``pvalues[posthoc]``: the library's raw
    pairwise p-values, computed only after Friedman rejects (None otherwise, and where the test
    cannot reach alpha). ``groups[posthoc]``: sets of backbones not significantly different -- all
    backbones in one group when Friedman does not reject (no post-hoc difference is claimed then,
    as Demšar prescribes). ``messages``: one line per test that was not run, saying why."""

    label: str
    alpha: float
    block: Block
    friedman: TestResult
    mean_ranks: pd.Series
    pvalues: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    groups: dict[str, list[list[str]]] = field(default_factory=dict)
    cd: float | None = None
    messages: dict[str, str] = field(default_factory=dict)

    @property
    def backbones(self) -> list[str]:
        return list(self.mean_ranks.index)

    @property
    def tasks(self) -> list[str]:
        return list(self.block.values.index)

    @property
    def ran(self) -> bool:
        return self.friedman.ran

    def letters(self, posthoc: str = "nemenyi") -> dict[str, str]:
        return letters(self.groups.get(posthoc) or [])

    def sig_matrix(self, posthoc: str = "nemenyi") -> pd.DataFrame:
        """The p-values a diagram draws: the post-hoc's, or all ones when Friedman did not reject."""
        p = self.pvalues.get(posthoc)
        if p is None or not self.friedman.rejected:
            return pd.DataFrame(1.0, index=self.backbones, columns=self.backbones)
        return p.reindex(index=self.backbones, columns=self.backbones)

    @property
    def assumptions(self) -> str:
        left = self.block.left_out_text()
        if not self.ran:
            return f"Sample: {self.block.n} tasks x {self.block.k} backbones with every one of those tasks" + (f"; {left}." if left else ".")
        text = (f"Tasks are the independent samples (n = {self.block.n} tasks, k = {self.block.k} backbones); each value is a "
                f"backbone's mean over seeds on a task, compared by rank within the task (direction as declared). "
                f"Friedman's chi-square approximation (scipy), alpha = {self.alpha:g}"
                + (" (approximate with fewer than 10 tasks)" if 0 < self.block.n < 10 else "")
                + "; post-hoc tests only after it rejects: Nemenyi on mean ranks (critical difference, Demšar 2006) and "
                "Wilcoxon signed-rank per pair with Holm's correction, zero differences split (scikit-posthocs).")
        return text + (f" Complete block only: {left}." if left else "")

    def summary(self) -> str:
        """One line: the Friedman verdict, or what is missing."""
        return f"{self.label}: " + self.friedman.summary().replace(f" ({self.label})", "")

    def table(self) -> pd.DataFrame:
        """Backbone, mean rank and the significance letters of each post-hoc test."""
        out = pd.DataFrame({"backbone": self.backbones, "mean_rank": self.mean_ranks.to_numpy()})
        for posthoc in POSTHOCS:
            marks = self.letters(posthoc)
            out[f"group_{posthoc}"] = [marks.get(b, "") for b in self.backbones]
        return out

    def plot(self, posthoc: str = "nemenyi", ax: Any = None):
        """The critical-difference diagram (scikit-posthocs); see :func:`harness.analysis.cd.cd_diagram`."""
        from .cd import cd_diagram

        return cd_diagram(self, posthoc, ax=ax)

    def _repr_markdown_(self) -> str:  # notebooks
        lines = [f"**{self.label}**: {self.friedman.summary()}", "", "| backbone | mean rank | Nemenyi | Wilcoxon-Holm |", "|---|---:|---|---|"]
        for r in self.table().to_dict("records"):
            lines.append(f"| {r['backbone']} | {r['mean_rank']:.2f} | {r['group_nemenyi']} | {r['group_wilcoxon-holm']} |")
        return "\n".join(lines + [""] + [f"- {m}" for m in self.messages.values()])


def significance_of_block(block: Block | pd.DataFrame, alpha: float = ALPHA, label: str = "") -> Significance:
    """Friedman, Nemenyi and Wilcoxon-Holm on a complete tasks x backbones block of goodness values."""
    if isinstance(block, pd.DataFrame):
        block = complete_block(block)
    values = block.values
    friedman = friedman_test(values, alpha, label)
    ranks = mean_ranks(values) if values.size else pd.Series(dtype=float, name="mean_rank")
    order = list(ranks.index)
    result = Significance(label, alpha, block, friedman, ranks)
    if not friedman.ran:
        result.messages["friedman"] = friedman.message or ""
        for posthoc in POSTHOCS:
            result.pvalues[posthoc] = None
            result.groups[posthoc] = [order] if order else []
        return result
    result.cd = critical_difference(block.k, block.n, alpha)
    if not friedman.rejected:  # Demšar: no post-hoc test without a rejected Friedman null (and none is computed)
        result.pvalues = {posthoc: None for posthoc in POSTHOCS}
        result.groups = {posthoc: [order] for posthoc in POSTHOCS}
        result.messages["posthoc"] = f"Friedman does not reject at alpha = {alpha:g} ({label}): no post-hoc test, no pair is declared different"
        return result
    result.pvalues["nemenyi"] = nemenyi_pvalues(values)
    need = wilcoxon_min_tasks(block.k, alpha)
    if block.n >= need:
        result.pvalues["wilcoxon-holm"] = wilcoxon_holm_pvalues(values)
    else:
        result.pvalues["wilcoxon-holm"] = None
        result.messages["wilcoxon-holm"] = (f"Wilcoxon-Holm not run ({label}): with {block.n} tasks no pair of {block.k} backbones can reach "
                                            f"alpha = {alpha:g} after Holm's correction over {block.k * (block.k - 1) // 2} pairs; needs >= {need} tasks")
    for posthoc in POSTHOCS:
        p = result.pvalues[posthoc]
        result.groups[posthoc] = [order] if p is None else not_different_groups(p, alpha, order)
    return result


def significance_of_table(table: Table, alpha: float = ALPHA) -> Significance:
    return significance_of_block(complete_block(table.wide("good")), alpha, table.label)


def significance(frame: pd.DataFrame, method: str | None = None, suite: str | None = None, group: str | None = None,
                 tasks: list[str] | None = None, alpha: float = ALPHA) -> Significance:
    """The significance analysis of one table of a records (or cell statistics) frame.

    >>> from harness.analysis import load, significance
    >>> sig = significance(load("my_sweep"), method="linear", suite="vtab1k")
    >>> print(sig.summary()); sig.table(); sig.plot()
    """
    return significance_of_table(select(frame, method, suite, group, tasks), alpha)
