"""RunSpec: one cell of a sweep, identified by a hash of its canonical JSON.

The id is a content hash so that the same cell always lands in the same record file: a rerun
finds it done and skips it, and two sweeps that share cells share their results.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

SPEC_VERSION = 1  # bump only if the meaning of a field changes (it changes every id)


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, floats as Python writes them."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class RunSpec:
    """What to run: backbone, weights, method, task, seed and the hyper-parameters set by the user.

    ``hparams`` holds only what the grid or ``--set`` gave; the method's defaults are merged at
    run time and recorded separately, so adding a default later does not change old ids.

    ``data`` identifies data the task draws per cell (a few-shot subset: the hash of the chosen
    image ids), filled at grid expansion by the task's ``data_identity`` hook, so a changed split
    file is a new cell rather than a stale record; empty for every other task (ids unchanged).

    ``deterministic`` runs the cell in deterministic mode (``harness.determinism``). It is part of
    the id: it can change the numbers (fixed threads, other kernels), so a deterministic cell and
    its default twin are two cells with two records; off, it is left out and ids are unchanged.
    """

    backbone: str
    method: str
    task: str
    seed: int = 0
    weights: str = "pretrained"
    hparams: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = False
    compress: dict[str, Any] = field(default_factory=dict)  # canonical compression (harness.compress.config); {} = dense

    def as_dict(self) -> dict[str, Any]:
        out = {
            "backbone": self.backbone,
            "method": self.method,
            "task": self.task,
            "seed": int(self.seed),
            "weights": self.weights,
            "hparams": dict(self.hparams),
        }
        if self.data:  # only where a task draws data per cell: every other id stays what it was
            out["data"] = dict(self.data)
        if self.deterministic:  # part of the id (it can change the numbers); absent when off, so every other id stays
            out["deterministic"] = True
        if self.compress:  # only compressed cells: a dense cell's id is what it always was
            out["compress"] = dict(self.compress)
        return out

    @property
    def id(self) -> str:
        payload = {"v": SPEC_VERSION, **self.as_dict()}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human label for progress bars and logs."""
        hp = ",".join(f"{k}={v}" for k, v in sorted(self.hparams.items()) if k != "search")
        comp = ""
        if self.compress:
            from .compress.config import compress_label

            comp = f"<{compress_label(self.compress)}>"
        return f"{self.backbone}[{self.weights}]{comp} {self.method} {self.task} s{self.seed}" + (f" {hp}" if hp else "") + (" det" if self.deterministic else "")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(
            backbone=d["backbone"],
            method=d["method"],
            task=d["task"],
            seed=int(d.get("seed", 0)),
            weights=d.get("weights", "pretrained"),
            hparams=dict(d.get("hparams") or {}),
            data=dict(d.get("data") or {}),
            deterministic=bool(d.get("deterministic", False)),
            compress=dict(d.get("compress") or {}),
        )

    def __hash__(self) -> int:  # dict field is unhashable; the id is the identity
        return hash(self.id)
