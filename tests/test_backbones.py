"""timm backbones: weights from random init, a local checkpoint, the local HF cache, or a clear error."""
import json
import os
import subprocess
import sys

import pytest
import torch

from harness.errors import BobError
from harness.registry import BACKBONES

from .fixtures import make_hf_hub_cache


def _features(backbone, size=32):
    torch.manual_seed(123)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return backbone.model.eval()(x)


def test_random_init_is_labelled_and_seeded():
    a = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=1, img_size=32)
    b = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=1, img_size=32)
    c = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=2, img_size=32)
    assert a.meta["weights"] == "random-init" and a.meta["pretrain_method"] == "random"
    assert torch.equal(_features(a), _features(b)) and not torch.equal(_features(a), _features(c))
    assert a.cache_key != c.cache_key
    assert a.feature_dim == 512 and a.meta["params_m"] == pytest.approx(11.18, abs=0.01) and a.meta["measured_at"] == 32


def test_pretrained_offline_error_says_how_to_get_weights():
    with pytest.raises(BobError) as err:
        BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="pretrained")
    msg = str(err.value)
    assert "huggingface.co/timm/resnet18.a1_in1k" in msg and "bob prefetch" in msg and "--weights random" in msg


def test_auto_falls_back_to_random_init_with_a_note():
    bb = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="auto")
    assert bb.meta["weights"] == "random-init" and "fell back to random init" in bb.meta["weights_note"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_file_loads(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    source = timm.create_model("resnet18", num_classes=1000)  # a checkpoint with its classifier, as published
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    bb = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights=str(path), img_size=32)
    assert bb.meta["weights"] == "pretrained" and bb.meta["weights_file"] == str(path.resolve())
    assert bb.cache_key.endswith(bb.meta["weights_sha256"][:16])
    source.reset_classifier(0)
    assert torch.allclose(_features(bb), _features(type("B", (), {"model": source})()), atol=1e-6)


def test_wrong_checkpoint_file_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3, 3, 3)}, str(path))
    bb = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights=str(path))
    with pytest.raises(BobError, match="does not fit timm:resnet18.a1_in1k"):
        bb.model
    with pytest.raises(BobError, match="no such file"):
        BACKBONES.get("timm:resnet18.a1_in1k").factory(weights=str(tmp_path / "missing.pth"))


def test_pretrained_weights_load_from_local_hugging_face_cache(tmp_path):
    """The real download path, served from a hub cache laid out as huggingface_hub writes it."""
    reference = make_hf_hub_cache(tmp_path / "hub", "timm/resnet18.a1_in1k")
    code = (
        "import json, torch\n"
        "from harness.registry import BACKBONES\n"
        "bb = BACKBONES.get('timm:resnet18.a1_in1k').factory(weights='pretrained', img_size=32)\n"
        "w = bb.model.conv1.weight\n"
        "print(json.dumps({'weights': bb.meta['weights'], 'sum': float(w.sum())}))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["weights"] == "pretrained"
    assert got["sum"] == pytest.approx(float(reference.conv1.weight.detach().sum()), rel=1e-5)


def test_vit_input_resolution_is_a_hyper_parameter():
    bb = BACKBONES.get("timm:vit_tiny_patch16_224.augreg_in21k").factory(weights="random", img_size=32)
    assert bb.preprocess.img_size == 32 and bb.preprocess.mean == (0.5, 0.5, 0.5)
    assert _features(bb, 32).shape == (2, 192)


def test_too_small_input_is_one_line_error_with_the_smallest_size_that_works(tmp_path):
    bb = BACKBONES.get("timm:convnext_atto.d2_in1k").factory(weights="random", img_size=16)
    with pytest.raises(BobError) as err:
        bb.model
    msg = str(err.value)
    assert "\n" not in msg and "timm:convnext_atto.d2_in1k cannot run at img_size=16" in msg and "--set img_size=32" in msg
    # ResNet pads its way down to tiny inputs: no error there
    assert BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", img_size=16).model is not None


def test_feature_dim_is_the_pooled_output_width_when_a_pre_logits_layer_widens_it():
    """MobileNetV3's conv_head widens the pooled features (576 -> 1024): heads sized from
    num_features failed with a shape error under finetune and LoRA."""
    import torch

    from harness.registry import BACKBONES

    for name in ("timm:mobilenetv3_small_100", "timm:resnet18.a1_in1k"):
        backbone = BACKBONES.get(name).factory(weights="random", seed=0, img_size=32)
        with torch.no_grad():
            out = backbone.model.eval()(torch.zeros(1, 3, 32, 32))
        assert out.shape[1] == backbone.feature_dim
