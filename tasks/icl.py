"""In-context-learning regression tasks (Garg et al. 2022 and follow-ups).

A task samples prompts (x_1, f(x_1), ..., x_K, f(x_K)) for a random f from its function class.
The dimension ``d`` and the number of points ``k`` are hyper-parameters of the cell; the task
checks their range. Out-of-distribution variants change how x (or y) is drawn at evaluation.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import BobError
from harness.registry import TASKS
from harness.suites import register_suite
from harness.types import ICL_REGRESSION

MAX_D, MAX_K = 256, 1024
OOD_VARIANTS = ("none", "scaled_x", "skewed_cov", "noisy_y")


@dataclass
class ICLTask:
    """Samples prompts of one function class. ``sample(n, k, d, rng, ood)`` -> xs (n,k,d), ys (n,k)."""

    name: str
    family: str
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = ICL_REGRESSION
    group: str = "icl"
    boolean: bool = False

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "group": self.group, "family": self.family, **self.params}

    def check(self, d: int, k: int) -> None:
        if not isinstance(d, int) or not 1 <= d <= MAX_D:
            raise BobError(f"task {self.name}: d={d!r} is out of range; use an integer 1..{MAX_D}")
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise BobError(f"task {self.name}: k={k!r} (points per prompt) is out of range; use an integer 1..{MAX_K}")
        if self.family == "sparse_linear" and self.params["sparsity"] > d:
            raise BobError(f"task {self.name}: sparsity {self.params['sparsity']} exceeds d={d}; lower it or raise d")

    def sample_x(self, n: int, k: int, d: int, rng: np.random.Generator, ood: str = "none") -> np.ndarray:
        if self.boolean:
            return rng.choice([-1.0, 1.0], size=(n, k, d)).astype(np.float32)
        xs = rng.standard_normal((n, k, d)).astype(np.float32)
        if ood == "scaled_x":
            xs *= 2.0
        elif ood == "skewed_cov":  # eigenvalues 1/i, rescaled to keep E|x|^2 = d (Garg et al.'s skewed covariance)
            scale = np.sqrt(1.0 / np.arange(1, d + 1))
            xs *= (scale * np.sqrt(d / np.sum(scale**2))).astype(np.float32)
        return xs

    def sample(self, n: int, k: int, d: int, rng: np.random.Generator, ood: str = "none", active_d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``active_d`` < d zeroes the trailing coordinates (the curriculum of Garg et al.)."""
        if ood not in OOD_VARIANTS:
            raise BobError(f"unknown out-of-distribution variant {ood!r}; use one of {', '.join(OOD_VARIANTS)}")
        self.check(d, k)
        xs = self.sample_x(n, k, d, rng, ood)
        if active_d is not None and active_d < d:
            xs[:, :, active_d:] = 0.0
        ys = FUNCTION_CLASSES[self.family](self, xs, rng).astype(np.float32)
        if self.family == "noisy_linear":
            ys += rng.standard_normal(ys.shape).astype(np.float32) * self.params["noise_std"]
        if ood == "noisy_y":
            ys += rng.standard_normal(ys.shape).astype(np.float32) * 1.0
        return xs, ys


def _linear(task, xs, rng):
    n, _, d = xs.shape
    w = rng.standard_normal((n, d)).astype(np.float32)
    return np.einsum("nkd,nd->nk", xs, w)


def _sparse_linear(task, xs, rng):
    n, _, d = xs.shape
    w = rng.standard_normal((n, d)).astype(np.float32)
    mask = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        mask[i, rng.choice(d, size=task.params["sparsity"], replace=False)] = 1.0
    return np.einsum("nkd,nd->nk", xs, w * mask)


@functools.lru_cache(maxsize=16)
def _pool(m: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, d)).astype(np.float32)


def _linear_pool(task, xs, rng):
    n, _, d = xs.shape
    pool = _pool(task.params["pool_size"], d, task.params["pool_seed"])
    return np.einsum("nkd,nd->nk", xs, pool[rng.integers(0, len(pool), size=n)])


def _decision_tree(task, xs, rng):
    """Depth-``depth`` binary tree: each node tests the sign of a random coordinate; leaves ~ N(0,1)."""
    n, k, d = xs.shape
    depth = task.params["depth"]
    ys = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        coords = rng.integers(0, d, size=2**depth - 1)
        leaves = rng.standard_normal(2**depth)
        node = np.zeros(k, dtype=np.int64)
        for _ in range(depth):
            go_right = xs[i, np.arange(k), coords[node]] > 0
            node = 2 * node + 1 + go_right
        ys[i] = leaves[node - (2**depth - 1)]
    return ys


def _relu2nn(task, xs, rng):
    n, _, d = xs.shape
    h = task.params["hidden"]
    w1 = rng.standard_normal((n, d, h)).astype(np.float32)
    w2 = (rng.standard_normal((n, h)) * np.sqrt(2.0 / h)).astype(np.float32)
    return np.einsum("nkh,nh->nk", np.maximum(np.einsum("nkd,ndh->nkh", xs, w1), 0.0), w2)


def _subset(rng, d, size):
    return rng.choice(d, size=min(size, d), replace=False)


def _boolean(op):
    def f(task, xs, rng):
        n, k, d = xs.shape
        ys = np.zeros((n, k), dtype=np.float32)
        for i in range(n):
            idx = _subset(rng, d, task.params["subset"])
            signs = rng.choice([-1.0, 1.0], size=len(idx)) if op in ("conjunction", "disjunction") else np.ones(len(idx))
            lits = xs[i][:, idx] * signs > 0
            if op == "conjunction":
                out = lits.all(axis=1)
            elif op == "disjunction":
                out = lits.any(axis=1)
            elif op == "parity":
                out = (lits.sum(axis=1) % 2) == 1
            else:  # majority
                out = lits.sum(axis=1) * 2 > len(idx)
            ys[i] = np.where(out, 1.0, -1.0)
        return ys

    return f


FUNCTION_CLASSES = {
    "linear": _linear, "sparse_linear": _sparse_linear, "noisy_linear": _linear, "linear_pool": _linear_pool,
    "decision_tree": _decision_tree, "relu2nn": _relu2nn,
    **{f"boolean_{op}": _boolean(op) for op in ("conjunction", "disjunction", "parity", "majority")},
}

ICL_TASKS = {
    "icl/linear": ("linear", {}, "y = w.x, w ~ N(0, I)"),
    "icl/sparse_linear": ("sparse_linear", {"sparsity": 3}, "y = w.x with 3 non-zero coordinates"),
    "icl/noisy_linear": ("noisy_linear", {"noise_std": 0.5}, "y = w.x + N(0, 0.5^2)"),
    "icl/linear_pool": ("linear_pool", {"pool_size": 64, "pool_seed": 1234}, "y = w.x, w from a fixed pool of 64 tasks (task diversity)"),
    "icl/decision_tree": ("decision_tree", {"depth": 4}, "depth-4 decision tree on coordinate signs"),
    "icl/relu2nn": ("relu2nn", {"hidden": 100}, "2-layer ReLU network, 100 hidden units"),
    "icl/boolean/conjunction": ("boolean_conjunction", {"subset": 3}, "AND of 3 (possibly negated) literals, x in {-1,1}^d"),
    "icl/boolean/disjunction": ("boolean_disjunction", {"subset": 3}, "OR of 3 (possibly negated) literals"),
    "icl/boolean/parity": ("boolean_parity", {"subset": 2}, "parity of 2 coordinates"),
    "icl/boolean/majority": ("boolean_majority", {"subset": 3}, "majority of 3 coordinates"),
}


def _group(family: str) -> str:
    return "icl/boolean" if family.startswith("boolean") else "icl"


def _factory(name: str, family: str, params: dict):
    def make(data_root=None, **_):
        return ICLTask(name=name, family=family, params=dict(params), boolean=family.startswith("boolean"), group=_group(family))

    return make


# Squared error normalised by d: lower is better (Garg et al. 2022).
ICL_METRICS = {
    "err_at_2d": {"direction": "lower", "fmt": ".3f", "label": "squared error / d at k = 2d"},
    "err_last": {"direction": "lower", "fmt": ".3f", "label": "squared error / d at the last k"},
}

for _name, (_family, _params, _desc) in ICL_TASKS.items():
    TASKS.add(_name, _factory(_name, _family, _params), kind=ICL_REGRESSION, group=_group(_family), suite="icl", description=_desc,
              metrics=ICL_METRICS)

register_suite(
    "icl", title="In-context regression", rule="mean_of_tasks", group_columns=False,
    caption="In-context regression (squared error / d at k = 2d in-context examples; lower is better)",
    groups=[{"name": "regression", "title": "Regression", "tasks": [t for t, (f, _, _) in ICL_TASKS.items() if not f.startswith("boolean")]},
            {"name": "boolean", "title": "Boolean", "tasks": [t for t, (f, _, _) in ICL_TASKS.items() if f.startswith("boolean")]}],
)
