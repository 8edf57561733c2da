"""In-context regression: function classes, baselines' exact behaviour, trained models, curves."""
import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import BobError
from harness.grid import expand, parse_grid
from harness.registry import BACKBONES, TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

from .conftest import write_grid


def curve(record):
    return [p["mean"] for p in record["curves"]["icl_error"]]


def test_least_squares_is_exact_from_d_points_and_ridge_wins_on_noise(tmp_path):
    store = ResultStore(tmp_path / "s")
    ls = run_cell(RunSpec("baseline:least_squares", "icl_eval", "icl/linear", 0, "random", {"d": 5, "k": 15}), store)
    assert ls["status"] == "ok"
    errs = curve(ls)
    assert errs[0] == pytest.approx(1.0, abs=0.15)  # predicting 0 with no example: E[y^2]/d = 1
    assert max(errs[5:]) < 1e-8  # exact once k >= d
    assert errs[3] > 0.1  # underdetermined before
    noisy = {bb: run_cell(RunSpec(bb, "icl_eval", "icl/noisy_linear", 0, "random", {"d": 5, "k": 15}), store)
             for bb in ("baseline:least_squares", "baseline:ridge", "baseline:averaging")}
    ls_n, ridge_n = curve(noisy["baseline:least_squares"]), curve(noisy["baseline:ridge"])
    assert ridge_n[5] < ls_n[5] and ridge_n[6] < ls_n[6] and np.mean(ridge_n[1:]) < np.mean(ls_n[1:])
    avg = curve(noisy["baseline:averaging"])
    assert avg[14] < avg[2]  # averaging improves with more examples but stays well above least squares
    assert ls["primary_metric"] == {"name": "err_at_2d", "value": errs[10], "higher_is_better": False, "direction": "lower", "target": None}
    assert ls["metric_specs"]["err_at_2d"]["direction"] == "lower"  # declared by the ICL task plugin


def test_other_baselines_and_function_classes():
    sparse = run_cell(RunSpec("baseline:lasso", "icl_eval", "icl/sparse_linear", 0, "random", {"d": 10, "k": 12, "n_eval": 40, "lasso_alpha": 0.01}))
    ls = run_cell(RunSpec("baseline:least_squares", "icl_eval", "icl/sparse_linear", 0, "random", {"d": 10, "k": 12, "n_eval": 40}))
    assert curve(sparse)[7] < 0.5 * curve(ls)[7]  # sparsity helps below d points
    knn = run_cell(RunSpec("baseline:knn", "icl_eval", "icl/decision_tree", 0, "random", {"d": 3, "k": 20, "n_eval": 50}))
    trees = run_cell(RunSpec("baseline:trees", "icl_eval", "icl/decision_tree", 0, "random", {"d": 3, "k": 20, "n_eval": 30}))
    assert knn["status"] == trees["status"] == "ok" and curve(trees)[19] < curve(trees)[1]
    rng = np.random.default_rng(0)
    for name in ("icl/boolean/conjunction", "icl/boolean/disjunction", "icl/boolean/parity", "icl/boolean/majority"):
        xs, ys = TASKS.get(name).factory().sample(8, 16, 6, rng)
        assert set(np.unique(xs)) <= {-1.0, 1.0} and set(np.unique(ys)) <= {-1.0, 1.0}
    xs, ys = TASKS.get("icl/boolean/parity").factory().sample(200, 1, 2, rng)  # parity of both coordinates
    assert (ys[:, 0] == np.where(xs[:, 0, 0] * xs[:, 0, 1] < 0, 1.0, -1.0)).all()
    pool = TASKS.get("icl/linear_pool").factory()
    xs, ys = pool.sample(500, 6, 5, rng)
    ws = np.round(np.linalg.lstsq(xs[0], ys[0], rcond=None)[0], 4)
    assert any(np.allclose(ws, w, atol=1e-3) for w in np.random.default_rng(1234).standard_normal((64, 5)))
    x_skew, _ = TASKS.get("icl/linear").factory().sample(4000, 1, 4, rng, ood="skewed_cov")
    var = x_skew[:, 0].var(axis=0)
    assert var[0] > 2 * var[3] and var.sum() == pytest.approx(4.0, rel=0.1)
    _, y_relu = TASKS.get("icl/relu2nn").factory().sample(4, 10, 5, rng)
    assert y_relu.shape == (4, 10)


def test_bad_input_is_one_line(tmp_path):
    for hp, msg in (({"d": 0}, "d=0 is out of range"), ({"d": 5, "k": 5000}, "k=5000 (points per prompt) is out of range")):
        r = run_cell(RunSpec("baseline:least_squares", "icl_eval", "icl/linear", 0, "random", hp))
        assert r["status"] == "failed" and msg in r["error"]["message"] and "\n" not in r["error"]["message"]
    with pytest.raises(BobError, match="did you mean icl/linear"):
        TASKS.get("icl/lineer")
    short = run_cell(RunSpec("scratch:gpt2", "pretrain_icl", "icl/linear", 0, "random", {"d": 5, "k": 11, "n_positions": 12, "train_steps": 1}))
    assert short["status"] == "failed" and "context of 12 tokens but prompts of k=11 points need 22" in short["error"]["message"]
    sparse = run_cell(RunSpec("baseline:least_squares", "icl_eval", "icl/sparse_linear", 0, "random", {"d": 2}))
    assert "sparsity 3 exceeds d=2" in sparse["error"]["message"]


def test_method_backbone_mismatches_are_skipped_with_reasons():
    grid = parse_grid({"backbones": ["scratch:gpt2", "baseline:ridge", "timm:resnet18.a1_in1k"], "methods": ["pretrain_icl", "icl_eval", "knn"],
                       "tasks": ["icl/linear", "digits"], "weights": "random"})
    exp = expand(grid)
    runnable = {(c.backbone, c.method, c.task) for c in exp.cells}
    assert runnable == {("scratch:gpt2", "pretrain_icl", "icl/linear"), ("baseline:ridge", "icl_eval", "icl/linear"), ("timm:resnet18.a1_in1k", "knn", "digits")}
    reasons = {r for _, r in exp.skipped}
    assert any("runs only scratch backbones" in r for r in reasons) and any("does not support icl_regression" in r for r in reasons)


def test_curve_plot_comes_from_records_alone(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "name: iclp\nbackbones: [baseline:least_squares, baseline:averaging, scratch:gpt2, scratch:lstm]\nweights: random\n"
                      "methods: [icl_eval, pretrain_icl]\ntasks: [icl/linear]\n"
                      "hparams:\n  icl_eval: {d: 3, n_eval: 100}\n  pretrain_icl: {d: 3, n_eval: 100, train_steps: 30, n_layer: 1, n_embd: 16, n_head: 1}\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert out.exit_code == 0, out.output
    assert "ran 4 cells: 4 ok" in out.output
    lstm = next(r for r in ResultStore(tmp_path / "res" / "iclp").records() if r["backbone"] == "scratch:lstm")
    assert lstm["curves"]["train_loss"] and lstm["backbone_meta"]["params_m"] > 0
    import harness.methods.icl as icl_module

    real_run = icl_module.PretrainICL.run
    icl_module.PretrainICL.run = None  # plotting must not run any model
    try:
        plotted = CliRunner().invoke(main, ["plot", "icl", "iclp", "--results", "res", "--out", "figs"])
    finally:
        icl_module.PretrainICL.run = real_run
    assert plotted.exit_code == 0, plotted.output
    (png,) = (tmp_path / "figs").glob("*.png")
    assert png.name == "icl_icl_linear__d_3.png" and png.read_bytes()[:4] == b"\x89PNG"
    md = CliRunner().invoke(main, ["aggregate", "iclp", "--results", "res"]).output
    assert "### icl_eval" in md and "baseline:least_squares" in md


def test_training_is_deterministic_given_the_seed():
    hp = {"d": 3, "train_steps": 40, "n_layer": 1, "n_embd": 16, "n_head": 2, "n_eval": 50}
    a, b = (run_cell(RunSpec("scratch:gpt2", "pretrain_icl", "icl/linear", 4, "random", hp)) for _ in range(2))
    c = run_cell(RunSpec("scratch:gpt2", "pretrain_icl", "icl/linear", 5, "random", hp))
    assert a["status"] == "ok" and curve(a) == curve(b) and curve(a) != curve(c)


@pytest.mark.slow
def test_small_transformer_learns_linear_regression_in_context(tmp_path):
    """Acceptance: d=5, 4 layers, width 64, a few thousand CPU steps -> error < 0.2 at k = 2d."""
    record = run_cell(RunSpec("scratch:gpt2", "pretrain_icl", "icl/linear", 0, "random",
                              {"d": 5, "n_layer": 4, "n_embd": 64, "n_head": 2, "train_steps": 2500, "n_eval": 400}), ResultStore(tmp_path / "s"))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["err_at_2d"] < 0.2, record["metrics"]
    assert curve(record)[10] < curve(record)[2]
