"""FacT (Jie & Deng, AAAI 2023): factor-tuning of the ViT's stacked weight increments.

Every d x d slice of a ViT's block weights — q, k, v and the output projection of attention, and
the mlp_ratio slices of fc1 and fc2 each (12 slices per ViT-B block) — gets an increment
``s * V Σ_j U`` with ``U`` (r x d) and ``V`` (d x r) shared by the whole network:

- ``fact_tt`` (tensor-train): every slice has its own core ``Σ_j`` (r x r);
- ``fact_tk`` (Tucker): ``Σ_j = sum_k C[:, :, k] P[k, j]`` from one core tensor ``C`` (r x r x r)
  and one factor ``P`` (r x number of slices).

As in the reference code: ``U`` is nn.Linear's default init, ``V`` starts at zero (the adapted
model is the backbone at step 0), TT's per-slice cores are nn.Linear's default init, TK's ``C``
and ``P`` are Xavier-uniform, dropout 0.1 acts on the core's output, and the scale ``s`` is the
hyper-parameter the paper searches over {0.01, 0.1, 1, 10, 100} per task (rank: TT {4, 8, 16},
TK {16, 32} in the released configs; the code's default is r=8, s=1). Increments are applied as
forward hooks on qkv / proj / fc1 / fc2 (names untouched); after training they fold into those
weights and the served model is the backbone's architecture.
"""
from __future__ import annotations

import math

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import block_list, route_fused_qkv_through_module
from .checks import integer, number
from .layers import drop_attributes, fold, remove_hooks

PAPER = "Jie & Deng, AAAI 2023, FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer"
FACT_ARCHS = ("vit_", "deit", "flexivit", "beit", "test_vit")
REQUIRES = {"architectures": FACT_ARCHS, "why": "FacT factorises the d x d slices of a ViT block's fused qkv, proj and MLP weights"}
SLOTS = ("qkv", "proj", "fc1", "fc2")


def _layers(block):
    return {"qkv": block.attn.qkv, "proj": block.attn.proj, "fc1": block.mlp.fc1, "fc2": block.mlp.fc2}


def vit_blocks(encoder, recipe: str) -> list:
    """The ViT blocks FacT adapts, each checked for the layout it needs (one-line error otherwise)."""
    blocks = block_list(encoder)
    dim = int(getattr(encoder, "embed_dim", 0) or 0)
    for bname, block in blocks:
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if not all(hasattr(x, a) for x, a in ((attn, "qkv"), (attn, "proj"), (mlp, "fc1"), (mlp, "fc2"))):
            raise BobError(f"{recipe}: block {bname} has no fused attn.qkv / attn.proj / mlp.fc1 / mlp.fc2; FacT needs a timm ViT block")
        shapes = {k: tuple(m.weight.shape) for k, m in _layers(block).items()}
        hidden = shapes["fc1"][0]
        if not dim or shapes["qkv"] != (3 * dim, dim) or shapes["proj"] != (dim, dim) or hidden % dim or shapes["fc2"] != (dim, hidden):
            raise BobError(f"{recipe}: block {bname} has weights {shapes}; FacT needs qkv 3d x d, proj d x d and an MLP whose width is a multiple of d={dim}")
    return blocks


def slices_per_block(encoder) -> int:
    block = block_list(encoder)[0][1]
    return 4 + 2 * block.mlp.fc1.weight.shape[0] // encoder.embed_dim


def _cores(block):
    """This block's r x r cores in slot order: q, k, v, proj, fc1 slices, fc2 slices."""
    root = block.fact_root()
    if root.fact_form == "tt":
        return block.fact_tt
    start = block.fact_offset
    return root_cores_tk(root)[start:start + block.fact_slices]


def root_cores_tk(root):
    import torch

    return torch.einsum("abk,kj->jab", root.fact_c, root.fact_p)  # slot j: sum_k C[:, :, k] P[k, j]


def _delta(block, cores, x_low, first: int, count: int):
    """x_low (..., r) through cores[first:first + count] -> (..., count, d), before the scale."""
    import torch

    root = block.fact_root()
    z = torch.einsum("...r,jrs->...js", x_low, cores[first:first + count].to(x_low.dtype))  # under autocast x_low is bf16
    return root.fact_v(root.fact_dropout(z))


def _qkv_hook(module, inputs, output):
    block = module.fact_block()
    cores = _cores(block)
    root = block.fact_root()
    update = _delta(block, cores, root.fact_u(inputs[0]), 0, 3)
    return output + root.fact_scale * update.flatten(-2)


def _proj_hook(module, inputs, output):
    block = module.fact_block()
    root = block.fact_root()
    return output + root.fact_scale * _delta(block, _cores(block), root.fact_u(inputs[0]), 3, 1)[..., 0, :]


def _fc1_hook(module, inputs, output):
    block = module.fact_block()
    root = block.fact_root()
    m = (block.fact_slices - 4) // 2
    return output + root.fact_scale * _delta(block, _cores(block), root.fact_u(inputs[0]), 4, m).flatten(-2)


def _fc2_hook(module, inputs, output):
    import torch

    block = module.fact_block()
    root = block.fact_root()
    m = (block.fact_slices - 4) // 2
    x = inputs[0]
    low = root.fact_u(x.reshape(*x.shape[:-1], m, -1))  # (..., m, r): each d-wide input slice through U
    cores = _cores(block)[4 + m:4 + 2 * m].to(low.dtype)
    z = torch.einsum("...jr,jrs->...s", low, cores)  # the fc2 slices sum into one output
    return output + root.fact_scale * root.fact_v(root.fact_dropout(z))


HOOKS = {"qkv": _qkv_hook, "proj": _proj_hook, "fc1": _fc1_hook, "fc2": _fc2_hook}


class _Ref:
    """A callable back-reference that is not an nn.Module attribute (so the root is not registered twice)."""

    def __init__(self, target):
        self.target = target

    def __call__(self):
        return self.target

    def __deepcopy__(self, memo):
        import copy

        return _Ref(copy.deepcopy(self.target, memo))


def check_hparams(hp, recipe: str = "fact") -> None:
    integer(recipe, "r", hp.get("r", 8), 1, why="the FacT rank")
    number(recipe, "scale", hp.get("scale", 1.0), 0.0, open_low=True)
    number(recipe, "dropout", hp.get("dropout", 0.1), 0.0, 1.0, open_high=True)


def check(encoder, hp, recipe: str = "fact") -> None:
    check_hparams(hp, recipe)
    vit_blocks(encoder, recipe)
    r = hp.get("r", 8)
    if r > encoder.embed_dim:
        raise BobError(f"{recipe}: rank r={r} is larger than the model's width d={encoder.embed_dim}; use r <= {encoder.embed_dim}")


def _fact(encoder, hp, form: str) -> Adaptation:
    import torch
    import torch.nn as nn

    recipe = f"fact_{form}"
    check(encoder, hp, recipe)
    blocks = vit_blocks(encoder, recipe)
    r, d = int(hp.get("r", 8)), int(encoder.embed_dim)
    per_block = slices_per_block(encoder)
    device, dtype = next(encoder.parameters()).device, next(encoder.parameters()).dtype
    encoder.fact_u = nn.Linear(d, r, bias=False).to(device, dtype)
    encoder.fact_v = nn.Linear(r, d, bias=False).to(device, dtype)
    nn.init.zeros_(encoder.fact_v.weight)
    encoder.fact_dropout = nn.Dropout(float(hp.get("dropout", 0.1)))
    encoder.fact_scale = float(hp.get("scale", 1.0))
    encoder.fact_form = form
    trainable = ["fact_u.weight", "fact_v.weight"]
    if form == "tk":
        encoder.fact_c = nn.Parameter(torch.empty(r, r, r, device=device, dtype=dtype))
        encoder.fact_p = nn.Parameter(torch.empty(r, per_block * len(blocks), device=device, dtype=dtype))
        nn.init.xavier_uniform_(encoder.fact_c)
        nn.init.xavier_uniform_(encoder.fact_p)
        trainable += ["fact_c", "fact_p"]
    m = (per_block - 4) // 2
    for i, (bname, block) in enumerate(blocks):
        block.fact_root, block.fact_slices, block.fact_offset = _Ref(encoder), per_block, i * per_block
        if form == "tt":  # nn.Linear's default init per core, as the reference's q/k/v/proj (r -> r), fc1 (r -> m r) and fc2 (m r -> r) cores
            bounds = [1 / math.sqrt(r)] * (4 + m) + [1 / math.sqrt(m * r)] * m
            block.fact_tt = nn.Parameter(torch.stack([torch.empty(r, r, device=device, dtype=dtype).uniform_(-b, b) for b in bounds]))
            trainable.append(f"{bname}.fact_tt")
        route_fused_qkv_through_module(encoder, [f"{bname}.attn.qkv"])
        for slot, layer in _layers(block).items():
            layer.fact_block = _Ref(block)
            layer.register_forward_hook(HOOKS[slot])

    def merge(enc) -> dict:
        with torch.no_grad():
            cores_tk = root_cores_tk(enc) if form == "tk" else None
            u, v, s = enc.fact_u.weight, enc.fact_v.weight, enc.fact_scale
            for i, (_, block) in enumerate(blocks):
                cores = block.fact_tt if form == "tt" else cores_tk[i * per_block:(i + 1) * per_block]
                slice_delta = [s * v @ core.t() @ u for core in cores]  # x U^T core V^T  ->  W += V core^T U (d x d)
                layers = _layers(block)
                fold(layers["qkv"], torch.cat(slice_delta[0:3], 0))
                fold(layers["proj"], slice_delta[3])
                fold(layers["fc1"], torch.cat(slice_delta[4:4 + m], 0))
                fold(layers["fc2"], torch.cat(slice_delta[4 + m:4 + 2 * m], 1))
                for slot, layer in layers.items():
                    remove_hooks(layer, HOOKS[slot])
                    drop_attributes(layer, "fact_block")
                drop_attributes(block, "fact_tt", "fact_root", "fact_slices", "fact_offset")
            drop_attributes(enc, "fact_u", "fact_v", "fact_c", "fact_p", "fact_dropout", "fact_scale", "fact_form")
        return {"merged": True, "merged_layers": 4 * len(blocks)}

    return Adaptation(recipe, trainable, notes={"r": r, "scale": encoder.fact_scale, "slices": per_block * len(blocks)}, merge=merge)


HPARAMS = {"r": 8, "scale": 1.0, "dropout": 0.1}


@register_recipe("fact_tt", hparams=HPARAMS, requires=REQUIRES, identity_at_init=True, paper=PAPER,
                 check=lambda enc, hp: check(enc, hp, "fact_tt"), check_hparams=lambda hp: check_hparams(hp, "fact_tt"),
                 description="FacT-TT: shared U, V and one r x r core per d x d weight slice of every block (merged after training)")
def fact_tt(encoder, hp) -> Adaptation:
    return _fact(encoder, hp, "tt")


@register_recipe("fact_tk", hparams=HPARAMS, requires=REQUIRES, identity_at_init=True, paper=PAPER,
                 check=lambda enc, hp: check(enc, hp, "fact_tk"), check_hparams=lambda hp: check_hparams(hp, "fact_tk"),
                 description="FacT-TK: shared U, V, an r x r x r core and an r x slices factor (merged after training)")
def fact_tk(encoder, hp) -> Adaptation:
    return _fact(encoder, hp, "tk")
