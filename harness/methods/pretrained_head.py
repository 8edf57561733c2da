"""``pretrained_head``: a timm ImageNet-1k model's own classifier, evaluated as it ships.

Why a method of its own: timm's published ImageNet / -V2 / -Sketch / -R / -A tables score the
model's classifier with the model's *own* eval transform from its pretrained config (resize the
short side to ``img_size / crop_pct``, centre crop, its interpolation, its mean / std), not bob's
VTAB resize. Nothing is fitted or selected; the task's final split and every shifted set
(harness.eval_sets) are scored with the same logits. The record's ``preprocess`` says which
protocol ran (``protocol: timm-pretrained-eval`` with the resolved config).
"""
from __future__ import annotations

import time
from typing import Any

from ..errors import BobError
from ..eval_sets import add_eval_sets, finish_eval_sets, model_scores
from ..registry import register_method
from ..types import CLASSIFICATION
from .base import Method, MethodResult


def pretrained_eval_transform(model) -> tuple[Any, dict[str, Any]]:
    """timm's eval transform for ``model`` (resolve_data_config + create_transform) and the config it used."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=model)
    return create_transform(**config, is_training=False), config


def describe_config(config: dict[str, Any]) -> dict[str, Any]:
    size = int(config["input_size"][-1])
    crop_pct = float(config.get("crop_pct") or 1.0)
    return {"protocol": "timm-pretrained-eval", "img_size": size, "input_size": list(config["input_size"]), "crop_pct": crop_pct,
            "crop_mode": config.get("crop_mode", "center"), "resize_to": int(size / crop_pct) if config.get("crop_mode", "center") == "center" else None,
            "interpolation": config.get("interpolation"), "mean": [round(float(m), 6) for m in config["mean"]],
            "std": [round(float(s), 6) for s in config["std"]], "crop": "center", "source": "timm.data.resolve_data_config(model.pretrained_cfg)"}


@register_method
class PretrainedHead(Method):
    name = "pretrained_head"
    kinds = (CLASSIFICATION,)
    description = "a timm ImageNet-1k model's own classifier with its pretrained eval transform (crop_pct, interpolation, mean/std)"
    defaults = {"batch_size": 64}
    search_space = {}
    backbone_sources = ("timm",)

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        if getattr(backbone, "with_head", None) is None:
            raise BobError(f"method pretrained_head needs a timm backbone with its own classifier; {backbone.name} has none")
        model, _ = backbone.with_head()
        classes = int(getattr(model, "num_classes", 0) or 0)
        if classes != task.num_classes:
            raise BobError(f"method pretrained_head: {backbone.name}'s classifier has {classes} classes, task {task.name} has {task.num_classes}; "
                           "it scores tasks in the model's own label space (an ImageNet-1k model on the ImageNet family)")
        transform, config = pretrained_eval_transform(model)
        preprocess = describe_config(config)
        model = model.to(ctx.device).eval()
        split = task.final_splits[1]
        t0 = time.perf_counter()
        bs = int(hparams["batch_size"])
        scores_of = lambda s: model_scores(model, task.load(s).with_transform(transform), bs, ctx.device)  # noqa: E731
        logits, labels = scores_of(split)
        from .zeroshot import classification_metrics

        metrics = classification_metrics(logits, labels, task.num_classes)
        add_eval_sets(task, split, metrics, scores_of)
        ctx.add_time("eval", time.perf_counter() - t0)
        protocol = {"selected_on": None, "selected": {}, "reported_on": split, "note": "the model's own classifier as it ships: nothing fitted or selected",
                    "preprocess": preprocess}
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, metric_specs=specs, preprocess=preprocess)
