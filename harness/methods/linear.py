"""Linear probe on cached frozen features.

Features are standardised with the training split's statistics, then a linear layer is trained
with AdamW and a cosine schedule. The lr x weight-decay grid is tuned on train800 -> val200 and
the best setting refitted on train800val200 (VTAB-1k protocol); every fit reuses the cache, so
the backbone runs once per split however large the grid.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..eval_sets import add_eval_sets, finish_eval_sets
from ..registry import register_method
from ..types import CLASSIFICATION
from .base import Method, MethodResult, tune_then_refit


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, num_classes: int, lr: float, wd: float, epochs: int, batch_size: int, seed: int, device: str = "cpu"):
    """Returns a predict(x) -> labels function. Deterministic given ``seed``."""
    import torch

    from ..errors import NonFiniteLossError

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = train_x.mean(axis=0, keepdims=True)
    std = train_x.std(axis=0, keepdims=True) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).float().to(device)
    y = torch.from_numpy(train_y).long().to(device)
    head = torch.nn.Linear(x.shape[1], num_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"linear probe loss became {loss.item()} at epoch {epoch} (lr={lr}, wd={wd}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    def predict(test_x: np.ndarray, scores: bool = False) -> np.ndarray:
        """Labels, or with ``scores`` the (N, C) logits (shifted sets mask them: harness.eval_sets)."""
        with torch.no_grad():
            z = torch.from_numpy((test_x - mean) / std).float().to(device)
            logits = head(z)
            return logits.cpu().numpy() if scores else logits.argmax(dim=1).cpu().numpy()

    return predict


@register_method
class LinearProbe(Method):
    name = "linear"
    kinds = (CLASSIFICATION,)
    description = "linear probe on cached features; lr x wd tuned on val200, refit on train800val200"
    defaults = {"lr": 1e-3, "wd": 1e-4, "epochs": 100, "probe_batch_size": 256}
    search_space = {"lr": [1e-1, 1e-2, 1e-3], "wd": [0.0, 1e-4, 1e-2]}

    metrics = {"trainable_pct": {"direction": "lower", "unit": "%", "fmt": ".2f", "label": "trainable parameters (% of the backbone)"},
               "trainable_pct_with_head": {"direction": "lower", "unit": "%", "fmt": ".2f", "label": "trainable parameters incl. head (% of the backbone)"}}

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..adapt.accounting import peak_memory_mb, reset_peak_memory
        from ..features import split_features

        reset_peak_memory(ctx.device)
        throughput = {}

        def fit_and_score(train_split, eval_split, hp):
            xtr, ytr = split_features(backbone, task, train_split, ctx, hp["batch_size"])
            xte, yte = split_features(backbone, task, eval_split, ctx, hp["batch_size"])
            t0 = time.perf_counter()
            predict = fit_linear_probe(xtr, ytr, task.num_classes, float(hp["lr"]), float(hp["wd"]), int(hp["epochs"]), int(hp["probe_batch_size"]), ctx.seed, ctx.device)
            fit_s = time.perf_counter() - t0
            ctx.add_time("fit", fit_s)
            throughput["value"] = round(len(xtr) * int(hp["epochs"]) / fit_s, 1) if fit_s > 0 else None
            t0 = time.perf_counter()
            top1 = float((predict(xte) == yte).mean() * 100.0)

            def logits_of(split):
                xs, ys = split_features(backbone, task, split, ctx, hp["batch_size"])
                return predict(xs, scores=True), ys

            metrics = add_eval_sets(task, eval_split, {"top1": top1, "n_eval": int(len(yte))}, logits_of)
            ctx.add_time("eval", time.perf_counter() - t0)
            return top1, metrics

        metrics, protocol = tune_then_refit(task, hparams, fit_and_score, "linear")
        dim = int(backbone.feature_dim or 0)
        head = dim * task.num_classes + task.num_classes
        backbone_params = int(round((backbone.meta.get("params_m") or 0) * 1e6)) or None
        peak, kind = peak_memory_mb(ctx.device)
        report = {"recipe": "linear", "trainable_params": 0, "trainable_params_with_head": head, "head_params": head, "extra_params": 0,
                  "backbone_params": backbone_params, "trainable_pct": 0.0,
                  "trainable_pct_with_head": round(100.0 * head / backbone_params, 4) if backbone_params else None,
                  "peak_memory_mb": peak, "peak_memory_kind": kind,
                  "train_samples_per_s": throughput.get("value"), "train_throughput_note": "probe fit on cached features (samples x epochs / s)",
                  "latency_vs_frozen": 1.0, "latency_note": "frozen backbone + linear head: the backbone's forward is unchanged"}
        metrics.update({k: report[k] for k in ("trainable_pct", "trainable_pct_with_head") if report[k] is not None})
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, adaptation=report, metric_specs=specs)
