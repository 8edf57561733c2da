"""harness.analysis (issue 26): significance, critical-difference diagrams, win rates, Pareto fronts,
task correlations, ``bob compare`` / ``bob significance`` and the analyses on the published page.

Everything runs on synthetic records written in the real record format (a known effect, pure
noise, ties and missing cells), checked against the statistics libraries and hand computations."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness.analysis import (compare, critical_difference, friedman_test, load, mean_win_rate, pareto_fronts, pareto_mask, seed_values,
                              significance, significance_of_block, task_correlation, win_rates)
from harness.cli import main
from harness.store import ResultStore

TASKS = [f"syn/t{i:02d}" for i in range(10)]


def write_records(folder: Path, effects: dict[str, float], tasks=TASKS, seeds=(0, 1, 2), methods=("linear",), noise=0.3, seed=0,
                  metric=None, skip=(), adaptation=True, hparams=None, prefix="r") -> ResultStore:
    """Records of backbones whose value on a task is the task's base + the backbone's effect + seed
    noise; ``skip`` = (backbone, task) cells left missing; ``metric`` = a declaration for every record."""
    rng = np.random.default_rng(seed)
    store = ResultStore(folder)
    base = {t: 50 + 3 * i for i, t in enumerate(tasks)}
    i = 0
    for method in methods:
        for b, (bb, effect) in enumerate(effects.items()):
            for task in tasks:
                if (bb, task) in skip:
                    continue
                for s in seeds:
                    value = float(base[task] + effect + rng.normal(0, noise))
                    record = {"schema": "bob.run_record/1", "id": f"{prefix}{i}", "sweep": folder.name, "status": "ok", "backbone": bb, "method": method,
                              "task": task, "seed": s, "weights": "pretrained", "spec": {"hparams": dict(hparams or {})}, "hparams": {"img_size": 32},
                              "metrics": {"top1": value}, "primary_metric": {"name": "top1", "value": value},
                              "backbone_meta": {"weights": "pretrained", "family": "vit", "pretrain_method": "supervised", "pretrain_data": "in1k",
                                                "params_m": 5.0 * (b + 1), "gflops": 1.0 + b},
                              "task_meta": {"group": "syn/structured" if task >= "syn/t05" else "syn/natural"},
                              "protocol": {"selected_on": "val200", "reported_on": "test"}}
                    if metric:
                        record["metric_specs"] = {"top1": metric}
                    if adaptation:
                        record["adaptation"] = {"trainable_params_with_head": 1000 * (b + 1) * (2 if method == "finetune" else 1),
                                                "peak_memory_mb": 100.0 + 10 * b, "peak_memory_kind": "cpu_peak_rss", "train_images_per_s": 500.0 - 40 * b}
                    store.write(record)
                    i += 1
    return store


# -- acceptance 1: a known effect is found; pure noise is not -------------------------------------------
def test_known_effect_friedman_rejects_and_posthoc_groups_the_equal_pair(tmp_path):
    store = write_records(tmp_path / "effect", {"timm:better": 4.0, "timm:same_a": 0.0, "timm:same_b": 0.0})
    sig = significance(load(str(store.folder)), method="linear")
    assert sig.friedman.ran and sig.friedman.rejected and sig.friedman.pvalue < 0.01
    assert sig.block.n == 10 and sig.block.k == 3
    assert sig.mean_ranks["timm:better"] == 1.0
    for posthoc in ("nemenyi", "wilcoxon-holm"):
        assert sorted(map(sorted, sig.groups[posthoc])) == [["timm:better"], ["timm:same_a", "timm:same_b"]], posthoc
        p = sig.pvalues[posthoc]
        assert p.loc["timm:better", "timm:same_a"] < 0.05 and p.loc["timm:same_a", "timm:same_b"] >= 0.05
    assert sig.letters("nemenyi") == {"timm:better": "a", "timm:same_a": "b", "timm:same_b": "b"}
    assert "n = 10 tasks, k = 3 backbones" in sig.assumptions
    result = CliRunner().invoke(main, ["significance", str(store.folder), "--method", "linear", "--plot", str(tmp_path / "cd.png")])
    assert result.exit_code == 0, result.output
    assert "rejects" in result.output and "does not reject" not in result.output
    assert (tmp_path / "cd.png").read_bytes()[:4] == b"\x89PNG"
    line = next(l for l in result.output.splitlines() if l.startswith("timm:better"))
    assert line.split()[-2:] == ["a", "a"]


def test_pure_noise_does_not_reject_in_at_least_90_percent_of_200_draws():
    kept = 0
    for draw in range(200):
        block = pd.DataFrame(np.random.default_rng(draw).normal(size=(10, 5)), index=[f"t{i}" for i in range(10)], columns=list("abcde"))
        result = friedman_test(block, alpha=0.05)
        assert result.ran and result.n_tasks == 10 and result.n_backbones == 5
        kept += not result.rejected
    assert 180 <= kept < 200  # at the stated level: about 5 % false rejections, never none at all
    # a draw Friedman does not reject: no post-hoc test is run, every backbone sits in one group
    block = pd.DataFrame(np.random.default_rng(0).normal(size=(10, 5)), columns=list("abcde"))
    sig = significance_of_block(block, label="noise")
    assert sig.friedman.ran and not sig.friedman.rejected
    assert sig.pvalues == {"nemenyi": None, "wilcoxon-holm": None} and sig.groups["nemenyi"] == [list(sig.mean_ranks.index)]
    assert "no post-hoc test" in sig.messages["posthoc"] and set(sig.letters().values()) == {"a"}


# -- acceptance 2: the CD diagram equals scikit-posthocs' on the same frame ------------------------------
@pytest.fixture(scope="module")
def graded_frame():
    rng = np.random.default_rng(23)  # distinct mean ranks (a drawn bar is read back by its members' ranks); a Wilcoxon group skips a rank
    effects = {"m0": 0.0, "m1": 0.3, "m2": 0.6, "m3": 1.4, "m4": 1.7, "m5": 2.6}
    return pd.DataFrame({m: e + rng.normal(0, 0.8, 14) for m, e in effects.items()}, index=[f"task{i}" for i in range(14)])


def test_cd_diagram_ranks_and_groups_equal_scikit_posthocs(graded_frame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    from harness.analysis.cd import diagram_groups

    sig = significance_of_block(graded_frame, label="graded")
    assert sig.friedman.rejected and sig.mean_ranks.nunique() == 6
    # scikit-posthocs on the same frame, its documented recipe: ranks over blocks, Nemenyi p-values, the diagram
    ranks = graded_frame.rank(axis=1, ascending=False).mean()
    pvals = sp.posthoc_nemenyi_friedman(graded_frame)
    fig, ax = plt.subplots()
    theirs = sp.critical_difference_diagram(ranks, pvals, ax=ax)
    plt.close(fig)
    their_groups = {frozenset(g) for g in diagram_groups(theirs, ranks.to_dict())}
    assert their_groups and all(len(g) > 1 for g in their_groups)
    our_groups = {frozenset(g) for g in sig.groups["nemenyi"] if len(g) > 1}
    assert our_groups == their_groups and len(our_groups) >= 2  # overlapping groups, not a trivial split
    pd.testing.assert_series_equal(sig.mean_ranks.sort_index(), ranks.sort_index(), check_names=False)
    # our drawing (scikit-posthocs with our ranks and the Friedman-gated p-values) shows the same
    fig, ours = sig.plot("nemenyi")
    drawn = [t.get_text() for t in ours["labels"]]
    assert sorted(next(m for m, r in ranks.items() if text in (f"{m} ({r:.2f})", f"({r:.2f}) {m}")) for text in drawn) == sorted(ranks.index)
    assert {frozenset(g) for g in diagram_groups(ours, sig.mean_ranks.to_dict())} == their_groups
    assert sorted(round(float(m.get_offsets()[0][0]), 9) for m in ours["markers"]) == sorted(round(float(r), 9) for r in ranks)
    plt.close(fig)
    assert sig.cd == pytest.approx(critical_difference(6, 14))
    assert critical_difference(5, 30) == pytest.approx(2.728 * np.sqrt(5 * 6 / (6 * 30)), rel=1e-3)  # Demšar's table: q_0.05 = 2.728 for k = 5
    # Wilcoxon-Holm: scikit-posthocs' pairwise test, grouped the same way
    long = graded_frame.melt(var_name="g", value_name="v")
    wp = sp.posthoc_wilcoxon(long, val_col="v", group_col="g", zero_method="zsplit", p_adjust="holm")
    fig, ax = plt.subplots()
    theirs = sp.critical_difference_diagram(ranks, wp, ax=ax)
    plt.close(fig)
    assert {frozenset(g) for g in sig.groups["wilcoxon-holm"] if len(g) > 1} == {frozenset(g) for g in diagram_groups(theirs, ranks.to_dict())}


# -- acceptance 3: mean win rate by hand, with ties and a missing cell ----------------------------------
def test_mean_win_rate_equals_a_hand_computation_with_ties_and_a_missing_cell():
    wide = pd.DataFrame({"A": [3.0, 5.0, np.nan], "B": [2.0, 5.0, 1.0], "C": [1.0, 4.0, 2.0]}, index=["t1", "t2", "t3"])
    # t1: A beats B, C -> 1; B beats C -> 1/2; C -> 0.  t2: A, B tie and beat C -> (1 + 1/2) / 2 = 3/4 each; C -> 0.
    # t3: A missing (not compared, not a loss); C beats B -> C 1, B 0.
    expected = {"A": (1 + 0.75) / 2, "B": (0.5 + 0.75 + 0) / 3, "C": (0 + 0 + 1) / 3}
    assert mean_win_rate(wide).to_dict() == pytest.approx(expected)


def test_win_rate_from_records_follows_the_declared_direction_and_reaches_the_overall_table(tmp_path):
    # an error metric (lower is better): the backbone with the larger value loses
    lower = {"direction": "lower", "fmt": ".2f", "label": "error"}
    store = write_records(tmp_path / "err", {"timm:low": 0.0, "timm:high": 2.0, "timm:gap": 1.0}, tasks=TASKS[:3], seeds=(0,),
                          noise=0.0, metric=lower, skip={("timm:gap", TASKS[2])})
    rates = win_rates(load(str(store.folder))).set_index("row")
    assert rates.loc["timm:low", "win_rate"] == 1.0 and rates.loc["timm:high", "win_rate"] == 0.0
    assert rates.loc["timm:gap", "win_rate"] == 0.5 and rates.loc["timm:gap", "n_tasks"] == 2  # its missing task is not a loss
    # the board's overall table carries the same numbers (annotate_overall is what `bob publish` calls)
    from harness.analysis import cell_table
    from harness.analysis.board import annotate_overall
    from harness.scores import overall_scores

    stats = cell_table(load(str(store.folder)))
    overall, notes, _ = annotate_overall(overall_scores(stats), stats)
    assert overall.set_index("row")["win_rate"].to_dict() == rates["win_rate"].to_dict()
    assert notes["linear"].startswith("No significance groups: Friedman test not run")  # 3 tasks


# -- acceptance 4: Pareto membership equals brute force -------------------------------------------------
def _brute_force_front(cost, good):
    n = len(cost)
    out = []
    for i in range(n):
        if np.isnan(cost[i]) or np.isnan(good[i]):
            out.append(False)
            continue
        dominated = any(cost[j] <= cost[i] and good[j] >= good[i] and (cost[j] < cost[i] or good[j] > good[i])
                        for j in range(n) if j != i and not (np.isnan(cost[j]) or np.isnan(good[j])))
        out.append(not dominated)
    return np.array(out)


def test_pareto_membership_equals_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 40))
        cost = rng.integers(0, 8, n).astype(float)  # few distinct values: ties and exact duplicates
        good = rng.integers(0, 8, n).astype(float)
        if trial % 3 == 0:
            cost[rng.random(n) < 0.1] = np.nan
        np.testing.assert_array_equal(pareto_mask(cost, good), _brute_force_front(cost, good), err_msg=f"trial {trial}")
    cost, good = rng.random(500), rng.random(500)
    np.testing.assert_array_equal(pareto_mask(cost, good), _brute_force_front(cost, good))


def test_pareto_fronts_read_costs_from_the_records(tmp_path):
    store = write_records(tmp_path / "costs", {"timm:small": 0.0, "timm:mid": 1.0, "timm:big": 3.0}, tasks=TASKS[:4], seeds=(0,),
                          methods=("linear", "finetune"), noise=0.0)
    fronts = pareto_fronts(load(str(store.folder)))
    pts = fronts.points.set_index(["method", "row"])
    assert len(pts) == 6 and {a.key for a in fronts.axes} == {"params", "gflops", "trainable", "memory", "throughput"}
    assert pts.loc[("finetune", "timm:mid"), "trainable"] == 4000 and pts.loc[("linear", "timm:big"), "throughput"] == 420.0
    # same value per backbone in both methods: for the backbone's own size every (method, backbone) is on the front;
    # for trainable parameters the cheaper linear probe dominates fine-tuning
    assert pts["front_params"].all()
    assert set(fronts.front("trainable")["method"]) == {"linear"}
    # throughput is higher-is-better: the slowest-but-best and the fastest-but-worst are both on the front
    assert set(fronts.front("throughput")["row"]) == {"timm:small", "timm:mid", "timm:big"}


# -- task structure ----------------------------------------------------------------------------------------
def test_task_correlation_counts_shared_backbones(tmp_path):
    effects = {f"timm:b{i}": float(i) for i in range(5)}
    missing = {("timm:b0", TASKS[3]), ("timm:b1", TASKS[3]), ("timm:b2", TASKS[3])}
    store = write_records(tmp_path / "corr", effects, tasks=TASKS[:8], seeds=(0,), noise=0.0, skip=missing)
    df = load(str(store.folder))
    corr = task_correlation(df, method="linear")
    assert corr.rho.loc[TASKS[0], TASKS[1]] == pytest.approx(1.0) and corr.shared.loc[TASKS[0], TASKS[1]] == 5
    assert corr.shared.loc[TASKS[0], TASKS[3]] == 2 and np.isnan(corr.rho.loc[TASKS[0], TASKS[3]])  # 2 shared backbones: no rho
    assert any("fewer than 3" in m for m in corr.messages)
    html = corr.to_html()
    assert "2 shared backbone(s): no rho" in html and "rho = 1.00 over 5 shared backbones" in html
    assert corr.plot().axes
    # a backbone's family value needs every task of the family: b0-b2 lack t03 (natural), so only 2 backbones are shared
    fam = task_correlation(df, method="linear", by="family")
    assert list(fam.rho.index) == ["syn/natural", "syn/structured"] and fam.shared.loc["syn/natural", "syn/structured"] == 2
    reversed_ = write_records(tmp_path / "rev", {f"timm:b{i}": float(i if i % 2 else -i) for i in range(5)}, tasks=TASKS[:2], seeds=(0,), noise=0.0)
    assert task_correlation(load(str(reversed_.folder))).rho.iloc[0, 1] == pytest.approx(
        __import__("scipy.stats").stats.spearmanr([0, 1, -2, 3, -4], [0, 1, -2, 3, -4]).statistic)


# -- acceptance 6: too few tasks or seeds: one line naming what is missing -------------------------------
def test_too_few_tasks_or_backbones_gives_one_line_and_no_pvalue(tmp_path):
    store = write_records(tmp_path / "few", {"timm:a": 2.0, "timm:b": 0.0, "timm:c": 1.0}, tasks=TASKS[:3])
    sig = significance(load(str(store.folder)), method="linear")
    assert sig.friedman.pvalue is None and sig.friedman.statistic is None and not sig.ran
    message = sig.friedman.message
    assert "\n" not in message and "needs >= 5 tasks" in message and "has 3" in message
    assert all(p is None for p in sig.pvalues.values())
    two = friedman_test(pd.DataFrame(np.arange(12.0).reshape(6, 2)))
    assert two.pvalue is None and "needs >= 3 backbones" in two.message and "has 2" in two.message and "bob compare" in two.message
    # Wilcoxon-Holm cannot reach alpha with 6 tasks and 4 backbones (6 pairs): said, not computed
    block = pd.DataFrame(np.random.default_rng(1).normal(size=(6, 4)) + np.arange(4) * 3, columns=list("abcd"))
    sig6 = significance_of_block(block)
    assert sig6.pvalues["nemenyi"] is not None and sig6.pvalues["wilcoxon-holm"] is None
    assert "needs >= 8 tasks" in sig6.messages["wilcoxon-holm"] and "\n" not in sig6.messages["wilcoxon-holm"]
    result = CliRunner().invoke(main, ["significance", str(store.folder)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "linear · all tasks: " + message.replace(" (linear · all tasks)", "")
    assert "p =" not in result.output
    result = CliRunner().invoke(main, ["publish", str(store.folder), "--name", "few", "--out", str(tmp_path / "lb")])
    md = (tmp_path / "lb" / "few" / "leaderboard.md").read_text()
    assert "No significance groups: Friedman test not run (linear · all tasks): needs >= 5 tasks" in md
    assert "cd_linear" not in " ".join(p.name for p in (tmp_path / "lb" / "few").iterdir())  # no diagram of nothing


def test_compare_with_one_seed_or_few_tasks_says_what_is_missing(tmp_path):
    store = write_records(tmp_path / "c1", {"timm:a": 1.0, "timm:b": 0.0}, tasks=TASKS[:3], seeds=(0,))
    cmp = compare(load(str(store.folder)), "timm:a", "timm:b")
    assert cmp.ci is None and cmp.wilcoxon_p is None and cmp.per_task["ci_low"].isna().all()
    assert (cmp.per_task["note"] == "no interval: 1 seed of A and 1 seed of B (needs >= 2 each)").all()
    assert "no interval over tasks: needs >= 5 shared tasks, has 3" in cmp.messages[0]
    assert any("needs >= 6 tasks" in m for m in cmp.messages)
    assert cmp.mean_diff == pytest.approx(1.0, abs=1.0) and cmp.wins + cmp.losses + cmp.ties == 3


def test_compare_finds_a_fixed_margin_with_intervals_over_seeds_and_tasks(tmp_path):
    store = write_records(tmp_path / "c2", {"timm:a": 2.0, "timm:b": 0.0, "timm:c": 5.0}, tasks=TASKS[:8], noise=0.5,
                          skip={("timm:b", TASKS[7])})
    cmp = compare(load(str(store.folder)), "timm:a", "timm:b", method="linear")
    assert cmp.n_tasks == 7 and cmp.unit == "top-1 accuracy (%)"  # one metric on every shared task: its own unit
    assert cmp.ci[0] < 2.0 < cmp.ci[1] and cmp.ci[0] > 0  # the margin is inside, zero outside
    assert cmp.wins == 7 and cmp.wilcoxon_p < 0.05
    assert (cmp.per_task["ci_low"] < cmp.per_task["diff"]).all() and (cmp.per_task["diff"] < cmp.per_task["ci_high"]).all()
    assert any(TASKS[7] in m for m in cmp.messages)  # the task only A ran is named, not compared
    result = CliRunner().invoke(main, ["compare", "timm:a", "timm:b", str(store.folder)])
    assert result.exit_code == 0, result.output
    assert "A better on 7, worse on 0" in result.output and "assumptions: Paired by task (7 shared tasks" in result.output
    bad = CliRunner().invoke(main, ["compare", "timm:a", "timm:zz", str(store.folder)])
    assert bad.exit_code == 2 and "error: backbone 'timm:zz' has no finished cells" in bad.output


def test_seed_rows_match_cell_stats_rows_for_several_settings(tmp_path):
    from harness.analysis import cell_table

    write_records(tmp_path / "hp", {"timm:a": 1.0, "timm:b": 0.0}, tasks=TASKS[:2], seeds=(0,), hparams={"lr": 0.1})
    store = write_records(tmp_path / "hp", {"timm:a": 1.5}, tasks=TASKS[:2], seeds=(0,), hparams={"lr": 0.01}, seed=1, prefix="s")
    df = load(str(store.folder))
    rows = set(cell_table(df)["row"])
    assert len(rows) == 3 and "timm:b" in rows and sum(r.startswith("timm:a ") for r in rows) == 2  # one row per setting
    assert set(seed_values(df)["row"]) == rows


# -- acceptance 5: the page, offline in headless Chromium ------------------------------------------------
@pytest.fixture(scope="module")
def analysed_board(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    effects = {"timm:vit_best": 4.0, "timm:resnet_mid": 1.5, "timm:convnext_mid": 1.2, "timm:tiny_low": 0.0, "timm:small_low": -0.2}
    store = write_records(tmp / "board", effects, methods=("linear", "finetune"), noise=0.8)
    result = CliRunner().invoke(main, ["publish", str(store.folder), "--name", "demo", "--out", str(tmp / "lb")])
    assert result.exit_code == 0, result.output
    return tmp / "lb" / "demo"


def test_board_files_carry_the_analyses(analysed_board):
    names = {p.name for p in analysed_board.iterdir()}
    assert {"cd_linear_overall_nemenyi.png", "cd_linear_overall_wilcoxon_holm.png", "pareto_syn.png", "significance.csv",
            "posthoc_pvalues.csv", "pareto.csv", "task_correlation.csv", "score_vs_params.png", "rank_heatmap.png"} <= names
    md = (analysed_board / "leaderboard.md").read_text()
    assert "| win rate | group |" in md and "| 1 | `timm:vit_best` |" in md
    row = next(l for l in md.split("## linear: overall")[1].splitlines() if l.startswith("| 1 |"))
    assert row.endswith("| 1.00 | a |")  # best on every task: wins everything, in a group of its own or with the next
    assert "Significance groups: backbones sharing a letter are not significantly different (Friedman p =" in md
    assert "_Win rate: HELM mean win rate" in md and "never a loss or a zero" in md
    tex = (analysed_board / "table.tex").read_text()
    assert r"& Score & Group \\" in tex and r"timm:vit\_best &" in tex and "sharing a letter are not significantly different" in tex
    sig = pd.read_csv(analysed_board / "significance.csv")
    assert set(sig["method"]) == {"linear", "finetune"} and (sig.loc[sig["backbone"] == "timm:vit_best", "mean_rank"] == 1.0).all()
    method = (analysed_board / "METHODOLOGY.md").read_text()
    assert "Friedman" in method and "Nemenyi" in method and "HELM" in method


def test_page_shows_the_analyses_offline_in_headless_chromium(analysed_board):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from .test_publish import _chrome

    driver = _chrome()
    try:
        driver.get((analysed_board / "index.html").resolve().as_uri())

        def tab(name):
            next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button") if b.get_attribute("data-tab") == name).click()

        def decoded(img):
            return img.is_displayed() and driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100

        Select(driver.find_element(By.ID, "method")).select_by_value("linear")
        # Overall: win rate and group beside the BoB score; below, the CD diagrams of the selected method only
        headers = [th.get_attribute("data-key") for th in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
        assert headers.index("winrate") == headers.index("rank") + 1 and "group" in headers
        best = driver.find_element(By.CSS_SELECTOR, 'tr[data-backbone="timm:vit_best"]')
        assert best.find_elements(By.TAG_NAME, "td")[headers.index("winrate")].text == "1.00"
        blocks = driver.find_elements(By.CSS_SELECTOR, '#sections .section[data-section="analysis-significance"] .analysis-block')
        shown = [b for b in blocks if b.is_displayed()]
        assert [b.get_attribute("data-method") for b in shown] == ["linear"]
        diagrams = shown[0].find_elements(By.CSS_SELECTOR, 'img[data-file^="cd_linear_overall_"]')
        assert len(diagrams) == 2 and all(decoded(img) for img in diagrams)
        assert "rejects" in shown[0].find_element(By.CLASS_NAME, "verdict").text
        note = driver.find_element(By.ID, "note").text
        assert "sharing a letter are not significantly different" in note and "Win rate: HELM" in note
        Select(driver.find_element(By.ID, "method")).select_by_value("finetune")
        shown = [b for b in driver.find_elements(By.CSS_SELECTOR, "#sections .analysis-block") if b.is_displayed()]
        assert [b.get_attribute("data-method") for b in shown] == ["finetune"]
        # every task cell shows its seed interval on hover
        tab("syn")
        cell = driver.find_element(By.CSS_SELECTOR, 'tr[data-backbone="timm:resnet_mid"] td:nth-child(2)')
        assert cell.get_attribute("title").startswith("95% bootstrap interval over 3 seeds: [")
        # the per-task view: every backbone's mean with its interval on one axis
        tab("per-task")
        Select(driver.find_element(By.ID, "task-select")).select_by_value("syn/t03")
        rows = driver.find_elements(By.CSS_SELECTOR, "#pertask-table tbody tr.interval-row")
        assert len(rows) == 5 and rows[0].get_attribute("data-backbone") == "timm:vit_best"
        for row in rows:
            ci = row.find_element(By.CSS_SELECTOR, "svg line.ci")
            dot = row.find_element(By.CSS_SELECTOR, "svg circle")
            x1, x2, cx = (float(v) for v in (ci.get_attribute("x1"), ci.get_attribute("x2"), dot.get_attribute("cx")))
            assert x1 <= cx <= x2 and x2 > x1 and ci.rect["width"] > 1  # drawn (a horizontal line's box has no height)
        assert rows[0].find_elements(By.TAG_NAME, "td")[2].text.startswith("[")
        # the Pareto plots, the task-correlation heatmap and the existing plots, inline
        tab("costs")
        assert decoded(driver.find_element(By.CSS_SELECTOR, 'img[data-file="pareto_syn.png"]'))
        tab("structure")
        heatmap = next(t for t in driver.find_elements(By.CSS_SELECTOR, 'table.heatmap[data-by="task"]') if t.is_displayed())
        cells = heatmap.find_elements(By.CSS_SELECTOR, "td.hm-cell")
        assert len(cells) == 100 and "shared backbones" in cells[1].get_attribute("title")
        tab("plots")
        assert decoded(driver.find_element(By.CSS_SELECTOR, 'img[data-file="score_vs_params.png"]'))
        requests = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        assert requests and all(u.startswith(("file:", "data:")) for u in requests), [u[:80] for u in requests]
    finally:
        driver.quit()


def test_compare_across_metrics_is_in_z_units_and_positive_means_a_is_better(tmp_path):
    lower = {"direction": "lower", "fmt": ".2f", "label": "error"}
    folder = tmp_path / "mixed"
    write_records(folder, {"timm:a": 0.0, "timm:b": 2.0, "timm:c": 1.0}, tasks=TASKS[:3], metric=lower, prefix="l")  # A errs less
    store = write_records(folder, {"timm:a": 2.0, "timm:b": 0.0, "timm:c": 1.0}, tasks=TASKS[3:6], prefix="h", seed=1)  # A scores more
    cmp = compare(load(str(store.folder)), "timm:a", "timm:b")
    assert cmp.unit.startswith("z ") and cmp.wins == 6 and cmp.losses == 0
    assert (cmp.per_task["diff"] > 1.5).all()  # about two standard deviations of the three backbones on every task
