"""Layer-level plumbing shared by the recipes that add an update to pretrained linear / conv
layers (SVFit, GPS, SCT, FacT, AdapterBias): which layers qualify, the functional form of a
weight update on a layer's input, folding an update into the weights, and removing a recipe's
hooks once it has been merged.

Updates run as forward hooks (``y + delta``) so that the backbone's parameter names never change
and a state-dict diff proves what moved; after training, ``fold`` writes the same update into the
weights and ``remove_hooks`` takes the extra compute away.
"""
from __future__ import annotations

from typing import Callable

from .blocks import block_list


def is_linear_or_conv(module) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.Linear, nn.Conv2d))


def layers_inside_blocks(encoder) -> list[tuple[str, object]]:
    """Every ``nn.Linear`` / ``nn.Conv2d`` inside the model's blocks, in registration order (never the head)."""
    prefixes = tuple(name + "." for name, _ in block_list(encoder))
    return [(n, m) for n, m in encoder.named_modules() if n.startswith(prefixes) and is_linear_or_conv(m)]


def all_layers(encoder) -> list[tuple[str, object]]:
    """Every ``nn.Linear`` / ``nn.Conv2d`` of the encoder (stem and patch embedding included)."""
    return [(n, m) for n, m in encoder.named_modules() if is_linear_or_conv(m)]


def matrix_shape(module) -> tuple[int, int]:
    """(rows, columns) of the weight seen as a matrix: a conv kernel is (out, in/groups * kh * kw)."""
    weight = module.weight
    return int(weight.shape[0]), int(weight[0].numel())


def apply_weight(module, x, weight, bias=None):
    """The layer's own operation with another weight (its stride, padding, groups...): ``F.linear`` or ``F.conv2d``."""
    import torch.nn as nn
    import torch.nn.functional as F

    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return F.conv2d(x, weight, bias, module.stride, 0, module.dilation, module.groups)
    return F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def channel_dim(module) -> int:
    """Where the output channels are: last for a linear layer, 1 for a conv."""
    import torch.nn as nn

    return -1 if isinstance(module, nn.Linear) else 1


def fold(module, delta_weight, delta_bias=None) -> None:
    """``W += delta_weight`` (given as a matrix or in the weight's own shape) and ``b += delta_bias``;
    a layer without a bias gets one only when ``delta_bias`` is non-zero."""
    import torch

    with torch.no_grad():
        module.weight.add_(delta_weight.reshape(module.weight.shape).to(module.weight.dtype))
        if delta_bias is not None and bool(delta_bias.abs().sum() > 0):
            if module.bias is None:
                module.bias = torch.nn.Parameter(torch.zeros(module.weight.shape[0], dtype=module.weight.dtype, device=module.weight.device),
                                                 requires_grad=False)
            module.bias.add_(delta_bias.to(module.bias.dtype))


def remove_hooks(module, *hooks: Callable) -> int:
    """Remove the given hook functions from ``module`` (forward and forward-pre); returns how many went."""
    removed = 0
    for table in (module._forward_hooks, module._forward_pre_hooks):
        for key, fn in list(table.items()):
            if fn in hooks:
                del table[key]
                removed += 1
    return removed


def drop_attributes(module, *names: str) -> None:
    """Delete the recipe's parameters / buffers / attributes from ``module`` after a merge."""
    for name in names:
        if hasattr(module, name):
            delattr(module, name)
