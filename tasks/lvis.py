"""LVIS and COCO detection data: the official annotation json, checked, and scored by the official
evaluators (``lvis`` for LVIS, ``pycocotools`` for COCO), plus Dave et al.'s fixed AP.

Why the care: the released ``lvis`` 0.5.3 has defects bob must not inherit:
- ``import lvis`` imports ``lvis.vis``, which imports ``cv2`` and matplotlib at import time (an
  ImportError on a headless node without libGL, seconds of import otherwise): bob registers a
  stand-in ``lvis.vis`` before importing, so scoring never touches them;
- ``LVISEval.accumulate`` uses ``np.float``, removed in numpy 2: bob gives ``lvis.eval`` a numpy
  namespace in which ``float`` exists again (the builtin float, which is what ``np.float`` was);
- ``LVISResults`` indexes ``results[0]`` and crashes on an empty detection list: a model with no
  detections is scored without the evaluator, AP = 0 by definition (no true positive);
- the evaluator reports -1 for an empty frequency group (no rare category in a subset): bob
  reports it as missing (None), never as a number.

The federated protocol is the evaluator's own: a detection of a category that is neither in the
image's annotations nor in its ``neg_category_ids`` is not evaluated; an unmatched detection of
a category in ``not_exhaustive_category_ids`` is ignored.
"""
from __future__ import annotations

import functools
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BobError
from harness.registry import TASKS, Entry
from harness.suites import register_suite
from harness.types import DETECTION, Task

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
FREQUENCIES = ("r", "c", "f")
LVIS_MAX_DETS = 300  # per image, the official LVIS setting
FIXED_AP_PER_CATEGORY = 10_000  # Dave et al. 2021: top 10k detections per category over the dataset, no per-image cap


# -- the lvis package, with its defects worked around --------------------------------------------
@functools.lru_cache(maxsize=1)
def lvis_api() -> types.SimpleNamespace:
    """``LVIS``, ``LVISResults``, ``LVISEval`` without cv2/matplotlib and with ``np.float`` restored."""
    import numpy as np

    if "lvis.vis" not in sys.modules:
        stand_in = types.ModuleType("lvis.vis")

        class LVISVis:  # noqa: D401 - visualisation is not bob's business; say so if someone reaches for it
            def __init__(self, *args, **kwargs):
                raise BobError("lvis.vis is replaced by bob (it imports cv2 at import time); import it directly in a process without bob")

        stand_in.LVISVis = LVISVis
        sys.modules["lvis.vis"] = stand_in
    try:
        import lvis.eval as lvis_eval
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError as exc:
        raise BobError(f"LVIS scoring needs the lvis package: pip install 'bob-harness[detection]' ({exc})") from None
    import logging

    logging.getLogger("lvis").setLevel(logging.ERROR)  # its per-step INFO/WARNING chatter is not the user's business
    if not hasattr(np, "float"):
        patched = types.ModuleType("numpy_with_float")
        patched.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        patched.float = float
        lvis_eval.np = patched
    return types.SimpleNamespace(LVIS=LVIS, LVISResults=LVISResults, LVISEval=LVISEval)


# -- reading and checking the annotation json ----------------------------------------------------
def load_detection_json(path: str | Path, kind: str = "lvis") -> dict[str, Any]:
    """The annotation file, checked entry by entry; every problem is one line naming the file and entry."""
    from .jsonfile import read_json

    path = Path(path)
    data = read_json(path, f"{kind} annotations {path} do not exist")
    check_detection_dataset(data, str(path), kind)
    return data


def check_detection_dataset(data: Any, where: str, kind: str = "lvis") -> None:
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise BobError(f"{where}: not an {kind.upper()} annotation file: expected lists 'images', 'annotations' and 'categories'")
    categories = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise BobError(f"{where}: categories[{i}] needs 'id' and 'name'")
        if kind == "lvis" and cat.get("frequency") not in FREQUENCIES:
            raise BobError(f"{where}: categories[{i}] ({cat['name']}) has frequency {cat.get('frequency')!r}; LVIS needs r, c or f")
        categories[cat["id"]] = cat
    images = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not {"id", "width", "height"} <= set(img):
            raise BobError(f"{where}: images[{i}] needs 'id', 'width', 'height' and a file name")
        if not (img.get("file_name") or img.get("coco_url")):
            raise BobError(f"{where}: images[{i}] (id {img['id']}) has neither 'file_name' nor 'coco_url'")
        if kind == "lvis":
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                if not isinstance(img.get(key), list):
                    raise BobError(f"{where}: images[{i}] (id {img['id']}) needs '{key}' (a list; LVIS's federated labels)")
                unknown = [c for c in img[key] if c not in categories]
                if unknown:
                    raise BobError(f"{where}: images[{i}] (id {img['id']}) {key} has unknown category id {unknown[0]}")
        images[img["id"]] = img
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= set(ann):
            raise BobError(f"{where}: annotations[{i}] needs 'image_id', 'category_id' and 'bbox'")
        if ann["image_id"] not in images:
            raise BobError(f"{where}: annotations[{i}] refers to unknown image id {ann['image_id']}")
        if ann["category_id"] not in categories:
            raise BobError(f"{where}: annotations[{i}] has unknown category id {ann['category_id']}")
        check_box(ann["bbox"], images[ann["image_id"]], f"{where}: annotations[{i}]")


def check_box(bbox: Any, image: dict, where: str, slack: float = 1.0) -> None:
    """COCO boxes are [x, y, width, height] in pixels; a box leaving the image (beyond rounding) is an error."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise BobError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise BobError(f"{where}: bbox {bbox} has a non-positive width or height")
    if x < -slack or y < -slack or x + w > image["width"] + slack or y + h > image["height"] + slack:
        raise BobError(f"{where}: bbox {bbox} lies outside image {image['id']} ({image['width']}x{image['height']})")


def image_paths(data: dict, image_dir: str | Path, where: str) -> dict[int, Path]:
    """image id -> file, from ``file_name`` or the last part of ``coco_url`` (LVIS v1 uses the COCO images)."""
    from harness.data import path_inside

    out, missing = {}, []
    for i, img in enumerate(data["images"]):
        name = img.get("file_name") or "/".join(str(img["coco_url"]).split("/")[-2:])
        path = path_inside(image_dir, name, f"{where}: images[{i}]")
        if not path.is_file():
            alt = Path(image_dir) / Path(name).name
            if not alt.is_file():
                missing.append((i, path))
                continue
            path = alt
        out[img["id"]] = path
    if missing:
        i, path = missing[0]
        raise BobError(f"{where}: images[{i}]: image {path} does not exist ({len(missing)} of {len(data['images'])} missing); check the image folder")
    return out


def open_vocabulary_split(data: dict) -> tuple[list[int], list[int]]:
    """(base, novel) category ids: LVIS's rare categories are novel (no box labels seen in training);
    866 base / 337 novel on LVIS v1."""
    novel = sorted(c["id"] for c in data["categories"] if c.get("frequency") == "r")
    base = sorted(c["id"] for c in data["categories"] if c.get("frequency") != "r")
    return base, novel


# -- scoring -------------------------------------------------------------------------------------
def _missing_groups(data: dict) -> set[str]:
    present = {c.get("frequency") for c in data["categories"]}
    return {f"AP{f}" for f in FREQUENCIES if f not in present}


def evaluate_lvis(gt: dict, detections: list[dict], iou_type: str = "bbox", max_dets: int = LVIS_MAX_DETS) -> dict[str, float | None]:
    """The official LVIS metrics (AP, AP50, AP75, APs/m/l, APr/c/f, AR@max_dets) of ``detections``
    (``[{image_id, category_id, bbox: [x, y, w, h], score}]``). ``max_dets`` < 0: no per-image cap."""
    import copy

    missing = _missing_groups(gt)
    if not detections:  # lvis crashes here; with nothing detected there is no true positive
        out: dict[str, float | None] = {k: (None if k in missing else 0.0) for k in LVIS_METRICS}
        out[f"AR@{max_dets if max_dets >= 0 else 'all'}"] = 0.0
        return out
    api = lvis_api()
    known_images = {img["id"] for img in gt["images"]}
    stray = next((d for d in detections if d["image_id"] not in known_images), None)
    if stray is not None:
        raise BobError(f"detection for image id {stray['image_id']}, which is not in the annotation set")
    lvis_gt = api.LVIS.__new__(api.LVIS)  # from the dict in memory, not a file
    lvis_gt.logger = _quiet_logger()
    lvis_gt.dataset = copy.deepcopy(gt)
    lvis_gt._create_index()
    import warnings

    with warnings.catch_warnings():  # lvis calls the deprecated Logger.warn for a results list given in memory
        warnings.simplefilter("ignore", DeprecationWarning)
        results = api.LVISResults(lvis_gt, copy.deepcopy(detections), max_dets=max_dets)
    evaluator = api.LVISEval(lvis_gt, results, iou_type)
    evaluator.params.max_dets = max_dets
    evaluator.logger = _quiet_logger()
    evaluator.run()
    raw = evaluator.get_results()
    out = {k: (None if k in missing or raw.get(k, -1) < 0 else float(raw[k])) for k in LVIS_METRICS}
    ar_key = f"AR@{max_dets}"
    out[f"AR@{max_dets if max_dets >= 0 else 'all'}"] = None if raw.get(ar_key, -1) < 0 else float(raw[ar_key])
    return out


def fixed_ap(gt: dict, detections: list[dict], per_category: int = FIXED_AP_PER_CATEGORY, iou_type: str = "bbox") -> dict[str, float | None]:
    """Dave et al. (2021) "fixed AP": no per-image cap; the top ``per_category`` detections of each
    category over the whole dataset, so AP no longer depends on how a detector spreads its budget."""
    by_category: dict[int, list[dict]] = {}
    for det in detections:
        by_category.setdefault(det["category_id"], []).append(det)
    kept = [d for dets in by_category.values() for d in sorted(dets, key=lambda d: -d["score"])[:per_category]]
    scores = evaluate_lvis(gt, kept, iou_type, max_dets=-1)
    return {f"fixed_{k}": v for k, v in scores.items() if k in LVIS_METRICS}


def evaluate_coco(gt: dict, detections: list[dict], iou_type: str = "bbox") -> dict[str, float | None]:
    """COCO's AP, AP50, AP75, APs/m/l and AR@100 through pycocotools; no detections -> AP 0."""
    import contextlib
    import copy
    import io

    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    if not detections:
        return {**{k: 0.0 for k in names}, "AR@100": 0.0}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        for ann in coco_gt.dataset["annotations"]:  # LVIS-style files have no crowd flag; COCOeval needs one
            ann.setdefault("iscrowd", 0)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    out = {k: (None if stats[i] < 0 else float(stats[i])) for i, k in enumerate(names)}
    out["AR@100"] = None if stats[8] < 0 else float(stats[8])
    return out


def _quiet_logger():
    import logging

    logger = logging.getLogger("bob.lvis")
    logger.setLevel(logging.WARNING)
    return logger


# -- tasks -----------------------------------------------------------------------------------------

DETECTION_METRICS = {
    **{k: {"direction": "higher", "fmt": ".3f", "label": f"box {k} (official evaluator)"} for k in LVIS_METRICS},
    **{f"fixed_{k}": {"direction": "higher", "fmt": ".3f", "label": f"fixed {k} (Dave et al.: top 10k per category, no per-image cap)"} for k in LVIS_METRICS},
    "AR@300": {"direction": "higher", "fmt": ".3f", "label": "average recall, 300 detections per image"},
    "AR@100": {"direction": "higher", "fmt": ".3f", "label": "average recall, 100 detections per image"},
}


@dataclass
class DetectionSplit:
    gt: dict  # the checked annotation json
    images: dict  # image id -> Path


@dataclass
class DetectionTask(Task):
    """A detection set: per split, the official annotation json and the image files. Category ids
    map to labels 1..C in sorted id order (0 is background). ``evaluate`` is the official scorer."""

    protocol: str = "lvis"  # lvis | coco
    split_data: dict = field(default_factory=dict)
    categories: list = field(default_factory=list)  # sorted by id

    def split(self, name: str) -> DetectionSplit:
        if name not in self.split_data:
            raise BobError(f"task {self.name} has no '{name}' split (splits: {', '.join(self.split_data)}); "
                           "a set given as one json is evaluation-only: add ?train=<train json> for methods that train")
        return self.split_data[name]

    @property
    def category_ids(self) -> list[int]:
        return [c["id"] for c in self.categories]

    def novel_category_ids(self) -> list[int]:
        return open_vocabulary_split({"categories": self.categories})[1]

    def evaluate(self, split: str, detections: list[dict], iou_type: str = "bbox") -> dict[str, float | None]:
        """Box metrics (and fixed AP for LVIS sets); ``iou_type='segm'`` scores the masks."""
        gt = self.split(split).gt
        if self.protocol == "coco":
            return evaluate_coco(gt, detections, iou_type)
        if iou_type == "segm":
            return evaluate_lvis(gt, detections, "segm")
        return {**evaluate_lvis(gt, detections), **fixed_ap(gt, detections)}


def load_detection_task(name: str, protocol: str, splits: dict[str, tuple[Path, Path]], group: str, val_image_ids: set | None = None) -> DetectionTask:
    """``splits``: split -> (annotation json, image folder); 'val' is reported, 'train' trains.
    ``val_image_ids``: evaluate on this subset of the val images only."""
    data = {}
    for split, (ann, image_dir) in splits.items():
        gt = load_detection_json(ann, protocol)
        if split == "val" and val_image_ids is not None:
            unknown = val_image_ids - {img["id"] for img in gt["images"]}
            if unknown:
                raise BobError(f"task {name}: image id {min(unknown)} of the subset is not in {ann}")
            gt = {**gt, "images": [i for i in gt["images"] if i["id"] in val_image_ids],
                  "annotations": [a for a in gt["annotations"] if a["image_id"] in val_image_ids]}
        data[split] = DetectionSplit(gt, image_paths(gt, image_dir, str(ann)))
    categories = sorted(next(iter(data.values())).gt["categories"], key=lambda c: c["id"])
    for split, d in data.items():
        if sorted(c["id"] for c in d.gt["categories"]) != [c["id"] for c in categories]:
            raise BobError(f"task {name}: the '{split}' annotations list other categories than the others; use one category set")
    return DetectionTask(
        name=name, kind=DETECTION, group=group, num_classes=len(categories), loaders={}, metric="AP", tune_splits=None,
        final_splits=("train" if "train" in data else "val", "val"), hflip_ok=True, source=str(splits.get("val", ("", ""))[0]),
        protocol=protocol, split_data=data, categories=categories,
        class_text=lambda: ([c["name"].replace("_", " ") for c in categories], ["a photo of a {c}."], f"{protocol} category names"),
    )


OFFICIAL_SETS = {  # task id -> (protocol, folder names under the data root, {split: (annotation json, image folder)})
    "lvis": ("lvis", ("lvis", "LVIS", "coco"), {"train": ("lvis_v1_train.json", "train2017"), "val": ("lvis_v1_val.json", "val2017")}),
    "lvis/minival": ("lvis", ("lvis", "LVIS", "coco"), {"train": ("lvis_v1_train.json", "train2017"), "val": ("lvis_v1_minival.json", "val2017")}),
    "coco": ("coco", ("coco", "COCO"), {"train": ("annotations/instances_train2017.json", "train2017"), "val": ("annotations/instances_val2017.json", "val2017")}),
}


def _official_factory(task_id: str):
    protocol, folders, files = OFFICIAL_SETS[task_id]

    def make(data_root=None, overrides: dict | None = None, **_) -> DetectionTask:
        import os

        override = (overrides or {}).get(task_id)
        if override:
            return _from_spec(task_id, protocol, override, "detection")
        root = data_root or os.environ.get("BOB_DATA")
        for folder in ([Path(root) / f for f in folders] if root else []):
            if (folder / files["val"][0]).is_file():
                splits = {s: (folder / ann, _image_folder(folder, images)) for s, (ann, images) in files.items() if (folder / ann).is_file()}
                return load_detection_task(task_id, protocol, splits, "detection")
        looked = ", ".join(str(Path(root) / f / files["val"][0]) for f in folders) if root else "no data root given (--data-root or BOB_DATA)"
        raise BobError(f"task {task_id}: data not found (looked for {looked}); put the official json and images there, "
                       f"or pass --data-path {task_id}=<val json>@<image folder>[?train=<train json>]")

    return make


def _image_folder(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder.parent / "coco" / name, folder / "images" / name):
        if candidate.is_dir():
            return candidate
    return folder / name


def _from_spec(name: str, protocol: str, spec: str, group: str) -> DetectionTask:
    """``<val json>@<image folder>[?train=<train json>[@<image folder>]][&image_ids=<file>]``; ``image_ids``
    (a text file of ids, or a json list) evaluates on that subset of the images (e.g. a minival)."""
    main, _, query = spec.partition("?")
    ann, sep, images = main.partition("@")
    image_dir = Path(images).expanduser() if sep else Path(ann).expanduser().parent
    splits = {"val": (Path(ann).expanduser(), image_dir)}
    options = dict(part.partition("=")[::2] for part in query.split("&")) if query else {}
    unknown = set(options) - {"train", "image_ids"}
    if unknown or any(not v for v in options.values()):
        raise BobError(f"task {name}: bad option in {query!r}; options: ?train=<train json>[@<image folder>] and &image_ids=<file of ids>")
    if "train" in options:
        t_ann, t_sep, t_images = options["train"].partition("@")
        splits["train"] = (Path(t_ann).expanduser(), Path(t_images).expanduser() if t_sep else image_dir)
    if not image_dir.is_dir():
        raise BobError(f"task {name}: image folder {image_dir} does not exist; write {protocol}:<annotation json>@<image folder>")
    subset = read_image_ids(Path(options["image_ids"]).expanduser()) if "image_ids" in options else None
    return load_detection_task(name, protocol, splits, f"{group}/local" if group == "detection" else group, subset)


def read_image_ids(path: Path) -> set[int]:
    from .jsonfile import read_json

    if path.suffix == ".json":
        ids = read_json(path, f"image id list {path} does not exist")
    else:
        if not path.is_file():
            raise BobError(f"image id list {path} does not exist")
        ids = path.read_text(encoding="utf-8").replace(",", " ").split()
    try:
        return {int(i) for i in ids}
    except (TypeError, ValueError):
        raise BobError(f"{path}: expected image ids (integers), one per line or a json list") from None


def _prefix_resolver(protocol: str):
    def resolve(name: str) -> Entry:
        spec = name.split(":", 1)[1]
        if not spec:
            raise BobError(f"task '{protocol}:' needs a path: {protocol}:<annotation json>@<image folder>[?train=<train json>]")
        return Entry(name, lambda data_root=None, **_: _from_spec(name, protocol, spec, "detection"),
                     {"kind": DETECTION, "group": "detection/local", "metrics": DETECTION_METRICS, "class_names": True})

    return resolve


_DESCRIPTIONS = {"lvis": "LVIS v1 val (1203 categories, federated; APr = rare / novel)", "lvis/minival": "LVIS v1 minival (5k images)",
                 "coco": "MS-COCO 2017 val (80 categories)"}
for _task_id in OFFICIAL_SETS:
    TASKS.add(_task_id, _official_factory(_task_id), kind=DETECTION, group="detection", suite="detection", metric="AP",
              metrics=DETECTION_METRICS, class_names=True, description=_DESCRIPTIONS[_task_id])
TASKS.add_prefix("lvis", _prefix_resolver("lvis"), "lvis:<annotation json>@<image folder>[?train=<train json>][&image_ids=<file>] reads a local LVIS-format set (or a subset)")
TASKS.add_prefix("coco", _prefix_resolver("coco"), "coco:<annotation json>@<image folder>[?train=<train json>] reads a local COCO-format set")

DETECTION_TASKS = ["lvis", "lvis/minival", "coco", "lvis/shapes"]
LVIS_FORMAT_TASKS = ["lvis", "lvis/minival", "lvis/shapes"]
register_suite(  # one column per headline metric; APr is the open-vocabulary (novel-class) result
    "detection", title="Detection", rule="mean_of_tasks", group_columns=True,
    caption="Detection (box AP from the official evaluators: lvis for LVIS-format sets, pycocotools for COCO; "
            "APr/APc/APf = rare/common/frequent categories, APr = novel classes for open-vocabulary methods; fixed AP = Dave et al.)",
    groups=[{"name": "ap", "title": "AP", "tasks": DETECTION_TASKS},
            {"name": "ap50", "title": "AP50", "tasks": DETECTION_TASKS, "metric": "AP50"},
            {"name": "apr", "title": "APr", "tasks": LVIS_FORMAT_TASKS, "metric": "APr"},
            {"name": "apc", "title": "APc", "tasks": LVIS_FORMAT_TASKS, "metric": "APc"},
            {"name": "apf", "title": "APf", "tasks": LVIS_FORMAT_TASKS, "metric": "APf"},
            {"name": "fixed", "title": "fixed AP", "tasks": LVIS_FORMAT_TASKS, "metric": "fixed_AP"}],
)
