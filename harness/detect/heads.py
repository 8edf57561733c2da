"""Open-vocabulary box classification: ViLD-text (Gu et al. 2022).

Each region's feature is projected into the text embedding space and L2-normalised; its logits are
cosine similarities to the (fixed, L2-normalised) text embeddings of the category names and to a
learned background embedding, divided by a temperature. Training sees only base categories (the
novel ones are masked out of the softmax and have no box labels); at test time every category
scores, so novel (LVIS rare) categories are detected from their names alone. Box regression is
class-agnostic, as in ViLD, so novel categories get refined boxes too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextEmbeddingPredictor(nn.Module):
    """Drop-in for torchvision's ``FastRCNNPredictor``: returns (class logits, box deltas)."""

    def __init__(self, in_features: int, text_embeddings: torch.Tensor, trainable_classes: torch.Tensor | None = None, temperature: float = 0.01):
        super().__init__()
        dim = text_embeddings.shape[1]
        self.project = nn.Linear(in_features, dim)
        self.register_buffer("text", F.normalize(text_embeddings.float(), dim=-1))
        self.background = nn.Parameter(F.normalize(torch.randn(dim), dim=0))
        self.temperature = temperature
        num = text_embeddings.shape[0]
        mask = torch.ones(num, dtype=torch.bool) if trainable_classes is None else trainable_classes.bool()
        self.register_buffer("train_mask", torch.cat([torch.ones(1, dtype=torch.bool), mask]))  # background first
        self.bbox_pred = nn.Linear(in_features, 4)
        self.num_classes = num + 1

    def forward(self, x: torch.Tensor):
        x = x.flatten(1)
        region = F.normalize(self.project(x), dim=-1)
        classes = torch.cat([F.normalize(self.background, dim=0)[None], self.text], dim=0)
        logits = region @ classes.T / self.temperature
        if self.training:  # novel categories do not exist during training
            logits = logits.masked_fill(~self.train_mask, float("-inf"))
        deltas = self.bbox_pred(x).repeat(1, self.num_classes)  # class-agnostic regression
        return logits, deltas
