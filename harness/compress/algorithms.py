"""The compression rules on one weight matrix W (out_features x in_features).

- ``rtn``: round-to-nearest onto torchao's asymmetric integer grid, per group of input columns.
- ``gptq``: Frantar et al. (2023), "GPTQ", Algorithm 1: columns quantized left to right, each
  column's error spread over the not-yet-quantized columns through the Cholesky factor of the
  inverse Hessian H = 2 X Xᵀ (dampened by ``damp`` x mean diagonal), with lazy batch updates of
  ``block_size`` columns. Group parameters are chosen on the *updated* weights when a group starts
  (the reference's ``groupsize`` path); the block is a multiple of the group so that this equals
  the column-by-column algorithm exactly (tests/test_compress.py checks it against that).
- ``magnitude_mask``: the smallest |W| of the layer, exactly round(sparsity x numel) of them.
- ``wanda_mask``: Sun et al. (2024), "Wanda": score |W_ij| x ||X_j||_2 (the input's per-channel
  norm over the calibration tokens), compared within each output row (unstructured: the lowest
  fraction of each row; N:M: the M-N lowest of every M consecutive inputs of a row).

Why written here: see ``adapter.py`` (no maintained GPTQ / Wanda implementation runs on timm and
open_clip towers on a CPU with bob's torch); the quantization grid itself is torchao's.
"""
from __future__ import annotations

from typing import Any

from .adapter import qparams, quantize


def rtn(w, bits: int, group: int | None) -> dict[str, Any]:
    g = group or w.shape[1]
    scale, zero = qparams(w, bits, g)
    codes, deq = quantize(w, scale, zero, bits)
    return {"codes": codes, "scale": scale, "zero": zero, "weight": deq}


def gptq(w, H, bits: int, group: int | None, damp: float = 0.01, block_size: int = 128) -> dict[str, Any]:
    """Quantize ``w`` (out, in) given the calibration Hessian ``H`` (in, in) = 2/n Σ x xᵀ."""
    import torch

    W = w.detach().to(torch.float64).clone()
    H = H.detach().to(torch.float64).clone()
    rows, cols = W.shape
    g = group or cols
    dead = torch.diag(H) == 0  # inputs never active in calibration: their weights cannot matter there
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    block = max(g, (block_size // g) * g) if g <= block_size else g
    codes = torch.zeros((rows, cols), dtype=torch.uint8)
    Q = torch.zeros_like(W)
    scales = torch.zeros((rows, cols // g), dtype=torch.float32)
    zeros = torch.zeros((rows, cols // g), dtype=torch.int32)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros((rows, i2 - i1), dtype=W.dtype), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % g == 0:  # a new group: its grid from the weights as updated so far
                s, z = qparams(W1[:, i : i + g].float(), bits, g)
                scales[:, col // g], zeros[:, col // g] = s[:, 0], z[:, 0]
            c, q = quantize(W1[:, i : i + 1].float(), scales[:, col // g : col // g + 1], zeros[:, col // g : col // g + 1], bits)
            codes[:, col], Q[:, col] = c[:, 0], q[:, 0].to(W.dtype)
            err = (W1[:, i] - Q[:, col]) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return {"codes": codes, "scale": scales, "zero": zeros, "weight": Q.to(torch.float32)}


def magnitude_mask(w, sparsity: float):
    """Boolean keep-mask zeroing exactly round(sparsity x numel) weights of smallest magnitude (ties by position)."""
    import torch

    k = int(round(sparsity * w.numel()))
    order = torch.argsort(w.detach().abs().flatten(), stable=True)
    keep = torch.ones(w.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    return keep.view_as(w)


def wanda_mask(w, act_norm, sparsity: float, nm: tuple[int, int] | None = None):
    """Keep-mask by Wanda's rule: score |W| x ||X_j||, lowest scores zeroed within each row (or each N:M group)."""
    import torch

    score = w.detach().abs().float() * act_norm.float()[None, :]
    rows, cols = score.shape
    keep = torch.ones_like(score, dtype=torch.bool)
    if nm is not None:
        n, m = nm
        grouped = score.view(rows, cols // m, m)
        drop = torch.argsort(grouped, dim=-1, stable=True)[..., : m - n]
        keep.view(rows, cols // m, m).scatter_(-1, drop, False)
        return keep
    k = int(round(sparsity * cols))
    drop = torch.argsort(score, dim=1, stable=True)[:, :k]
    keep.scatter_(1, drop, False)
    return keep
