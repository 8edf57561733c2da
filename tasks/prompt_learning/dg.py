"""The domain-generalisation protocol of CoOp / CoCoOp: train on K-shot ImageNet, evaluate the
learned prompts on ImageNet's own test split (val) and on ImageNetV2 (matched-frequency),
ImageNet-Sketch, ImageNet-A and ImageNet-R.

``coop:imagenet?shots=K&protocol=dg`` reads the ImageNet family in the layouts issue 21's
``shift/imagenet`` reads (``tasks/shift/imagenet.py``: its readers, its label space, its A / R
masks from timm's ``imagenet_{a,r}_indices.txt``; nothing retyped here), from the data root or
``data_paths: {shift/imagenet: DIR}``. Every set is scored with the 1000 ImageNet class names
(open_clip's, = CoOp's ``classnames.txt``) and CoOp's ImageNet prompt; A and R are scored within
their 200 classes (the papers' number) and also over all 1000 (``<set>_top1_all``, strict), as
issue 21 records them.

The K-shot rule is the other datasets' (Dassl's): training images in sorted wnid-folder, sorted
file order; ImageNet ships no val split, so the few-shot val is drawn from the unchosen training
images (as for ``coop:imagenet``). Only the training folder's labels are read to draw and train;
the target sets are read by the final evaluation alone.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from harness.errors import BobError
from harness.prompt.sets import PromptSet

DATA_KEY = "shift/imagenet"  # data_paths key: the family root, shared with issue 21's task
TARGETS = ("imagenet_v2_mf", "imagenet_sketch", "imagenet_a", "imagenet_r")  # the papers' column order
MASKED = {"imagenet_a": "a", "imagenet_r": "r"}


def family_root(data_root: str | None, overrides: dict | None) -> Path:
    from tasks.shift.imagenet import family_root as shift_root

    return shift_root(data_root, (overrides or {}).get(DATA_KEY))


def _rel(samples: list, root: Path) -> list[str]:
    return [str(Path(s.image).relative_to(root)) for s in samples]


@functools.lru_cache(maxsize=4)
def _read_train(root: str) -> tuple[list, str]:
    """ImageNet-1k's training folder (sorted order) and the hash of its listing."""
    from tasks.shift.imagenet import read_wnid_folders

    from .fewshot import ids_hash

    base = Path(root)
    train = read_wnid_folders(base / "imagenet" / "train")
    return train, ids_hash(_rel(train, base), [s.label for s in train])


@functools.lru_cache(maxsize=4)
def _read_eval(root: str) -> dict[str, list]:
    """The source's test split (ImageNet val) and the four targets, through issue 21's readers."""
    from tasks.shift.imagenet import SKETCH_DIRS, V2_VARIANTS, _first_dir, read_v2_folders, read_wnid_folders, subset_mask

    base = Path(root)
    return {"test": read_wnid_folders(base / "imagenet" / "val"),
            "imagenet_v2_mf": read_v2_folders(base / V2_VARIANTS["imagenet_v2_mf"]),
            "imagenet_sketch": read_wnid_folders(_first_dir(base, SKETCH_DIRS), what="ImageNet-Sketch"),
            "imagenet_a": read_wnid_folders(base / "imagenet-a", subset_mask("a"), "ImageNet-A"),
            "imagenet_r": read_wnid_folders(base / "imagenet-r", subset_mask("r"), "ImageNet-R")}


def _draw(train: list, k: int, seed: int, name: str):
    from .fewshot import draw_fewshot

    return draw_fewshot([s.label for s in train], None, k, seed, f"task {name}")


def _identity(root: Path, train: list, draw, listing_sha: str) -> dict[str, str]:
    from .fewshot import ids_hash

    chosen = [train[i] for i in draw.train] + [train[i] for i in draw.val]
    keys = [f"train:{p}" for p in _rel([train[i] for i in draw.train], root)] + [f"val:{p}" for p in _rel([train[i] for i in draw.val], root)]
    return {"fewshot_ids": ids_hash(keys, [s.label for s in chosen]),
            "splits_sha256": hashlib.sha256(f"imagenet train listing {listing_sha}".encode()).hexdigest()[:16]}


def dg_identity(name: str, k: int, seed: int, data_root: str | None, data_paths: dict | None) -> dict[str, str]:
    """The cell id's data part: the chosen images and the training listing (the targets are test data)."""
    root = family_root(data_root, data_paths)
    train, sha = _read_train(str(root))
    return _identity(root, train, _draw(train, k, seed, name), sha)


def build_dg_task(name: str, k: int, data_root: str | None, overrides: dict | None, cell, spec):
    from harness.data import ImageClassificationDataset
    from harness.types import CLASSIFICATION
    from tasks.shift.imagenet import SET_TITLES, imagenet_class_text, mask_source, subset_mask

    from .fewshot import RULE, VAL_SHOTS_MAX, ids_hash
    from .task import PromptTask

    root = family_root(data_root, overrides)
    seed = int(cell.seed) if cell is not None else 0
    train, listing_sha = _read_train(str(root))
    draw = _draw(train, k, seed, name)
    identity = _identity(root, train, draw, listing_sha)
    if cell is not None and cell.data and cell.data != identity:
        raise BobError(f"task {name}: the data changed since the grid was expanded (cell {cell.id} names few-shot ids {cell.data.get('fewshot_ids')}, "
                       f"the files now give {identity['fewshot_ids']}); expand the grid again so the cell id names the images it trains on")
    names, _, names_source = imagenet_class_text()
    template = [spec.template]
    chosen_train, chosen_val = [train[i] for i in draw.train], [train[i] for i in draw.val]
    samples: dict[str, Any] = {"train": chosen_train, "val": chosen_val}
    evals = _read_eval(str(root))  # listed here, read (images, labels) only by the final evaluation
    samples.update(evals)
    sets = [PromptSet("imagenet", "test", names, template, "source")]
    for t in TARGETS:
        mask = subset_mask(MASKED[t]) if t in MASKED else None
        sets.append(PromptSet(t, t, names, template, "target", label_mask=mask,
                              notes={"title": SET_TITLES[t], **({"mask_source": mask_source(MASKED[t])} if mask else {})}))
    record = {"layout": "ImageNet family, issue 21's readers (tasks/shift/imagenet.py)", "source": str(root), "protocol": "dg",
              "class_names": names_source, "template": spec.template,
              "targets": {t: {"title": SET_TITLES[t], "images": len(evals[t]), **({"class_mask": mask_source(MASKED[t]), "classes": len(subset_mask(MASKED[t]))}
                                                                                  if t in MASKED else {"classes": 1000})} for t in TARGETS},
              "fewshot": {"k": k, "seed": seed, "rule": RULE, "val_shots": min(k, VAL_SHOTS_MAX),
                          "val_from": "the training images not chosen (ImageNet has no val split)",
                          "counts": {"train": len(chosen_train), "val": len(chosen_val)}, "train": _rel(chosen_train, root), "val": _rel(chosen_val, root),
                          "sha256": {"train": ids_hash(_rel(chosen_train, root), [s.label for s in chosen_train]),
                                     "val": ids_hash(_rel(chosen_val, root), [s.label for s in chosen_val])},
                          "cell_id_part": identity}}
    record["counts"] = {s: len(v) for s, v in samples.items()}
    return PromptTask(
        name=name, kind=CLASSIFICATION, group="prompt-learning/dg", num_classes=1000,
        loaders={s: (lambda v=v, s=s: ImageClassificationDataset(v, name=f"{name}:{s}")) for s, v in samples.items()},
        tune_splits=("train", "val"), final_splits=("train", "test"), hflip_ok=True, source=str(root),
        class_text=lambda: (names, template, names_source), split_provenance=record, prompt_sets=sets, protocol="dg", shots=k,
        dataset="imagenet", method_defaults={"tip_search_scale": list(spec.tip_search_scale), "tip_init_alpha": spec.tip_init_alpha,
                                             "tpt_augmix": spec.tpt_augmix},
    )


def check_dg_data(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False):
    """``bob data verify coop_dg``: the training folder and the five evaluation sets, read as a cell reads them."""
    from harness.data import open_rgb

    from ..suites import TaskCheck

    check = TaskCheck(task_id, None, fix="lay the ImageNet family out as `bob data prepare shift` shows, then rerun")
    try:
        root = family_root(data_root, {DATA_KEY: override} if override else None)
        splits = {"train": _read_train(str(root))[0], **_read_eval(str(root))}
    except BobError as exc:
        check.problems.append(str(exc))
        return check
    check.location = str(root)
    for split, samples in splits.items():
        check.counts[split] = len(samples)
        if open_images:
            for s in samples[:: max(1, len(samples) // 200)]:
                try:
                    open_rgb(s)
                except BobError as exc:
                    check.problems.append(str(exc))
                    break
    return check
