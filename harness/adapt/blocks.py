"""Where the blocks of a timm model are, for recipes that work block by block.

timm names them differently per family: ViT/DeiT/BEiT/EVA ``blocks``; Swin ``layers[i].blocks``;
ConvNeXt ``stages[i].blocks``; ResNet ``layer1..layer4``. The list is in forward order.
"""
from __future__ import annotations

from ..errors import BobError

FINAL_NORM_NAMES = ("norm", "fc_norm", "head.norm", "head_norm", "norm_pre", "ln_post", "trunk.norm", "trunk.fc_norm")


def block_list(model) -> list[tuple[str, object]]:
    """[(qualified name, block module)] in forward order; a model with no known block layout is a one-line error."""
    import torch.nn as nn

    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        return [(f"blocks.{i}", b) for i, b in enumerate(blocks)]
    resblocks = getattr(getattr(model, "transformer", None), "resblocks", None)  # open_clip's own VisionTransformer
    if isinstance(resblocks, (nn.Sequential, nn.ModuleList)) and len(resblocks):
        return [(f"transformer.resblocks.{i}", b) for i, b in enumerate(resblocks)]
    trunk = getattr(model, "trunk", None)  # open_clip's TimmModel tower wraps a timm model
    if trunk is not None and trunk is not model:
        return [(f"trunk.{name}", b) for name, b in block_list(trunk)]
    for container in ("layers", "stages"):
        stages = getattr(model, container, None)
        if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
            out = []
            for i, stage in enumerate(stages):
                inner = getattr(stage, "blocks", None)
                if isinstance(inner, (nn.Sequential, nn.ModuleList)):
                    out += [(f"{container}.{i}.blocks.{j}", b) for j, b in enumerate(inner)]
            if out:
                return out
    stages = [(n, getattr(model, n)) for n in ("layer1", "layer2", "layer3", "layer4") if isinstance(getattr(model, n, None), nn.Sequential)]
    if stages:
        return [(f"{n}.{j}", b) for n, stage in stages for j, b in enumerate(stage)]
    raise BobError(f"{type(model).__name__}: no transformer/stage blocks found (blocks, layers[i].blocks, stages[i].blocks or layer1..4); "
                   "this recipe needs a timm ViT, Swin, ConvNeXt or ResNet-style model")


def final_norm_params(model) -> list[str]:
    """Parameters of the norm layers after the last block (``norm``, ``fc_norm``, ``head.norm``)."""
    names = []
    for pname, _ in model.named_parameters():
        if any(pname.startswith(prefix + ".") for prefix in FINAL_NORM_NAMES if prefix != "norm_pre"):
            names.append(pname)
    return names


def is_norm(module) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) or type(module).__name__ in (
        "LayerNorm2d", "RmsNorm", "RMSNorm", "FrozenBatchNorm2d", "BatchNormAct2d", "GroupNorm1")


def channels_first(module) -> bool:
    """Whether a layer's output has channels in dim 1 (conv, BatchNorm, LayerNorm2d) or last (Linear, LayerNorm)."""
    import torch.nn as nn

    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
        return True
    return type(module).__name__ in ("LayerNorm2d", "BatchNormAct2d", "FrozenBatchNorm2d", "GroupNorm1")


def out_channels(module) -> int | None:
    for attr in ("out_features", "out_channels", "num_features", "num_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(module, "normalized_shape", None)
    if shape:
        return int(shape[0]) if len(shape) == 1 else None
    return None


def route_fused_qkv_through_module(encoder, names: list[str]) -> None:
    """timm's BEiT and EVA attention, when q/v biases are separate parameters, compute
    ``F.linear(x, self.qkv.weight, bias)`` and never call ``self.qkv``: a peft wrapper on qkv would
    silently do nothing (its factors get no gradient). Their own ``qkv_bias_separate`` switch makes
    them call ``self.qkv(x)`` and add the bias, the same numbers, so the wrapper runs."""
    modules = dict(encoder.named_modules())
    for name in names:
        parent = modules.get(name.rpartition(".")[0])
        if name.endswith(".qkv") and parent is not None and hasattr(parent, "qkv_bias_separate") and getattr(parent, "q_bias", None) is not None:
            parent.qkv_bias_separate = True
