"""In-context regression: train a sequence model on a function class (``pretrain_icl``) or
evaluate a baseline (``icl_eval``); both report the error curve over prompt length.

Error at position i = squared error of the prediction of y_i from the i points before it,
divided by d (so that predicting 0 on ``icl/linear`` scores 1), averaged over ``n_eval`` prompts
drawn with a fixed evaluation seed, with a 95% normal interval (1.96 standard errors).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..errors import NonFiniteLossError
from ..registry import register_method
from ..types import ICL_REGRESSION
from .base import Method, MethodResult

EVAL_SEED = 20221  # all models of a sweep are scored on the same prompts


def error_curve(preds: np.ndarray, ys: np.ndarray, d: int) -> list[dict]:
    err = (preds - ys) ** 2 / d
    mean, sd = err.mean(axis=0), err.std(axis=0, ddof=1) if len(err) > 1 else np.zeros(err.shape[1])
    half = 1.96 * sd / math.sqrt(len(err))
    return [{"k": i, "mean": float(mean[i]), "ci_low": float(mean[i] - half[i]), "ci_high": float(mean[i] + half[i])} for i in range(err.shape[1])]


def curve_metrics(curve: list[dict], d: int) -> dict[str, float]:
    out = {}
    for label, i in (("err_at_d", d), ("err_at_2d", 2 * d)):
        if i < len(curve):
            out[label] = curve[i]["mean"]
    out["err_last"] = curve[-1]["mean"]
    return out


def _dims(task, hp) -> tuple[int, int]:
    d = hp["d"]
    k = hp["k"] if hp["k"] is not None else (2 * d + 1 if isinstance(d, int) else None)
    task.check(d, k)
    return d, k


def _eval_prompts(task, d, k, hp):
    return task.sample(int(hp["n_eval"]), k, d, np.random.default_rng(EVAL_SEED), ood=hp["ood"])


def _result(curve, d, protocol) -> MethodResult:
    metrics = curve_metrics(curve, d)
    primary = "err_at_2d" if "err_at_2d" in metrics else "err_last"
    return MethodResult(metrics, primary, protocol, curves={"icl_error": curve})


EVAL_DEFAULTS = {"d": 5, "k": None, "n_eval": 500, "ood": "none"}


@register_method
class ICLEval(Method):
    name = "icl_eval"
    kinds = (ICL_REGRESSION,)
    description = "error curve of a baseline that needs no training (least squares, ridge, ...)"
    defaults = {**EVAL_DEFAULTS, "ridge_lambda": 0.25, "lasso_alpha": 0.1, "knn_k": 3, "tree_kind": "greedy"}
    backbone_sources = ("baseline",)
    higher_is_better = False

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        d, k = _dims(task, hparams)
        xs, ys = _eval_prompts(task, d, k, hparams)
        t0 = time.perf_counter()
        preds = backbone.predict(xs, ys, hparams)
        ctx.add_time("eval", time.perf_counter() - t0)
        return _result(error_curve(preds, ys, d), d, {"selected_on": None, "eval_seed": EVAL_SEED, "ood": hparams["ood"]})


@register_method
class PretrainICL(Method):
    name = "pretrain_icl"
    kinds = (ICL_REGRESSION,)
    frozen_backbone = False
    description = "train a sequence model from scratch on the function class (curriculum on d and k), then its error curve"
    defaults = {**EVAL_DEFAULTS, "n_layer": 4, "n_embd": 64, "n_head": 2, "n_positions": None, "train_steps": 3000, "batch_size": 64,
                "lr": 1e-3, "warmup_steps": 100, "curriculum": True, "curriculum_interval": 250, "d_start": 2, "k_start": 3,
                "checkpoint_every": 500}
    backbone_sources = ("scratch",)
    higher_is_better = False

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        import torch

        from ..progress import progress

        d, k = _dims(task, hparams)
        model = backbone.make_model(d, k, hparams)
        backbone.built, backbone.feature_dim = True, int(hparams["n_embd"])
        backbone.meta["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
        steps, bs = int(hparams["train_steps"]), int(hparams["batch_size"])
        opt = torch.optim.AdamW(model.parameters(), lr=float(hparams["lr"]), weight_decay=0.0)
        warmup = max(1, int(hparams["warmup_steps"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        ckpt = Path(ctx.checkpoint_dir) / f"{ctx.cell_id}-icl.pt" if ctx.checkpoint_dir else None
        start, losses = 0, []
        from .finetune import load_checkpoint

        state = load_checkpoint(ckpt, "cpu", ctx.log) if ckpt is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start, losses = state["step"], state["losses"]
            ctx.log(f"resumed pretrain_icl from {ckpt} at step {start}/{steps}")
        torch.manual_seed(ctx.seed)
        t0 = time.perf_counter()
        model.train()
        for step in progress(range(start, steps), desc="pretrain_icl", total=steps - start):
            active_d, active_k = d, k
            if hparams["curriculum"]:
                stage = step // int(hparams["curriculum_interval"])
                active_d = min(d, int(hparams["d_start"]) + stage)
                active_k = min(k, int(hparams["k_start"]) + 2 * stage)
            rng = np.random.default_rng([ctx.seed, step])  # the data of step s is the same after a resume
            xs, ys = task.sample(bs, active_k, d, rng, active_d=active_d)
            xs_t, ys_t = torch.from_numpy(xs), torch.from_numpy(ys)
            loss = torch.nn.functional.mse_loss(model.forward(xs_t, ys_t), ys_t)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"pretrain_icl loss became {loss.item()} at step {step} (lr={hparams['lr']}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0:
                losses.append({"step": step, "loss": float(loss.detach()), "active_d": active_d, "active_k": active_k})
                if ctx.on_metrics:
                    ctx.on_metrics({"train/loss": float(loss.detach())}, step)
            if ckpt is not None and (step + 1) % int(hparams["checkpoint_every"]) == 0:
                from .finetune import _atomic_torch_save

                _atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step + 1, "losses": losses}, ckpt)
        ctx.add_time("fit", time.perf_counter() - t0)
        model.eval()
        xs, ys = _eval_prompts(task, d, k, hparams)
        t0 = time.perf_counter()
        with torch.no_grad():
            preds = np.concatenate([model.forward(torch.from_numpy(xs[i : i + 256]), torch.from_numpy(ys[i : i + 256])).numpy() for i in range(0, len(xs), 256)])
        ctx.add_time("eval", time.perf_counter() - t0)
        result = _result(error_curve(preds, ys, d), d, {"selected_on": None, "eval_seed": EVAL_SEED, "ood": hparams["ood"], "train_steps": steps})
        result.curves["train_loss"] = losses
        return result
