"""Aggregation on hand-made records with known answers."""
import math

import numpy as np
import pandas as pd
import pytest

from harness.aggregate import records_frame
from harness.scores import bootstrap_ci, cell_stats, filter_backbones, overall_scores, param_bucket, rank_by_task, zscore_by_task
from harness.store import ResultStore


def _write(store, i, backbone, task, value, seed=0, method="linear", params=10.0, family="vit", pretrain="supervised"):
    store.write({
        "schema": "bob.run_record/1", "id": f"r{i}", "status": "ok", "backbone": backbone, "method": method, "task": task, "seed": seed,
        "weights": "pretrained", "spec": {"hparams": {}}, "metrics": {"top1": value}, "primary_metric": {"name": "top1", "value": value},
        "backbone_meta": {"weights": "pretrained", "family": family, "pretrain_method": pretrain, "params_m": params, "gflops": params / 2},
        "task_meta": {"group": "g"},
    })


@pytest.fixture
def frame(tmp_path):
    s = ResultStore(tmp_path / "s")
    rows = [("A", "t1", 90.0), ("B", "t1", 80.0), ("C", "t1", 70.0), ("A", "t2", 50.0), ("B", "t2", 60.0), ("C", "t2", 70.0), ("A", "t3", 10.0), ("B", "t3", 20.0)]
    for i, (bb, task, v) in enumerate(rows):
        _write(s, i, bb, task, v, params={"A": 5.0, "B": 20.0, "C": 25.0}[bb], family={"A": "cnn", "B": "vit", "C": "vit"}[bb])
    return records_frame([s])


def test_zscores_ranks_and_overall_score(frame):
    stats = zscore_by_task(cell_stats(frame))
    z = {(r.task, r.row): r.z for r in stats.itertuples()}
    sd = math.sqrt(200 / 3)  # population std of 90, 80, 70
    assert z[("t1", "A")] == pytest.approx(10 / sd) and z[("t1", "B")] == pytest.approx(0.0) and z[("t1", "C")] == pytest.approx(-10 / sd)
    assert z[("t3", "A")] == pytest.approx(-1.0) and z[("t3", "B")] == pytest.approx(1.0)  # C has no t3
    ranks = {(r.task, r.row): r.rank for r in rank_by_task(stats).itertuples()}
    assert ranks[("t2", "C")] == 1 and ranks[("t2", "A")] == 3
    overall = overall_scores(cell_stats(frame)).set_index("row")
    assert overall.loc["A", "score"] == pytest.approx((10 / sd - 10 / sd - 1.0) / 3)
    assert overall.loc["C", "score"] == pytest.approx((-10 / sd + 10 / sd) / 2)  # mean over its 2 tasks, not 3
    assert overall.loc["C", "n_tasks"] == 2 and not overall.loc["C", "complete"] and overall.loc["A", "complete"]
    assert overall.loc["B", "mean_rank"] == pytest.approx((2 + 2 + 1) / 3)
    assert overall.loc["A", "param_bucket"] == "<10M" and overall.loc["B", "param_bucket"] == "10-30M"
    assert overall.loc["B", "rank_in_bucket"] == 1 and overall.loc["A", "rank_in_bucket"] == 1


def test_tied_task_gives_zero_z(tmp_path):
    s = ResultStore(tmp_path / "s")
    _write(s, 0, "A", "t", 50.0)
    _write(s, 1, "B", "t", 50.0)
    stats = zscore_by_task(cell_stats(records_frame([s])))
    assert list(stats["z"]) == [0.0, 0.0]


def test_seed_mean_and_bootstrap_interval(tmp_path):
    s = ResultStore(tmp_path / "s")
    for seed, v in enumerate([70.0, 72.0, 74.0, 76.0]):
        _write(s, seed, "A", "t", v, seed=seed)
    stats = cell_stats(records_frame([s]))
    (row,) = stats.itertuples()
    assert row.mean == 73.0 and row.n == 4
    assert 70.0 <= row.ci_low < 73.0 < row.ci_high <= 76.0
    lo, hi = bootstrap_ci(np.array([70.0, 72.0, 74.0, 76.0]))
    assert (lo, hi) == (row.ci_low, row.ci_high)  # deterministic
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([1.0])))


def test_filters_and_buckets(frame):
    assert set(filter_backbones(frame, family="vit")["backbone"]) == {"B", "C"}
    assert set(filter_backbones(frame, min_params=10, max_params=22)["backbone"]) == {"B"}
    assert param_bucket(None) == "unknown" and param_bucket(300.0) == ">=300M"
