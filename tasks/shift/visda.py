"""VisDA-2017 classification: train on the Synthetic renders, test on the Real images.

Layout as released (``train.tar``, ``validation.tar``): ``<root>/visda2017/train/`` (Synthetic)
and ``<root>/visda2017/validation/`` (Real), each holding ``image_list.txt`` with
``<class>/<file> <label>`` lines relative to its folder, and the images. Twelve classes, labels
0..11 in alphabetical order (aeroplane ... truck); a line whose folder names another class than
its label is an error, as is a line whose image is missing (both name the file and line).

Protocol: Synthetic is dealt into train / val / test (stratified 10 % + 10 %, ``harness.splits``,
seed 0, recorded with its hashes); hyper-parameters are chosen on train -> val, the chosen setting
is refitted on train + val, and that one model scores the Synthetic test split (``top1``, the ID
number) and the Real set as the evaluation set ``real`` (``harness.eval_sets``): ``real/top1``
(= ``ood_top1``) and ``real/mean_class_acc``, the mean of the per-class accuracies (VisDA's
headline number, which keeps the large classes from dominating).
This module stays import-light (``bob list`` imports it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from harness.errors import BobError
from harness.registry import TASKS
from harness.types import CLASSIFICATION, Task

CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant", "skateboard", "train", "truck")
FOLDERS = ("visda2017", "VisDA-2017", "visda-2017", "visda")
SOURCE, TARGET = "train", "validation"  # Synthetic, Real
LIST = "image_list.txt"
HELD_OUT = {"val": 0.1, "test": 0.1}  # of each Synthetic class, dealt in this order
MEAN_CLASS = {"mean_class_acc": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": "Real: mean per-class accuracy (%), VisDA's headline"}}
METRICS = {f"real/{k}": v for k, v in MEAN_CLASS.items()}


def mean_class_accuracy(pred: Sequence[int], labels: Sequence[int], num_classes: int = len(CLASSES)) -> dict[str, Any]:
    """Overall top-1 and the mean over classes present in ``labels`` of each class's accuracy (%)."""
    import numpy as np

    pred, labels = np.asarray(pred), np.asarray(labels)
    per_class = {}
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            per_class[c] = float((pred[mask] == c).mean() * 100.0)
    return {"top1": float((pred == labels).mean() * 100.0) if len(labels) else 0.0,
            "mean_class_acc": float(np.mean(list(per_class.values()))) if per_class else 0.0,
            "per_class_acc": {CLASSES[c] if num_classes == len(CLASSES) else str(c): round(v, 4) for c, v in per_class.items()}}


def _mean_class_of_scores(scores, labels) -> dict[str, float]:
    return {"mean_class_acc": mean_class_accuracy(scores.argmax(axis=1), labels, scores.shape[1])["mean_class_acc"]}


def read_split(folder: Path, where: str = "") -> list:
    """The samples of ``folder/image_list.txt``, every image checked to exist and to sit in its label's class folder."""
    from harness.data import read_list_file

    list_file = Path(folder) / LIST
    if not list_file.is_file():
        raise BobError(f"{where or folder}: {list_file} does not exist; VisDA-2017 ships train/{LIST} (Synthetic) and validation/{LIST} (Real): "
                       "unpack train.tar and validation.tar into the same folder")
    samples = read_list_file(list_file, Path(folder), len(CLASSES))
    if not samples:
        raise BobError(f"{list_file}: lists no images; expected '<class>/<file> <label>' lines")
    for s in samples:
        if not Path(s.image).is_file():
            raise BobError(f"{s.origin}: image {s.image} does not exist; restore it (re-extract the VisDA archive) or delete the line")
        first = Path(s.image).relative_to(folder).parts[0]
        if first in CLASSES and first != CLASSES[s.label]:
            raise BobError(f"{s.origin}: image in folder {first!r} has label {s.label} ({CLASSES[s.label]}); VisDA's labels are "
                           f"0..11 in the order {', '.join(CLASSES)}: fix the label")
    return samples


def find_root(name: str, data_root: str | None, overrides: dict | None) -> Path:
    override = (overrides or {}).get(name)
    if override:
        return Path(override).expanduser()
    if name.endswith("/toy"):
        from .toy_sets import ensure_visda_toy

        return ensure_visda_toy()
    root = data_root or os.environ.get("BOB_DATA")
    looked = [Path(root).expanduser() / f for f in FOLDERS] if root else []
    for folder in looked:
        if (folder / SOURCE / LIST).is_file():
            return folder
    where = ", ".join(str(f) for f in looked) if looked else "no data root given (--data-root or BOB_DATA)"
    raise BobError(f"task {name}: VisDA-2017 not found (looked in {where}); unpack train.tar and validation.tar into "
                   f"<data root>/visda2017/ or pass --data-path {name}=<folder holding train/ and validation/>")


def build_task(name: str, data_root: str | None = None, overrides: dict | None = None, **_) -> Task:
    from harness.data import ImageClassificationDataset
    from harness.eval_sets import EvalSet
    from harness.splits import SplitRule, carve, provenance

    root = find_root(name, data_root, overrides)
    source = read_split(root / SOURCE, f"task {name}")
    target = read_split(root / TARGET, f"task {name}")
    rule = SplitRule(dict(HELD_OUT), 0)
    keys = [Path(s.image).relative_to(root).as_posix() for s in source]
    dealt = carve(keys, [s.label for s in source], rule, rest="train", class_names=list(CLASSES), source=str(root / SOURCE / LIST))
    splits = {k: [source[i] for i in dealt[k]] for k in ("train", "val", "test")}
    splits["real"] = target
    splits["trainval"] = splits["train"] + splits["val"]
    parts = {k: ([Path(s.image).relative_to(root).as_posix() for s in v], [s.label for s in v]) for k, v in splits.items() if k != "trainval"}
    record = provenance("visda2017: train/image_list.txt (Synthetic) + validation/image_list.txt (Real)", parts, ["train (Synthetic)", "real (Real)"],
                        {k: {"from": "train (Synthetic)", "fraction": f} for k, f in HELD_OUT.items()}, rule, len(CLASSES))
    record.update(root=str(root), classes=list(CLASSES), source_domain="Synthetic (train/)", target_domain="Real (validation/)",
                  unions={"trainval": ["train", "val"]})
    return Task(
        name=name, kind=CLASSIFICATION, group="shift/synthetic-to-real", num_classes=len(CLASSES),
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v, name=f"{name}:{k}")) for k, v in splits.items()},
        tune_splits=("train", "val"), final_splits=("trainval", "test"), union_splits={"trainval": ("train", "val")},
        eval_sets=[EvalSet("real", "real", role="ood", title="VisDA-2017 Real (validation/)", group="synthetic_to_real",
                           extra_metrics=_mean_class_of_scores, extra_specs=dict(MEAN_CLASS))],
        source=str(root), class_text=lambda: (list(CLASSES), ["a photo of a {c}."], "VisDA-2017's twelve classes"),
        split_provenance=record,
    )


def _factory(name: str):
    def factory(data_root=None, overrides=None, **_):
        return build_task(name, data_root, overrides)

    return factory


TASK_IDS = ("shift/visda2017", "shift/visda2017/toy")
for _name, _what in zip(TASK_IDS, ("VisDA-2017 classification: Synthetic (train/) -> Real (validation/), 12 classes",
                                   "generated VisDA-2017-layout pair (flat renders -> noisy photos), 12 classes")):
    TASKS.add(_name, _factory(_name), kind=CLASSIFICATION, group="shift/synthetic-to-real", suite="shift", metric="top1", metrics=METRICS,
              class_names=True, description=_what)
PREPARE_NOTES = """VisDA-2017 classification (ai.bu.edu/visda-2017): unpack train.tar and validation.tar into <root>/visda2017/:
  <root>/visda2017/train/image_list.txt + train/<class>/<image> (Synthetic)   <root>/visda2017/validation/image_list.txt + validation/<class>/<image> (Real)"""


def _declare_shift() -> None:
    from .datacheck import checker
    from .suite import declare_checker, declare_group

    declare_group("synthetic_to_real", title="Synthetic to real", tasks=list(TASK_IDS))
    check = checker(find_root, build_task, "unpack train.tar and validation.tar into <root>/visda2017/ (`bob data prepare shift`)")
    for i, task in enumerate(TASK_IDS):
        declare_checker(task, check, PREPARE_NOTES if i == 0 else "")


_declare_shift()
