"""Linear probe on cached frozen features.

Default (``solver: lbfgs``): the L2-regularised multinomial logistic regression of CLIP /
CLIP_benchmark, solved to convergence by full-batch L-BFGS (``logreg.py``) on standardised
features; C swept on ``C_grid`` on train800 -> val200 (warm-started along the path), the chosen C
refitted on train800val200, reported on test. ``solver: sgd`` is the mini-batch AdamW probe of
BoB / VPT (lr x wd tuned on val200, a fixed number of epochs), unchanged. Every fit reuses the
feature cache, so the backbone runs once per split however large the grid.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..errors import BobError
from ..eval_sets import add_eval_sets, finish_eval_sets
from ..registry import register_method
from ..types import CLASSIFICATION
from .base import Method, MethodResult, tune_then_refit
from .logreg import DEFAULT_C_GRID

SOLVERS = ("lbfgs", "sgd")
SGD_KEYS = ("lr", "wd")  # tuned only by the sgd solver


def probe_head(dim: int, num_classes: int, hidden: int = 0):
    """The probe's head: one linear layer, or with ``hidden`` > 0 the MLP probe's
    Linear(dim, hidden) -> ReLU -> Linear(hidden, num_classes)."""
    import torch

    if hidden <= 0:
        return torch.nn.Linear(dim, num_classes)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))


def probe_head_params(dim: int, num_classes: int, hidden: int = 0) -> int:
    return dim * num_classes + num_classes if hidden <= 0 else dim * hidden + hidden + hidden * num_classes + num_classes


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, num_classes: int, lr: float, wd: float, epochs: int, batch_size: int, seed: int, device: str = "cpu",
                     hidden: int = 0):
    """Returns a predict(x) -> labels function. Deterministic given ``seed``. ``hidden`` > 0 trains
    the MLP probe (same standardisation, optimiser, schedule and batch order)."""
    import torch

    from ..errors import NonFiniteLossError

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = train_x.mean(axis=0, keepdims=True)
    std = train_x.std(axis=0, keepdims=True) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).float().to(device)
    y = torch.from_numpy(train_y).long().to(device)
    head = probe_head(x.shape[1], num_classes, hidden).to(device)
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
    description = "linear probe on cached features: L-BFGS logistic regression, C swept on val200, refit on train800val200 (solver: sgd = AdamW probe)"
    defaults = {"solver": "lbfgs", "C": None, "C_grid": list(DEFAULT_C_GRID), "max_iter": 3000, "gtol": 1e-5,
                "lr": 1e-3, "wd": 1e-4, "epochs": 100, "probe_batch_size": 256}
    search_space = {"lr": [1e-1, 1e-2, 1e-3], "wd": [0.0, 1e-4, 1e-2]}
    random_sources = {"probe": "torch.manual_seed(seed) initialises the head; torch.Generator().manual_seed(seed) orders its batches"}
    solvers = SOLVERS
    hidden = 0  # the head's hidden width (the MLP probe's)

    metrics = {"trainable_pct": {"direction": "lower", "unit": "%", "fmt": ".2f", "label": "trainable parameters (% of the backbone)"},
               "trainable_pct_with_head": {"direction": "lower", "unit": "%", "fmt": ".2f", "label": "trainable parameters incl. head (% of the backbone)"}}

    def resolve_hparams(self, given):
        """Checks the solver and the regularisation grid at expansion (one-line errors)."""
        resolved = super().resolve_hparams(given)
        if resolved["solver"] not in self.solvers:
            raise BobError(f"method '{self.name}': solver={resolved['solver']!r} does not exist; use one of {', '.join(self.solvers)}"
                           + (" (lbfgs: converged logistic regression, sgd: AdamW probe)" if len(self.solvers) > 1 else ""))
        if resolved["solver"] == "lbfgs":
            search = resolved.get("search") or {}
            if set(search) - {"C"}:
                raise BobError(f"method 'linear': the lbfgs solver sweeps only C (given search over {sorted(search)}); set C_grid, or solver: sgd for lr / wd")
            if "C" in search:
                resolved["C_grid"], resolved["search"] = list(search["C"]), {}
            if not isinstance(resolved["C_grid"], (list, tuple)):  # a grid file's list is a sweep axis: each cell gets one value
                resolved["C_grid"] = [resolved["C_grid"]]
            grid = [resolved["C"]] if resolved["C"] is not None else resolved["C_grid"]
            if not isinstance(grid, (list, tuple)) or not grid:
                raise BobError(f"method 'linear': C_grid must be a non-empty list of positive numbers, got {grid!r}; e.g. search: {{C: [0.01, 0.1, 1, 10]}}")
            for c in grid:
                if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
                    raise BobError(f"method 'linear': regularisation strength C={c!r} must be a positive number (C_grid={grid!r}); C is the inverse of the L2 penalty, e.g. search: {{C: [0.01, 0.1, 1, 10]}}")
        return resolved

    def search_grid(self, given):
        """lr / wd belong to the sgd solver; the lbfgs solver sweeps C itself (warm-started path)."""
        grid = super().search_grid(given)
        if given.get("solver", self.defaults["solver"]) != "sgd":
            explicit = sorted(set(given.get("search") or {}) & set(SGD_KEYS))
            if explicit:  # a search the solver would silently skip
                raise BobError(f"method 'linear': the lbfgs solver sweeps only C (given search over {', '.join(explicit)}); "
                               f"use search: {{C: [...]}} or C_grid, or solver: sgd for the AdamW probe's lr / wd")
            grid = {k: v for k, v in grid.items() if k not in SGD_KEYS}
        return grid

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..adapt.accounting import peak_memory_mb, reset_peak_memory
        from ..features import split_features

        reset_peak_memory(ctx.device)
        throughput = {}
        if hparams["solver"] == "lbfgs":
            metrics, protocol = self._lbfgs(backbone, task, hparams, ctx, throughput)
            return self._result(backbone, task, ctx, metrics, protocol, throughput, "lbfgs")

        def fit_and_score(train_split, eval_split, hp):
            xtr, ytr = split_features(backbone, task, train_split, ctx, hp["batch_size"])
            xte, yte = split_features(backbone, task, eval_split, ctx, hp["batch_size"])
            t0 = time.perf_counter()
            predict = fit_linear_probe(xtr, ytr, task.num_classes, float(hp["lr"]), float(hp["wd"]), int(hp["epochs"]), int(hp["probe_batch_size"]), ctx.seed, ctx.device,
                                       hidden=self.hidden_width(hp))
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

        metrics, protocol = tune_then_refit(task, hparams, fit_and_score, self.name)
        protocol["solver"] = "sgd"
        if self.hidden_width(hparams):
            protocol["head"] = f"Linear({backbone.feature_dim}, {self.hidden_width(hparams)}) -> ReLU -> Linear({self.hidden_width(hparams)}, {task.num_classes})"
        return self._result(backbone, task, ctx, metrics, protocol, throughput, "sgd", self.hidden_width(hparams))

    def hidden_width(self, hparams) -> int:
        return 0

    def _lbfgs(self, backbone, task, hparams, ctx, throughput):
        """C on tune (train -> val, warm-started path), refit the chosen C on the final train split, test once."""
        from ..features import split_features
        from .logreg import Standardiser, c_path, fit_logreg, predict_logreg

        def feats(split):
            x, y = split_features(backbone, task, split, ctx, hparams["batch_size"])
            return np.asarray(x, dtype=np.float64), np.asarray(y)

        kw = {"max_iter": int(hparams["max_iter"]), "gtol": float(hparams["gtol"]), "device": ctx.device}
        protocol: dict = {"solver": "lbfgs", "objective": "sum log-loss + ||W||^2 / (2C), intercept unpenalised (scikit-learn LogisticRegression(C))",
                          "features": "standardised with the training split's mean / std"}
        if hparams["C"] is not None:
            chosen = float(hparams["C"])
            protocol.update({"search_space": {}, "candidates": [], "selected_on": None, "selected": {"C": chosen}, "note": "C fixed, no search"})
        else:
            grid = sorted(float(c) for c in hparams["C_grid"])
            if not task.tune_splits:
                raise BobError(f"task {task.name} has no validation split to sweep C on; fix it with --set C=1.0")
            tr, va = task.tune_splits
            (xtr, ytr), (xva, yva) = feats(tr), feats(va)
            t0 = time.perf_counter()
            chosen, rows = c_path(xtr, ytr, xva, yva, task.num_classes, grid, **kw)
            ctx.add_time("fit", time.perf_counter() - t0)
            protocol.update({"search_space": {"C": grid}, "C_grid": grid, "candidates": [{**r, f"{va}_{task.metric}": r.pop("val_top1")} for r in rows],
                             "selected_on": va, "tuned_on": tr, "selected": {"C": chosen}})
        tr, te = task.final_splits
        (xtr, ytr), (xte, yte) = feats(tr), feats(te)
        t0 = time.perf_counter()
        scaler = Standardiser(xtr)
        fit = fit_logreg(scaler(xtr), ytr, task.num_classes, chosen, **kw)
        fit_s = time.perf_counter() - t0
        ctx.add_time("fit", fit_s)
        throughput["value"] = round(len(xtr) * max(fit.n_iter, 1) / fit_s, 1) if fit_s > 0 else None
        t0 = time.perf_counter()
        top1 = float((predict_logreg(fit, scaler(xte)) == yte).mean() * 100.0)

        def logits_of(split):
            xs, ys = feats(split)
            return predict_logreg(fit, scaler(xs), scores=True), ys

        metrics = add_eval_sets(task, te, {"top1": top1, "n_eval": int(len(yte))}, logits_of)
        ctx.add_time("eval", time.perf_counter() - t0)
        converged = fit.converged and all(c.get("converged", True) for c in protocol["candidates"])
        protocol.update({"final_train_split": tr, "reported_on": te, "convergence": fit.convergence(), "converged": converged})
        if not converged:
            protocol["warning"] = f"L-BFGS did not converge within max_iter={hparams['max_iter']} for some C (see candidates / convergence); raise max_iter"
            ctx.log(f"linear: {protocol['warning']}")
        return metrics, protocol

    def _result(self, backbone, task, ctx, metrics, protocol, throughput, solver, hidden: int = 0) -> MethodResult:
        from ..adapt.accounting import peak_memory_mb

        dim = int(backbone.feature_dim or 0)
        head = probe_head_params(dim, task.num_classes, hidden)
        backbone_params = int(round((backbone.meta.get("params_m") or 0) * 1e6)) or None
        peak, kind = peak_memory_mb(ctx.device)
        report = {"recipe": self.name, "trainable_params": 0, "trainable_params_with_head": head, "head_params": head, "extra_params": 0,
                  "backbone_params": backbone_params, "trainable_pct": 0.0,
                  "trainable_pct_with_head": round(100.0 * head / backbone_params, 4) if backbone_params else None,
                  "peak_memory_mb": peak, "peak_memory_kind": kind,
                  "train_samples_per_s": throughput.get("value"),
                  "train_throughput_note": "probe fit on cached features (" + ("samples x L-BFGS iterations" if solver == "lbfgs" else "samples x epochs") + " / s)", "probe_solver": solver,
                  "latency_vs_frozen": 1.0, "latency_note": f"frozen backbone + {'MLP' if hidden else 'linear'} head: the backbone's forward is unchanged"}
        metrics.update({k: report[k] for k in ("trainable_pct", "trainable_pct_with_head") if report[k] is not None})
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, adaptation=report, metric_specs=specs)


@register_method
class MLPProbe(LinearProbe):
    """The multi-layer probe: a one-hidden-layer MLP (ReLU) on the same cached, standardised features,
    trained by the AdamW probe's loop (lr x wd tuned on val200, refit on train800val200). Why: some
    features hold the label non-linearly; the gap between ``mlp_probe`` and ``linear`` measures it,
    and it costs no backbone pass (the feature cache is shared with ``linear`` and ``knn``)."""

    name = "mlp_probe"
    description = "MLP probe (Linear -> ReLU -> Linear, hidden 1024) on cached features: AdamW, lr x wd tuned on val200, refit on train800val200"
    defaults = {"solver": "sgd", "hidden": 1024, "lr": 1e-3, "wd": 1e-4, "epochs": 100, "probe_batch_size": 256}
    search_space = {"lr": [1e-2, 1e-3, 1e-4], "wd": [0.0, 1e-4, 1e-2]}
    random_sources = {"probe": "torch.manual_seed(seed) initialises the MLP; torch.Generator().manual_seed(seed) orders its batches"}
    solvers = ("sgd",)

    def resolve_hparams(self, given):
        resolved = super().resolve_hparams(given)
        hidden = resolved["hidden"]
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise BobError(f"method 'mlp_probe': hidden={hidden!r} must be a positive integer (the hidden layer's width), e.g. hidden: 1024")
        return resolved

    def search_grid(self, given):
        return Method.search_grid(self, given)

    def hidden_width(self, hparams) -> int:
        return int(hparams["hidden"])
