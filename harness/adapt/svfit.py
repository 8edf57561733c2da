"""SVFit (Sun et al. 2024, arXiv:2409.05926): train the top-``r`` singular values of each pretrained weight.

Each linear / conv weight inside the blocks is split by its SVD, ``W = U_r S_r V_r^T + W_e``; the
singular vectors ``U_r``, ``V_r`` and the rest ``W_e`` stay frozen and only the ``r`` values ``S_r``
train (a conv kernel is seen as the matrix ``out x (in * kh * kw)``). The forward adds
``U_r diag(S_r - S_r^0) V_r^T x`` to the frozen layer, so the adapted model is the backbone
exactly at step 0 (the trainable values start at the singular values themselves and weight decay
pulls on those values, as in the paper); after training the update folds into ``W`` and the
served model has no extra parameter.

``r``: ``all`` (every singular value, ``min(out, in)``: the setting of the paper's headline
"16x fewer trainable parameters than LoRA r=8", since 8 (d + d) / 16 = d for a d x d weight), an
integer (the top-r), or a fraction in (0, 1) (the smallest r whose singular values hold that
share of the weight's energy sum(s^2) — the paper's "over 99% of the matrix's information").
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import route_fused_qkv_through_module
from .checks import integer, number
from .layers import apply_weight, drop_attributes, fold, layers_inside_blocks, matrix_shape, remove_hooks

PAPER = "Sun et al. 2024, SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values (arXiv:2409.05926)"


def _svfit_hook(module, inputs, output):
    import torch.nn as nn

    x = inputs[0]
    scale = module.svfit_values - module.svfit_init  # zero at step 0: exactly the backbone
    if isinstance(module, nn.Linear):  # low-rank path: (x V) * ds @ U^T
        return output + (((x @ module.svfit_v.t().to(x.dtype)) * scale.to(x.dtype)) @ module.svfit_u.t().to(x.dtype)).to(output.dtype)
    delta = ((module.svfit_u * scale) @ module.svfit_v).reshape(module.weight.shape)  # a conv (grouped ones too) takes the dense update
    return output + apply_weight(module, x, delta)


def top_singular(matrix, r):
    """(U_r, s_r, V_r^T) of ``matrix`` in float64, through the eigen-decomposition of the smaller Gram
    matrix (an order of magnitude faster than a full SVD on wide conv kernels; exact up to rounding
    for every singular value above ~1e-8 of the largest)."""
    import torch

    m = matrix.double()
    wide = m.shape[0] <= m.shape[1]
    a = m if wide else m.t()
    values, vectors = torch.linalg.eigh(a @ a.t())
    order = torch.argsort(values, descending=True)
    s = values[order].clamp_min(0).sqrt()
    rank = _rank_for(s, r)
    s, left = s[:rank], vectors[:, order[:rank]]
    right = (left.t() @ a) / s.clamp_min(torch.finfo(s.dtype).tiny)[:, None]
    return (left, s, right) if wide else (right.t(), s, left.t())


def _rank_for(values, r) -> int:
    if r == "all":
        return int(values.shape[0])
    if isinstance(r, float):
        import torch

        energy = torch.cumsum(values.double() ** 2, 0) / (values.double() ** 2).sum().clamp_min(1e-30)
        return int(min(values.shape[0], int((energy < r).sum()) + 1))
    return int(r)


def check_hparams(hp) -> None:
    r = hp.get("r", "all")
    if r == "all":
        return
    if isinstance(r, float):
        number("svfit", "r", r, 0.0, 1.0, open_low=True, open_high=True, why="a fraction of the singular values' energy")
    else:
        integer("svfit", "r", r, 1, why="how many top singular values train per weight; or all, or an energy fraction in (0, 1)")


def check(encoder, hp) -> None:
    check_hparams(hp)
    layers = layers_inside_blocks(encoder)
    if not layers:
        raise BobError("svfit: no linear or conv layer inside the model's blocks")
    r = hp.get("r", "all")
    if isinstance(r, int) and not isinstance(r, bool):
        for name, module in layers:
            limit = min(matrix_shape(module))
            if r > limit:
                raise BobError(f"svfit: r={r} is larger than layer {name} ({type(module).__name__} {tuple(module.weight.shape)} has {limit} "
                               f"singular values); use r <= {limit} or r: all")


@register_recipe("svfit", hparams={"r": "all"}, identity_at_init=True, check=check, check_hparams=check_hparams, paper=PAPER,
                 description="SVFit: the top-r singular values of every linear / conv weight in the blocks train (merged after training)")
def svfit(encoder, hp) -> Adaptation:
    import torch
    import torch.nn as nn

    check(encoder, hp)
    route_fused_qkv_through_module(encoder, [n for n, _ in layers_inside_blocks(encoder)])
    trainable, ranks = [], {}
    for name, module in layers_inside_blocks(encoder):
        u, s, vh = top_singular(module.weight.detach().reshape(module.weight.shape[0], -1), hp.get("r", "all"))
        rank = int(s.shape[0])
        dtype = module.weight.dtype
        module.register_buffer("svfit_u", u[:, :rank].to(dtype).contiguous())
        module.register_buffer("svfit_v", vh[:rank].to(dtype).contiguous())
        module.register_buffer("svfit_init", s[:rank].to(dtype).clone())
        module.svfit_values = nn.Parameter(s[:rank].to(dtype).clone())
        module.register_forward_hook(_svfit_hook)
        trainable.append(f"{name}.svfit_values")
        ranks[name] = rank
    layers = dict(layers_inside_blocks(encoder))

    def merge(enc) -> dict:
        for name in ranks:
            module = layers[name]
            delta = module.svfit_u @ torch.diag(module.svfit_values.detach() - module.svfit_init) @ module.svfit_v
            fold(module, delta)
            remove_hooks(module, _svfit_hook)
            drop_attributes(module, "svfit_values", "svfit_u", "svfit_v", "svfit_init")
        return {"merged": True, "merged_layers": len(ranks)}

    return Adaptation("svfit", trainable, notes={"r": hp.get("r", "all"), "layers": len(ranks), "singular_values_trained": sum(ranks.values())},
                      merge=merge)
