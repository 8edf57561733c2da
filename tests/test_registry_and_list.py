import subprocess
import sys

import pytest

from harness.errors import BobError
from harness.registry import BACKBONES, METHODS, TASKS

from .conftest import run_bob


def test_unknown_backbone_suggests_close_match():
    with pytest.raises(BobError) as err:
        BACKBONES.get("timm:vit_small_patch16_224.augreg_in21")
    msg = str(err.value)
    assert "\n" not in msg
    assert "did you mean" in msg and "vit_small_patch16_224.augreg_in21k" in msg


def test_unknown_timm_architecture_and_tag():
    with pytest.raises(BobError, match="did you mean.*resnet50"):
        BACKBONES.get("timm:resnet5O")
    with pytest.raises(BobError, match="no pretrained tag 'a9_in1k'"):
        BACKBONES.get("timm:resnet50.a9_in1k")
    assert BACKBONES.get("timm:resnet10t").meta["family"] == "cnn"  # any timm model, not only curated


def test_unknown_method_and_task():
    with pytest.raises(BobError, match="did you mean linear"):
        METHODS.get("liner")
    with pytest.raises(BobError, match="did you mean shapes/location"):
        TASKS.get("shapes/locaton")


def test_curated_metadata_is_complete():
    names = BACKBONES.names()
    assert len(names) >= 20
    families = {BACKBONES.get(n).meta["family"] for n in names}
    assert {"cnn", "vit", "swin", "convnext", "hiera"} <= families
    pretrain = {BACKBONES.get(n).meta["pretrain_method"] for n in names}
    assert {"supervised", "self-supervised", "vision-language"} <= pretrain
    dino = BACKBONES.get("timm:vit_small_patch16_224.dino").meta
    assert dino["pretrain_method"] == "self-supervised" and dino["params_m"] > 20 and dino["gflops"] > 8


def test_list_filters_and_never_imports_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from harness.cli import main\n"
        "r = CliRunner().invoke(main, ['list', 'backbones', '--family', 'vit'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output)\n"
        "heavy = [m for m in ('torch', 'timm', 'transformers', 'wandb', 'sklearn', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    rows = [line for line in out.splitlines() if line.startswith("timm:")]
    assert rows and all(" vit " in row for row in rows)
    assert not any("resnet" in row for row in rows)


def test_list_tasks_kind_filter_and_unknown_backbone_cli():
    out = run_bob("list", "tasks", "--kind", "classification")
    assert out.returncode == 0
    assert "digits" in out.stdout and "shapes/location" in out.stdout
    bad = run_bob("run", "--backbone", "timm:resnet18.a1_in1kk", "--method", "knn", "--task", "digits")
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown backbone") and "did you mean" in lines[0]
