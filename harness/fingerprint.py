"""Fingerprints of what a cell read: its data (sample hashes per split) and its weights file.

Why: ``bob reproduce`` must refuse to compare a rerun against a record when the inputs changed
under it (a dataset regenerated, a checkpoint overwritten): a difference would then say nothing
about bob. The record keeps the fingerprints; reproduce recomputes and compares them first.

A split's fingerprint is its size and the SHA-256 of ``SAMPLES`` evenly spaced samples (decoded
pixels, mode and size, and the label), cheap enough to take for every cell.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

SAMPLES = 16
RULE = f"per split: its size and sha256 over {SAMPLES} evenly spaced samples (decoded pixels + mode + size, label)"


def _update(h, value: Any) -> None:
    if hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image: its pixels
        h.update(f"{value.mode}:{value.size}".encode())
        h.update(value.tobytes())
    elif hasattr(value, "numpy"):  # a tensor
        _update(h, value.detach().cpu().numpy())
    elif hasattr(value, "tobytes") and hasattr(value, "dtype"):  # a numpy array
        h.update(f"{value.dtype}:{getattr(value, 'shape', '')}".encode())
        h.update(value.tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _update(h, item)
    else:
        h.update(repr(value).encode())


def split_fingerprint(dataset) -> dict[str, Any]:
    n = len(dataset)
    picks = sorted({int(i * (n - 1) / max(1, SAMPLES - 1)) for i in range(min(SAMPLES, n))}) if n else []
    h = hashlib.sha256()
    for i in picks:
        _update(h, dataset[i])
    return {"n": n, "sample_sha256": h.hexdigest()[:16]}


def data_fingerprint(task) -> dict[str, Any]:
    """``{split: {n, sample_sha256}}`` for a task with splits to load; ``{}`` for tasks without
    (generated in-context data, language-model probes), which ``reproduce`` then cannot check."""
    loaders = getattr(task, "loaders", None)
    if not isinstance(loaders, dict) or getattr(task, "kind", None) != "classification":  # other kinds' loaders can be costly (detection json)
        return {}
    out = {}
    for split in loaders:
        try:
            out[split] = split_fingerprint(task.load(split))
        except Exception as exc:  # a split that cannot be read now fails the cell later, with its own error
            out[split] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return out


def weights_fingerprint(backbone_meta: dict[str, Any]) -> dict[str, Any]:
    """The weights a cell used: the resolved kind and, for a file, its path and SHA-256."""
    keep = ("weights", "weights_file", "weights_sha256")
    return {k: backbone_meta[k] for k in keep if backbone_meta.get(k) is not None}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
