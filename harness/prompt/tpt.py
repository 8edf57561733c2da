"""Test-time prompt tuning (TPT, Shu et al. 2022): per test image, tune the prompt on that image alone.

For each image: ``views`` - 1 random views (random resized crop + flip, and AugMix for
fine-grained sets, as the reference) plus the image itself; keep the ``selection`` fraction with
the lowest softmax entropy; take ``tta_steps`` AdamW steps on the entropy of their averaged
distribution; predict the image; then put the prompt (and the optimizer state) back, so no image's
result depends on another's. The views of an image are drawn from a generator seeded by the cell
seed and the image's identity, not by its position, so the result of an image is the same whatever
was evaluated before it. The image itself goes through the backbone's eval transform (the one
every other method's test images get); the reference centre-crops.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import torch


def select_confident(logits, fraction: float):
    """Indices of the ``fraction`` of rows with the lowest entropy (at least one)."""
    entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    keep = max(1, int(logits.shape[0] * fraction))
    return torch.argsort(entropy, descending=False)[:keep]


def marginal_entropy(logits):
    """Entropy of the average of the rows' softmax distributions (computed in log space)."""
    logp = logits - logits.logsumexp(dim=-1, keepdim=True)
    avg = logp.logsumexp(dim=0) - math.log(logp.shape[0])
    avg = torch.clamp(avg, min=torch.finfo(avg.dtype).min)
    return -(avg * torch.exp(avg)).sum(dim=-1)


def view_transform(preprocess, augmix: bool):
    """One random view: RandomResizedCrop (torchvision's default scale) + flip, then AugMix (severity 1,
    the reference's operation list: no colour / contrast / brightness / sharpness) when ``augmix``."""
    from torchvision import transforms as T

    from ..types import _interp

    steps = [T.RandomResizedCrop(preprocess.img_size, interpolation=_interp(preprocess.interpolation)), T.RandomHorizontalFlip()]
    if augmix:
        steps.append(T.AugMix(severity=1, all_ops=False))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(preprocess.mean, preprocess.std)])


def image_seed(seed: int, identity: str) -> int:
    return int(hashlib.sha256(f"{seed}:{identity}".encode()).hexdigest()[:15], 16)


def views_of(image, identity: str, seed: int, n_views: int, preprocess, augmix: bool):
    """(n_views, 3, H, W): the image through the eval transform, then n_views - 1 random views."""
    eval_t, view_t = preprocess.eval_transform(), view_transform(preprocess, augmix)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(image_seed(seed, identity))
        views = [eval_t(image)] + [view_t(image) for _ in range(n_views - 1)]
    return torch.stack(views)


def tpt_predict(learner, towers, images_views, classes, hp: dict[str, Any], autocast) -> torch.Tensor:
    """Logits of one image (row 0 of ``images_views``) after tuning the prompt on its views; the
    prompt and the optimizer start from the same state for every image."""
    ctx = learner.prompt.ctx
    with torch.no_grad():
        feats = towers.encode_image(images_views)
    start = ctx.detach().clone()
    opt = torch.optim.AdamW([ctx], lr=float(hp["tta_lr"]))
    selected = None
    try:
        for _ in range(int(hp["tta_steps"])):
            with autocast:
                logits = learner.logits_from_features(feats, classes).float()
            if selected is None:
                selected = select_confident(logits.detach(), float(hp["selection"]))
            loss = marginal_entropy(logits[selected])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad(), autocast:
            return learner.logits_from_features(feats[:1], classes).float()
    finally:
        with torch.no_grad():
            ctx.copy_(start)  # reset: the next image starts from the same prompt
        ctx.grad = None
