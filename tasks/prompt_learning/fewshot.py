"""The K-shot subset, drawn by the rule of the reference implementation, so a user gets the same
images as the papers for the same seed.

The rule (Dassl's ``DatasetBase.generate_fewshot_dataset`` as CoOp and its successors call it,
after ``set_random_seed(seed)`` seeded Python's ``random`` and before anything else used it):

1. group the training list by label, the groups in the order their label first appears in the
   list, each group's items in list order;
2. for each group in that order, ``random.sample(group, K)``;
3. then the validation list the same way with ``min(K, 4)``, continuing the same generator.

A class with fewer than K training images is an error here (the reference silently keeps all of
them, so "16 shots" would not be 16); a class with fewer validation images than ``min(K, 4)``
keeps them all, as in the reference. Where the data has no validation split (ImageNet: its val
is its test), the validation shots are drawn the same way from the training images *not* chosen,
after the training draw, so the training subset is still the reference's.

Nothing is cached: the subset is a function of the split file and the seed, drawn again in every
cell, recorded (positions in the split's lists) and hashed into the cell id.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from harness.errors import BobError
from harness.splits import split_hash

RULE = ("Dassl generate_fewshot_dataset: random.seed(seed); for each label in the order it first appears in the train list, "
        "random.sample(its items in list order, K); then the val list the same way with min(K, 4), continuing the generator")
VAL_SHOTS_MAX = 4


@dataclass(frozen=True)
class FewShotDraw:
    """Positions (into the split's item list) of the chosen training and validation images."""

    k: int
    seed: int
    train: list[int]
    val: list[int]
    val_from: str  # "val" (the data's own) or "train" (carved from the images not chosen)


def _groups(labels: Sequence[int], positions: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for pos in positions:
        groups.setdefault(int(labels[pos]), []).append(pos)
    return groups


def sample_per_class(labels: Sequence[int], k: int, rng: random.Random, positions: Sequence[int] | None = None,
                     strict: bool = True, where: str = "", class_names: Sequence[str] | None = None) -> list[int]:
    """Step 1-2 of the rule on ``positions`` (all of ``labels`` by default): the chosen positions, class
    by class in first-appearance order, each class's in the order ``random.sample`` returned them."""
    positions = range(len(labels)) if positions is None else positions
    chosen: list[int] = []
    for label, members in _groups(labels, positions).items():
        if len(members) >= k:
            chosen.extend(rng.sample(members, k))
        elif strict:
            name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
            raise BobError(f"{where}: class {name!r} (label {label}) has {len(members)} training image(s), fewer than shots={k}; "
                           f"use shots <= {len(members)} or add images to the class")
        else:
            chosen.extend(members)
    return chosen


def draw_fewshot(train_labels: Sequence[int], val_labels: Sequence[int] | None, k: int, seed: int, where: str = "",
                 class_names: Sequence[str] | None = None) -> FewShotDraw:
    """The K-shot training positions and the min(K, 4)-shot validation positions for ``seed``.
    ``val_labels`` None: the data has no validation split; it is drawn from the unchosen training images."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BobError(f"{where}: shots={k!r} must be a positive integer (1, 2, 4, 8, 16 in the papers)")
    rng = random.Random(seed)  # random.seed(seed) on a fresh generator: the sequence Dassl's seeded global one gives
    train = sample_per_class(train_labels, k, rng, where=where, class_names=class_names)
    k_val = min(k, VAL_SHOTS_MAX)
    if val_labels is not None:
        return FewShotDraw(k, seed, train, sample_per_class(val_labels, k_val, rng, strict=False), "val")
    chosen = set(train)
    rest = [i for i in range(len(train_labels)) if i not in chosen]
    return FewShotDraw(k, seed, train, sample_per_class(train_labels, k_val, rng, positions=rest, strict=False), "train")


def ids_hash(keys: Sequence[str], labels: Sequence[int]) -> str:
    """The hash of a list of chosen images (``harness.splits.HASH_RULE``: sorted 'path<TAB>label' lines)."""
    return split_hash(list(keys), [int(l) for l in labels])
