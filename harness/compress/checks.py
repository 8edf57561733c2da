"""Checks of a compression against a backbone at grid expansion (one-line errors before any cell runs).

The layer shapes come from the model built on PyTorch's ``meta`` device (no memory, no weights,
no download): a 2:4 pattern on a layer whose width is not a multiple of 4, a group size that does
not divide a width, or a backbone with nothing to compress is reported with the layer's name.
"""
from __future__ import annotations

from typing import Any

from ..errors import BobError
from .config import compress_label, parse_pattern

SOURCES = {"rtn": ("timm", "openclip", "hf"), "gptq": ("timm", "openclip", "hf"), "magnitude": ("timm", "openclip", "hf"),
           "wanda": ("timm", "openclip", "hf"), "channel": ("timm",)}
WHY = {"channel": "structured channel pruning goes through torch-pruning's dependency graph, which bob wires for timm models only"}


def meta_structure(backbone: str):
    """The backbone's module tree on the meta device, or None when it cannot be had offline."""
    import torch

    from ..registry import BACKBONES

    source = BACKBONES.get(backbone).meta.get("source")
    try:
        with torch.device("meta"):
            if source == "timm":
                import timm

                return timm.create_model(backbone.split(":", 1)[1].partition(".")[0], pretrained=False, num_classes=0)
            if source == "hf":
                model_id = BACKBONES.get(backbone).meta.get("pretrained_tag")
                import transformers  # the engine reaches plugins only through the loader: the library directly
                cfg = transformers.AutoConfig.from_pretrained(model_id, local_files_only=True)
                return transformers.AutoModelForCausalLM.from_config(cfg)
    except Exception:  # no local config (a hub model not cached yet): shapes are checked when the cell runs
        return None
    return None


def check_backbone(cfg: dict[str, Any], backbone: str, weights: str, where: str = "compress") -> None:
    """Raise a one-line BobError when ``cfg`` cannot compress ``backbone``."""
    from ..registry import BACKBONES

    meta = BACKBONES.get(backbone).meta
    source = meta.get("source")
    label = compress_label(cfg)
    if source not in SOURCES[cfg["method"]]:
        raise BobError(f"{where}: {label} cannot compress {backbone} ({source} backbone): "
                       f"{WHY.get(cfg['method'], cfg['method'] + ' handles timm, open_clip and hf: models')}; exclude the pair")
    caps = meta.get("capabilities") or ["image"]
    cal = cfg.get("calibration") or {}
    if cfg["method"] in ("gptq", "wanda") and "causal-lm" in caps and not cal.get("text"):
        raise BobError(f"{where}: {label} on the language model {backbone} needs calibration.text (a text file to draw "
                       f"{cal.get('samples')} windows of {cal.get('seq_len')} tokens from)")
    if cfg["method"] == "channel":
        return
    check_layers(cfg, meta_structure(backbone), backbone, where)


def check_layers(cfg: dict[str, Any], model, backbone: str, where: str = "compress") -> None:
    """Shape checks on a built (or meta-device) model; also run on the real model before compressing."""
    if model is None:
        return
    from .layers import in_features, target_layers

    label = compress_label(cfg)
    layers = target_layers(model)
    if not layers:
        raise BobError(f"{where}: {label} cannot compress {backbone}: it has no linear layers outside the ones kept dense "
                       "(embeddings, patch embedding, head); use compress method channel for convolutional networks")
    nm = parse_pattern(cfg.get("pattern"), where) if cfg.get("pattern") else None
    for name, module in layers:
        width = in_features(module)
        if nm is not None and width % nm[1]:
            raise BobError(f"{where}: pattern {cfg['pattern']} needs every layer's input width to be a multiple of {nm[1]}; "
                           f"{backbone} layer {name} has {width}; use unstructured sparsity for this backbone")
        group = cfg.get("group_size")
        if group and width % group:
            raise BobError(f"{where}: group_size={group} does not divide the input width {width} of {backbone} layer {name}; "
                           f"choose a divisor of every width (e.g. {_gcd_width(layers)}) or leave group_size out")


def _gcd_width(layers) -> int:
    import math

    from .layers import in_features

    g = 0
    for _, m in layers:
        g = math.gcd(g, in_features(m))
    return g
