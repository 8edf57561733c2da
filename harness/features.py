"""Feature extraction for frozen-backbone methods, with an on-disk cache.

Rule from DESIGN.md: features are extracted once per (backbone weights, task split,
preprocessing) and every probe hyper-parameter is fitted on the cache. A cache hit never builds
the backbone. Splits declared as unions (train800val200 = train800 + val200) are assembled from
their parts after checking that the samples really are the same.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .spec import canonical_json
from .atomic import atomic_write_bytes

FEATURE_VERSION = 1  # bump when extraction changes in a way that changes the numbers


def extract_features(backbone, dataset, batch_size: int, device: str, num_workers: int = 0, desc: str = "extract") -> tuple[np.ndarray, np.ndarray]:
    """Run the frozen backbone over ``dataset`` once (eval mode, no grad); float32 features + int64 labels."""
    import torch
    from torch.utils.data import DataLoader

    from .progress import progress

    model = backbone.model.to(device).eval()
    loader = DataLoader(dataset.with_transform(backbone.preprocess.eval_transform()), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    with torch.inference_mode():
        for images, targets in progress(loader, desc=desc, total=len(loader)):
            out = model(images.to(device))
            feats.append(out.float().cpu().numpy())
            labels.append(np.asarray(targets, dtype=np.int64))
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels)


def entry_checksum(features: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 over the arrays' dtype, shape and bytes: stored in each cache entry, checked on load."""
    h = hashlib.sha256()
    for arr in (features, labels):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class FeatureCache:
    """``<dir>/<key hash>.npz`` holding features, labels and a JSON description of the key."""

    def __init__(self, folder: Path | None, memory_entries: int = 32):
        self.folder = Path(folder) if folder else None
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # damaged entries found (and recomputed)
        self._memory: dict[str, tuple] = {}  # also serves runs without a cache folder
        self._memory_entries = memory_entries

    @staticmethod
    def key(backbone, task_name: str, split: str, identity: list) -> dict[str, Any]:
        return {
            "v": FEATURE_VERSION,
            "backbone": backbone.cache_key,
            "preprocess": backbone.preprocess.as_dict(),
            "task": task_name,
            "split": split,
            "samples": hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16],
        }

    def path(self, key: dict[str, Any]) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / (hashlib.sha256(canonical_json(key).encode()).hexdigest()[:24] + ".npz")

    def load(self, key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict] | None:
        mem = self._memory.get(canonical_json(key))
        if mem is not None:
            return mem
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                features, labels = data["features"], data["labels"]
        except Exception:  # a truncated or unreadable entry is recomputed, never trusted
            self.rejected += 1
            return None
        if meta.get("sha256") != entry_checksum(features, labels) or meta.get("key") != key:
            self.rejected += 1  # a bit flip the container did not catch, or an entry written for another key
            return None
        return features, labels, meta

    def save(self, key: dict[str, Any], features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> None:
        if len(self._memory) >= self._memory_entries:
            self._memory.pop(next(iter(self._memory)))
        self._memory[canonical_json(key)] = (features, labels, meta)
        path = self.path(key)
        if path is None:
            return
        buf = io.BytesIO()
        entry_meta = {"key": key, **meta, "sha256": entry_checksum(features, labels)}
        np.savez(buf, features=features, labels=labels, meta=np.array(json.dumps(entry_meta, default=str)))
        # np.savez writes binary; atomic_write_text is text-only, so write bytes atomically here
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:  # the cache only saves time: a full disk must not cost the cell its result
            import warnings

            warnings.warn(f"feature cache entry {path.name} not written ({exc.strerror or exc}); the features are recomputed next time")


def split_features(backbone, task, split: str, ctx, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Features of one split: from the cache, from the union of cached parts, or by running the backbone."""
    cache = ctx.feature_cache
    dataset = task.load(split)
    parts = task.union_splits.get(split)
    if parts:
        part_sets = [task.load(p) for p in parts]
        if sum((p.identity() for p in part_sets), []) == dataset.identity():
            pieces = [split_features(backbone, task, p, ctx, batch_size) for p in parts]
            return np.concatenate([f for f, _ in pieces]), np.concatenate([l for _, l in pieces])
    key = FeatureCache.key(backbone, task.name, split, dataset.identity())
    cached = cache.load(key)
    if cached is not None:
        cache.hits += 1
        feats, labels, meta = cached
        for field in ("params_m", "gflops", "measured_at"):
            if backbone.meta.get(field) is None and meta.get("backbone_meta", {}).get(field) is not None:
                backbone.meta[field] = meta["backbone_meta"][field]
        backbone.feature_dim = backbone.feature_dim or int(feats.shape[1])
        return feats, labels
    cache.misses += 1
    t0 = time.perf_counter()
    feats, labels = extract_features(backbone, dataset, batch_size, ctx.device, ctx.num_workers, desc=f"extract {split}")
    ctx.add_time("extract", time.perf_counter() - t0)
    bad = int((~np.isfinite(feats)).sum())
    if bad:
        from .errors import BobError

        raise BobError(f"{backbone.name} produced {bad} NaN/inf feature values on {task.name}:{split}; check the weights and the input resolution")
    measured = {k: backbone.meta.get(k) for k in ("params_m", "gflops", "measured_at")}
    cache.save(key, feats, labels, {"backbone_meta": measured, "n": len(labels)})
    return feats, labels
