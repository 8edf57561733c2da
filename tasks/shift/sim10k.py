"""Sim10k -> Cityscapes: detection of ``car`` trained on game renders, evaluated on real streets.

Layouts as released:

- **Sim10k** (``repro_10k_images.tgz`` + ``repro_10k_annotations.tgz``): ``<root>/sim10k/VOC2012/
  JPEGImages/<id>.jpg`` and ``Annotations/<id>.xml`` (Pascal VOC xml). Every image is used (as the
  domain-adaptive detection papers do); only ``car`` boxes are kept. VOC corners are 1-based and
  inclusive: ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` in COCO's ``[x, y, w, h]``.
  An xml with no ``car`` box is an error (it would train on background only): remove the image.
- **Cityscapes** val (500 images): ``<root>/cityscapes/leftImg8bit/val/<city>/*_leftImg8bit.png``
  with either the common COCO-format conversion ``annotations/instancesonly_filtered_gtFine_val.json``
  (Detectron's cityscapes-to-COCO script: boxes of the visible instance masks), which is preferred
  when present, or the ``gtFine/val/<city>/*_gtFine_polygons.json`` files, whose ``car`` polygons
  give the boxes (their extent; an occluded car's polygon is its visible part) and whose
  ``cargroup`` polygons become crowd regions (ignored by the evaluator, as COCO does).

Scored by pycocotools (``coco`` protocol) on the one category: AP (0.5:0.95) and AP50. The
record's ``task_meta.source`` says which Cityscapes annotation was read. This module stays
import-light (``bob list`` imports it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.errors import BobError
from harness.registry import TASKS
from harness.suites import register_suite
from harness.types import DETECTION

CAR = {"id": 1, "name": "car"}
SIM10K_FOLDERS = ("sim10k", "Sim10k", "SIM10K")
CITYSCAPES_FOLDERS = ("cityscapes", "Cityscapes", "CityScapes")
COCO_CONVERSION = "annotations/instancesonly_filtered_gtFine_val.json"
TASK = "shift/sim10k_cityscapes"


# -- Sim10k (VOC xml) ----------------------------------------------------------------------------------
def _voc_root(folder: Path) -> Path:
    for candidate in (folder / "VOC2012", folder):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise BobError(f"{folder}: no Sim10k annotations (looked for {folder / 'VOC2012' / 'Annotations'}); unpack repro_10k_images.tgz and "
                   "repro_10k_annotations.tgz there (VOC2012/JPEGImages + VOC2012/Annotations)")


def read_voc_xml(path: Path) -> dict[str, Any]:
    """``{file_name, width, height, boxes: [(name, [x, y, w, h])]}`` of one VOC annotation."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise BobError(f"{path}: not a Pascal VOC xml ({exc}); re-extract the annotation archive or remove the file") from None
    try:
        size = root.find("size")
        width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            x, y = max(0.0, x1 - 1), max(0.0, y1 - 1)
            w, h = min(float(width), x2) - x, min(float(height), y2) - y
            boxes.append(((obj.findtext("name") or "").strip().lower(), [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]))
    except (AttributeError, TypeError, ValueError):
        raise BobError(f"{path}: a VOC xml needs <size><width>/<height> and <object><name>/<bndbox> with xmin, ymin, xmax, ymax") from None
    return {"file_name": (root.findtext("filename") or f"{path.stem}.jpg").strip(), "width": width, "height": height, "boxes": boxes}


def read_sim10k(folder: Path) -> tuple[dict[str, Any], dict[int, Path]]:
    """Sim10k as a COCO-format dict (category ``car`` only) and image id -> file."""
    voc = _voc_root(Path(folder))
    xmls = sorted((voc / "Annotations").glob("*.xml"))
    if not xmls:
        raise BobError(f"{voc / 'Annotations'}: holds no .xml files; unpack repro_10k_annotations.tgz there")
    images, annotations, files = [], [], {}
    for image_id, path in enumerate(xmls, 1):
        ann = read_voc_xml(path)
        cars = [box for name, box in ann["boxes"] if name == "car" and box[2] > 0 and box[3] > 0]
        if not cars:
            raise BobError(f"{path}: has no 'car' box (objects: {', '.join(sorted({n for n, _ in ann['boxes']})) or 'none'}); "
                           "Sim10k -> Cityscapes trains on cars only: delete this xml (and its image) from the Sim10k folder")
        image = voc / "JPEGImages" / ann["file_name"]
        if not image.is_file():
            raise BobError(f"{path}: its image {image} does not exist; unpack repro_10k_images.tgz into {voc}")
        files[image_id] = image
        images.append({"id": image_id, "file_name": ann["file_name"], "width": ann["width"], "height": ann["height"]})
        for box in cars:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CAR["id"], "bbox": box,
                                "area": round(box[2] * box[3], 2), "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [dict(CAR)]}, files


# -- Cityscapes --------------------------------------------------------------------------------------
def _polygon_box(points: list, width: int, height: int) -> list[float]:
    xs = [min(max(float(p[0]), 0.0), float(width)) for p in points]
    ys = [min(max(float(p[1]), 0.0), float(height)) for p in points]
    return [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


def read_cityscapes_polygons(folder: Path, split: str = "val") -> tuple[dict[str, Any], dict[int, Path]]:
    """``gtFine/<split>/<city>/*_gtFine_polygons.json`` -> COCO-format ``car`` boxes (``cargroup`` as crowd)."""
    gt_files = sorted((folder / "gtFine" / split).glob("*/*_gtFine_polygons.json"))
    if not gt_files:
        raise BobError(f"{folder}: no Cityscapes annotations (neither {folder / COCO_CONVERSION} nor {folder}/gtFine/{split}/<city>/"
                       "*_gtFine_polygons.json); unpack gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip there")
    images, annotations, files = [], [], {}
    for image_id, path in enumerate(gt_files, 1):
        try:
            gt = json.loads(path.read_text(encoding="utf-8"))
            width, height, objects = int(gt["imgWidth"]), int(gt["imgHeight"]), list(gt["objects"])
        except (ValueError, KeyError, TypeError):
            raise BobError(f"{path}: not a Cityscapes polygon file (needs imgWidth, imgHeight and objects); re-extract gtFine") from None
        stem = path.name.replace("_gtFine_polygons.json", "")
        rel = f"{path.parent.name}/{stem}_leftImg8bit.png"
        image = folder / "leftImg8bit" / split / rel
        if not image.is_file():
            raise BobError(f"{path}: its image {image} does not exist; unpack leftImg8bit_trainvaltest.zip into {folder}")
        files[image_id] = image
        images.append({"id": image_id, "file_name": rel, "width": width, "height": height})
        for obj in objects:
            label = obj.get("label")
            if label not in ("car", "cargroup") or obj.get("deleted"):
                continue
            box = _polygon_box(obj.get("polygon") or [], width, height) if obj.get("polygon") else None
            if box and box[2] > 0 and box[3] > 0:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CAR["id"], "bbox": box,
                                    "area": round(box[2] * box[3], 2), "iscrowd": int(label == "cargroup")})
    return {"images": images, "annotations": annotations, "categories": [dict(CAR)]}, files


def read_cityscapes_coco(folder: Path, json_path: Path, split: str = "val") -> tuple[dict[str, Any], dict[int, Path]]:
    """The COCO-format conversion, reduced to ``car`` (renumbered to id 1); images under ``leftImg8bit/<split>``."""
    from tasks.jsonfile import read_json

    data = read_json(json_path, f"Cityscapes annotations {json_path} do not exist")
    cars = [c["id"] for c in data.get("categories", []) if isinstance(c, dict) and c.get("name") == "car"]
    if not cars:
        raise BobError(f"{json_path}: has no category named 'car'; use the cityscapes-to-COCO conversion with Cityscapes' instance classes")
    anns = [{**a, "category_id": CAR["id"], "iscrowd": int(a.get("iscrowd", 0))} for a in data["annotations"] if a.get("category_id") == cars[0]]
    gt = {"images": data["images"], "annotations": anns, "categories": [dict(CAR)]}
    files = {}
    for i, img in enumerate(gt["images"]):
        name = Path(str(img.get("file_name", "")))
        city = name.name.split("_")[0]
        candidates = (folder / "leftImg8bit" / split / name, folder / "leftImg8bit" / split / city / name.name, folder / "images" / name.name)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise BobError(f"{json_path}: images[{i}]: image {name} is in none of {folder}/leftImg8bit/{split}/<city>/ or {folder}/images/; "
                           "unpack leftImg8bit_trainvaltest.zip there")
        files[img["id"]] = found
    return gt, files


def read_cityscapes(folder: Path) -> tuple[dict[str, Any], dict[int, Path], str]:
    coco = folder / COCO_CONVERSION
    if coco.is_file():
        return (*read_cityscapes_coco(folder, coco), f"{coco} (COCO-format conversion, category car)")
    return (*read_cityscapes_polygons(folder), f"{folder}/gtFine/val/*/*_gtFine_polygons.json (car polygons' extent; cargroup = crowd)")


# -- the task --------------------------------------------------------------------------------------
def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def locate(name: str, data_root: str | None, overrides: dict | None) -> tuple[Path, Path]:
    """(Sim10k folder, Cityscapes folder): ``--data-path sim10k_cityscapes=<sim10k>@<cityscapes>`` or the data root."""
    override = (overrides or {}).get(name)
    if override:
        sim, sep, city = override.partition("@")
        if not sep:
            raise BobError(f"--data-path {name}={override}: give both folders, {name}=<sim10k folder>@<cityscapes folder>")
        return Path(sim).expanduser(), Path(city).expanduser()
    if name.endswith("/toy"):
        from .toy_sets import ensure_sim10k_toy

        root = ensure_sim10k_toy()
        return root / "sim10k", root / "cityscapes"
    root = data_root or os.environ.get("BOB_DATA")
    if not root:
        raise BobError(f"task {name}: no data root; pass --data-root (or BOB_DATA) holding sim10k/ and cityscapes/, "
                       f"or --data-path {name}=<sim10k folder>@<cityscapes folder>")
    sim, city = _find(Path(root), SIM10K_FOLDERS), _find(Path(root), CITYSCAPES_FOLDERS)
    if sim is None or city is None:
        missing = "sim10k/" if sim is None else "cityscapes/"
        raise BobError(f"task {name}: {Path(root) / missing} does not exist; put Sim10k (VOC2012/) and Cityscapes (leftImg8bit/, gtFine/) "
                       f"under {root}, or pass --data-path {name}=<sim10k folder>@<cityscapes folder>")
    return sim, city


def build_task(name: str, data_root: str | None = None, overrides: dict | None = None, **_):
    from tasks.lvis import DetectionSplit, DetectionTask, check_detection_dataset

    sim, city = locate(name, data_root, overrides)
    train_gt, train_files = read_sim10k(sim)
    val_gt, val_files, val_source = read_cityscapes(city)
    check_detection_dataset(train_gt, str(sim), "coco")
    check_detection_dataset(val_gt, val_source.split(" ")[0], "coco")
    return DetectionTask(
        name=name, kind=DETECTION, group="shift/ood-detection", num_classes=1, loaders={}, metric="AP", tune_splits=None,
        final_splits=("train", "val"), hflip_ok=True, source=f"train: {sim} (Sim10k, VOC xml); val: {val_source}",
        protocol="coco", split_data={"train": DetectionSplit(train_gt, train_files), "val": DetectionSplit(val_gt, val_files)},
        categories=[dict(CAR)], class_text=lambda: (["car"], ["a photo of a {c}."], "Sim10k -> Cityscapes: the one shared class"),
    )


def _factory(name: str):
    def factory(data_root=None, overrides=None, **_):
        return build_task(name, data_root, overrides)

    return factory


METRICS = {"AP": {"direction": "higher", "fmt": ".3f", "label": "car box AP 0.5:0.95 on Cityscapes val (pycocotools)"},
           "AP50": {"direction": "higher", "fmt": ".3f", "label": "car box AP at IoU 0.5 on Cityscapes val (pycocotools)"}}
for _name, _what in ((TASK, "Sim10k -> Cityscapes val: car detection trained on game renders (AP, AP50)"),
                     (f"{TASK}/toy", "generated Sim10k/Cityscapes-layout pair: car detection, rendered -> noisy streets (AP, AP50)")):
    TASKS.add(_name, _factory(_name), kind=DETECTION, group="shift/ood-detection", suite="shift", metric="AP", metrics=METRICS, class_names=True, description=_what)
register_suite("sim10k_cityscapes", title="Sim10k -> Cityscapes (car)", rule="mean_of_tasks", group_columns=True,
               caption="Car detection trained on Sim10k, box AP on Cityscapes val (pycocotools)",
               groups=[{"name": "ap", "title": "AP", "tasks": [TASK]}, {"name": "ap50", "title": "AP50", "tasks": [TASK], "metric": "AP50"}])
PREPARE_NOTES = """Sim10k -> Cityscapes (car): <root>/sim10k/VOC2012/{JPEGImages,Annotations} (repro_10k_images.tgz + repro_10k_annotations.tgz)
  and <root>/cityscapes/leftImg8bit/val/<city>/ with gtFine/val/<city>/*_gtFine_polygons.json (or annotations/instancesonly_filtered_gtFine_val.json)"""


def _declare_shift() -> None:
    from .datacheck import checker
    from .suite import declare_checker, declare_group

    tasks = [TASK, f"{TASK}/toy"]
    declare_group("ood_detection", title="OOD detection", tasks=tasks, metric="AP")
    check = checker(locate, build_task, "put Sim10k and Cityscapes under the data root (`bob data prepare shift` shows the layout)")
    for i, task in enumerate(tasks):
        declare_checker(task, check, PREPARE_NOTES if i == 0 else "")


_declare_shift()
