import numpy as np
import pytest

from harness.errors import NonFiniteLossError
from harness.methods.knn import knn_predict
from harness.methods.linear import fit_linear_probe
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore


def test_knn_votes_by_cosine_similarity():
    train_x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.05, 1.0]], dtype=np.float32)
    train_y = np.array([0, 0, 1, 1, 1])
    test_x = np.array([[5, 0.1], [0.2, 3]], dtype=np.float32)  # scale must not matter (cosine)
    assert knn_predict(train_x, train_y, test_x, 2, k=1, temperature=0.07, weighting="distance").tolist() == [0, 1]
    # with k=5 uniform voting the majority class (1) wins everywhere; distance weighting keeps the near class
    assert knn_predict(train_x, train_y, test_x, 2, k=5, temperature=0.07, weighting="uniform").tolist() == [1, 1]
    assert knn_predict(train_x, train_y, test_x, 2, k=5, temperature=0.07, weighting="distance").tolist() == [0, 1]


def test_linear_probe_separates_separable_data_and_is_deterministic():
    rng = np.random.RandomState(0)
    centers = rng.randn(4, 16) * 4
    y = rng.randint(0, 4, 400)
    x = (centers[y] + rng.randn(400, 16)).astype(np.float32)
    p1 = fit_linear_probe(x[:300], y[:300], 4, lr=0.01, wd=0.0, epochs=30, batch_size=64, seed=0)
    p2 = fit_linear_probe(x[:300], y[:300], 4, lr=0.01, wd=0.0, epochs=30, batch_size=64, seed=0)
    assert (p1(x[300:]) == y[300:]).mean() > 0.95
    assert (p1(x[300:]) == p2(x[300:])).all()
    x_bad = x.copy()
    x_bad[3, 5] = np.nan  # e.g. a backbone that overflowed
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        fit_linear_probe(x_bad, y, 4, lr=0.01, wd=0.0, epochs=1, batch_size=64, seed=0)


def test_nan_loss_gives_failed_record_with_traceback(tmp_path):
    store = ResultStore(tmp_path / "s")
    spec = RunSpec("timm:resnet18.a1_in1k", "finetune", "digits", 0, "random", {"img_size": 16, "epochs": 2, "lr": 1e30, "grad_clip": 0, "warmup_epochs": 0})
    record = run_cell(spec, store)
    assert record["status"] == "failed"
    assert record["error"]["type"] == "NonFiniteLossError"
    assert "loss became" in record["error"]["message"] and "lower the learning rate" in record["error"]["message"]
    assert "Traceback" in record["error"]["traceback"]
    assert store.read(spec.id)["status"] == "failed"
