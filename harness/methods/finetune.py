"""End-to-end fine-tuning: backbone + linear head, AdamW, linear warmup then cosine decay.

Augmentation is off by default (the VTAB-1k protocol); ``augment=true`` adds random resized
crops (and flips where the task allows them). Each epoch ends with an atomic checkpoint in the
cell's checkpoint folder, and a fit that finds one resumes from it with the saved RNG states,
so a requeued job ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from pathlib import Path

from ..errors import NonFiniteLossError
from ..registry import register_method
from ..spec import canonical_json
from ..types import CLASSIFICATION
from .base import Method, MethodResult, tune_then_refit


class _MemoisedDataset:
    """Transforms each image once (valid only for deterministic transforms)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._items: dict[int, tuple] = {}

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i not in self._items:
            self._items[i] = self.dataset[i]
        return self._items[i]


def _lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _atomic_torch_save(obj, path: Path) -> None:
    import os
    import tempfile

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_and_evaluate(backbone, task, train_split: str, eval_split: str, hp: dict, ctx, checkpoint: Path | None):
    """Fine-tune a fresh copy of the backbone on ``train_split``; top-1 on ``eval_split``."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from ..progress import progress

    device = ctx.device
    torch.manual_seed(ctx.seed)
    encoder = copy.deepcopy(backbone.model)
    head = torch.nn.Linear(backbone.feature_dim, task.num_classes)
    model = torch.nn.Sequential(encoder, head).to(device)
    augment = bool(hp["augment"])
    train_ds = task.load(train_split).with_transform(backbone.preprocess.train_transform(augment, task.hflip_ok))
    if not augment:
        train_ds = _MemoisedDataset(train_ds)
    eval_ds = task.load(eval_split).with_transform(backbone.preprocess.eval_transform())
    bs = int(hp["batch_size"])
    steps_per_epoch = max(1, math.ceil(len(train_ds) / bs))
    epochs = int(hp["epochs"])
    total = epochs * steps_per_epoch
    warmup = int(round(float(hp["warmup_epochs"]) * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["wd"]))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(hp["label_smoothing"]))
    start_epoch, curve = 0, []
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, curve = state["epoch"], state["curve"]
        ctx.log(f"resumed {train_split} fit from {checkpoint} at epoch {start_epoch}/{epochs}")

    step = start_epoch * steps_per_epoch
    t0 = time.perf_counter()
    for epoch in progress(range(start_epoch, epochs), desc=f"finetune {train_split}", total=epochs - start_epoch):
        model.train()
        order_gen = torch.Generator().manual_seed(ctx.seed * 100003 + epoch)  # epoch order independent of resume
        loader = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=order_gen, num_workers=0, drop_last=False)
        total_loss, count = 0.0, 0
        for images, labels in loader:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, warmup, float(hp["lr"]))
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"fine-tune loss became {loss.item()} at epoch {epoch + 1} step {step} (lr={hp['lr']}); lower the learning rate or add warmup"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp["grad_clip"]))
            opt.step()
            step += 1
            total_loss += loss.detach().item() * len(labels)
            count += len(labels)
        curve.append({"epoch": epoch + 1, "train_loss": total_loss / max(count, 1), "lr": opt.param_groups[0]["lr"]})
        if checkpoint is not None:
            _atomic_torch_save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "curve": curve},
                checkpoint,
            )
        if ctx.on_metrics:
            ctx.on_metrics({f"{train_split}/loss": curve[-1]["train_loss"], "lr": curve[-1]["lr"]}, epoch + 1)
    ctx.add_time("fit", time.perf_counter() - t0)

    t0 = time.perf_counter()
    model.eval()
    correct, seen = 0, 0
    with torch.inference_mode():
        for images, labels in DataLoader(eval_ds, batch_size=max(bs, 64), shuffle=False):
            pred = model(images.to(device)).argmax(dim=1).cpu()
            correct += int((pred == labels).sum())
            seen += len(labels)
    ctx.add_time("eval", time.perf_counter() - t0)
    return float(np.float64(correct) / max(seen, 1) * 100.0), seen, curve


@register_method
class FineTune(Method):
    name = "finetune"
    kinds = (CLASSIFICATION,)
    frozen_backbone = False
    description = "end-to-end fine-tuning (AdamW, warmup + cosine, augmentation on/off)"
    defaults = {"lr": 5e-4, "wd": 0.05, "epochs": 10, "warmup_epochs": 1.0, "label_smoothing": 0.0, "augment": False, "grad_clip": 1.0, "batch_size": 32}
    search_space = {}  # fixed by default (costly); pass search: {lr: [...]} for the VTAB-1k protocol

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        curves = {}

        def fit_and_score(train_split, eval_split, hp):
            ckpt = None
            if ctx.checkpoint_dir is not None:
                tag = hashlib.sha256(canonical_json({"train": train_split, "eval": eval_split, **{k: v for k, v in hp.items() if k != "search"}}).encode()).hexdigest()[:12]
                ckpt = Path(ctx.checkpoint_dir) / f"{ctx.cell_id}-{tag}.pt"
            top1, n, curve = train_and_evaluate(backbone, task, train_split, eval_split, hp, ctx, ckpt)
            curves[f"{train_split}->{eval_split}"] = curve
            return top1, {"top1": top1, "n_eval": n}

        metrics, protocol = tune_then_refit(task, hparams, fit_and_score, "finetune")
        final = curves.get(f"{task.final_splits[0]}->{task.final_splits[1]}", [])
        if final:
            metrics["final_train_loss"] = final[-1]["train_loss"]
        return MethodResult(metrics, "top1", protocol, curves={"train": final})
