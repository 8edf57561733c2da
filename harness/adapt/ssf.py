"""SSF (Lian et al. 2022): a learnable per-channel scale and shift after every linear, conv and
normalisation op inside the blocks: ``y = gamma * op(x) + beta``.

Initialised as in the SSF paper (gamma ~ N(1, 0.02), beta ~ N(0, 0.02)). Works on ViTs, Swin,
ConvNeXt and ResNets: the channel axis is the last one for Linear / LayerNorm outputs and the
second for conv / BatchNorm / LayerNorm2d outputs. The factors are stored on each op as
``ssf_scale`` / ``ssf_shift`` and applied by a forward hook (original names untouched). On BEiT / EVA,
whose fused qkv has separate q/v biases, the hook scales the projection before that bias is added. (The
V-PETL benchmark's file named "SSF" implements VPT-shallow; this is SSF.)
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import block_list, channels_first, is_norm, out_channels, route_fused_qkv_through_module


def _ssf_hook(module, inputs, output):
    if module.ssf_channels_first:
        shape = (1, -1) + (1,) * (output.dim() - 2)
        return output * module.ssf_scale.view(shape) + module.ssf_shift.view(shape)
    return output * module.ssf_scale + module.ssf_shift


@register_recipe("ssf", hparams={"init_std": 0.02}, description="SSF: learnable scale and shift after every linear / conv / norm op of every block")
def ssf(encoder, hp) -> Adaptation:
    import torch
    import torch.nn as nn

    std = float(hp.get("init_std", 0.02))
    trainable = []
    prefixes = tuple(name + "." for name, _ in block_list(encoder))
    route_fused_qkv_through_module(encoder, [n for n, _ in encoder.named_modules() if n.startswith(prefixes) and n.endswith(".qkv")])
    for name, module in list(encoder.named_modules()):
        if not name.startswith(prefixes) or not (isinstance(module, (nn.Linear, nn.Conv2d)) or is_norm(module)):
            continue
        if is_norm(module) and not any(True for _ in module.parameters(recurse=False)) and not isinstance(module, nn.LayerNorm):
            continue
        channels = out_channels(module)
        if channels is None:
            continue
        module.ssf_scale = nn.Parameter(torch.empty(channels).normal_(1.0, std))
        module.ssf_shift = nn.Parameter(torch.empty(channels).normal_(0.0, std))
        module.ssf_channels_first = channels_first(module)
        module.register_forward_hook(_ssf_hook)
        trainable += [f"{name}.ssf_scale", f"{name}.ssf_shift"]
    if not trainable:
        raise BobError("ssf: no linear, conv or norm layer found inside the blocks")
    return Adaptation("ssf", trainable)
