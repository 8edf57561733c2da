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
import json
import sys
import types
from pathlib import Path
from typing import Any

from harness.errors import BobError

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
    path = Path(path)
    if not path.is_file():
        raise BobError(f"{kind} annotations {path} do not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BobError(f"{path}: not valid JSON ({exc})") from None
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
