"""pretrained_head (issue 21, acceptance 3): a timm IN-1k model's own classifier with the model's
pretrained eval transform. resnet18.tv_in1k's config (crop_pct 0.875, bilinear) differs from bob's
default (resize straight, bicubic): the tensors the model sees must be timm's, computed here by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.plugins import load_plugins
from harness.runner import run_cell
from harness.spec import RunSpec

MODEL = "timm:resnet18.tv_in1k"


def test_pretrained_head_uses_the_models_own_eval_transform(tmp_path):
    from PIL import Image
    from torchvision import transforms as T

    load_plugins()
    seen: list[torch.Tensor] = []

    def hook(module, args, output):
        if type(module).__name__ == "ResNet":
            seen.append(args[0].detach().clone())
            assert output.shape[1] == 1000  # the classifier is there (not the pooled features)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        record = run_cell(RunSpec(backbone=MODEL, method="pretrained_head", task="shift/imagenet_toy", weights="random", seed=0,
                                  hparams={"batch_size": 64}), device="cpu")
    finally:
        handle.remove()
    assert record["status"] == "ok", record["error"]
    pre = record["preprocess"]
    assert pre["protocol"] == "timm-pretrained-eval" and pre["crop_pct"] == 0.875 and pre["interpolation"] == "bilinear"
    assert pre["resize_to"] == math.floor(224 / 0.875) == 256 and pre["img_size"] == 224
    from harness.registry import TASKS

    task = TASKS.get("shift/imagenet_toy").factory()
    val = task.load("val")
    # timm's protocol by hand: short side to 256 (bilinear), centre crop 224, ImageNet mean/std
    by_hand = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224), T.ToTensor(),
                         T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    expected = torch.stack([by_hand(Image.open(s.image).convert("RGB")) for s in val.samples])
    first = next(x for x in seen if x.shape[0] == len(val))  # the val batch (the first forward after the FLOPs probe)
    assert torch.allclose(first, expected, atol=1e-6)
    # bob's default (VTAB: straight resize, bicubic) gives other tensors: the protocol matters
    backbone = __import__("harness.registry", fromlist=["BACKBONES"]).BACKBONES.get(MODEL).factory(weights="random", seed=0)
    vtab = torch.stack([backbone.preprocess.eval_transform()(Image.open(s.image).convert("RGB")) for s in val.samples])
    assert not torch.allclose(vtab, expected, atol=1e-3)
    # every set was scored by the same classifier; R/A within their 200 classes
    m = record["metrics"]
    assert {"top1", "top5", "imagenet_r/top1", "imagenet_a/top1_all", "imagenet_v2_mf/top1", "real/top1", "ood_top1"} <= set(m)
    assert record["protocol"]["preprocess"] == pre and record["primary_metric"]["name"] == "ood_top1"
    assert record["backbone_meta"]["weights"] == "random-init"  # honest: a random-init classifier here
    assert np.isfinite(m["ood_top1"])


def test_pretrained_head_refuses_a_task_outside_the_models_label_space():
    load_plugins()
    record = run_cell(RunSpec(backbone=MODEL, method="pretrained_head", task="digits", weights="random", seed=0, hparams={}), device="cpu")
    assert record["status"] == "failed" and "1000 classes, task digits has 10" in record["error"]["message"]


def test_imagenet_family_declares_the_models_eval_transform_for_every_method(tmp_path):
    """The ImageNet-family task declares the model's own eval protocol: bob's Preprocess with the
    model's crop_pct equals timm's create_transform on the same config; a kNN cell records it."""
    from PIL import Image
    from timm.data import create_transform

    from harness.types import Preprocess

    image = Image.fromarray((np.random.RandomState(0).rand(37, 53, 3) * 255).astype("uint8"))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for crop_pct, interp in ((0.875, "bilinear"), (0.95, "bicubic")):
        ours = Preprocess(32, mean, std, interp, crop_pct=crop_pct).eval_transform()(image)
        timms = create_transform(input_size=(3, 32, 32), crop_pct=crop_pct, interpolation=interp, mean=mean, std=std, is_training=False)(image)
        assert torch.allclose(ours, timms, atol=1e-6)
    load_plugins()
    record = run_cell(RunSpec(backbone="timm:resnet18.a1_in1k", method="knn", task="shift/imagenet_toy", weights="random", seed=0,
                              hparams={"img_size": 32, "k": 3}), device="cpu")
    assert record["status"] == "ok", record["error"]
    pre = record["preprocess"]
    assert pre["protocol"] == "model-eval" and pre["crop_pct"] == 0.95 and pre["resize_to"] == 33 and pre["crop"] == "center"
    digits = run_cell(RunSpec(backbone="timm:resnet18.a1_in1k", method="knn", task="digits", weights="random", seed=0,
                              hparams={"img_size": 16, "k": 3}), device="cpu")
    assert digits["preprocess"]["resize"] == "direct" and "crop_pct" not in digits["preprocess"]  # VTAB-style tasks unchanged
