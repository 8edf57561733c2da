"""Gated prompt tuning for self-supervised ViTs (Yoo et al., ICML 2023, "Improving Visual Prompt
Tuning for Self-supervised Vision Transformers").

``prompts`` tokens enter once, after the prefix tokens, before the first block (VPT-shallow, its
Xavier-uniform init and dropout 0.1). Each block but the last has a learnable gate ``g`` (logit
initialised to ``-gate_init``) that decides how much of the block's update the prompt tokens
take: after the block, ``prompts <- sigmoid(g) * out + (1 - sigmoid(g)) * in``. With
``learn_temperature`` (the reference's run script sets it) every block also learns an attention
temperature ``t`` (init 1, clamped to [0.01, 10]) that divides its attention logits: bob scales
the queries by ``1 / t`` at the fused qkv projection, which is the same product.

The reference keeps the prompt tokens to the end, so its pooling reads them for an average-pooled
backbone (its MAE: mean of all tokens after [CLS]) and ignores them for a [CLS]-pooled one (its
MoCo v3): bob does the same, which gives each self-supervised backbone the pooling its reference
model uses. ``gate_init`` 10 is the reference config's default (its README's MAE example uses 5;
bob searches {5, 10}).
"""
from __future__ import annotations

import math

from ..errors import BobError
from . import Adaptation, register_recipe
from .checks import flag, integer, number

PAPER = "Yoo et al., ICML 2023, Improving Visual Prompt Tuning for Self-supervised Vision Transformers"
PROMPT_ARCHS = ("vit_", "deit", "flexivit", "test_vit")
REQUIRES = {"architectures": PROMPT_ARCHS, "why": "gated prompts enter a plain ViT token sequence (timm VisionTransformer) and gate each block"}
TEMPERATURE_RANGE = (0.01, 10.0)


def _insert_hook(block, args):
    import torch

    x = args[0]
    n = block.gpt_prefix
    prompts = block.gpt_dropout(block.gpt_prompt).unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
    return (torch.cat([x[:, :n], prompts, x[:, n:]], dim=1), *args[1:])


def _remember_hook(block, args):
    n, p = block.gpt_prefix, block.gpt_count
    block.gpt_in = args[0][:, n:n + p]
    return None


def _gate_hook(block, args, output):
    import torch

    n, p = block.gpt_prefix, block.gpt_count
    gate = torch.sigmoid(block.gpt_gate)
    mixed = (gate * output[:, n:n + p] + (1 - gate) * block.gpt_in).to(output.dtype)
    block.gpt_in = None
    return torch.cat([output[:, :n], mixed, output[:, n + p:]], dim=1)


def _temperature_hook(qkv, inputs, output):
    import torch

    t = qkv.gpt_temperature.clamp(*TEMPERATURE_RANGE)
    c = output.shape[-1] // 3
    return torch.cat([(output[..., :c] / t).to(output.dtype), output[..., c:]], dim=-1)


def check_hparams(hp) -> None:
    integer("gated_prompt", "prompts", hp.get("prompts", 5), 1, 1024, why="prompt length")
    number("gated_prompt", "gate_init", hp.get("gate_init", 10.0))
    number("gated_prompt", "prompt_dropout", hp.get("prompt_dropout", 0.1), 0.0, 1.0, open_high=True)
    flag("gated_prompt", "learn_temperature", hp.get("learn_temperature", True))


def check(encoder, hp) -> None:
    check_hparams(hp)
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not hasattr(encoder, "patch_embed") or not hasattr(encoder, "num_prefix_tokens"):
        raise BobError(f"gated_prompt: {type(encoder).__name__} is not a timm VisionTransformer (ViT, DeiT, FlexiViT)")
    if len(blocks) < 2:
        raise BobError("gated_prompt: the model needs at least two blocks (every block but the last has a gate)")
    if hp.get("learn_temperature", True) and not all(hasattr(getattr(b, "attn", None), "qkv") for b in blocks):
        raise BobError("gated_prompt: learn_temperature needs a fused attn.qkv in every block")


@register_recipe("gated_prompt", hparams={"prompts": 5, "gate_init": 10.0, "prompt_dropout": 0.1, "learn_temperature": True},
                 requires=REQUIRES, check=check, check_hparams=check_hparams, paper=PAPER,
                 description="gated prompt tuning (SSL ViTs): shallow prompts, a learnable gate per block on their update, learnable attention temperatures")
def gated_prompt(encoder, hp) -> Adaptation:
    import torch
    import torch.nn as nn

    check(encoder, hp)
    p, dim = int(hp.get("prompts", 5)), int(encoder.embed_dim)
    patch = encoder.patch_embed.patch_size
    area = patch[0] * patch[1] if isinstance(patch, (tuple, list)) else patch * patch
    bound = math.sqrt(6.0 / float(3 * area + dim))
    device, dtype = next(encoder.parameters()).device, next(encoder.parameters()).dtype
    blocks = encoder.blocks
    n = int(encoder.num_prefix_tokens)
    first = blocks[0]
    first.gpt_prompt = nn.Parameter(torch.empty(p, dim, device=device, dtype=dtype).uniform_(-bound, bound))
    first.gpt_dropout = nn.Dropout(float(hp.get("prompt_dropout", 0.1)))
    first.register_forward_pre_hook(_insert_hook)
    trainable = ["blocks.0.gpt_prompt"]
    for i, block in enumerate(blocks):
        block.gpt_prefix, block.gpt_count = n, p
        if i < len(blocks) - 1:
            block.gpt_gate = nn.Parameter(torch.full((), -float(hp.get("gate_init", 10.0)), device=device, dtype=dtype))
            block.register_forward_pre_hook(_remember_hook)  # after the insertion hook on block 0: sees the prompts
            block.register_forward_hook(_gate_hook)
            trainable.append(f"blocks.{i}.gpt_gate")
        if hp.get("learn_temperature", True):
            block.attn.qkv.gpt_temperature = nn.Parameter(torch.ones((), device=device, dtype=dtype))
            block.attn.qkv.register_forward_hook(_temperature_hook)
            trainable.append(f"blocks.{i}.attn.qkv.gpt_temperature")
    return Adaptation("gated_prompt", trainable, notes={"prompts": p, "gates": len(blocks) - 1, "gate_init": float(hp.get("gate_init", 10.0)),
                                                        "init_bound": bound, "prompts_reach_pooling": True})
