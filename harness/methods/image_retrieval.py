"""Retrieval on frozen features: ``image_retrieval`` (query set vs database) and ``knn_retrieval``
(any classification task scored as class-level retrieval from its cached features).

``image_retrieval``: the task supplies the queries (cropped as its protocol says), the database
parts and the scoring; the method turns images into descriptors (``harness.retrieval_features``:
pooling, scales, resize, all through the feature cache), optionally whitens them with PCA learned on
a declared separate set (``harness.retrieval_whitening``), L2-normalises and ranks the whole
database exactly, in memory-bounded blocks (``harness.retrieval_search``). Nothing is tuned, so the
number is on the task's evaluation data like every zero-shot number.

``knn_retrieval``: the test split queries the final training split (VTAB-1k: train800val200) with
the same cached features as knn and linear probes (no extra forward pass; a cache hit never builds
the backbone); R@1/5/10 and mAP@R.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BobError
from ..registry import register_method
from ..types import CLASSIFICATION, IMAGE_RETRIEVAL
from .base import Method, MethodResult

KS = (1, 5, 10)
TOP_SAVED = 10  # top database images per query kept beside the record
KNN_RETRIEVAL_METRICS = {**{f"R@{k}": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": f"Recall@{k}: a same-class item in the top {k} (%)"} for k in KS},
                         "mAP@R": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": "mAP@R (Musgrave et al. 2020, %)"}}


def _positive_number(hp: dict, key: str, name: str) -> None:
    value = hp.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise BobError(f"method {name}: {key}={value!r} must be a positive number")


class _SearchSettings(Method):
    def resolve_hparams(self, given: dict[str, Any]) -> dict[str, Any]:
        hp = super().resolve_hparams(given)
        _positive_number(hp, "search_memory_mb", self.name)
        if isinstance(hp.get("search_chunk"), bool) or not isinstance(hp.get("search_chunk"), int) or hp["search_chunk"] < 1:
            raise BobError(f"method {self.name}: search_chunk={hp.get('search_chunk')!r} must be a positive number of database rows")
        return hp


@register_method
class ImageRetrieval(_SearchSettings):
    name = "image_retrieval"
    kinds = (IMAGE_RETRIEVAL,)
    description = "frozen descriptors (head / CLS / GeM pooling, multi-scale, optional PCA whitening) ranked by exact cosine similarity"
    defaults = {"pooling": "head", "gem_p": 3.0, "scales": "single", "resize": "square", "query_crop": True, "whitening": None,
                "whitening_dim": None, "search_memory_mb": 256, "search_chunk": 16384}
    search_space = {}

    def resolve_hparams(self, given: dict[str, Any]) -> dict[str, Any]:
        from ..retrieval_features import make_descriptor

        hp = super().resolve_hparams(given)
        make_descriptor(hp)
        if not isinstance(hp.get("query_crop"), bool):
            raise BobError(f"method image_retrieval: query_crop={hp.get('query_crop')!r} must be true (the protocol) or false (BoB's uncropped queries)")
        if hp.get("whitening") is not None and not (isinstance(hp["whitening"], str) and hp["whitening"].strip()):
            raise BobError(f"method image_retrieval: whitening={hp['whitening']!r} must be an image folder or a task id (e.g. retrieval/rparis6k)")
        dim = hp.get("whitening_dim")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise BobError(f"method image_retrieval: whitening_dim={dim!r} must be a positive integer (or null: keep every dimension)")
        return hp

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..retrieval_features import cached_descriptors, make_descriptor
        from ..retrieval_search import l2_normalise, ranks_in_row, score_blocks, top_k_row

        descriptor = make_descriptor(hparams)
        batch = int(hparams["batch_size"])
        whitening_data = separate_whitening_set(str(hparams["whitening"]), task) if hparams.get("whitening") else None  # refused before any extraction
        queries = task.queries(crop=bool(hparams["query_crop"]))
        query_x = cached_descriptors(backbone, queries, task.query_cache_name or task.name, "query", descriptor, ctx, batch)
        parts = [cached_descriptors(backbone, p.dataset(), p.cache_name, p.split, descriptor, ctx, batch) for p in task.parts]
        transform, whitening = l2_normalise, None
        if whitening_data is not None:
            from ..retrieval_whitening import PCAWhitening

            dataset, cache_name = whitening_data
            features = cached_descriptors(backbone, dataset, cache_name, "whitening", descriptor, ctx, batch)
            transform = PCAWhitening.fit(np.asarray(features), dim=hparams.get("whitening_dim"))
            whitening = {"source": str(hparams["whitening"]), **transform.describe()}
        t0 = time.perf_counter()
        targets = task.targets()
        ranks, top = [], []
        for q0, scores in score_blocks(transform(np.asarray(query_x)), parts, transform=transform, chunk=int(hparams["search_chunk"]),
                                       memory_mb=float(hparams["search_memory_mb"]), desc=f"search {task.name}"):
            for i, row in enumerate(scores):
                ranks.append(ranks_in_row(row, targets[q0 + i]))
                top.append(top_k_row(row, TOP_SAVED))
        metrics = task.score(ranks)
        ctx.add_time("search", time.perf_counter() - t0)
        protocol = {
            "selected_on": None, "selected": {}, "reported_on": "queries vs database",
            "note": "frozen descriptors ranked by cosine similarity; nothing fitted or selected on the evaluation data",
            "descriptor": descriptor.as_dict(), "query_crop": bool(hparams["query_crop"]) and task.crops_queries,
            "whitening": whitening, "normalisation": "L2 (after whitening when whitened)",
            "similarity": "dot product of L2-normalised descriptors, exact (every database image), float64, chunked",
            "queries": len(task.query_samples), "database": task.n_database,
            "database_parts": [{"data": p.cache_name, "split": p.split, "images": len(p.samples)} for p in task.parts],
            "setups": [s.name for s in task.setups], "task_protocol": task.protocol,
        }
        names = [str(s.image) for p in task.parts for s in p.samples] if task.n_database <= 200_000 else None
        artifacts = {"top10.json": {"k": TOP_SAVED, "queries": [str(s.image) for s in task.query_samples],
                                    "top": [[names[j] if names else int(j) for j in t] for t in top]}}
        return MethodResult(metrics, task.metric, protocol, artifacts=artifacts)

def separate_whitening_set(source: str, task):
    """The whitening set and its cache name; one sharing an image with ``task``'s queries or
    database is a one-line error (whitening is never learned on the test data)."""
    dataset, cache_name = whitening_set(source)
    evaluated = {str(s.image) for s in task.query_samples} | {str(s.image) for p in task.parts for s in p.samples}
    shared = [str(s.image) for s in dataset.samples if str(s.image) in evaluated]
    if shared:
        raise BobError(f"whitening={source} shares {len(shared)} image(s) with {task.name}'s queries or database (e.g. {shared[0]}); "
                       "learn the whitening on a separate set (another dataset's database, or a folder of unrelated images)")
    return dataset, cache_name


def whitening_set(source: str):
    """The images a whitening is learned on: a folder (every image below it, sorted), an
    image_retrieval task's database, or a classification task's final training split."""
    from ..data import IMAGE_SUFFIXES, ImageClassificationDataset, Sample
    from ..registry import TASKS

    folder = Path(source).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BobError(f"whitening={source}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageClassificationDataset([Sample(p, i, str(folder)) for i, p in enumerate(files)], name=f"whitening:{folder}"), f"whitening:{folder.resolve()}"
    if source not in TASKS:
        raise BobError(f"whitening={source}: neither an image folder nor a task id; give a folder of images or a task such as retrieval/rparis6k")
    other = TASKS.get(source).factory(data_root=None, overrides={})
    if other.kind == IMAGE_RETRIEVAL:
        samples = [s for p in other.parts for s in p.samples]
        return ImageClassificationDataset([type(s)(s.image, i, s.origin) for i, s in enumerate(samples)], name=f"whitening:{source}"), f"whitening:{source}:database"
    if other.kind == CLASSIFICATION:
        split = other.final_splits[0]
        return other.load(split), f"whitening:{source}:{split}"
    raise BobError(f"whitening={source}: a {other.kind} task has no images to learn a whitening on")


@register_method
class KNNRetrieval(_SearchSettings):
    name = "knn_retrieval"
    kinds = (CLASSIFICATION,)
    description = "class-level retrieval on the cached features: test images query the training split (R@1/5/10, mAP@R)"
    defaults = {"search_memory_mb": 256, "search_chunk": 16384}
    search_space = {}
    metrics = KNN_RETRIEVAL_METRICS

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..features import split_features
        from ..retrieval_search import l2_normalise, score_blocks, top_k_row

        db_split, query_split = task.final_splits
        db_x, db_y = split_features(backbone, task, db_split, ctx, hparams["batch_size"])
        q_x, q_y = split_features(backbone, task, query_split, ctx, hparams["batch_size"])
        t0 = time.perf_counter()
        per_class = np.bincount(np.asarray(db_y, dtype=np.int64), minlength=int(max(q_y.max(initial=0), db_y.max(initial=0))) + 1)
        hits, relevant = [], per_class[np.asarray(q_y, dtype=np.int64)]
        for q0, scores in score_blocks(l2_normalise(np.asarray(q_x)), [db_x], transform=l2_normalise, chunk=int(hparams["search_chunk"]),
                                       memory_mb=float(hparams["search_memory_mb"]), desc=f"knn_retrieval {task.name}"):
            for i, row in enumerate(scores):
                q = q0 + i
                top = top_k_row(row, max(max(KS), int(relevant[q])))
                hits.append((db_y[top] == q_y[q], int(relevant[q])))
        metrics = class_level_metrics(hits)
        ctx.add_time("search", time.perf_counter() - t0)
        excluded = int((relevant == 0).sum())
        protocol = {"selected_on": None, "selected": {}, "reported_on": query_split, "queries_split": query_split, "database_split": db_split,
                    "note": "class-level retrieval: a database item is relevant when it has the query's label; cached features, nothing fitted",
                    "similarity": "cosine, exact, chunked", "queries": int(len(q_y)), "database": int(len(db_y)),
                    "queries_without_relevant_items": excluded}
        return MethodResult(metrics, "mAP@R", protocol)


def class_level_metrics(hits: list[tuple[np.ndarray, int]], ks=KS) -> dict[str, float]:
    """R@k (a relevant item in the top k) and mAP@R, in %, over queries with relevant items.
    ``hits``: per query, whether each of its top items is relevant, and how many relevant items exist."""
    r_at = {k: [] for k in ks}
    ap_r = []
    for rel, n in hits:
        if n <= 0:
            continue
        for k in ks:
            r_at[k].append(float(rel[:k].any()))
        top_r = rel[:n].astype(np.float64)
        ap_r.append(float((top_r * np.cumsum(top_r) / np.arange(1, len(top_r) + 1)).sum() / n))
    out = {f"R@{k}": 100.0 * float(np.mean(v)) if v else float("nan") for k, v in r_at.items()}
    out["mAP@R"] = 100.0 * float(np.mean(ap_r)) if ap_r else float("nan")
    return out
