"""Distributed cells (issue 22): one cell on several processes through torch.distributed's
launcher (gloo on CPU, where ``gpus_per_cell`` counts processes), epoch order from (seed, epoch)
only, loader workers, gradient accumulation, rank-0 records and failing ranks."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.distributed import GlobalBatchSampler, epoch_permutation
from harness.store import ResultStore

from .conftest import REPO, write_grid
from .fixtures import make_list_file_dataset


def test_epoch_order_is_a_function_of_seed_and_epoch_only():
    """The DataLoader's own shuffle order in one process; with W ranks x A micro-batches the shares of
    each step put back together are that step's global batch, whatever W and A."""
    for seed, epoch, n in [(0, 0, 10), (3, 2, 37)]:
        loader = torch.utils.data.DataLoader(list(range(n)), batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        assert next(iter(loader)).tolist() == epoch_permutation(n, seed, epoch)
    n, batch = 37, 8
    single = [m[0][0] for m, _ in GlobalBatchSampler(n, batch, seed=5).steps()]
    for world_size, accum in [(2, 1), (4, 1), (2, 2), (3, 1)]:
        ranks = [GlobalBatchSampler(n, batch, 5, world_size, r, accum).steps() for r in range(world_size)]
        for step, expected in enumerate(single):
            shares = {m * world_size + r: ranks[r][step][0][m] for r in range(world_size) for m in range(accum)}
            joined = [i for c in sorted(shares) for i in (shares[c][0] if shares[c][1] else [])]
            assert joined == expected and all(ranks[r][step][1] == len(expected) for r in range(world_size))
    other_epoch = GlobalBatchSampler(n, batch, seed=5)
    other_epoch.set_epoch(1)
    assert [m[0][0] for m, _ in other_epoch.steps()] != single


class _NoisyPoints:
    """A tiny dataset with a random 'augmentation' (noise drawn from the global torch RNG)."""

    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 6, generator=g), torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.3 * torch.randn(6), self.y[i]


def _fit_curve(workers: int, accum: int = 1):
    from harness.features import FeatureCache
    from harness.methods.finetune import fit
    from harness.types import RunContext

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    data = _NoisyPoints()
    ctx = RunContext(device="cpu", seed=1, cell_id="c", feature_cache=FeatureCache(None), checkpoint_dir=None, num_workers=workers, log=lambda m: None)
    hp = {"epochs": 3, "warmup_epochs": 0.5, "lr": 1e-2, "grad_clip": 1.0, "amp": "off", "accum_steps": accum}

    def make_loader(epoch, generator):
        return torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=generator)

    def loss_of(batch, forward):
        x, y = batch
        return torch.nn.functional.cross_entropy(forward(x), y), len(y)

    curve, seen, _, _ = fit(model, params, opt, make_loader, loss_of, hp, ctx, None, 5, desc="t", set_train_mode=model.train)
    return [p["train_loss"] for p in curve], torch.cat([p.detach().flatten() for p in params]), seen, ctx.distributed


def test_same_fit_with_0_and_2_loader_workers_and_with_accumulation():
    """Augmentation is drawn per sample from (seed, epoch, index): workers change nothing; two
    accumulated micro-batches of 4 train like one batch of 8 (same global batch)."""
    curve0, weights0, seen, report = _fit_curve(workers=0)
    curve2, weights2, _, report2 = _fit_curve(workers=2)
    assert curve0 == curve2 and torch.equal(weights0, weights2) and seen == 3 * 40
    assert report2["loader_workers"] == 2 and report["per_device_batch"] == 8
    curve_acc, weights_acc, _, report_acc = _fit_curve(workers=0, accum=2)
    assert np.allclose(curve_acc, curve0, rtol=1e-4) and torch.allclose(weights_acc, weights0, rtol=1e-4, atol=1e-6)
    assert report_acc["accum_steps"] == 2 and report_acc["per_device_batch"] == 4 and report_acc["global_batch"] == 8


def _records(folder):
    return {r["method"]: r for r in ResultStore(folder).records()}


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path, monkeypatch):
    """Acceptance 1: fine-tuning and LoRA on a ViT without BatchNorm or dropout, 2 gloo processes vs
    1 with the same global batch: the same loss curve (1e-4 relative) and the same final metric;
    rank 0 writes the one record, which says how the cell was spread."""
    monkeypatch.chdir(tmp_path)
    root = make_list_file_dataset(tmp_path / "data", {"train800": 14, "val200": 2, "test": 6})
    grid = write_grid(tmp_path / "g.yaml", f"name: dist\nbackbones: [timm:vit_tiny_patch16_224.augreg_in21k]\nweights: random\n"
                      f"methods: [finetune, lora]\ntasks: ['folder:{root}']\n"
                      "hparams:\n  all: {img_size: 32, epochs: 2, batch_size: 16, warmup_epochs: 0.5}\n")
    for results, extra in (("one", []), ("two", ["--gpus-per-cell", "2"])):
        out = CliRunner().invoke(main, ["sweep", str(grid), "--results", results, *extra])
        assert out.exit_code == 0, out.output
    one, two = _records(tmp_path / "one" / "dist"), _records(tmp_path / "two" / "dist")
    assert set(one) == set(two) == {"finetune", "lora"}
    for method in one:
        a, b = one[method], two[method]
        assert a["status"] == b["status"] == "ok", (a["error"], b["error"])
        la, lb = [p["train_loss"] for p in a["curves"]["train"]], [p["train_loss"] for p in b["curves"]["train"]]
        assert len(la) == 2 and np.allclose(la, lb, rtol=1e-4), (method, la, lb)
        assert a["metrics"]["top1"] == pytest.approx(b["metrics"]["top1"], abs=1e-9)
        assert (b["distributed"]["world_size"], b["distributed"]["per_device_batch"], b["distributed"]["accum_steps"]) == (2, 8, 1)
        assert (a["distributed"]["world_size"], a["distributed"]["per_device_batch"]) == (1, 16)
    assert len([p for p in (tmp_path / "two" / "dist").glob("*.json") if not p.name.startswith(".")]) == 2
    assert not list((tmp_path / "two" / "dist" / ".checkpoints").glob("*.pt"))  # rank 0 removed the resume points


PLUGIN_ENV = {"BOB_PLUGINS": "tests.rank_plugin", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _rank_sweep(tmp_path, hparams: str, *args: str):
    import subprocess

    grid = write_grid(tmp_path / "g.yaml", f"name: rk\nbackbones: [toy:a]\nmethods: [rankprobe]\ntasks: [toybias/gender_ss]\n"
                      f"gpus_per_cell: 2\nhparams: {{rankprobe: {hparams}}}\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(grid), "--results", str(tmp_path / "res"), *args],
                          env={**os.environ, **PLUGIN_ENV}, capture_output=True, text=True, timeout=300)
    return proc, list(ResultStore(tmp_path / "res" / "rk").records())


@pytest.mark.slow
@pytest.mark.parametrize("fail", ["none", "raise", "kill"])
def test_rank_zero_writes_the_one_record_and_a_failing_rank_fails_the_cell(tmp_path, fail):
    """gpus_per_cell from the grid: both ranks run, one record. A rank that raises, or is killed,
    fails the cell with its traceback (or its signal), and leaves nothing else in the store."""
    proc, records = _rank_sweep(tmp_path, "{fail_rank: -1}" if fail == "none" else f"{{fail_rank: 1, fail: {fail}}}")
    assert len(records) == 1, proc.stderr[-2000:]
    record = records[0]
    files = {p.name for p in (tmp_path / "res" / "rk").iterdir() if not p.name.startswith(".")}
    assert files == {f"{record['id']}.json"}
    if fail == "none":
        assert record["status"] == "ok" and record["metrics"]["world"] == 2.0 and record["distributed"]["world_size"] == 2
    elif fail == "raise":
        assert record["status"] == "failed" and record["error"]["type"] == "ValueError" and record["error"]["rank"] == 1
        assert "injected failure on rank 1" in record["error"]["traceback"] and "Traceback" in record["error"]["traceback"]
    else:
        assert record["status"] == "failed" and record["error"]["type"] == "RankFailed"
        assert "rank 1" in record["error"]["message"] and "SIGKILL" in record["error"]["message"]


def test_bad_distributed_input_is_one_line_before_any_cell_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path / "g.yaml", "name: bad\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [finetune]\ntasks: [digits]\n"
                      "hparams: {finetune: {batch_size: 30, accum_steps: 4}}\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res", "--procs-per-cell", "2", "--device", "cpu"])
    assert out.exit_code != 0 and "batch_size=30 (the global batch) is not divisible by world size 2 x accum_steps 4" in out.output
    too_many = (os.cpu_count() or 1) + 1
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res", "--gpus-per-cell", str(too_many), "--device", "cpu"])
    assert out.exit_code != 0 and f"--gpus-per-cell={too_many} is more than this allocation has" in out.output
    grid.write_text(grid.read_text() + "gpus_per_cell: 0\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert out.exit_code != 0 and "'gpus_per_cell' must be a positive integer" in out.output
    assert not (tmp_path / "res" / "bad").exists() or not list((tmp_path / "res" / "bad").glob("*.json"))


@pytest.mark.slow
def test_sharded_extraction_writes_the_features_one_process_extracts(tmp_path, monkeypatch):
    """Acceptance 1: under 2 ranks each extracts its share, rank 0 writes the one cache entry, equal to
    the single-process entry; the kNN metric on it is the same."""
    monkeypatch.chdir(tmp_path)
    root = make_list_file_dataset(tmp_path / "data", {"train800": 5, "val200": 2, "test": 3})
    grid = write_grid(tmp_path / "g.yaml", f"name: ex\nbackbones: [timm:vit_tiny_patch16_224.augreg_in21k]\nweights: random\nmethods: [knn]\n"
                      f"tasks: ['folder:{root}']\nhparams: {{all: {{img_size: 32, batch_size: 4}}}}\n")
    for name, extra in (("one", []), ("two", ["--gpus-per-cell", "2"])):
        out = CliRunner().invoke(main, ["sweep", str(grid), "--results", name, "--cache-dir", f"cache_{name}", *extra])
        assert out.exit_code == 0, out.output
    entries = {name: sorted(p for p in (tmp_path / f"cache_{name}").glob("*.npy") if not p.name.endswith(".labels.npy")) for name in ("one", "two")}
    assert len(entries["one"]) == len(entries["two"]) >= 2 and [p.name for p in entries["one"]] == [p.name for p in entries["two"]]
    for a, b in zip(entries["one"], entries["two"]):
        assert np.allclose(np.load(a), np.load(b), atol=1e-5)
        assert np.array_equal(np.load(a.with_suffix(".labels.npy")), np.load(b.with_suffix(".labels.npy")))
        assert json.loads(b.with_suffix(".json").read_text())["world_size"] == 2
    one, two = _records(tmp_path / "one" / "ex")["knn"], _records(tmp_path / "two" / "ex")["knn"]
    assert one["status"] == two["status"] == "ok" and one["metrics"] == two["metrics"] and two["distributed"]["world_size"] == 2


@pytest.mark.slow
def test_a_detection_cell_trains_under_two_ranks_and_writes_one_record(tmp_path, monkeypatch):
    from .test_detection import make_mini_lvis

    monkeypatch.chdir(tmp_path)
    train, val, images = make_mini_lvis(tmp_path, n_train=8, n_val=4)
    grid = write_grid(tmp_path / "g.yaml", f"name: det\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [detector]\n"
                      f"tasks: ['lvis:{val}@{images}?train={train}']\ngpus_per_cell: 2\n"
                      "hparams:\n  detector: {img_size: 64, epochs: 2, batch_size: 4, fpn_channels: 16, box_head_dim: 32, rois_per_image: 16, proposals: 50}\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert out.exit_code == 0, out.output
    (record,) = ResultStore(tmp_path / "res" / "det").records()
    assert record["status"] == "ok", record["error"]
    assert record["distributed"]["world_size"] == 2 and record["distributed"]["per_device_batch"] == 2 and "AP" in record["metrics"]
    assert len(record["curves"]["train"]) == 2
    assert [p.name for p in (tmp_path / "res" / "det").glob("*.json") if not p.name.startswith(".")] == [f"{record['id']}.json"]
