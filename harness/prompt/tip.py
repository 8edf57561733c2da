"""Tip-Adapter: a training-free cache of the few-shot images' features, and the alpha / beta search.

The cache (Zhang et al. 2022): keys are the training images' features averaged over
``augment_epochs`` random-crop passes and normalised, values their one-hot labels; a test feature
f gets ``CLIP logits + alpha * exp(-beta * (1 - f keys^T)) values``.

alpha and beta are searched on the few-shot *validation* set over the reference's grid
(``beta_i = i * (scale_b - 0.1) / steps_b + 0.1``, the same for alpha), best val accuracy wins,
the first in grid order on ties. The reference searches on the test features for ImageNet and
keeps Tip-Adapter-F's best *test* epoch: bob never reads test labels before the final evaluation.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def tip_logits(clip_logits, affinity, values, alpha: float, beta: float, class_map: Sequence[int | None] | None = None):
    """CLIP logits + alpha * cache logits; ``class_map[j]`` = the training class of evaluation class j
    (None: not in the cache, so only CLIP's logit); None = the training classes in order."""
    cache = torch.exp(-beta * (1.0 - affinity)) @ values
    if class_map is not None:
        cols = torch.zeros(cache.shape[0], len(class_map), dtype=cache.dtype, device=cache.device)
        for j, c in enumerate(class_map):
            if c is not None:
                cols[:, j] = cache[:, c]
        cache = cols
    return clip_logits + alpha * cache


def search_grid(scale: Sequence[float], steps: Sequence[int]) -> tuple[list[float], list[float]]:
    """The reference's (beta, alpha) lists for ``search_scale = [beta_max, alpha_max]`` and ``search_step``."""
    betas = [i * (float(scale[0]) - 0.1) / int(steps[0]) + 0.1 for i in range(int(steps[0]))]
    alphas = [i * (float(scale[1]) - 0.1) / int(steps[1]) + 0.1 for i in range(int(steps[1]))]
    return betas, alphas


def search_alpha_beta(clip_logits, affinity, values, labels, scale, steps) -> dict[str, Any]:
    """Best (alpha, beta) by accuracy on the given (validation) features; first best in grid order."""
    labels = torch.as_tensor(np.asarray(labels), device=clip_logits.device)
    betas, alphas = search_grid(scale, steps)
    best = None
    with torch.no_grad():
        for beta in betas:
            cache = torch.exp(-beta * (1.0 - affinity)) @ values
            for alpha in alphas:
                acc = float(((clip_logits + alpha * cache).argmax(1) == labels).float().mean() * 100.0)
                if best is None or acc > best["val_top1"]:
                    best = {"alpha": alpha, "beta": beta, "val_top1": acc}
    return {**best, "grid": {"beta": [min(betas), max(betas), len(betas)], "alpha": [min(alphas), max(alphas), len(alphas)]}}
