"""PCA whitening of retrieval descriptors, learned on a declared set that is not the test data.

Why a separate set: whitening learned on the database it then searches uses the test images'
statistics (the retrieval literature learns it on SfM-120k or YFCC images; DINO's copy detection
on 20k YFCC100M images). bob refuses a whitening set that shares an image with the evaluated
queries or database.

The transform is DINO's / the standard PCA whitening: descriptors are L2-normalised, centred on the
whitening set's mean, projected on the eigenvectors of its covariance and scaled by
eigenvalue^-``power`` (0.5 = full whitening); eigenvalues below 1e-5 x the largest are clamped
there (DINO's guard against a rank-deficient covariance); ``dim`` keeps the leading components.
The result is L2-normalised again before search.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .retrieval_search import l2_normalise

EIGEN_FLOOR = 1e-5


@dataclass
class PCAWhitening:
    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, d)
    n_samples: int
    power: float = 0.5

    @classmethod
    def fit(cls, features: np.ndarray, dim: int | None = None, power: float = 0.5) -> "PCAWhitening":
        x = l2_normalise(np.asarray(features, dtype=np.float64))
        mean = x.mean(axis=0)
        centred = x - mean
        cov = centred.T @ centred / max(len(x), 1)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        values = np.maximum(values, values[0] * EIGEN_FLOOR if values[0] > 0 else 1e-12)
        keep = int(dim) if dim else len(values)
        projection = vectors[:, :keep] * (values[:keep] ** -power)
        return cls(mean, projection, len(x), power)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Normalise, whiten and renormalise ``rows`` (a chunk of raw descriptors)."""
        return l2_normalise((l2_normalise(rows) - self.mean) @ self.projection)

    def describe(self) -> dict[str, Any]:
        return {"method": "PCA whitening (eigenvalue^-power, L2 before and after)", "power": self.power, "dim": int(self.projection.shape[1]),
                "input_dim": int(self.projection.shape[0]), "learned_on_images": int(self.n_samples), "eigenvalue_floor": EIGEN_FLOOR}
