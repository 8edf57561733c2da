"""E²VPT (Han et al., ICCV 2023): visual prompts plus key-value prompts inside attention, with
optional prompt pruning.

- **Visual prompts** (``prompts`` per block, deep): as VPT-deep, new tokens after the prefix
  tokens at every block (Xavier-uniform, dropout 0.1), removed after the last block.
- **Key-value prompts** (``kv_prompts`` per attention): learnable vectors, one set per head
  (heads x kv_prompts x head_dim), prepended to both the keys and the values of every attention
  layer (the reference's shared K/V setting, Kaiming-uniform init). They add attention targets
  without adding tokens. Implemented by switching each timm ``Attention`` to a subclass whose
  forward concatenates them: the module keeps its parameters and their names.
- **Pruning** (``prune`` > 0 or ``prune_pieces`` > 0), the paper's prune-and-rewind: a first fit
  on the training split, then each visual prompt token is scored by the sensitivity of the loss
  to a mask on it, ``mean over training batches of |dL/dgamma|`` (token-wise; every token split
  into ``pieces`` segments for segment-wise), the ``prune`` share of tokens with the lowest scores
  is removed (at least one kept), then the ``prune_pieces`` share of the lowest-scoring segments of
  each kept token; all prompts rewind to their initial values and train again. Pruned tokens are
  gone from the model and pruned segments are not stored, so the trainable and served counts are
  those of the prompts that remain. (The reference accumulates the signed gradient; bob uses its
  magnitude, the sensitivity in the paper's importance score.)
"""
from __future__ import annotations

import math

from ..errors import BobError
from . import Adaptation, register_recipe
from .checks import integer, number

PAPER = "Han et al., ICCV 2023, E2VPT: An Effective and Efficient Approach for Visual Prompt Tuning"
E2VPT_ARCHS = ("vit_", "deit", "flexivit", "test_vit")
REQUIRES = {"architectures": E2VPT_ARCHS, "why": "E2VPT adds key-value prompts to timm ViT attention and prompt tokens to its sequence"}
_KV_ATTENTION = None  # built on first use (timm is imported lazily)


def _attention_class():
    """A subclass of timm's ViT ``Attention`` whose keys and values start with ``e2vpt_kv`` (shared K/V)."""
    import torch
    import torch.nn.functional as F
    from timm.models.vision_transformer import Attention

    global _KV_ATTENTION
    if _KV_ATTENTION is not None:
        return _KV_ATTENTION

    class KeyValuePromptAttention(Attention):
        def forward(self, x, attn_mask=None, is_causal: bool = False):
            if attn_mask is not None or is_causal:
                raise BobError("e2vpt: key-value prompts do not support attention masks")
            b, n, _ = x.shape
            gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
            q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            prompts = self.e2vpt_kv_dropout(self.e2vpt_kv).unsqueeze(0).expand(b, -1, -1, -1).to(q.dtype)
            k, v = torch.cat([prompts, k], dim=2), torch.cat([prompts, v], dim=2)
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
            x = x.transpose(1, 2).reshape(b, n, self.attn_dim if hasattr(self, "attn_dim") else -1)
            x = self.norm(x) if hasattr(self, "norm") else x
            if gate is not None:
                x = x * gate
            return self.proj_drop(self.proj(x))

    _KV_ATTENTION = KeyValuePromptAttention
    return KeyValuePromptAttention


def visual_prompts(block):
    """This block's visual prompts (tokens x d): stored whole, or as the kept segments after segment pruning."""
    import torch

    stored = block.e2vpt_prompt
    if getattr(block, "e2vpt_segments", None) is None:
        prompts = stored
    else:
        tokens, pieces = block.e2vpt_shape
        flat = torch.zeros(tokens * pieces, stored.shape[1], dtype=stored.dtype, device=stored.device)
        prompts = flat.index_copy(0, block.e2vpt_segments, stored).reshape(tokens, -1)
    mask = getattr(block, "e2vpt_mask", None)  # only while the pruning scores are taken
    if mask is not None:
        token_mask, piece_mask = mask
        prompts = prompts * token_mask[:, None]
        if piece_mask is not None:
            prompts = prompts * piece_mask.repeat_interleave(prompts.shape[1] // piece_mask.shape[1], dim=1)
    return prompts


def _insert_hook(block, args):
    import torch

    x = args[0]
    n, p = block.e2vpt_prefix, block.e2vpt_previous
    prompts = block.e2vpt_dropout(visual_prompts(block)).unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
    return (torch.cat([x[:, :n], prompts, x[:, n + p:]], dim=1), *args[1:])


def _remove_hook(block, args, output):
    import torch

    n, p = block.e2vpt_prefix, visual_prompts(block).shape[0]
    return torch.cat([output[:, :n], output[:, n + p:]], dim=1)


def check_hparams(hp) -> None:
    integer("e2vpt", "prompts", hp.get("prompts", 10), 1, 1024, why="visual prompt tokens per block")
    integer("e2vpt", "kv_prompts", hp.get("kv_prompts", 5), 1, 1024, why="key-value prompts per attention layer")
    number("e2vpt", "prompt_dropout", hp.get("prompt_dropout", 0.1), 0.0, 1.0, open_high=True)
    number("e2vpt", "prune", hp.get("prune", 0.0), 0.0, 1.0, open_high=True, why="share of visual prompt tokens pruned")
    number("e2vpt", "prune_pieces", hp.get("prune_pieces", 0.0), 0.0, 1.0, open_high=True, why="share of each kept token's segments pruned")
    integer("e2vpt", "pieces", hp.get("pieces", 16), 1, why="segments per prompt token for segment-wise pruning")


def check(encoder, hp) -> None:
    check_hparams(hp)
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not hasattr(encoder, "patch_embed") or not hasattr(encoder, "num_prefix_tokens"):
        raise BobError(f"e2vpt: {type(encoder).__name__} is not a timm VisionTransformer (ViT, DeiT, FlexiViT)")
    from timm.models.vision_transformer import Attention

    for i, block in enumerate(blocks):
        if not isinstance(getattr(block, "attn", None), Attention):
            raise BobError(f"e2vpt: blocks.{i}.attn is {type(getattr(block, 'attn', None)).__name__}, not timm's ViT Attention")
    if hp.get("prune_pieces", 0.0) and encoder.embed_dim % int(hp.get("pieces", 16)):
        raise BobError(f"e2vpt: pieces={hp.get('pieces', 16)} does not divide the model's width d={encoder.embed_dim}; pick a divisor of {encoder.embed_dim}")


def _add_prompts(encoder, hp):
    """Visual and key-value prompts on every block; returns their names (trainable) in order."""
    import torch
    import torch.nn as nn

    p, kv = int(hp.get("prompts", 10)), int(hp.get("kv_prompts", 5))
    dim = int(encoder.embed_dim)
    patch = encoder.patch_embed.patch_size
    area = patch[0] * patch[1] if isinstance(patch, (tuple, list)) else patch * patch
    bound = math.sqrt(6.0 / float(3 * area + dim))
    device, dtype = next(encoder.parameters()).device, next(encoder.parameters()).dtype
    cls = _attention_class()
    names = []
    blocks = encoder.blocks
    for i, block in enumerate(blocks):
        block.e2vpt_prompt = nn.Parameter(torch.empty(p, dim, device=device, dtype=dtype).uniform_(-bound, bound))
        block.e2vpt_dropout = nn.Dropout(float(hp.get("prompt_dropout", 0.1)))
        block.e2vpt_prefix, block.e2vpt_previous = int(encoder.num_prefix_tokens), 0 if i == 0 else p
        block.register_forward_pre_hook(_insert_hook)
        attn = block.attn
        attn.e2vpt_kv = nn.Parameter(torch.empty(attn.num_heads, kv, attn.head_dim, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(attn.e2vpt_kv, a=0, mode="fan_in", nonlinearity="leaky_relu")
        attn.e2vpt_kv_dropout = nn.Dropout(0.0)  # the reference's DROPOUT for K/V prompts defaults to 0
        attn.__class__ = cls
        names += [f"blocks.{i}.e2vpt_prompt", f"blocks.{i}.attn.e2vpt_kv"]
    blocks[len(blocks) - 1].register_forward_hook(_remove_hook)
    return names


def importance(model, encoder, data, pieces: int | None):
    """Mean over the training split's batches of |dL/d mask| for every prompt token and (``pieces``) every segment of it."""
    import torch

    tokens = encoder.blocks[0].e2vpt_prompt.shape[0]
    device = encoder.blocks[0].e2vpt_prompt.device
    token_mask = torch.ones(tokens, device=device, requires_grad=True)
    piece_mask = torch.ones(tokens, pieces, device=device, requires_grad=True) if pieces else None
    for block in encoder.blocks:  # one mask for every block's prompts, as the reference shares it
        block.e2vpt_mask = (token_mask, piece_mask)
    token_score, piece_score, batches = torch.zeros(tokens, device=device), torch.zeros(tokens, pieces or 1, device=device), 0
    model.eval()
    try:
        for views, labels in data.batches():
            loss = torch.nn.functional.cross_entropy(model(views[0]), labels)
            grads = torch.autograd.grad(loss, (token_mask, piece_mask) if pieces else (token_mask,))
            token_score += grads[0].abs()
            if pieces:
                piece_score += grads[1].abs()
            batches += 1
    finally:
        for block in encoder.blocks:
            block.e2vpt_mask = None
    return token_score / max(batches, 1), piece_score / max(batches, 1)


def lowest(scores, count: int) -> list[int]:
    """Indices of the ``count`` lowest scores (ties: the lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:count])


def prune_and_rewind(encoder, initial: dict, token_score, piece_score, hp) -> dict:
    """Remove the pruned tokens and segments and reset every prompt to its initial value."""
    import torch
    import torch.nn as nn

    tokens, pieces = piece_score.shape
    pruned_tokens = lowest(token_score, min(int(tokens * float(hp.get("prune", 0.0))), tokens - 1))
    kept = [t for t in range(tokens) if t not in pruned_tokens]
    per_token = min(int(pieces * float(hp.get("prune_pieces", 0.0))), pieces - 1)
    pruned_pieces = {t: lowest(piece_score[t], per_token) for t in kept} if per_token else {}
    segments = [j * pieces + s for j, t in enumerate(kept) for s in range(pieces) if s not in pruned_pieces.get(t, [])]
    for i, block in enumerate(encoder.blocks):
        start = initial[f"blocks.{i}.e2vpt_prompt"][kept].to(block.e2vpt_prompt.device)  # the first fit may have moved the model
        if per_token:
            width = start.shape[1] // pieces
            block.e2vpt_prompt = nn.Parameter(start.reshape(len(kept) * pieces, width)[segments].clone())
            block.register_buffer("e2vpt_segments", torch.tensor(segments, dtype=torch.long, device=start.device))
            block.e2vpt_shape = (len(kept), pieces)
        else:
            block.e2vpt_prompt = nn.Parameter(start.clone())
        block.e2vpt_previous = 0 if i == 0 else len(kept)
        with torch.no_grad():
            block.attn.e2vpt_kv.copy_(initial[f"blocks.{i}.attn.e2vpt_kv"])
    return {"tokens_kept": kept, "tokens_pruned": pruned_tokens, "segments_pruned": {str(t): v for t, v in pruned_pieces.items()},
            "token_scores": [round(float(s), 8) for s in token_score]}


@register_recipe("e2vpt", hparams={"prompts": 10, "kv_prompts": 5, "prompt_dropout": 0.1, "prune": 0.0, "prune_pieces": 0.0, "pieces": 16},
                 requires=REQUIRES, needs_data=True, check=check, check_hparams=check_hparams, paper=PAPER,
                 description="E2VPT: deep visual prompts + key-value prompts in every attention; optional prune-and-rewind of the visual prompts")
def e2vpt(encoder, hp, data) -> Adaptation:
    check(encoder, hp)
    names = _add_prompts(encoder, hp)
    notes = {"prompts": int(hp.get("prompts", 10)), "kv_prompts": int(hp.get("kv_prompts", 5))}
    if float(hp.get("prune", 0.0)) > 0 or float(hp.get("prune_pieces", 0.0)) > 0:
        params = dict(encoder.named_parameters())
        initial = {n: params[n].detach().clone() for n in names}
        model = data.fit(encoder, names, desc="e2vpt-before-pruning")
        token_score, piece_score = importance(model, encoder, data, int(hp.get("pieces", 16)) if float(hp.get("prune_pieces", 0.0)) > 0 else None)
        pruning = prune_and_rewind(encoder, initial, token_score, piece_score, hp)
        notes["pruning"] = data.describe(rule="mean |dL/d mask| per visual prompt token and segment after a first fit; lowest pruned, then rewind",
                                         **pruning)
        notes["prompts_kept"] = len(pruning["tokens_kept"])
    return Adaptation("e2vpt", names, notes=notes)
