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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .spec import canonical_json
from .atomic import atomic_write_bytes, file_mode

FEATURE_VERSION = 1  # bump when extraction changes in a way that changes the numbers


@dataclass
class ExtractOptions:
    """How extraction feeds the device. ``auto`` (the default) means: on CUDA, bf16 autocast,
    channels-last, DataLoader workers with pinned memory and prefetch, and decoded-image reuse
    across backbones with the same preprocessing; on CPU, none of them (they do not pay there, see
    ``bench/bench_extract.py``). Anything but fp32 is part of the feature-cache key."""

    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    workers: int = 0
    pin_memory: bool = False
    prefetch: int = 2
    reuse_decoded: bool = False
    reuse_budget_mb: int = 2048

    @classmethod
    def auto(cls, device: str, workers: int | None = None) -> "ExtractOptions":
        import os

        if str(device).startswith("cuda"):
            return cls("bf16", True, workers if workers is not None else min(8, os.cpu_count() or 1), True, 4, True)
        return cls(workers=workers or 0)

    def cache_tag(self) -> dict[str, Any]:
        return {} if self.precision == "fp32" else {"precision": self.precision}


class _FeatureSink:
    """Where extracted features go: a preallocated array, or an ``.npy`` file written batch by
    batch (features never pile up in memory, so peak RSS does not grow with the dataset)."""

    def __init__(self, n: int, path: Path | None):
        self.n, self.path, self.i = n, path, 0
        self.array: np.ndarray | None = None
        self.file = None
        self.hash = hashlib.sha256()

    def add(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.i == 0:
            shape = (self.n, batch.shape[1])
            if self.path is None:
                self.array = np.empty(shape, np.float32)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "wb")
                np.lib.format.write_array_header_1_0(self.file, {"descr": "<f4", "fortran_order": False, "shape": shape})
                self.hash.update(f"<f4{shape}".encode())
        if self.file is not None:
            self.file.write(batch.tobytes())
            self.hash.update(batch.tobytes())
        else:
            self.array[self.i:self.i + len(batch)] = batch
        self.i += len(batch)

    def close(self) -> np.ndarray:
        if self.file is not None:
            self.file.flush()
            import os

            os.fsync(self.file.fileno())
            self.file.close()
            return np.load(self.path, mmap_mode="r")
        return self.array if self.array is not None else np.empty((0, 0), np.float32)


_DECODED: dict[str, Any] = {}  # (samples, preprocess) -> stacked image tensor, for reuse across backbones


def extract_features(backbone, dataset, batch_size: int, device: str, num_workers: int = 0, desc: str = "extract",
                     options: ExtractOptions | None = None, out_path: Path | None = None, shard: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the frozen backbone over ``dataset`` once (eval mode, no grad): float32 features (streamed
    to ``out_path`` when given) and int64 labels. ``shard=(rank, world)``: only this rank's
    contiguous share of the samples (a distributed cell gathers the shares in order)."""
    import contextlib

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from .progress import progress

    opts = options or ExtractOptions.auto(device, num_workers)
    model = backbone.model.to(device).eval()
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    source = dataset.with_transform(backbone.preprocess.eval_transform())
    reuse_key = canonical_json({"samples": dataset.identity(), "pre": backbone.preprocess.as_dict()}) if opts.reuse_decoded else None
    if reuse_key is not None and reuse_key in _DECODED:
        source = _DECODED[reuse_key]
    if shard is not None:
        from torch.utils.data import Subset

        rank, size = shard
        source, reuse_key = Subset(source, range(rank * len(source) // size, (rank + 1) * len(source) // size)), None
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=opts.workers, pin_memory=opts.pin_memory,
                        prefetch_factor=opts.prefetch if opts.workers else None)
    sink, labels, i = _FeatureSink(len(source), out_path), np.empty(len(source), np.int64), 0
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
    autocast = torch.autocast(device_type=str(device).split(":")[0], dtype=dtype) if dtype is not None else contextlib.nullcontext()
    keep = [] if reuse_key is not None and reuse_key not in _DECODED else None
    with torch.inference_mode(), autocast:
        for images, targets in progress(loader, desc=desc, total=len(loader)):
            if keep is not None:
                keep.append((images, torch.as_tensor(targets)))
            if opts.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out = model(images.to(device, non_blocking=opts.pin_memory))
            sink.add(out.float().cpu().numpy())
            labels[i:i + len(targets)] = np.asarray(targets, dtype=np.int64)
            i += len(targets)
    if keep:
        tensors = torch.cat([k[0] for k in keep]), torch.cat([k[1] for k in keep])
        if tensors[0].numel() * tensors[0].element_size() <= opts.reuse_budget_mb * 2**20:
            _DECODED.clear()  # one decoded split at a time: the next backbone of a sweep reuses it
            _DECODED[reuse_key] = TensorDataset(*tensors)
    return sink.close(), labels


class FeatureCache:
    """One entry per key: ``<h>.npy`` (features, memory-mappable), ``<h>.labels.npy`` and
    ``<h>.json`` (key, metadata, SHA-256 of both arrays). The JSON is written last, atomically,
    so an entry without it is unfinished and never read; a checksum mismatch is recomputed."""

    def __init__(self, folder: Path | None, memory_entries: int = 32):
        self.folder = Path(folder) if folder else None
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # damaged entries found (and recomputed)
        self._memory: dict[str, tuple] = {}  # also serves runs without a cache folder
        self._memory_entries = memory_entries

    @staticmethod
    def key(backbone, task_name: str, split: str, identity: list, options: ExtractOptions | None = None) -> dict[str, Any]:
        return {
            "v": FEATURE_VERSION,
            "backbone": backbone.cache_key,
            "preprocess": backbone.preprocess.as_dict(),
            "task": task_name,
            "split": split,
            "samples": hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16],
            **(options.cache_tag() if options else {}),
        }

    def path(self, key: dict[str, Any]) -> Path | None:
        """The entry's features file (``.npy``); ``.labels.npy`` and ``.json`` sit beside it."""
        if self.folder is None:
            return None
        return self.folder / (hashlib.sha256(canonical_json(key).encode()).hexdigest()[:24] + ".npy")

    def load(self, key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict] | None:
        mem = self._memory.get(canonical_json(key))
        if mem is not None:
            return mem
        path = self.path(key)
        if path is None or not path.with_suffix(".json").is_file():
            return None
        try:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            labels = np.load(path.with_suffix(".labels.npy"), allow_pickle=False)
            ok = meta.get("key") == key and meta.get("sha256") == _file_checksum(path) + ":" + _array_checksum(labels)
            features = np.load(path, mmap_mode="r", allow_pickle=False) if ok else None
        except Exception:  # a truncated or unreadable entry is recomputed, never trusted
            ok = False
        if not ok:
            self.rejected += 1  # a bit flip, a truncation, or an entry written for another key
            return None
        self._remember(key, (features, labels, meta))
        return features, labels, meta

    def _remember(self, key: dict[str, Any], value: tuple) -> None:
        if len(self._memory) >= self._memory_entries:
            self._memory.pop(next(iter(self._memory)))
        self._memory[canonical_json(key)] = value

    def staging_path(self, key: dict[str, Any]) -> Path | None:
        """Where extraction streams a new entry's features before :meth:`commit` renames them."""
        path = self.path(key)
        if path is None:
            return None
        import uuid

        return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.npy.tmp")

    def commit(self, key: dict[str, Any], staged: Path | None, features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> None:
        """Make an entry from features streamed to ``staged`` (or held in memory when None)."""
        self._remember(key, (features, labels, meta))
        path = self.path(key)
        if path is None:
            return
        try:
            if staged is None or not staged.exists():
                atomic_write_bytes(path, _npy_bytes(np.asarray(features, dtype=np.float32)))
            else:
                import os

                os.chmod(staged, file_mode())
                os.replace(staged, path)
            atomic_write_bytes(path.with_suffix(".labels.npy"), _npy_bytes(labels))
            checksum = _file_checksum(path) + ":" + _array_checksum(labels)
            atomic_write_bytes(path.with_suffix(".json"), json.dumps({"key": key, **meta, "sha256": checksum}, default=str).encode())
        except OSError as exc:  # the cache only saves time: a full disk must not cost the cell its result
            import warnings

            if staged is not None:
                staged.unlink(missing_ok=True)
            warnings.warn(f"feature cache entry {path.name} not written ({exc.strerror or exc}); the features are recomputed next time")

    def save(self, key: dict[str, Any], features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> None:
        self.commit(key, None, features, labels, meta)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _file_checksum(path: Path) -> str:
    """SHA-256 of an .npy file's dtype, shape and data, read in chunks (no memory map: RSS stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        h.update(f"{dtype.str}{shape}".encode())
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _array_checksum(array: np.ndarray) -> str:
    h = hashlib.sha256()
    array = np.ascontiguousarray(array)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def entry_checksum(features: np.ndarray, labels: np.ndarray) -> str:
    """The checksum an entry of these arrays carries (features file part + labels part)."""
    return _array_checksum(np.asarray(features, dtype=np.float32)) + ":" + _array_checksum(labels)


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
    options = ExtractOptions.auto(ctx.device, ctx.num_workers or None)
    key = FeatureCache.key(backbone, task.name, split, dataset.identity(), options)
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
    from .distributed import world

    if world().size > 1:
        return _extract_sharded(backbone, task, split, dataset, batch_size, ctx, options, key)
    t0 = time.perf_counter()
    staged = cache.staging_path(key)
    try:
        feats, labels = extract_features(backbone, dataset, batch_size, ctx.device, desc=f"extract {split}", options=options, out_path=staged)
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    ctx.add_time("extract", time.perf_counter() - t0)
    bad = int(sum((~np.isfinite(feats[i:i + 4096])).sum() for i in range(0, len(feats), 4096)))
    if bad:
        from .errors import BobError

        if staged is not None:
            staged.unlink(missing_ok=True)

        raise BobError(f"{backbone.name} produced {bad} NaN/inf feature values on {task.name}:{split}; check the weights and the input resolution")
    measured = {k: backbone.meta.get(k) for k in ("params_m", "gflops", "measured_at")}
    cache.commit(key, staged, feats, labels, {"backbone_meta": measured, "n": len(labels)})
    return feats, labels


def _extract_sharded(backbone, task, split: str, dataset, batch_size: int, ctx, options: ExtractOptions, key: dict) -> tuple[np.ndarray, np.ndarray]:
    """A distributed cell's extraction: each rank runs its contiguous share, the shares are gathered in
    rank order (the same array one process extracts), and rank 0 alone writes the one cache entry."""
    import torch.distributed as dist

    from .distributed import barrier, world

    w = world()
    t0 = time.perf_counter()
    part = extract_features(backbone, dataset, batch_size, ctx.device, desc=f"extract {split} [{w.rank}/{w.size}]", options=options, shard=(w.rank, w.size))
    shares: list = [None] * w.size
    dist.all_gather_object(shares, (np.asarray(part[0]), np.asarray(part[1])))
    feats = np.concatenate([np.asarray(f, np.float32) for f, l in shares if len(l)])
    labels = np.concatenate([l for _, l in shares])
    ctx.add_time("extract", time.perf_counter() - t0)
    if not np.isfinite(feats).all():
        from .errors import BobError

        raise BobError(f"{backbone.name} produced NaN/inf feature values on {task.name}:{split}; check the weights and the input resolution")
    meta = {"backbone_meta": {k: backbone.meta.get(k) for k in ("params_m", "gflops", "measured_at")}, "n": len(labels), "world_size": w.size}
    if w.main:
        ctx.feature_cache.commit(key, None, feats, labels, meta)
    else:
        ctx.feature_cache._remember(key, (feats, labels, meta))
    barrier()  # the entry exists before any rank moves on
    return feats, labels
