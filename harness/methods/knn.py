"""k-nearest-neighbour classification on frozen features (DINO's weighted kNN).

Cosine similarity on L2-normalised features; each of the k neighbours votes for its label with
weight exp(similarity / T), T = 0.07 as in DINO (``weighting=uniform`` gives plain majority).
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import BobError
from ..eval_sets import add_eval_sets, finish_eval_sets
from ..registry import register_method
from ..types import CLASSIFICATION
from .base import Method, MethodResult, tune_then_refit


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int, k: int, temperature: float, weighting: str,
                chunk: int = 1024, train_chunk: int = 16384, device: str = "cpu", votes_out: bool = False) -> np.ndarray:
    """DINO's ``knn_classifier`` (eval_knn.py): float32, L2-normalised features, cosine similarity,
    the k most similar training images vote for their label with exp(sim / T) (``uniform``: 1);
    the class with the largest vote wins. Why batched over train chunks: a 100k-image train set never
    needs a test x train matrix, only (test chunk x train chunk) plus a running top-k. Ties: among
    equal similarities the lower training index enters the top-k (a stable sort; DINO's topk leaves
    that order unspecified); among equal votes the lower class wins (argmax)."""
    import torch

    if k > len(train_x):
        raise BobError(f"knn: k={k} is larger than the training set ({len(train_x)} images); set k <= {len(train_x)}")
    train = torch.nn.functional.normalize(torch.as_tensor(np.array(train_x, dtype=np.float32), device=device), dim=1, p=2)
    test = torch.nn.functional.normalize(torch.as_tensor(np.array(test_x, dtype=np.float32), device=device), dim=1, p=2)
    labels = torch.as_tensor(np.array(train_y, dtype=np.int64), device=device)
    preds = []
    for start in range(0, len(test), chunk):
        block = test[start : start + chunk]
        best_sim = best_idx = None
        for t0 in range(0, len(train), train_chunk):
            sim = block @ train[t0 : t0 + train_chunk].T
            idx = torch.arange(t0, t0 + sim.shape[1], device=device).expand_as(sim)
            if best_sim is not None:  # earlier chunks first: a stable sort keeps their (lower) indices ahead on ties
                sim, idx = torch.cat([best_sim, sim], dim=1), torch.cat([best_idx, idx], dim=1)
            sim, order = torch.sort(sim, dim=1, descending=True, stable=True)
            best_sim, best_idx = sim[:, :k], torch.gather(idx, 1, order[:, :k])
        weights = (best_sim / temperature).exp() if weighting == "distance" else torch.ones_like(best_sim)
        one_hot = torch.zeros(len(block) * k, num_classes, device=device).scatter_(1, labels[best_idx].view(-1, 1), 1)
        votes = torch.sum(one_hot.view(len(block), -1, num_classes) * weights.view(len(block), -1, 1), 1)
        preds.append(votes.double().cpu().numpy() if votes_out else votes.argmax(dim=1).cpu().numpy())
    if votes_out:  # the (N, C) vote matrix: shifted sets mask it (harness.eval_sets)
        return np.concatenate(preds) if preds else np.zeros((0, num_classes))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def declared_train_size(task_name: str) -> int | None:
    """The smallest training split a task declares without loading data (``train_size`` in its
    registry metadata, or shots x classes for few-shot tasks); None when unknown."""
    from ..registry import TASKS

    meta = TASKS.get(task_name).meta
    if meta.get("train_size"):
        return int(meta["train_size"])
    if meta.get("shots") and meta.get("num_classes"):
        return int(meta["shots"]) * int(meta["num_classes"])
    return None


@register_method
class KNN(Method):
    name = "knn"
    kinds = (CLASSIFICATION,)
    description = "weighted cosine kNN on frozen features (k=20, T=0.07, DINO)"
    defaults = {"k": 20, "temperature": 0.07, "weighting": "distance"}
    search_space = {}

    def resolve_hparams(self, given):
        resolved = super().resolve_hparams(given)
        k = resolved["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BobError(f"method 'knn': k={k!r} must be a positive integer (DINO: k=20)")
        if resolved["weighting"] not in ("distance", "uniform"):
            raise BobError(f"method 'knn': weighting={resolved['weighting']!r} does not exist; use distance (exp(sim/T) votes, DINO) or uniform")
        return resolved

    def validate_cell(self, spec) -> None:
        """k larger than the task's (declared) training set stops the sweep at expansion."""
        size = declared_train_size(spec.task)
        k = self.resolve_hparams(spec.hparams)["k"]
        if size is not None and k > size:
            raise BobError(f"knn x {spec.task}: k={k} is larger than the training set ({size} images); set k <= {size}")

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..features import split_features

        def fit_and_score(train_split, eval_split, hp):
            xtr, ytr = split_features(backbone, task, train_split, ctx, hp["batch_size"])
            xte, yte = split_features(backbone, task, eval_split, ctx, hp["batch_size"])
            t0 = time.perf_counter()
            pred = knn_predict(xtr, ytr, xte, task.num_classes, int(hp["k"]), float(hp["temperature"]), hp["weighting"], device=ctx.device)
            ctx.add_time("eval", time.perf_counter() - t0)
            top1 = float((pred == yte).mean() * 100.0)

            def votes_of(split):
                xs, ys = split_features(backbone, task, split, ctx, hp["batch_size"])
                return knn_predict(xtr, ytr, xs, task.num_classes, int(hp["k"]), float(hp["temperature"]), hp["weighting"], device=ctx.device, votes_out=True), ys

            return top1, add_eval_sets(task, eval_split, {"top1": top1, "n_eval": int(len(yte))}, votes_of)

        metrics, protocol = tune_then_refit(task, hparams, fit_and_score, "knn")
        protocol.update({"k": int(hparams["k"]), "temperature": float(hparams["temperature"]), "weighting": hparams["weighting"],
                         "reference": "DINO eval_knn.knn_classifier (cosine on L2-normalised features, exp(sim/T) votes)"})
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, metric_specs=specs)
