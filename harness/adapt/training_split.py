"""The training split, as the recipes that choose what to train from data see it.

SCT picks salient channels from activations, GPS picks weights from gradients, E²VPT scores its
prompts after a first fit: each of these selections is part of training, so it may read the
cell's *training* split and nothing else. A recipe receives this object instead of the task: it
can iterate the training split (in a fixed order, optionally as several augmented views) and run
a preliminary fit on it through the one training loop, and that is all — validation and test
splits are out of its reach by construction (tests prove it by poisoning their labels).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator


@dataclass
class TrainingSplit:
    name: str  # the split the cell trains on (train800, train800val200, train...)
    num_classes: int
    dataset: Callable[[bool], Any]  # augment -> dataset of (image tensor, label), the cell's own preprocessing
    hp: dict[str, Any]  # the cell's hyper-parameters (batch size, and the schedule of a preliminary fit)
    ctx: Any = None  # RunContext: device, seed, logging, timings
    checkpoint: Path | None = None  # the cell's checkpoint; a preliminary fit checkpoints beside it
    feature_dim: int | None = None
    backbone_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return str(getattr(self.ctx, "device", "cpu"))

    @property
    def seed(self) -> int:
        return int(getattr(self.ctx, "seed", 0))

    def batches(self, augment: bool = False, views: int = 1) -> Iterator[tuple[list, Any]]:
        """``([view_1, ..., view_k], labels)`` batches over the whole split in its own order. Augmented
        views are independent draws, reproducible from the cell seed."""
        import torch
        from torch.utils.data import DataLoader

        dataset = self.dataset(augment)
        multi = _Views(dataset, views)
        torch.manual_seed(self.seed)
        loader = DataLoader(multi, batch_size=int(self.hp.get("batch_size", 64)), shuffle=False, num_workers=0)
        for *images, labels in loader:
            yield [im.to(self.device) for im in images], labels.to(self.device)

    def describe(self, **extra) -> dict[str, Any]:
        """What a selection was computed on, for the record."""
        return {"split": self.name, "images": len(self.dataset(False)), **extra}

    def fit(self, encoder, trainable: list[str], desc: str):
        """A preliminary fit of ``encoder``'s parameters ``trainable`` plus a fresh linear head on this split,
        through the one training loop with the cell's schedule; returns the trained ``Sequential(encoder, head)``."""
        import torch

        from ..methods.finetune import _MemoisedDataset, fit, make_optimizer
        from . import train_mode

        names = set(trainable)
        for pname, param in encoder.named_parameters():
            param.requires_grad_(pname in names)
        head = torch.nn.Linear(int(self.feature_dim or encoder.num_features), self.num_classes)
        model = torch.nn.Sequential(encoder, head).to(self.device)
        augment = bool(self.hp.get("augment", False))
        dataset = self.dataset(augment)
        if not augment:
            dataset = _MemoisedDataset(dataset)
        bs = int(self.hp.get("batch_size", 64))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, self.hp)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(self.hp.get("label_smoothing", 0.0)))

        def make_loader(epoch, generator):
            from torch.utils.data import DataLoader

            return DataLoader(dataset, batch_size=bs, shuffle=True, generator=generator, num_workers=0)

        def loss_of(batch, forward):
            images, labels = batch
            images, labels = images.to(self.device), labels.to(self.device)
            return loss_fn(forward(images), labels), len(labels)

        checkpoint = self.checkpoint.with_name(f"{self.checkpoint.stem}-{desc}.pt") if self.checkpoint is not None else None
        fit(model, params, opt, make_loader, loss_of, self.hp, self.ctx, checkpoint, max(1, math.ceil(len(dataset) / bs)),
            desc=f"{desc} {self.name}", set_train_mode=lambda: train_mode(model, adapted=True), metric_prefix=f"{self.name}/{desc}")
        model.eval()
        return model


class _Views:
    """``(view_1, ..., view_k, label)`` from a dataset whose transform may be random."""

    def __init__(self, dataset, views: int):
        self.dataset, self.views = dataset, views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        drawn = [self.dataset[i] for _ in range(self.views)]
        return (*[image for image, _ in drawn], drawn[0][1])


def selection_digest(selection: Any) -> str:
    """SHA-256 of a selection (channel or weight indices) in canonical JSON: two records selected the
    same parameters exactly when their digests match."""
    return hashlib.sha256(json.dumps(selection, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
