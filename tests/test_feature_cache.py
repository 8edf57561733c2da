"""Acceptance 3: a linear-probe grid of 8 lr/wd settings runs the backbone exactly once per split."""
import collections

import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.store import ResultStore

from .conftest import write_grid

DIGITS_SPLITS = {"train800": 800, "val200": 200, "test": 797}
GFLOPS_PROBE = 1  # building a backbone measures its GFLOPs with one 1-image forward


@pytest.fixture
def forward_counter():
    """Counts images through every timm ResNet forward (a global hook sees every model instance)."""
    counts = collections.Counter()

    def hook(module, args, output):
        if type(module).__name__ == "ResNet":
            counts["images"] += args[0].shape[0]
            counts["calls"] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield counts
    handle.remove()


def _records(results):
    return [r for r in ResultStore(results).records() if r["status"] == "ok"]


def test_eight_linear_cells_share_one_extraction(tmp_path, forward_counter):
    grid = write_grid(
        tmp_path / "lin.yaml",
        "name: lin8\n"
        "backbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [linear]\ntasks: [digits]\n"
        "hparams:\n  linear: {img_size: 16, solver: sgd, epochs: 5, lr: [0.1, 0.01, 0.001, 0.0001], wd: [0, 0.001]}\n",
    )
    result = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    records = _records(tmp_path / "res" / "lin8")
    assert len(records) == 8
    # train800, val200 and test each went through the backbone once; train800val200 is their union
    assert forward_counter["images"] == sum(DIGITS_SPLITS.values()) + GFLOPS_PROBE
    assert sum(r["feature_cache"]["misses"] for r in records) == 3  # train800, val200, test: all in the first cell
    assert all(r["protocol"]["selected_on"] is None for r in records)  # lr and wd fixed per cell

    # a second sweep with a different probe grid: all features come from the disk cache
    forward_counter.clear()
    grid2 = write_grid(tmp_path / "lin2.yaml", grid.read_text().replace("lin8", "lin8b").replace("epochs: 5", "epochs: 6"))
    assert CliRunner().invoke(main, ["sweep", str(grid2), "--results", str(tmp_path / "res")]).exit_code == 0
    assert forward_counter["images"] == 0
    assert not any(r["feature_cache"]["backbone_built"] for r in _records(tmp_path / "res" / "lin8b"))


def test_in_cell_search_of_eight_settings_runs_backbone_once_per_split(tmp_path, forward_counter):
    grid = write_grid(
        tmp_path / "search.yaml",
        "name: search8\n"
        "backbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [linear]\ntasks: [digits]\n"
        "hparams:\n  linear: {img_size: 16, solver: sgd, epochs: 5, search: {lr: [0.1, 0.01, 0.001, 0.0001], wd: [0, 0.001]}}\n",
    )
    assert CliRunner().invoke(main, ["sweep", str(grid), "--results", str(tmp_path / "res")]).exit_code == 0
    (record,) = _records(tmp_path / "res" / "search8")
    assert forward_counter["images"] == sum(DIGITS_SPLITS.values()) + GFLOPS_PROBE
    protocol = record["protocol"]
    assert len(protocol["candidates"]) == 8
    assert protocol["tuned_on"] == "train800" and protocol["selected_on"] == "val200"
    assert protocol["final_train_split"] == "train800val200" and protocol["reported_on"] == "test"
    best = max(protocol["candidates"], key=lambda c: c["val200_top1"])
    assert protocol["selected"] == {"lr": best["lr"], "wd": best["wd"]}


def test_accelerator_defaults_are_on_for_cuda_and_off_for_cpu():
    """Issue 14: bf16 autocast, channels-last, workers with pinned memory and decoded-image reuse by
    default on CUDA (extraction), bf16 AMP by default on CUDA (training); none of them on CPU, where
    they change numbers or do not pay. Checked without a GPU: these are the defaults the cells get."""
    from harness.features import ExtractOptions, FeatureCache
    from harness.methods.finetune import amp_dtype_for

    cuda, cpu = ExtractOptions.auto("cuda:0"), ExtractOptions.auto("cpu")
    assert (cuda.precision, cuda.channels_last, cuda.pin_memory, cuda.reuse_decoded) == ("bf16", True, True, True) and cuda.workers >= 1
    assert (cpu.precision, cpu.channels_last, cpu.workers, cpu.pin_memory, cpu.reuse_decoded) == ("fp32", False, 0, False, False)
    assert amp_dtype_for("cuda", "auto") == torch.bfloat16 and amp_dtype_for("cpu", "auto") is None and amp_dtype_for("cuda", "off") is None

    class _Backbone:  # reduced precision is part of the cache key; fp32 keys are unchanged
        cache_key = "b"

        class preprocess:
            @staticmethod
            def as_dict():
                return {"img_size": 32}

    fp32, bf16 = FeatureCache.key(_Backbone, "t", "test", [], cpu), FeatureCache.key(_Backbone, "t", "test", [], cuda)
    assert "precision" not in fp32 and bf16["precision"] == "bf16" and FeatureCache(None).path(fp32) is None
