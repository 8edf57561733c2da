"""L2-regularised multinomial logistic regression solved to convergence (full-batch L-BFGS in torch).

Why: the linear probe of CLIP, CLIP_benchmark and the VTAB papers is this convex problem solved
exactly, with its strength swept on validation. A probe that stops after a step budget reports the
budget, not the features. The objective is scikit-learn's ``LogisticRegression(C=C)`` (lbfgs,
multinomial) so that values compare one to one:

    f(W, b) = sum_i log-loss(x_i W^T + b, y_i) + ||W||^2 / (2 C)      (intercept b unpenalised)

L-BFGS minimises f / n (the same minimiser, better scaled); convergence is the max-abs gradient
of f / n under ``gtol`` (scikit-learn's criterion; its default tol is 10x looser) or a stalled
loss (L-BFGS's change tolerance) within ``max_iter``, and is reported, never assumed. Torch, so the
same code runs on the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_C_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4]


@dataclass
class LogRegFit:
    weight: Any  # torch tensor (K x D), on the fit's device
    bias: Any  # (K,)
    C: float
    objective: float  # f(W, b) in scikit-learn's scaling (sum of log-losses + ||W||^2 / 2C)
    grad_max: float  # max |grad of f / n| at the solution
    n_iter: int
    converged: bool

    def convergence(self) -> dict[str, Any]:
        return {"C": self.C, "objective": self.objective, "grad_max_abs": self.grad_max, "iterations": self.n_iter, "converged": self.converged}


class Standardiser:
    """Training-split mean / std (std + 1e-6, as the AdamW probe), applied to every split."""

    def __init__(self, x: np.ndarray):
        self.mean = x.mean(axis=0, keepdims=True)
        self.std = x.std(axis=0, keepdims=True) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) - self.mean) / self.std



def _writable(a) -> np.ndarray:
    """``a`` as an array torch may wrap: cached features are read-only memmaps (copied once);
    an array the caller already made is used as it is (no second copy of a large feature matrix)."""
    a = np.asarray(a)
    return a if a.flags.writeable else a.copy()

def objective_value(x, y, weight, bias, C: float) -> float:
    """f(W, b) in scikit-learn's scaling; ``x``, ``y`` torch tensors."""
    import torch

    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y, reduction="sum")
        return float(loss + (weight * weight).sum() / (2.0 * C))


def fit_logreg(x: np.ndarray, y: np.ndarray, num_classes: int, C: float, init: LogRegFit | None = None,
               max_iter: int = 3000, gtol: float = 1e-5, device: str = "cpu", dtype: str = "float64") -> LogRegFit:
    """Minimise f for one C, warm-started from ``init`` (the previous C of a path) when given.
    ``x`` is already standardised. Deterministic: L-BFGS has no randomness."""
    import torch

    tdtype = getattr(torch, dtype)
    xt = torch.as_tensor(_writable(x), dtype=tdtype, device=device)
    yt = torch.as_tensor(_writable(y), dtype=torch.long, device=device)
    n, d = xt.shape
    weight = torch.zeros(num_classes, d, dtype=tdtype, device=device)
    bias = torch.zeros(num_classes, dtype=tdtype, device=device)
    if init is not None:
        weight.copy_(init.weight.to(device=device, dtype=tdtype))
        bias.copy_(init.bias.to(device=device, dtype=tdtype))
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    reg = 1.0 / (2.0 * C * n)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=max_iter * 5 // 4 + 25, tolerance_grad=gtol,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(xt @ weight.T + bias, yt) + reg * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[weight].get("n_iter", 0))
    closure()
    grad_max = float(max(weight.grad.abs().max(), bias.grad.abs().max()))
    weight, bias = weight.detach(), bias.detach()
    return LogRegFit(weight, bias, float(C), objective_value(xt, yt, weight, bias, C), grad_max, n_iter,
                     converged=bool(grad_max <= gtol or n_iter < max_iter))


def predict_logreg(fit: LogRegFit, x: np.ndarray, scores: bool = False) -> np.ndarray:
    """Labels, or with ``scores`` the (N, C) logits (shifted sets mask them: harness.eval_sets)."""
    import torch

    with torch.no_grad():
        xt = torch.as_tensor(_writable(x), dtype=fit.weight.dtype, device=fit.weight.device)
        logits = xt @ fit.weight.T + fit.bias
        return logits.cpu().numpy() if scores else logits.argmax(dim=1).cpu().numpy()


def c_path(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int, grid: list[float],
           **kw: Any) -> tuple[float, list[dict[str, Any]]]:
    """Fit every C of ``grid`` on train (ascending C = weakening regularisation, each warm-started from
    the previous solution), score on val; returns the chosen C (best val top-1, ties to the smaller C:
    the stronger regularisation) and one candidate row per C."""
    scaler = Standardiser(train_x)
    xtr, xva = scaler(train_x), scaler(val_x)
    fit, rows, best = None, [], None
    for C in sorted(float(c) for c in grid):
        fit = fit_logreg(xtr, train_y, num_classes, C, init=fit, **kw)
        top1 = float((predict_logreg(fit, xva) == np.asarray(val_y)).mean() * 100.0)
        rows.append({**fit.convergence(), "val_top1": top1})
        if best is None or top1 > best[0]:
            best = (top1, C)
    return best[1], rows
