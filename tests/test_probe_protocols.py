"""Issue 20: DINO's weighted kNN exactly; ``solver: sgd`` is the old AdamW probe; the L-BFGS probe's
record (solver, chosen C, convergence); one-line errors at expansion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import BobError
from harness.methods.knn import knn_predict


def dino_knn_classifier(train_features, train_labels, test_features, k, T, num_classes):
    """DINO's eval_knn.knn_classifier (facebookresearch/dino), written out independently: one
    test x train similarity matrix, torch.topk, exp(sim / T) votes, the top of a descending sort."""
    train_features = torch.nn.functional.normalize(torch.as_tensor(train_features, dtype=torch.float32), dim=1, p=2).t()
    test_features = torch.nn.functional.normalize(torch.as_tensor(test_features, dtype=torch.float32), dim=1, p=2)
    train_labels = torch.as_tensor(train_labels)
    similarity = torch.mm(test_features, train_features)
    distances, indices = similarity.topk(k, largest=True, sorted=True)
    retrieved = torch.gather(train_labels.view(1, -1).expand(len(test_features), -1), 1, indices)
    one_hot = torch.zeros(len(test_features) * k, num_classes).scatter_(1, retrieved.view(-1, 1), 1)
    probs = torch.sum(one_hot.view(len(test_features), -1, num_classes) * distances.clone().div_(T).exp_().view(len(test_features), -1, 1), 1)
    _, predictions = probs.sort(1, True)
    return predictions[:, 0].numpy()


@pytest.mark.parametrize("seed,num_classes,dim", [(0, 10, 32), (1, 3, 8), (2, 50, 64)])
def test_knn_equals_dino_formula_in_train_chunks(seed, num_classes, dim):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    train_y = rng.integers(0, num_classes, 700)
    test_y = rng.integers(0, num_classes, 300)
    train_x = centres[train_y] + rng.normal(scale=2.0, size=(700, dim))
    test_x = centres[test_y] + rng.normal(scale=2.0, size=(300, dim))
    ref = dino_knn_classifier(train_x, train_y, test_x, 20, 0.07, num_classes)
    for train_chunk, chunk in ((16384, 1024), (64, 37), (1, 300)):  # the running top-k across train chunks is the one top-k
        ours = knn_predict(train_x, train_y, test_x, num_classes, k=20, temperature=0.07, weighting="distance", chunk=chunk, train_chunk=train_chunk)
        assert ours.tolist() == ref.tolist()
    assert (ref == test_y).mean() > 1.5 / num_classes  # the features carry the labels: a real comparison, not chance agreement


def test_knn_ties_break_as_the_reference():
    """Duplicated training points (equal similarities inside the top-k) and equal votes between classes."""
    base = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    train_x = np.repeat(base, 4, axis=0)  # every point 4 times, labels alternate: exact ties in similarity and in votes
    train_y = np.array([0, 1, 0, 1, 2, 1, 2, 1, 0, 2, 0, 2])
    test_x = np.array([[1.0, 0.05], [0.05, 1.0], [1.0, 1.0], [0.3, 1.0]])
    ref = dino_knn_classifier(train_x, train_y, test_x, 4, 0.07, 3)
    for train_chunk in (12, 5, 1):
        assert knn_predict(train_x, train_y, test_x, 3, k=4, temperature=0.07, weighting="distance", train_chunk=train_chunk).tolist() == ref.tolist()
    assert ref.tolist() == [0, 1, 0, 1]  # equal votes: the lower class, as the reference's descending sort puts it first


def test_knn_k_larger_than_training_set_is_an_error():
    with pytest.raises(BobError, match="k=5 is larger than the training set"):
        knn_predict(np.ones((3, 2)), np.zeros(3, dtype=int), np.ones((1, 2)), 2, k=5, temperature=0.07, weighting="distance")


@pytest.fixture(scope="module")
def digits_cell():
    import tasks  # noqa: F401
    from harness.features import FeatureCache
    from harness.registry import BACKBONES, TASKS
    from harness.types import RunContext

    backbone = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=0, img_size=16)
    task = TASKS.get("digits").factory()
    cache = FeatureCache(None)

    def ctx():
        return RunContext(device="cpu", seed=0, cell_id="t", feature_cache=cache, checkpoint_dir=None, log=lambda *_: None)

    return backbone, task, ctx


def test_solver_sgd_reproduces_the_adamw_probe(digits_cell):
    """The old protocol, written out: lr x wd on train800 -> val200 with the AdamW probe, refit, test."""
    from harness.features import split_features
    from harness.methods.linear import LinearProbe, fit_linear_probe

    backbone, task, ctx = digits_cell
    method = LinearProbe()
    hp = method.resolve_hparams({"solver": "sgd", "epochs": 3})
    assert hp["search"] == {"lr": [1e-1, 1e-2, 1e-3], "wd": [0.0, 1e-4, 1e-2]}
    result = method.run(backbone, task, hp, ctx())

    def feats(split):
        return split_features(backbone, task, split, ctx(), 64)

    (xtr, ytr), (xva, yva) = feats("train800"), feats("val200")
    best = None
    for lr in sorted([1e-1, 1e-2, 1e-3]):
        for wd in sorted([0.0, 1e-4, 1e-2]):
            acc = float((fit_linear_probe(xtr, ytr, 10, lr, wd, 3, 256, 0)(xva) == yva).mean() * 100)
            best = (acc, lr, wd) if best is None or acc > best[0] else best
    (xf, yf), (xte, yte) = feats("train800val200"), feats("test")
    top1 = float((fit_linear_probe(xf, yf, 10, best[1], best[2], 3, 256, 0)(xte) == yte).mean() * 100)
    assert result.metrics["top1"] == top1
    assert result.protocol["selected"] == {"lr": best[1], "wd": best[2]} and result.protocol["solver"] == "sgd"
    assert result.adaptation["probe_solver"] == "sgd"


def test_lbfgs_probe_records_solver_chosen_c_and_convergence(digits_cell):
    from harness.methods.linear import LinearProbe

    backbone, task, ctx = digits_cell
    method = LinearProbe()
    hp = method.resolve_hparams({"C_grid": [0.01, 1.0, 0.1]})
    assert hp["search"] == {}  # lr / wd are the sgd solver's
    result = method.run(backbone, task, hp, ctx())
    p = result.protocol
    assert p["solver"] == "lbfgs" and p["C_grid"] == [0.01, 0.1, 1.0] and p["selected_on"] == "val200" and p["tuned_on"] == "train800"
    assert [c["C"] for c in p["candidates"]] == [0.01, 0.1, 1.0]
    best = max(p["candidates"], key=lambda c: c["val200_top1"])
    assert p["selected"] == {"C": best["C"]} and p["reported_on"] == "test" and p["final_train_split"] == "train800val200"
    assert p["convergence"]["C"] == best["C"] and p["convergence"]["converged"] and p["convergence"]["grad_max_abs"] <= 1e-5
    assert p["converged"] is True and "warning" not in p
    assert 10.0 < result.metrics["top1"] <= 100.0
    fixed = method.run(backbone, task, method.resolve_hparams({"C": 0.5, "max_iter": 2}), ctx())
    assert fixed.protocol["selected"] == {"C": 0.5} and fixed.protocol["selected_on"] is None
    assert fixed.protocol["converged"] is False and "did not converge" in fixed.protocol["warning"]  # a stopped fit says so


@pytest.mark.parametrize("hparams,message", [
    ("{search: {C: [1.0, 0, 10]}}", "C=0 must be a positive number"),
    ("{C_grid: [1.0, 0, 10]}", "C=0 must be a positive number"),  # a grid list is an axis: the cell with 0 fails
    ("{C_grid: [-1.0]}", "C=-1.0 must be a positive number"),
    ("{C: -0.5}", "C=-0.5 must be a positive number"),
    ("{solver: newton}", "solver='newton' does not exist; use one of lbfgs, sgd"),
    ("{search: {lr: [0.1, 0.01]}}", "the lbfgs solver sweeps only C \\(given search over lr\\)"),
])
def test_bad_linear_hparams_are_one_line_errors_at_expansion(tmp_path, hparams, message):
    from harness.grid import expand, load_grid

    path = tmp_path / "g.yaml"
    path.write_text(f"backbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [linear]\ntasks: [digits]\nhparams:\n  linear: {hparams}\n")
    with pytest.raises(BobError, match=message) as err:
        expand(load_grid(path))
    assert "\n" not in str(err.value)


def test_knn_k_above_declared_training_set_fails_at_expansion(tmp_path):
    from harness.grid import expand, load_grid

    path = tmp_path / "g.yaml"
    path.write_text("backbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn]\ntasks: [shapes/location]\nhparams:\n  knn: {k: 801}\n")
    with pytest.raises(BobError, match=r"k=801 is larger than the training set \(800 images\)") as err:
        expand(load_grid(path))
    assert "\n" not in str(err.value)
    path.write_text("backbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn]\ntasks: [shapes/location]\nhparams:\n  knn: {k: 800}\n")
    assert len(expand(load_grid(path)).cells) == 1


def test_methodology_states_the_probe_solver_and_c_grid():
    import json

    import pandas as pd

    from harness.leaderboard import _probe_solver_lines

    rows = [{"status": "ok", "method": "linear", "record_json": json.dumps({"protocol": {"solver": "lbfgs", "C_grid": [0.1, 1.0], "selected_on": "val200"}})},
            {"status": "ok", "method": "linear", "record_json": json.dumps({"protocol": {"solver": "sgd"}})},
            {"status": "ok", "method": "knn", "record_json": json.dumps({"protocol": {}})}]
    text = _probe_solver_lines(pd.DataFrame(rows))
    assert "full-batch L-BFGS" in text and "C grid [0.1, 1.0] swept on val200" in text and "sgd: the AdamW" in text
    assert _probe_solver_lines(pd.DataFrame(rows[2:])) == ""


def test_mlp_probe_learns_what_a_linear_probe_cannot():
    """XOR of two signs: no linear head beats chance, the MLP probe's hidden layer does. The linear
    path (hidden=0) is the unchanged AdamW probe, so both share one loop."""
    from harness.methods.linear import fit_linear_probe

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(1200, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    linear = fit_linear_probe(x[:800], y[:800], 2, lr=1e-2, wd=0.0, epochs=200, batch_size=64, seed=0)
    mlp = fit_linear_probe(x[:800], y[:800], 2, lr=1e-2, wd=0.0, epochs=200, batch_size=64, seed=0, hidden=64)
    acc = lambda predict: float((predict(x[800:]) == y[800:]).mean() * 100)  # noqa: E731
    assert acc(linear) < 65.0 and acc(mlp) > 90.0


def test_mlp_probe_cell_tunes_on_val_reuses_the_feature_cache_and_records_its_head(digits_cell):
    from harness.methods.linear import MLPProbe

    backbone, task, ctx = digits_cell
    method = MLPProbe()
    hp = method.resolve_hparams({"hidden": 32, "epochs": 5, "search": {"lr": [1e-2, 1e-3]}})
    assert hp["search"] == {"lr": [1e-2, 1e-3]} and hp["solver"] == "sgd"
    first = ctx()
    method.run(backbone, task, method.resolve_hparams({"hidden": 8, "epochs": 1, "lr": 1e-3}), first)  # features extracted once here
    second = ctx()
    result = method.run(backbone, task, hp, second)
    assert "extract" not in second.timings  # every split came from the feature cache the linear probe and knn share
    p = result.protocol
    assert p["solver"] == "sgd" and p["selected_on"] == "val200" and set(p["selected"]) == {"lr"} and p["reported_on"] == "test"
    assert p["head"] == f"Linear({backbone.feature_dim}, 32) -> ReLU -> Linear(32, 10)"
    dim = backbone.feature_dim
    assert result.adaptation["recipe"] == "mlp_probe" and result.adaptation["head_params"] == dim * 32 + 32 + 32 * 10 + 10
    assert 10.0 < result.metrics["top1"] <= 100.0  # chance is 10 %


@pytest.mark.parametrize("hparams,message", [
    ("{hidden: 0}", "hidden=0 must be a positive integer"),
    ("{solver: lbfgs}", "method 'mlp_probe': solver='lbfgs' does not exist; use one of sgd"),
    ("{C: 1.0}", "method 'mlp_probe' has no hyper-parameter 'C'"),
])
def test_bad_mlp_probe_hparams_are_one_line_errors_at_expansion(tmp_path, hparams, message):
    from harness.grid import expand, load_grid

    path = tmp_path / "g.yaml"
    path.write_text(f"backbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [mlp_probe]\ntasks: [digits]\nhparams:\n  mlp_probe: {hparams}\n")
    with pytest.raises(BobError, match=message) as err:
        expand(load_grid(path))
    assert "\n" not in str(err.value)


def test_methodology_names_the_mlp_probe_head():
    import json

    import pandas as pd

    from harness.leaderboard import _probe_solver_lines

    rows = [{"status": "ok", "method": "mlp_probe", "record_json": json.dumps({"protocol": {"solver": "sgd", "head": "Linear(512, 1024) -> ReLU -> Linear(1024, 10)"}})}]
    assert "MLP probe (`mlp_probe`): Linear(512, 1024) -> ReLU -> Linear(1024, 10)" in _probe_solver_lines(pd.DataFrame(rows))
