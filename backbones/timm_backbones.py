"""timm backbones: ``timm:<model name>[.<pretrained tag>]`` for any timm model, plus a curated set.

The curated set carries the metadata Battle of the Backbones compares on (family, pre-training
method and data); for any other name the metadata is inferred from timm's pretrained tag.
Parameter counts and GFLOPs are always *measured* on the model that ran (feature extractor,
no classifier, at the resolution used).
"""
from __future__ import annotations

import functools
import re
from typing import Any

from harness.errors import BobError, did_you_mean
from harness.registry import BACKBONES, Entry
from harness.types import Backbone, Preprocess

from .timm_catalog import CURATED

WEIGHT_CHOICES = ("pretrained", "random", "auto")

FAMILY_PREFIXES = (
    ("vit_", "vit"), ("deit", "vit"), ("beit", "vit"), ("eva", "vit"), ("flexivit", "vit"), ("hiera", "hiera"),
    ("swin", "swin"), ("convnext", "convnext"), ("resnet", "cnn"), ("resnext", "cnn"), ("regnet", "cnn"),
    ("efficientnet", "cnn"), ("mobilenet", "cnn"), ("densenet", "cnn"), ("vgg", "cnn"), ("mixer", "mlp"),
)
SSL_TAGS = ("dino", "dinov2", "mae", "ibot", "mocov3", "simclr", "msn", "beit", "data2vec", "ijepa", "swav")
VL_TAGS = ("clip", "openai", "laion", "siglip", "dfn", "datacomp", "metaclip", "webli")
DATA_TAGS = (
    ("lvd142m", "LVD-142M"), ("laion2b", "LAION-2B"), ("laion400m", "LAION-400M"), ("openai", "WIT-400M (OpenAI CLIP)"),
    ("datacomp", "DataComp-1B"), ("in22k", "ImageNet-21k"), ("in21k", "ImageNet-21k"), ("ig1b", "Instagram-1B"),
    ("yfcc100m", "YFCC100M"), ("jft", "JFT"), ("in12k", "ImageNet-12k"), ("in1k", "ImageNet-1k"),
)


def infer_family(architecture: str) -> str:
    for prefix, family in FAMILY_PREFIXES:
        if architecture.startswith(prefix):
            return family
    return "other"


def infer_pretraining(architecture: str, tag: str | None) -> tuple[str, str]:
    """(pre-training method, pre-training data) from the tag, e.g. 'dino' -> self-supervised."""
    text = f"{architecture}.{tag or ''}".lower()
    if any(t in text for t in VL_TAGS):
        method = "vision-language"
    elif any(re.search(rf"(^|[._]){t}($|[._\d])", text) for t in SSL_TAGS) or architecture.startswith("beit"):
        method = "self-supervised"
    elif tag:
        method = "supervised"
    else:
        method = "unknown"
    data = next((label for key, label in DATA_TAGS if key in (tag or "")), "unknown")
    if "_ft_" in (tag or "") and method != "supervised":
        method += " + supervised fine-tune"
    return method, data


def static_meta(name: str) -> dict[str, Any]:
    """Metadata known without building the model (curated entry, else inferred from the name)."""
    architecture, _, tag = name.partition(".")
    curated = CURATED.get(name, {})
    method, data = infer_pretraining(architecture, tag or None)
    return {
        "source": "timm",
        "family": curated.get("family", infer_family(architecture)),
        "architecture": architecture,
        "pretrained_tag": tag or None,
        "pretrain_method": curated.get("pretrain_method", method),
        "pretrain_data": curated.get("pretrain_data", data),
        "params_m": curated.get("params_m"),
        "gflops": curated.get("gflops"),
    }


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[set[str], set[str]]:
    import timm

    return set(timm.list_models()), set(timm.list_pretrained())


def validate_timm_name(name: str) -> None:
    import timm

    architecture, _, tag = name.partition(".")
    models, pretrained = _timm_names()
    if architecture not in models:
        raise BobError(f"unknown backbone 'timm:{name}': timm {timm.__version__} has no model '{architecture}'{did_you_mean(architecture, models)}")
    if tag and name not in pretrained:
        tags = sorted(n for n in pretrained if n.startswith(architecture + "."))
        raise BobError(f"unknown backbone 'timm:{name}': timm has no pretrained tag '{tag}' for {architecture}{did_you_mean(name, tags)}")


def smallest_working_size(model, start: int, limit: int) -> int | None:
    """The smallest multiple of 16 in (start, limit] that the model runs at, for the error message."""
    import torch

    device = next(model.parameters()).device
    for size in range((start // 16 + 1) * 16, max(limit, start) + 1, 16):
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size, device=device))
            return size
        except RuntimeError:
            continue
    return None


def measure_model(model, img_size: int, name: str = "the backbone", native: int = 224) -> dict[str, Any]:
    """Parameters and forward GFLOPs (2 per multiply-add) of the feature extractor at ``img_size``.

    The one-image forward doubles as an up-front input-size check: deep-stride networks (ConvNeXt,
    Swin...) cannot run below their total stride, and failing here gives a one-line error with the
    smallest size that works instead of a kernel-size traceback from the middle of extraction.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probe = torch.zeros(1, 3, img_size, img_size, device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(probe)
        gflops = counter.get_total_flops() / 1e9
    except Exception:  # the counter cannot trace every model; a plain forward tells a size problem apart
        gflops = None
        try:
            with torch.no_grad():
                model(probe)
        except RuntimeError as exc:
            smallest = smallest_working_size(model, img_size, native)
            fix = f"use img_size={smallest} or more (--set img_size={smallest})" if smallest else f"use its native img_size={native}"
            raise BobError(f"{name} cannot run at img_size={img_size} ({str(exc).splitlines()[0]}); {fix}") from None
    model.train(was_training)
    return {"params_m": round(params / 1e6, 3), "gflops": None if gflops is None else round(gflops, 4), "measured_at": img_size}


def load_timm_backbone(name: str, weights: str = "pretrained", seed: int = 0, img_size: int | None = None) -> Backbone:
    """Resolve weights, preprocessing and cache identity now; build the nn.Module on first use."""
    from timm.models import get_pretrained_cfg

    from .weights import locate_pretrained, resolve_weights

    validate_timm_name(name)
    cfg = get_pretrained_cfg(name) or get_pretrained_cfg(name.partition(".")[0])
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else dict(cfg.__dict__ if cfg else {})
    native = int((cfg.get("input_size") or (3, 224, 224))[-1])
    size = int(img_size or native)
    meta = static_meta(name)
    meta.update({"native_img_size": native, "params_m": None, "gflops": None, "crop_pct": cfg.get("crop_pct")})

    create_kwargs: dict[str, Any] = {"num_classes": 0}
    if size != native and cfg.get("fixed_input_size"):
        create_kwargs["img_size"] = size
    chosen = resolve_weights(weights, seed, f"timm:{name}", meta, lambda: locate_pretrained(cfg.get("hf_hub_id"), cfg.get("url")),
                             f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"`", "a .safetensors/.pth file")
    meta.update(chosen.meta)
    resolved, file, weights_id = chosen.resolved, chosen.file, chosen.weights_id

    def build(keep_head: bool = False):
        import timm
        import torch

        torch.manual_seed(seed)  # random-init weights are a function of the cell seed
        kwargs = dict(create_kwargs)
        if keep_head:  # the model's own classifier, as it ships (pretrained_head)
            kwargs.pop("num_classes", None)
        if resolved == "pretrained":
            kwargs["pretrained"] = True
            if file:
                kwargs["pretrained_cfg_overlay"] = {"file": file}
        try:
            model = timm.create_model(name, **kwargs)
        except TypeError as exc:
            if "img_size" in kwargs:
                raise BobError(f"timm:{name} has a fixed input size of {native} px and cannot be built at img_size={size}: {exc}") from None
            raise
        except RuntimeError as exc:
            if file:
                raise BobError(f"--weights {file} does not fit timm:{name}: {str(exc).splitlines()[0]}") from None
            raise
        return model

    meta["_measure"] = lambda model: measure_model(model, size, f"timm:{name}", native)
    preprocess = Preprocess(
        img_size=size,
        mean=tuple(cfg.get("mean") or (0.485, 0.456, 0.406)),
        std=tuple(cfg.get("std") or (0.229, 0.224, 0.225)),
        interpolation=cfg.get("interpolation") or "bicubic",
    )
    def with_head():
        model = build(keep_head=True)
        return model, dict(getattr(model, "pretrained_cfg", None) or cfg)

    return Backbone(name=f"timm:{name}", meta=meta, preprocess=preprocess, cache_key=f"timm:{name}|{weights_id}", build=build,
                    with_head=with_head)


def _factory_for(name: str):
    def factory(weights: str = "pretrained", seed: int = 0, img_size: int | None = None) -> Backbone:
        return load_timm_backbone(name, weights, seed, img_size)

    return factory


def _resolve_any(full_name: str) -> Entry:
    name = full_name.split(":", 1)[1]
    if not name:
        raise BobError("backbone 'timm:' needs a model name, e.g. timm:resnet50 or timm:vit_small_patch16_224.augreg_in21k")
    validate_timm_name(name)
    return Entry(full_name, _factory_for(name), static_meta(name))


for _name in CURATED:
    BACKBONES.add(f"timm:{_name}", _factory_for(_name), **static_meta(_name))
BACKBONES.add_prefix("timm", _resolve_any, "any timm model works as timm:<name>[.<tag>]")
