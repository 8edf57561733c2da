"""Splits bob makes are data: a function of the file list and a seed, part of the task id,
recorded with their hashes.

Why a module of its own: a user's class-folder tree split into train / val / test, a validation
split carved from a training split, a few-shot subset, DomainBed's in / out halves are all the
same operation: take a list of (file key, label), stratify by label, and deal each class's
files out to named splits. Doing it in one place gives every family the same guarantees:

- **deterministic everywhere**: a file's place depends only on its key (its path relative to
  the data root, so the same on every machine), the seed, and the size of its class; never on
  the order a file system lists a folder in, nor on the backbone or the cell seed;
- **stratified**: every class gives ``round(n * fraction)`` of its ``n`` files (at least one) to
  each carved split, the rest to the remainder split; a class too small for that is a one-line
  error naming it;
- **disjoint**: each file lands in exactly one split (a key listed twice is an error);
- **recorded**: :func:`provenance` describes the rule, the fractions, the seed, per-split counts
  and the hash of each split's file list, so a reviewer can rebuild and compare them.

The rule, exactly: within a class, files are ordered by ``sha256(f"{seed}:{key}")``; carved
splits take consecutive runs of that order in the order they are declared; the rest keep their
original split name. A split's hash is the SHA-256 of its sorted ``key<TAB>label`` lines joined
by newlines (first 16 hex digits).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import BobError

DEFAULT_FRACTIONS = {"test": 0.2, "val": 0.2}  # of the pool each is carved from; dealt in this order
DEFAULT_SEED = 0
RULE = ("stratified per class: within each class files are ordered by sha256('<seed>:<path>'), each carved split takes "
        "round(n * fraction) of a class's n files (at least 1) in the order listed, the rest stay in the source split")
HASH_RULE = "sha256 of the split's sorted '<path>\\t<label>' lines joined by newlines (first 16 hex digits); paths relative to the data root"


@dataclass(frozen=True)
class SplitRule:
    """Which splits to carve, how large (a fraction of each class in ``(0, 1)``, or a number of files
    per class), and the seed. ``fractions`` keeps the order splits are carved in."""

    fractions: dict[str, float | int] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = DEFAULT_SEED

    def only(self, names: Sequence[str]) -> "SplitRule":
        """The same rule restricted to ``names`` (e.g. only ``val`` when the data has its own test)."""
        return SplitRule({k: v for k, v in self.fractions.items() if k in names}, self.seed)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.fractions.items()]
        return ", ".join(parts + [f"seed={self.seed}"])


def order_key(seed: int, key: str) -> str:
    """Where a file sits in its class's deal order: a hash of the seed and its key only."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def share(n: int, size: float | int) -> int:
    """Files a class of ``n`` gives to a split of ``size`` (fraction: rounded half up, at least 1)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    return max(1, math.floor(n * size + 0.5))


def carve(keys: Sequence[str], labels: Sequence[int], rule: SplitRule, rest: str = "train",
          class_names: Sequence[str] | None = None, source: str = "") -> dict[str, list[int]]:
    """Deal indices into ``keys`` to the splits of ``rule`` plus ``rest``, stratified by label.

    Each returned list is in sorted-key order. ``source`` names where the files came from (for
    error messages). Raises a one-line BobError for a repeated key or a class too small to give
    every split at least one file and keep one for ``rest``.
    """
    if len(keys) != len(labels):
        raise ValueError("keys and labels differ in length")
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            raise BobError(f"{source or 'the data'}: {key!r} is listed twice; a file may sit in one split only")
        seen[key] = i
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    out: dict[str, list[int]] = {name: [] for name in [*rule.fractions, rest]}
    too_small = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda i: order_key(rule.seed, keys[i]))
        n, start = len(members), 0
        takes = {name: share(n, size) for name, size in rule.fractions.items()}
        if sum(takes.values()) >= n:
            too_small.append((label, n, sum(takes.values()) + 1))
            continue
        for name, k in takes.items():
            out[name] += members[start:start + k]
            start += k
        out[rest] += members[start:]
    if too_small:
        label, n, need = too_small[0]
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        more = f" (and {len(too_small) - 1} more classes)" if len(too_small) > 1 else ""
        raise BobError(f"{source or 'the data'}: class {name!r} has {n} image(s){more}; splitting it into {rest} + "
                       f"{' + '.join(rule.fractions)} ({rule.describe()}) needs at least {need} per class: add images to it or remove the class")
    return {name: sorted(idx, key=lambda i: keys[i]) for name, idx in out.items()}


def split_hash(keys: Sequence[str], labels: Sequence[int]) -> str:
    """The hash of one split's file list (see :data:`HASH_RULE`)."""
    lines = sorted(f"{k}\t{int(l)}" for k, l in zip(keys, labels))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


def provenance(layout: str, splits: Mapping[str, tuple[Sequence[str], Sequence[int]]], given: Sequence[str],
               carved: Mapping[str, dict[str, Any]] | None = None, rule: SplitRule | None = None,
               num_classes: int | None = None) -> dict[str, Any]:
    """The record's description of a task's splits: ``splits`` maps split -> (keys, labels);
    ``given`` names the splits the data came with; ``carved`` maps each split bob made to
    ``{"from": <split or 'all'>, "fraction": f}``. Counts per class are kept when ``num_classes``
    is given (a reviewer sees the stratification)."""
    block: dict[str, Any] = {
        "layout": layout,
        "given": list(given),
        "carved": {k: dict(v) for k, v in (carved or {}).items()},
        "counts": {name: len(keys) for name, (keys, _) in splits.items()},
        "sha256": {name: split_hash(keys, labels) for name, (keys, labels) in splits.items()},
        "hash_rule": HASH_RULE,
    }
    if carved:
        block.update(seed=rule.seed if rule else DEFAULT_SEED, rule=RULE,
                     defaults={**DEFAULT_FRACTIONS, "seed": DEFAULT_SEED})
    if num_classes:
        block["per_class"] = {name: _bincount(labels, num_classes) for name, (_, labels) in splits.items()}
    return block


def _bincount(labels: Sequence[int], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for label in labels:
        if 0 <= int(label) < num_classes:
            counts[int(label)] += 1
    return counts


# -- the task id's options --------------------------------------------------------------------------
def parse_rule(options: Mapping[str, str], where: str) -> tuple[SplitRule, dict[str, str]]:
    """``val`` / ``test`` fractions and ``seed`` from a task id's ``?key=value&...`` options (the
    defaults for those not given); returns the rule and the options it did not consume."""
    fractions = dict(DEFAULT_FRACTIONS)
    seed = DEFAULT_SEED
    rest = {}
    for key, value in options.items():
        if key in fractions:
            try:
                f = float(value)
            except ValueError:
                raise BobError(f"{where}: {key}={value!r} is not a number; give a fraction, e.g. {key}=0.2") from None
            if not 0.0 < f < 1.0:
                raise BobError(f"{where}: {key}={value} must be a fraction between 0 and 1 (exclusive), e.g. {key}=0.2")
            fractions[key] = f
        elif key == "seed":
            try:
                seed = int(value)
            except ValueError:
                raise BobError(f"{where}: seed={value!r} is not an integer") from None
        else:
            rest[key] = value
    if sum(fractions.values()) >= 1.0:
        raise BobError(f"{where}: val={fractions['val']} + test={fractions['test']} leave nothing to train on; keep their sum below 1")
    return SplitRule(fractions, seed), rest


def split_query(rule: SplitRule) -> str:
    """The task-id options that select ``rule`` (empty for the defaults), in a fixed order."""
    parts = [f"{k}={rule.fractions[k]:g}" for k in ("val", "test") if k in rule.fractions and rule.fractions[k] != DEFAULT_FRACTIONS.get(k)]
    if rule.seed != DEFAULT_SEED:
        parts.append(f"seed={rule.seed}")
    return "&".join(parts)
