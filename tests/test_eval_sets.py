"""One training, many evaluations (issue 21, acceptance 2): a task's shifted evaluation sets are
scored by the model the cell trained once; the record holds each set's metrics; frozen methods
extract each split once; a rerun trains nothing."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.eval_sets import EvalSet, set_metrics
from harness.registry import TASKS
from harness.store import ResultStore

from .conftest import write_grid

TASK = "test_shift/digits_sets"


def _inverted(sample):
    from PIL import ImageOps

    from harness.data import Sample

    return Sample(ImageOps.invert(sample.image.convert("L")), sample.label, sample.origin + ":inverted")


def _shifted_digits_task(data_root=None, **_):
    """digits with three sets: an inverted copy of test (shifted), test's labels 0..4 scored among
    those five classes only (masked, like ImageNet-R's 200), and a multi-label view of test (ReaL-like)."""
    from harness.data import ImageClassificationDataset
    from tasks.builtin import digits_task

    task = digits_task()
    test = task.load("test").samples
    inverted = [_inverted(s) for s in test]
    low = [s for s in test if s.label < 5]
    task.name = TASK
    task.loaders["test_inverted"] = lambda: ImageClassificationDataset(inverted, name="inverted")
    task.loaders["test_low"] = lambda: ImageClassificationDataset(low, name="low")
    # "real" labels: every test image also accepts label (y + 1) % 10; the first 7 images have none (excluded)
    real = [() if i < 7 else (s.label, (s.label + 1) % 10) for i, s in enumerate(test)]
    task.eval_sets = [
        EvalSet("inverted", "test_inverted", title="digits inverted"),
        EvalSet("low5", "test_low", class_mask=(0, 1, 2, 3, 4), mask_source="labels 0-4 (test)"),
        EvalSet("real", "test", role="id", label_sets=lambda: real, labels_source="generated"),
    ]
    return task


@pytest.fixture(autouse=True)
def shifted_task():
    if TASK not in TASKS:
        TASKS.add(TASK, _shifted_digits_task, kind="classification", group="test", num_classes=10, description="digits with shifted sets")
    yield


@pytest.fixture
def forward_counter():
    counts = collections.Counter()

    def hook(module, args, output):
        if type(module).__name__ == "ResNet":
            counts["images"] += args[0].shape[0]

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield counts
    handle.remove()


def test_set_metrics_mask_strict_and_multilabel_by_hand():
    scores = np.array([[0.1, 0.9, 0.0, 0.5], [0.2, 0.1, 0.8, 0.0], [0.6, 0.1, 0.0, 0.7]])
    labels = np.array([0, 2, 3])
    masked = set_metrics(EvalSet("m", "s", class_mask=(0, 2, 3)), scores, labels)
    # among classes {0, 2, 3}: argmax = 3, 2, 3 -> right on images 2 and 3; strict argmax = 1, 2, 3 -> images 2 and 3
    assert masked["m/top1"] == pytest.approx(200 / 3) and masked["m/top1_all"] == pytest.approx(200 / 3)
    masked = set_metrics(EvalSet("m", "s", class_mask=(0, 2)), scores[:2], labels[:2])
    assert masked["m/top1"] == 100.0 and masked["m/top1_all"] == 50.0  # image 1's 0.9 on class 1 is masked away
    real = set_metrics(EvalSet("r", "s", role="id", label_sets=lambda: [(1, 3), (), (0,)]), scores, labels)
    assert real["r/top1"] == 50.0 and real["r/n_eval"] == 2  # image 2 has no label (excluded); image 3 predicts 3, not 0
    with pytest.raises(Exception, match="not among its 2 classes"):
        set_metrics(EvalSet("m", "s", class_mask=(0, 2)), scores, labels)


def _records(folder):
    return {r["method"]: r for r in ResultStore(folder).records() if r["status"] == "ok"}


@pytest.mark.slow
def test_one_training_many_evaluations(tmp_path, forward_counter):
    grid = write_grid(tmp_path / "g.yaml",
                      f"name: sets\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [linear, knn, finetune, bitfit]\ntasks: ['{TASK}']\n"
                      "hparams:\n  all: {img_size: 16}\n  linear: {search: {C: [0.1, 1.0]}}\n"
                      "  finetune: {epochs: 1, batch_size: 64}\n  bitfit: {epochs: 1, batch_size: 64, search: null, lr: 0.01, wd: 0.0}\n")
    res = tmp_path / "res"
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(res)])
    assert out.exit_code == 0, out.output
    records = _records(res / "sets")
    assert set(records) == {"linear", "knn", "finetune", "bitfit"}, [r["error"] for r in ResultStore(res / "sets").records() if r["error"]]
    n_test = records["knn"]["metrics"]["n_eval"]
    for method, r in records.items():
        m = r["metrics"]
        for key in ("inverted/top1", "inverted/top5", "low5/top1", "low5/top5", "low5/top1_all", "real/top1", "ood_top1", "id_ood_gap"):
            assert key in m, (method, key)
            assert key in r["metric_specs"], (method, key)
        assert m["inverted/n_eval"] == n_test and m["real/n_eval"] == n_test - 7
        assert m["low5/n_eval"] == sum(1 for s in _shifted_digits_task().load("test").samples if s.label < 5)
        assert m["ood_top1"] == pytest.approx((m["inverted/top1"] + m["low5/top1"]) / 2)  # real is an ID set: not in the OOD mean
        assert m["id_ood_gap"] == pytest.approx(m["top1"] - m["ood_top1"])
        assert r["primary_metric"]["name"] == "ood_top1"
        assert [s["name"] for s in r["protocol"]["eval_sets"]] == ["inverted", "low5", "real"]
        assert r["task_meta"]["eval_sets"][1]["classes_scored"] == 5
        # masking can only help: among 5 classes the argmax is right at least as often as among 10
        assert m["low5/top1"] >= m["low5/top1_all"]
    # the linear probe tuned on train800 -> val200 only: no candidate read a shifted split
    # (issue 20's L-BFGS probe: candidates are C values scored on val200; none names a shifted or test split)
    candidates = records["linear"]["protocol"]["candidates"]
    assert candidates and all("C" in c and "val200_top1" in c for c in candidates)
    assert not any(k.startswith(("inverted", "low5", "real", "test")) for c in candidates for k in c)
    # finetune trained one model (one curve) for the final split and scored all sets with it
    assert len(records["finetune"]["curves"]["train"]) == 1
    # frozen methods: each split through the backbone once for both cells (train800, val200, test, test_inverted, test_low)
    splits = {"train800": 800, "val200": 200, "test": n_test, "test_inverted": n_test, "test_low": records["knn"]["metrics"]["low5/n_eval"]}
    frozen_misses = records["linear"]["feature_cache"]["misses"] + records["knn"]["feature_cache"]["misses"]
    assert frozen_misses == len(splits)

    # a rerun trains nothing and extracts nothing: the records are the same files, untouched
    before = {r["id"]: r["created"] for r in ResultStore(res / "sets").records()}
    forward_counter.clear()
    again = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(res)])
    assert again.exit_code == 0, again.output
    assert forward_counter["images"] == 0
    assert {r["id"]: r["created"] for r in ResultStore(res / "sets").records()} == before
