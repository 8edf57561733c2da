"""Convpass (Jie & Deng 2022, "Convolutional Bypasses Are Better Vision Transformer Adapters").

A convolutional bypass beside each block's attention and MLP, reading the same normalised input:
``down (d -> dim) -> QuickGELU -> 3 x 3 conv (dim -> dim) on the patch grid -> QuickGELU ->
dropout 0.1 -> up (dim -> d)``, scaled by ``s`` and added to the branch's output. Prefix tokens
([CLS], registers, distillation) pass the same conv as 1 x 1 images (only its centre tap acts),
as the reference does for [CLS].

Init as the reference: down Xavier-uniform with zero bias, up all zero (the adapted model is the
backbone at step 0), the conv either ``identity`` (the centre tap an identity matrix, the
default of its Convpass class) or ``xavier``; both choices and ``scale`` in {0.01, 0.1, 1, 10,
100} are what its per-task configs pick from. ``placement: attn`` keeps only the attention
bypass (the paper's Convpass-attn). The bypasses hook the attention and MLP modules, so on ViTs
with layer scale they sit inside it (identical for ViT / DeiT / the paper's ViT-B).
"""
from __future__ import annotations

import math

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import block_list
from .checks import choice, integer, number

PAPER = "Jie & Deng 2022, Convolutional Bypasses Are Better Vision Transformer Adapters (arXiv:2207.07039)"
CONVPASS_ARCHS = ("vit_", "deit", "flexivit", "beit", "eva", "test_vit")
REQUIRES = {"architectures": CONVPASS_ARCHS, "why": "Convpass convolves the patch-token grid beside a ViT block's attention and MLP"}
INITS = ("identity", "xavier")
PLACEMENTS = ("both", "attn")


def make_bypass(d: int, dim: int, conv_init: str):
    import torch
    import torch.nn as nn

    module = nn.Module()
    module.down, module.conv, module.up = nn.Linear(d, dim), nn.Conv2d(dim, dim, 3, 1, 1), nn.Linear(dim, d)
    nn.init.xavier_uniform_(module.down.weight)
    nn.init.zeros_(module.down.bias)
    if conv_init == "xavier":
        nn.init.xavier_uniform_(module.conv.weight)
    else:
        nn.init.zeros_(module.conv.weight)
        with torch.no_grad():
            module.conv.weight[:, :, 1, 1] = torch.eye(dim)
    nn.init.zeros_(module.conv.bias)
    nn.init.zeros_(module.up.weight)
    nn.init.zeros_(module.up.bias)
    module.dropout = nn.Dropout(0.1)
    return module


def _quick_gelu(x):
    import torch

    return x * torch.sigmoid(1.702 * x)


def bypass(module, x, prefix: int, grid: tuple[int, int]):
    """The bypass on tokens x (B, N, d): prefix tokens as 1 x 1 images, the rest as the grid."""
    import torch

    b, n, _ = x.shape
    low = _quick_gelu(module.down(x))
    c = low.shape[-1]
    h, w = grid if grid[0] * grid[1] == n - prefix else (int(math.isqrt(n - prefix)),) * 2
    patches = module.conv(low[:, prefix:].reshape(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
    parts = [patches]
    if prefix:
        parts.insert(0, module.conv(low[:, :prefix].reshape(b * prefix, c, 1, 1)).reshape(b, prefix, c))
    return module.up(module.dropout(_quick_gelu(torch.cat(parts, 1))))


def _hook(branch, inputs, output):
    return output + branch.convpass_scale * bypass(branch.convpass, inputs[0], branch.convpass_prefix, branch.convpass_grid)


def check_hparams(hp) -> None:
    integer("convpass", "dim", hp.get("dim", 8), 1, why="the bypass width")
    number("convpass", "scale", hp.get("scale", 1.0), 0.0, open_low=True)
    choice("convpass", "conv_init", hp.get("conv_init", "identity"), INITS)
    choice("convpass", "placement", hp.get("placement", "both"), PLACEMENTS)


def check(encoder, hp) -> None:
    check_hparams(hp)
    if not hasattr(encoder, "patch_embed") or not hasattr(encoder, "num_prefix_tokens"):
        raise BobError(f"convpass: {type(encoder).__name__} has no patch grid (patch_embed, num_prefix_tokens); Convpass needs a ViT")
    d = int(getattr(encoder, "embed_dim", 0) or 0)
    if hp.get("dim", 8) > d:
        raise BobError(f"convpass: dim={hp.get('dim', 8)} is larger than the model's width d={d}; use dim <= {d}")
    for bname, block in block_list(encoder):
        if not (hasattr(block, "attn") and hasattr(block, "mlp")):
            raise BobError(f"convpass: block {bname} has no attn and mlp branches")


@register_recipe("convpass", hparams={"dim": 8, "scale": 1.0, "conv_init": "identity", "placement": "both"}, requires=REQUIRES,
                 identity_at_init=True, check=check, check_hparams=check_hparams, paper=PAPER,
                 description="Convpass: 3x3-conv bypasses (d -> 8 -> conv -> d, up-projection zero-init) beside each attention and MLP")
def convpass(encoder, hp) -> Adaptation:
    check(encoder, hp)
    d, dim = int(encoder.embed_dim), int(hp.get("dim", 8))
    grid = tuple(int(g) for g in encoder.patch_embed.grid_size)
    prefix = int(encoder.num_prefix_tokens)
    branches = ("attn", "mlp") if hp.get("placement", "both") == "both" else ("attn",)
    device, dtype = next(encoder.parameters()).device, next(encoder.parameters()).dtype
    trainable = []
    for bname, block in block_list(encoder):
        for branch_name in branches:
            branch = getattr(block, branch_name)
            branch.convpass = make_bypass(d, dim, str(hp.get("conv_init", "identity"))).to(device, dtype)
            branch.convpass_scale, branch.convpass_prefix, branch.convpass_grid = float(hp.get("scale", 1.0)), prefix, grid
            branch.register_forward_hook(_hook)
            trainable += [f"{bname}.{branch_name}.convpass.{p}" for p, _ in branch.convpass.named_parameters()]
    return Adaptation("convpass", trainable, notes={"dim": dim, "scale": float(hp.get("scale", 1.0)), "bypasses": len(trainable) // 6})
