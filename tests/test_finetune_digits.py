"""Acceptance 4: fine-tuning a small random-init CNN on digits beats 80% top-1 in minutes on CPU;
knn and linear on the same sweep are recorded too."""
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.store import ResultStore

from .conftest import write_grid


@pytest.mark.slow
def test_finetune_random_init_cnn_on_digits(tmp_path):
    grid = write_grid(
        tmp_path / "g.yaml",
        "name: digits_ft\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn, linear, finetune]\ntasks: [digits]\n"
        "hparams:\n  all: {img_size: 32}\n  finetune: {epochs: 4, lr: 1.0e-3}\n  linear: {search: {C: [0.1, 1.0]}}\n",
    )
    result = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res", "--publish", "digits_ft"])
    assert result.exit_code == 0, result.output
    records = {r["method"]: r for r in ResultStore(tmp_path / "res" / "digits_ft").records()}
    assert set(records) == {"knn", "linear", "finetune"} and all(r["status"] == "ok" for r in records.values())
    ft = records["finetune"]
    assert ft["metrics"]["top1"] > 80.0, ft["metrics"]
    assert ft["backbone_meta"]["weights"] == "random-init" and ft["timing"]["fit_s"] > 0  # wall time is recorded (speed lives in bench/, never in a timed test)
    losses = [p["train_loss"] for p in ft["curves"]["train"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (tmp_path / "leaderboards" / "digits_ft" / "leaderboard.md").is_file()


@pytest.mark.slow
def test_finetune_resumes_from_checkpoint_to_the_same_result(tmp_path):
    """A fit preempted after epoch 1 and started again resumes from its checkpoint and ends with
    exactly the metric of an uninterrupted fit (augmentation on, so RNG state matters)."""
    from harness.features import FeatureCache
    from harness.methods.finetune import train_and_evaluate
    from harness.registry import BACKBONES, TASKS
    from harness.types import RunContext

    task = TASKS.get("digits").factory()
    hp = {"lr": 1e-3, "wd": 0.05, "epochs": 3, "warmup_epochs": 0.5, "label_smoothing": 0.0, "augment": True, "grad_clip": 1.0, "batch_size": 64}

    class Preempted(Exception):
        pass

    def preempt_after_first_epoch(metrics, epoch):
        if epoch == 1:
            raise Preempted

    def run(checkpoint, on_metrics=None):
        torch.manual_seed(999)  # a new process starts from some other RNG state; resume must not depend on it
        ctx = RunContext(device="cpu", seed=3, cell_id="c", feature_cache=FeatureCache(None), checkpoint_dir=tmp_path, on_metrics=on_metrics, log=lambda m: None)
        backbone = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=3, img_size=16)
        return train_and_evaluate(backbone, task, "train800", "val200", hp, ctx, checkpoint)

    import torch

    uninterrupted, _, curve_full, _ = run(tmp_path / "a.pt")
    with pytest.raises(Preempted):
        run(tmp_path / "b.pt", preempt_after_first_epoch)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1  # plain tensors and containers: loads safely
    resumed, _, curve_resumed, _ = run(tmp_path / "b.pt")
    assert resumed == uninterrupted
    assert [p["train_loss"] for p in curve_resumed] == pytest.approx([p["train_loss"] for p in curve_full], rel=1e-6)
