"""``harness.analysis``: conclusions a reviewer can trust, as a small API over a results frame.

The issue calls it ``bob.analysis``; bob's package is ``harness``, so the API is
``from harness.analysis import ...``. The CLI (``bob compare``, ``bob significance``) and the
published page call the same functions, so a notebook reproduces every number::

    from harness.analysis import load, significance, compare, win_rates, pareto_fronts, task_correlation
    df = load("my_sweep")                                   # the records frame (or several sweeps)
    sig = significance(df, method="linear", suite="vtab1k")  # Friedman, Nemenyi, Wilcoxon-Holm
    print(sig.summary()); sig.table(); sig.plot()            # CD diagram (scikit-posthocs)
    print(compare(df, "timm:vit_small_patch16_224.augreg_in21k", "timm:resnet50.a1_in1k", method="linear").to_text())
    win_rates(df)                                            # HELM mean win rate per (method, backbone)
    pareto_fronts(df, tasks=[...]).plot()                    # metric vs params, GFLOPs, trainable, memory, throughput
    task_correlation(df, method="linear").plot()             # clustered Spearman heatmap

Every test states its assumptions and sample size; with too few tasks or seeds it returns one
line naming what is missing instead of a p-value. Importing this package is light (numpy and
pandas); scipy, scikit-posthocs and matplotlib load when a function needs them.
"""
from .cd import cd_diagram
from .compare import Comparison, compare
from .correlation import Correlation, spearman_matrix, task_correlation
from .frame import Block, Table, cell_table, complete_block, load, select, seed_values
from .pareto import COST_AXES, ParetoFronts, pareto_fronts, pareto_mask
from .significance import (ALPHA, MIN_BACKBONES, MIN_TASKS, Significance, TestResult, critical_difference, friedman_test,
                           significance, significance_of_block)
from .winrate import mean_win_rate, task_win_rates, win_rates

__all__ = [
    "ALPHA", "Block", "COST_AXES", "Comparison", "Correlation", "MIN_BACKBONES", "MIN_TASKS", "ParetoFronts", "Significance", "Table",
    "TestResult", "cd_diagram", "cell_table", "compare", "complete_block", "critical_difference", "friedman_test", "load",
    "mean_win_rate", "pareto_fronts", "pareto_mask", "seed_values", "select", "significance", "significance_of_block",
    "spearman_matrix", "task_correlation", "task_win_rates", "win_rates",
]
