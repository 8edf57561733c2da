"""ImageNet-1k and its OOD test sets, read from the layouts they are released in.

Under the data root (``--data-root`` / ``BOB_DATA``; ``--data-path shift/imagenet=DIR`` names
another root):

    imagenet/train/<wnid>/*.JPEG   imagenet/val/<wnid>/*.JPEG        ImageNet-1k (the cluster layout)
    imagenet/real.json (optional; else timm's shipped copy)           ImageNet-ReaL labels (val)
    imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg           ImageNetV2, as its tarballs extract
    imagenetv2-threshold0.7-format-val/<0..999>/*.jpeg
    imagenetv2-top-images-format-val/<0..999>/*.jpeg
    sketch/<wnid>/*.JPEG                                              ImageNet-Sketch (ImageNet-Sketch.zip)
    imagenet-r/<wnid>/*.jpg   imagenet-a/<wnid>/*.jpg                 ImageNet-R / -A (200 wnid folders each)

Labels are what the datasets' official loaders assign, in ImageNet-1k's label space: a wnid
folder's index in timm's ``imagenet_synsets.txt`` (= torchvision ImageFolder's sorted order on the
full train set), a V2 folder's name as an integer (imagenetv2_pytorch), and for R / A the wnid's
1000-way index, scored within the 200 classes of timm's ``imagenet_{r,a}_indices.txt`` (Hendrycks'
``indices_in_1k``). Every class list and index map is read from ``timm/data/_info``, never typed.

The ImageNet training split is dealt into ``train_tune`` + ``minival`` (1 % of each class, seeded
sha256 rule of harness.splits) for hyper-parameter search; ``train`` is their concatenation, so
frozen methods extract it once.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from harness.errors import BobError
from harness.registry import TASKS
from harness.types import CLASSIFICATION

from .suite import declare_checker, declare_group

TASK_ID = "shift/imagenet"
TOY_TASK_ID = "shift/imagenet_toy"
V2_VARIANTS = {  # set name -> the folder its tarball extracts to
    "imagenet_v2_mf": "imagenetv2-matched-frequency-format-val",
    "imagenet_v2_t07": "imagenetv2-threshold0.7-format-val",
    "imagenet_v2_top": "imagenetv2-top-images-format-val",
}
SET_TITLES = {"imagenet_v2_mf": "ImageNetV2 matched-frequency", "imagenet_v2_t07": "ImageNetV2 threshold-0.7",
              "imagenet_v2_top": "ImageNetV2 top-images", "imagenet_sketch": "ImageNet-Sketch", "imagenet_r": "ImageNet-R",
              "imagenet_a": "ImageNet-A", "real": "ImageNet-ReaL"}
SKETCH_DIRS = ("sketch", "imagenet-sketch/sketch", "imagenet-sketch/data", "ImageNet-Sketch/sketch")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
MINIVAL_FRACTION = 0.01
PREPARE_NOTES = """ImageNet family (shift/imagenet), under <root>:
  imagenet/train/<wnid>/*.JPEG and imagenet/val/<wnid>/*.JPEG (val sorted into wnid folders, the usual cluster layout);
  imagenetv2-{matched-frequency,threshold0.7,top-images}-format-val/<0..999>/ (the three ImageNetV2 tarballs, extracted);
  sketch/<wnid>/ (ImageNet-Sketch.zip); imagenet-r/<wnid>/ and imagenet-a/<wnid>/ (the 200-class tarballs);
  optional imagenet/real.json (ImageNet-ReaL, github.com/google-research/reassessed-imagenet; timm ships a copy).
Then: bob data verify shift --root <root>"""


# -- timm's class lists ---------------------------------------------------------------------------
def timm_info_dir() -> Path:
    """timm's ``data/_info`` folder, located without importing timm (which imports torch)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.origin:
        raise BobError("the ImageNet family reads its class lists from timm (timm/data/_info); pip install timm")
    return Path(spec.origin).parent / "data" / "_info"


def _info_lines(name: str) -> list[str]:
    path = timm_info_dir() / name
    if not path.is_file():
        raise BobError(f"{path} is missing: this timm has no {name}; upgrade timm (pip install -U timm)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def synsets() -> tuple[str, ...]:
    """ImageNet-1k's 1000 wnids in label order (timm's ``imagenet_synsets.txt``)."""
    wnids = tuple(_info_lines("imagenet_synsets.txt"))
    if len(wnids) != 1000:
        raise BobError(f"{timm_info_dir() / 'imagenet_synsets.txt'} lists {len(wnids)} wnids, expected 1000")
    return wnids


@functools.lru_cache(maxsize=1)
def synset_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(synsets())}


@functools.lru_cache(maxsize=2)
def subset_mask(which: str) -> tuple[int, ...]:
    """ImageNet-R's or -A's 200 classes as 1000-way indices, from timm's ``imagenet_{which}_indices.txt``,
    checked against ``imagenet_{which}_synsets.txt`` (the same classes, by wnid)."""
    indices = tuple(int(x) for x in _info_lines(f"imagenet_{which}_indices.txt"))
    wnids = _info_lines(f"imagenet_{which}_synsets.txt")
    if [synsets()[i] for i in indices] != wnids:
        raise BobError(f"timm's imagenet_{which}_indices.txt and imagenet_{which}_synsets.txt disagree; reinstall timm")
    return indices


def mask_source(which: str) -> str:
    return f"timm/data/_info/imagenet_{which}_indices.txt"


def real_label_sets(data_root: Path, val_samples: list) -> tuple[list[tuple[int, ...]], str]:
    """ImageNet-ReaL labels per val image (sample order): ``real.json`` is a list over
    ILSVRC2012_val_00000001..50000 of label lists; images are matched by file name, as timm's
    RealLabelsImagenet does. The data root's ``imagenet/real.json`` wins over timm's shipped copy."""
    local = data_root / "imagenet" / "real.json"
    path = local if local.is_file() else timm_info_dir() / "imagenet_real_labels.json"
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BobError(f"{path}: cannot read the ReaL labels ({exc}); restore the file (a JSON list of label lists)") from None
    if not isinstance(labels, list):
        raise BobError(f"{path}: expected a JSON list of label lists (real.json layout), got {type(labels).__name__}")
    by_name = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": tuple(int(x) for x in ls) for i, ls in enumerate(labels)}
    return [by_name.get(Path(s.image).name, ()) for s in val_samples], str(path)


# -- readers --------------------------------------------------------------------------------------------
def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_wnid_folders(folder: Path, allowed: tuple[int, ...] | None = None, what: str = "ImageNet-1k") -> list:
    """``folder/<wnid>/<image>`` -> samples labelled by the wnid's ImageNet-1k index. A folder that
    is not an ImageNet-1k wnid (or not one of ``allowed``'s classes) is a one-line error."""
    from harness.data import Sample

    if not folder.is_dir():
        raise BobError(f"{folder} does not exist; see `bob data prepare shift` for the layout")
    index = synset_index()
    allowed_set = set(allowed) if allowed is not None else None
    samples = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = index.get(sub.name)
        if label is None:
            raise BobError(f"{sub}: folder name {sub.name!r} is not an ImageNet-1k wnid (timm imagenet_synsets.txt); "
                           f"remove the folder or rename it to its wnid")
        if allowed_set is not None and label not in allowed_set:
            raise BobError(f"{sub}: wnid {sub.name} is not one of {what}'s 200 classes (timm imagenet_*_synsets.txt); remove the folder")
        samples += [Sample(p, label, f"{folder}/{sub.name}") for p in _images(sub)]
    if not samples:
        raise BobError(f"{folder} holds no images in <wnid>/ folders; see `bob data prepare shift` for the layout")
    return samples


def read_v2_folders(folder: Path) -> list:
    """ImageNetV2: ``folder/<class index 0..999>/<image>.jpeg``; the label is the folder name (imagenetv2_pytorch)."""
    from harness.data import Sample

    if not folder.is_dir():
        raise BobError(f"{folder} does not exist; extract the ImageNetV2 tarball there (see `bob data prepare shift`)")
    samples = []
    for sub in sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        if not sub.name.isdigit() or not 0 <= int(sub.name) <= 999 or sub.name != str(int(sub.name)):
            raise BobError(f"{sub}: ImageNetV2 folder name {sub.name!r} is not a class index 0..999; remove the folder or restore the tarball's layout")
        samples += [Sample(p, int(sub.name), f"{folder}/{sub.name}") for p in _images(sub)]
    if not samples:
        raise BobError(f"{folder} holds no images in <0..999>/ folders")
    return samples


def _first_dir(root: Path, candidates: tuple[str, ...]) -> Path:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root / candidates[0]


@functools.lru_cache(maxsize=4)
def _read_all(root: str) -> dict[str, Any]:
    """Every split of the family under ``root`` (cached per process: listing ImageNet is slow)."""
    from harness.splits import SplitRule, carve, provenance

    base = Path(root)
    train = read_wnid_folders(base / "imagenet" / "train")
    val = read_wnid_folders(base / "imagenet" / "val")
    keys = [str(Path(s.image).relative_to(base)) for s in train]
    rule = SplitRule({"minival": MINIVAL_FRACTION}, 0)
    dealt = carve(keys, [s.label for s in train], rule, rest="train_tune", source=str(base / "imagenet" / "train"))
    splits: dict[str, list] = {"train_tune": [train[i] for i in dealt["train_tune"]], "minival": [train[i] for i in dealt["minival"]]}
    splits["train"] = splits["train_tune"] + splits["minival"]
    splits["val"] = val
    for name, folder in V2_VARIANTS.items():
        splits[name] = read_v2_folders(base / folder)
    splits["imagenet_sketch"] = read_wnid_folders(_first_dir(base, SKETCH_DIRS), what="ImageNet-Sketch")
    splits["imagenet_r"] = read_wnid_folders(base / "imagenet-r", subset_mask("r"), "ImageNet-R")
    splits["imagenet_a"] = read_wnid_folders(base / "imagenet-a", subset_mask("a"), "ImageNet-A")
    real, real_source = real_label_sets(base, val)
    prov = provenance("imagenet wnid folders (+ V2 index folders)",
                      {k: ([str(Path(s.image).relative_to(base)) for s in v], [s.label for s in v]) for k, v in splits.items() if k != "train"},
                      given=[k for k in splits if k not in ("train_tune", "minival", "train")],
                      carved={"minival": {"from": "train", "fraction": MINIVAL_FRACTION}}, rule=rule)
    return {"splits": splits, "real": real, "real_source": real_source, "provenance": prov}


def family_root(data_root: str | None, override: str | None) -> Path:
    root = override or data_root
    if not root:
        raise BobError(f"task {TASK_ID}: no data root; pass --data-root DIR (or set BOB_DATA) to the folder holding imagenet/, "
                       f"imagenetv2-*-format-val/, sketch/, imagenet-r/, imagenet-a/ (`bob data prepare shift` shows the layout)")
    return Path(root).expanduser().resolve()


def eval_sets(real: list, real_source: str) -> list:
    from harness.eval_sets import EvalSet

    sets = [EvalSet(name, name, title=SET_TITLES[name], group="imagenet") for name in V2_VARIANTS]
    sets.append(EvalSet("imagenet_sketch", "imagenet_sketch", title=SET_TITLES["imagenet_sketch"], group="imagenet"))
    for which in ("r", "a"):
        sets.append(EvalSet(f"imagenet_{which}", f"imagenet_{which}", title=SET_TITLES[f"imagenet_{which}"], class_mask=subset_mask(which),
                            mask_source=mask_source(which), group="imagenet"))
    sets.append(EvalSet("real", "val", role="id", title=SET_TITLES["real"], label_sets=lambda: real, labels_source=real_source, group="imagenet"))
    return sets


def imagenet_class_text():
    """CLIP's ImageNet class names and its 80 prompt templates, as open_clip packages them."""
    try:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
    except ImportError:
        raise BobError("zero-shot ImageNet reads CLIP's class names and templates from open_clip; pip install open_clip_torch") from None
    names = list(IMAGENET_CLASSNAMES)
    templates = [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES]
    if len(names) != 1000 or len(templates) != 80:
        raise BobError(f"open_clip.zero_shot_metadata: {len(names)} ImageNet names and {len(templates)} templates, expected 1000 and 80")
    return names, templates, "open_clip.zero_shot_metadata (IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES)"


def imagenet_task(data_root: str | None = None, overrides: dict | None = None, **_):
    return build_task(TASK_ID, family_root(data_root, (overrides or {}).get(TASK_ID)))


def imagenet_toy_task(data_root: str | None = None, overrides: dict | None = None, **_):
    """The same task on the generated tree (tasks/shift/generate.py): the quickstart's stand-in."""
    from .generate import toy_family

    return build_task(TOY_TASK_ID, toy_family())


def build_task(task_id: str, root: Path):
    from harness.data import ImageClassificationDataset
    from harness.types import Task

    data = _read_all(str(root))
    splits = data["splits"]
    return Task(
        name=task_id, kind=CLASSIFICATION, group="shift/imagenet", num_classes=1000,
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v, name=f"{task_id}:{k}")) for k, v in splits.items()},
        metric="top1", tune_splits=("train_tune", "minival"), final_splits=("train", "val"),
        union_splits={"train": ("train_tune", "minival")}, hflip_ok=True, source=str(root),
        class_text=imagenet_class_text, split_provenance=data["provenance"],
        eval_sets=eval_sets(data["real"], data["real_source"]),
    )


# -- bob data verify -------------------------------------------------------------------------------------
def check(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False):
    from tasks.suites import TaskCheck

    root = override or data_root
    chk = TaskCheck(task_id, str(Path(root).expanduser()) if root else None)
    if not root:
        chk.problems.append("no data root given")
        chk.fix = "pass --root DIR (or set BOB_DATA); `bob data prepare shift` shows the layout"
        return chk
    try:
        data = _read_all(str(family_root(data_root, override)))
    except BobError as exc:
        chk.problems.append(str(exc))
        chk.fix = "repair the folder named above (`bob data prepare shift` shows the layout)"
        return chk
    for name, samples in data["splits"].items():
        chk.counts[name] = len(samples)
    chk.counts["real_labelled"] = sum(1 for s in data["real"] if s)
    chk.counts["train_classes"] = len({s.label for s in data["splits"]["train"]})  # 1000 on the real dataset
    if open_images and not chk.problems:
        from harness.data import open_rgb

        for name, samples in data["splits"].items():
            for s in samples[:: max(1, len(samples) // 200)]:  # a sample of each split: listing is checked in full above
                try:
                    open_rgb(s)
                except BobError as exc:
                    chk.problems.append(str(exc))
                    break
    if chk.problems and not chk.fix:
        chk.fix = "complete the dataset (`bob data prepare shift` shows the layout)"
    return chk


TASKS.add(TASK_ID, imagenet_task, kind=CLASSIFICATION, group="shift/imagenet", suite="shift", num_classes=1000, metric="ood_top1",
          description="ImageNet-1k train -> val, ImageNetV2 (3), -Sketch, -R and -A (200-way masked + strict), ReaL (ID)",
          class_names=True)
TASKS.add(TOY_TASK_ID, imagenet_toy_task, kind=CLASSIFICATION, group="shift/imagenet", suite="shift", num_classes=1000, metric="ood_top1",
          description="shift/imagenet on a generated tree in the released layouts (1000 wnid folders, a few classes with images)",
          class_names=True)
declare_group("imagenet", title="ImageNet shifts", tasks=[TASK_ID, TOY_TASK_ID])
declare_checker(TASK_ID, check, PREPARE_NOTES)


def _check_toy(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False):
    from .generate import toy_family

    return check(task_id, None, str(toy_family()), open_images)


declare_checker(TOY_TASK_ID, _check_toy)
