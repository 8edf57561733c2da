"""Sequence models for in-context regression: trained from scratch (``scratch:gpt2``,
``scratch:lstm``) and baselines that need no training (``baseline:*``).

All of them answer the same question: given (x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i), predict y_i,
for every i of a prompt at once: ``predict(xs, ys) -> (n, k)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from harness.errors import BobError
from harness.registry import BACKBONES


@dataclass
class SequenceBackbone:
    """``trainable`` models are built by ``make_model(d, k, hparams)`` and trained by pretrain_icl;
    baselines implement ``predict(xs, ys, hparams)`` directly."""

    name: str
    meta: dict[str, Any]
    trainable: bool
    make_model: Callable | None = None
    predict: Callable | None = None
    feature_dim: int | None = None
    built: bool = False


# -- baselines ------------------------------------------------------------------------------------
def _prefix_solve(xs, ys, solve):
    """Predictions at every position i from the first i points, with ``solve(X, y) -> w``."""
    n, k, d = xs.shape
    preds = np.zeros((n, k), dtype=np.float64)
    for i in range(1, k):
        w = solve(xs[:, :i].astype(np.float64), ys[:, :i].astype(np.float64))
        preds[:, i] = np.einsum("nd,nd->n", xs[:, i], w)
    return preds


def least_squares(xs, ys, hp):
    """Minimum-norm least squares (pseudo-inverse): exact once i >= d on noiseless linear data."""
    return _prefix_solve(xs, ys, lambda X, y: np.einsum("ndi,ni->nd", np.linalg.pinv(X), y))


def ridge(xs, ys, hp):
    lam = float(hp.get("ridge_lambda", 0.25))

    def solve(X, y):
        d = X.shape[2]
        gram = np.einsum("nid,nie->nde", X, X) + lam * np.eye(d)
        return np.linalg.solve(gram, np.einsum("nid,ni->nd", X, y)[..., None])[..., 0]

    return _prefix_solve(xs, ys, solve)


def averaging(xs, ys, hp):
    """w = mean_j y_j x_j (the 'averaging' estimator of Garg et al.)."""
    return _prefix_solve(xs, ys, lambda X, y: np.einsum("nid,ni->nd", X, y) / X.shape[1])


def nearest_neighbours(xs, ys, hp):
    k_nn = int(hp.get("knn_k", 3))
    n, k, _ = xs.shape
    preds = np.zeros((n, k))
    for i in range(1, k):
        dist = np.linalg.norm(xs[:, :i] - xs[:, i : i + 1], axis=2)
        m = min(k_nn, i)
        idx = np.argpartition(dist, m - 1, axis=1)[:, :m]
        preds[:, i] = np.take_along_axis(ys[:, :i], idx, axis=1).mean(axis=1)
    return preds


def _per_prompt(make_estimator):
    def predict(xs, ys, hp):
        n, k, _ = xs.shape
        preds = np.zeros((n, k))
        for j in range(n):
            for i in range(1, k):
                est = make_estimator(hp)
                est.fit(xs[j, :i], ys[j, :i])
                preds[j, i] = est.predict(xs[j, i : i + 1])[0]
        return preds

    return predict


def _lasso(hp):
    from sklearn.linear_model import Lasso

    return Lasso(alpha=float(hp.get("lasso_alpha", 0.1)), fit_intercept=False, max_iter=5000)


def _trees(hp):
    if hp.get("tree_kind", "greedy") == "boosted":
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(n_estimators=50, max_depth=3, learning_rate=0.1)
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor(max_depth=4)


BASELINES = {
    "baseline:least_squares": (least_squares, "minimum-norm least squares (pseudo-inverse)"),
    "baseline:ridge": (ridge, "ridge regression (ridge_lambda, default 0.25 = noise variance of icl/noisy_linear)"),
    "baseline:averaging": (averaging, "averaging estimator w = mean(y x)"),
    "baseline:knn": (nearest_neighbours, "mean y of the 3 nearest x (knn_k)"),
    "baseline:lasso": (_per_prompt(_lasso), "Lasso per prompt (lasso_alpha)"),
    "baseline:trees": (_per_prompt(_trees), "greedy depth-4 tree per prompt (tree_kind: greedy | boosted)"),
}


def _baseline_factory(name, fn, desc):
    def factory(weights="random", seed=0, img_size=None):
        return SequenceBackbone(name, {"source": "baseline", "family": "baseline", "weights": "none (closed form)", "pretrain_method": "none",
                                       "description": desc}, trainable=False, predict=fn)

    return factory


for _name, (_fn, _desc) in BASELINES.items():
    BACKBONES.add(_name, _baseline_factory(_name, _fn, _desc), source="baseline", family="baseline", pretrain_method="none", description=_desc)


# -- models trained from scratch -------------------------------------------------------------------
def interleave(xs, ys):
    """Tokens x_1, (y_1, 0..0), x_2, ...: a y token carries y in its first coordinate (Garg et al.)."""
    import torch

    n, k, d = xs.shape
    y_tokens = torch.zeros_like(xs)
    y_tokens[:, :, 0] = ys
    return torch.stack([xs, y_tokens], dim=2).reshape(n, 2 * k, d)


class _Prompted:
    """Shared read-in / read-out around a sequence core; predictions are read at x positions."""

    def forward(self, xs, ys):
        hidden = self.core_forward(self.read_in(interleave(xs, ys)))
        return self.read_out(hidden[:, ::2]).squeeze(-1)


def make_gpt2(d: int, k: int, hp: dict):
    import torch

    try:
        from transformers import GPT2Config, GPT2Model
    except ImportError:
        raise BobError("scratch:gpt2 needs the transformers package: pip install 'bob-harness[icl]'") from None
    n_positions = int(hp.get("n_positions") or 2 * k)
    if n_positions < 2 * k:
        raise BobError(f"scratch:gpt2 has a context of {n_positions} tokens but prompts of k={k} points need {2 * k}; raise n_positions or lower k")
    width, heads = int(hp["n_embd"]), int(hp["n_head"])
    if width % heads:
        raise BobError(f"scratch:gpt2: n_embd={width} must be divisible by n_head={heads}")
    config = GPT2Config(n_positions=n_positions, n_embd=width, n_layer=int(hp["n_layer"]), n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)

    class GPT2Regressor(_Prompted, torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.read_in = torch.nn.Linear(d, width)
            self.core = GPT2Model(config)
            self.read_out = torch.nn.Linear(width, 1)

        def core_forward(self, embeds):
            return self.core(inputs_embeds=embeds).last_hidden_state

    return GPT2Regressor()


def make_lstm(d: int, k: int, hp: dict):
    import torch

    width = int(hp["n_embd"])

    class LSTMRegressor(_Prompted, torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.read_in = torch.nn.Linear(d, width)
            self.core = torch.nn.LSTM(width, width, num_layers=int(hp["n_layer"]), batch_first=True)
            self.read_out = torch.nn.Linear(width, 1)

        def core_forward(self, embeds):
            return self.core(embeds)[0]

    return LSTMRegressor()


SCRATCH = {
    "scratch:gpt2": (make_gpt2, "transformer", "GPT-2-style decoder from a transformers config (n_layer, n_embd, n_head)"),
    "scratch:lstm": (make_lstm, "lstm", "LSTM (attention-free), n_layer x n_embd"),
}


def _scratch_factory(name, make, family, desc):
    def factory(weights="random", seed=0, img_size=None):
        if weights not in ("random", "auto"):
            raise BobError(f"{name} is trained from scratch by pretrain_icl; use --weights random")
        return SequenceBackbone(name, {"source": "scratch", "family": family, "weights": "random-init", "pretrain_method": "trained in-context (pretrain_icl)",
                                       "description": desc}, trainable=True, make_model=make)

    return factory


for _name, (_make, _family, _desc) in SCRATCH.items():
    BACKBONES.add(_name, _scratch_factory(_name, _make, _family, _desc), source="scratch", family=_family, pretrain_method="from scratch", description=_desc)
