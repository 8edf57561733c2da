"""Visual Prompt Tuning (Jia et al. 2022): ``p`` learnable tokens inserted after the [CLS] (and
any register / distillation) tokens, without position embeddings.

- ``vpt_shallow``: prompts enter before the first block and travel through the network;
- ``vpt_deep``: every block gets its own new prompts (the previous block's prompt outputs are
  replaced).

Prompts are initialised Xavier-uniform as in VPT, U(-a, a) with a = sqrt(6 / (3 * patch_area +
dim)), and pass through dropout (``prompt_dropout``). Prompt tokens are removed after the last
block, so pooling (CLS, average or attention pool) sees exactly the tokens it would without VPT.

Implemented with forward hooks: a pre-hook on each block inserts or replaces the prompts, a hook
on the last block removes them; prompt parameters live on the blocks as ``vpt_prompt``. Only
timm's ``VisionTransformer`` family (ViT, DeiT, DeiT III, FlexiViT) qualifies: BEiT's relative
position bias and EVA's rotary embedding are sized for the patch tokens.
"""
from __future__ import annotations

import math

from ..errors import BobError
from . import Adaptation, register_recipe

VPT_ARCHS = ("vit_", "deit", "flexivit")


def _insert_hook(block, args):
    import torch

    x = args[0]
    n, p = block.vpt_prefix, block.vpt_prompt.shape[0]
    prompts = block.vpt_dropout(block.vpt_prompt).unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
    rest = x[:, n + p:] if block.vpt_replace else x[:, n:]  # deep: this block's prompts replace the previous ones
    x = torch.cat([x[:, :n], prompts, rest], dim=1)
    return (x, *args[1:])


def _remove_hook(block, args, output):
    import torch

    n, p = block.vpt_prefix, block.vpt_total
    return torch.cat([output[:, :n], output[:, n + p:]], dim=1)


def _prompts(encoder, hp, deep: bool) -> Adaptation:
    import torch
    import torch.nn as nn

    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not hasattr(encoder, "patch_embed") or not hasattr(encoder, "num_prefix_tokens"):
        raise BobError(f"vpt: {type(encoder).__name__} is not a timm VisionTransformer (ViT, DeiT, FlexiViT)")
    p = hp.get("prompts", 10)
    if not isinstance(p, int) or isinstance(p, bool) or p < 1:
        raise BobError(f"vpt: prompts={p!r} must be a positive integer")
    dim = encoder.embed_dim
    patch = encoder.patch_embed.patch_size
    area = patch[0] * patch[1] if isinstance(patch, (tuple, list)) else patch * patch
    bound = math.sqrt(6.0 / float(3 * area + dim))
    n_prefix = int(encoder.num_prefix_tokens)
    trainable = []
    for i, block in enumerate(blocks):
        if i > 0 and not deep:
            break
        block.vpt_prompt = nn.Parameter(torch.empty(p, dim).uniform_(-bound, bound))
        block.vpt_dropout = nn.Dropout(float(hp.get("prompt_dropout", 0.1)))
        block.vpt_prefix, block.vpt_replace = n_prefix, i > 0
        block.register_forward_pre_hook(_insert_hook)
        trainable.append(f"blocks.{i}.vpt_prompt")
    last = blocks[len(blocks) - 1]
    last.vpt_prefix, last.vpt_total = n_prefix, p
    last.register_forward_hook(_remove_hook)
    return Adaptation("vpt_deep" if deep else "vpt_shallow", trainable, notes={"prompts": p, "init_bound": bound})


REQUIRES = {"architectures": VPT_ARCHS, "why": "VPT inserts prompt tokens into a plain ViT token sequence (timm VisionTransformer)"}


@register_recipe("vpt_shallow", hparams={"prompts": 10, "prompt_dropout": 0.1}, requires=REQUIRES,
                 description="VPT-shallow: p prompt tokens before the first block")
def vpt_shallow(encoder, hp) -> Adaptation:
    return _prompts(encoder, hp, deep=False)


@register_recipe("vpt_deep", hparams={"prompts": 10, "prompt_dropout": 0.1}, requires=REQUIRES,
                 description="VPT-deep: new p prompt tokens at every block")
def vpt_deep(encoder, hp) -> Adaptation:
    return _prompts(encoder, hp, deep=True)
