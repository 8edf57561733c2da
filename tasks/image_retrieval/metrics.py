"""Ranking metrics of image retrieval, from where the labelled database images land in a query's
full ranking (0 = first, ties by the lower database index: ``harness.retrieval_search``).

Every number follows a reference evaluator, named where it is defined:

- **AP** is the revisited benchmark's ``compute_ap`` (filipradenovic/revisitop, ``evaluate.py``):
  trapezoids under the precision-recall curve, with precision 1 at recall 0 when the first
  positive is ranked first; the same routine as the Holidays / INSTRE / Copydays packages.
- **Junk** (revisitop's ``compute_map``): junk images are removed from the ranking before anything
  is counted: each positive moves up by the number of junk images ranked before it. A query with
  no positive in a setup is left out of that setup's means (revisitop's ``nempty``).
- **mP@k** is revisitop's precision at k: with ``p`` the (1-based, junk-free) positions of the
  positives, ``kq = min(max(p), k)`` and P@k = ``|{p <= kq}| / kq``, so a query with fewer than k
  positives, all ranked first, scores 1.
- **mR@k** (Battle of the Backbones' recall): the fraction of the query's positives in the top k.
- **MRR**: 1 / position of the first positive, junk removed, mean over queries with positives.
  BoB computes it before removing junk and divides by every query; bob does not copy that slip.
- **mAP@100** (Google Landmarks v2 retrieval, delf's ``MeanAveragePrecision``): over the top 100,
  sum of precision at each positive's position, divided by min(#positives, 100).

(R@k and mAP@R of class-level retrieval on classification tasks live with ``knn_retrieval`` in
``harness.methods.image_retrieval``.)

All metrics are reported in percent.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

KS = (1, 5, 10)


def average_precision(positions: np.ndarray, n_positives: int) -> float:
    """revisitop's AP of one query: ``positions`` are the 0-based, junk-free ranks of its
    positives; ``n_positives`` is how many it has (the recall step is 1 / n_positives)."""
    if n_positives <= 0:
        return float("nan")
    pos = np.sort(np.asarray(positions, dtype=np.float64))
    j = np.arange(len(pos), dtype=np.float64)
    before = np.where(pos == 0, 1.0, j / np.maximum(pos, 1.0))  # precision just before the j-th positive
    after = (j + 1) / (pos + 1)  # and just after it
    return float(((before + after) / 2.0).sum() / n_positives)


def drop_junk(positive_ranks: np.ndarray, junk_ranks: np.ndarray) -> np.ndarray:
    """Positions of the positives once junk images are taken out of the ranking (sorted)."""
    pos = np.sort(np.asarray(positive_ranks, dtype=np.int64))
    junk = np.sort(np.asarray(junk_ranks, dtype=np.int64))
    return pos - np.searchsorted(junk, pos, side="left") if len(junk) else pos


def precision_at(positions_1based: np.ndarray, k: int) -> float:
    """revisitop's P@k (see the module docstring)."""
    kq = min(int(positions_1based.max()), k)
    return float((positions_1based <= kq).sum() / kq)


def query_scores(positive_ranks: np.ndarray, junk_ranks: np.ndarray, n_positives: int, ks: Sequence[int] = KS) -> dict[str, float] | None:
    """One query's AP, P@k, R@k and reciprocal rank (fractions); None when it has no positive."""
    if n_positives <= 0:
        return None
    pos = drop_junk(positive_ranks, junk_ranks)
    if len(pos) == 0:  # positives declared but none in the database: AP 0 (cannot happen for validated sets)
        return {"ap": 0.0, **{f"p{k}": 0.0 for k in ks}, **{f"r{k}": 0.0 for k in ks}, "rr": 0.0}
    one = pos + 1
    out = {"ap": average_precision(pos, n_positives), "rr": float(1.0 / one.min())}
    for k in ks:
        out[f"p{k}"] = precision_at(one, k)
        out[f"r{k}"] = float((one <= k).sum() / n_positives)
    return out


def setup_metrics(per_query: Sequence[tuple[np.ndarray, np.ndarray, int]], ks: Sequence[int] = KS, suffix: str = "",
                  recall: bool = True, mrr: bool = True) -> dict[str, float]:
    """Means over the queries that have positives, in %: ``mAP``, ``mP@k``, ``mR@k``, ``MRR``
    (names end in ``suffix``, e.g. ``_M``). ``per_query``: (positive ranks, junk ranks, #positives)."""
    scores = [s for s in (query_scores(p, j, n, ks) for p, j, n in per_query) if s is not None]
    if not scores:
        return {f"mAP{suffix}": float("nan")}
    out = {f"mAP{suffix}": 100.0 * float(np.mean([s["ap"] for s in scores]))}
    for k in ks:
        out[f"mP@{k}{suffix}"] = 100.0 * float(np.mean([s[f"p{k}"] for s in scores]))
    if recall:
        for k in ks:
            out[f"mR@{k}{suffix}"] = 100.0 * float(np.mean([s[f"r{k}"] for s in scores]))
    if mrr:
        out[f"MRR{suffix}"] = 100.0 * float(np.mean([s["rr"] for s in scores]))
    return out


def map_at_k(positive_ranks: Sequence[np.ndarray], n_positives: Sequence[int], k: int = 100) -> float:
    """Google Landmarks v2 retrieval mAP@k in %, averaged over every query given."""
    aps = []
    for ranks, n in zip(positive_ranks, n_positives):
        hits = np.sort(np.asarray(ranks, dtype=np.int64))
        hits = hits[hits < k]
        precision = np.arange(1, len(hits) + 1) / (hits + 1.0)
        aps.append(float(precision.sum() / min(n, k)) if n else 0.0)
    return 100.0 * float(np.mean(aps)) if aps else float("nan")
