"""k-nearest-neighbour classification on frozen features (DINO's weighted kNN).

Cosine similarity on L2-normalised features; each of the k neighbours votes for its label with
weight exp(similarity / T), T = 0.07 as in DINO (``weighting=uniform`` gives plain majority).
"""
from __future__ import annotations

import time

import numpy as np

from ..eval_sets import add_eval_sets, finish_eval_sets
from ..registry import register_method
from ..types import CLASSIFICATION
from .base import Method, MethodResult, tune_then_refit


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int, k: int, temperature: float, weighting: str, chunk: int = 1024,
                votes_out: bool = False) -> np.ndarray:
    """Labels, or with ``votes_out`` the (N, C) vote matrix (shifted sets mask it: harness.eval_sets)."""
    def normalise(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train_x, test_x = normalise(train_x.astype(np.float32)), normalise(test_x.astype(np.float32))
    k = min(k, len(train_x))
    preds = []
    for start in range(0, len(test_x), chunk):
        sim = test_x[start : start + chunk] @ train_x.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, idx, axis=1)
        weights = np.exp(top_sim / temperature) if weighting == "distance" else np.ones_like(top_sim)
        votes = np.zeros((len(sim), num_classes), dtype=np.float64)
        np.add.at(votes, (np.arange(len(sim))[:, None], train_y[idx]), weights)
        preds.append(votes if votes_out else votes.argmax(axis=1))
    if votes_out:
        return np.concatenate(preds) if preds else np.zeros((0, num_classes))
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


@register_method
class KNN(Method):
    name = "knn"
    kinds = (CLASSIFICATION,)
    description = "weighted cosine kNN on frozen features (k=20, T=0.07, DINO)"
    defaults = {"k": 20, "temperature": 0.07, "weighting": "distance"}
    search_space = {}

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..features import split_features

        def fit_and_score(train_split, eval_split, hp):
            xtr, ytr = split_features(backbone, task, train_split, ctx, hp["batch_size"])
            xte, yte = split_features(backbone, task, eval_split, ctx, hp["batch_size"])
            t0 = time.perf_counter()
            pred = knn_predict(xtr, ytr, xte, task.num_classes, int(hp["k"]), float(hp["temperature"]), hp["weighting"])
            ctx.add_time("eval", time.perf_counter() - t0)
            top1 = float((pred == yte).mean() * 100.0)

            def votes_of(split):
                xs, ys = split_features(backbone, task, split, ctx, hp["batch_size"])
                return knn_predict(xtr, ytr, xs, task.num_classes, int(hp["k"]), float(hp["temperature"]), hp["weighting"], votes_out=True), ys

            return top1, add_eval_sets(task, eval_split, {"top1": top1, "n_eval": int(len(yte))}, votes_of)

        metrics, protocol = tune_then_refit(task, hparams, fit_and_score, "knn")
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, metric_specs=specs)
