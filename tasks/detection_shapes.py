"""``lvis/shapes``: generated coloured shapes written as a real LVIS dataset (json + PNG files).

Why: the detection path (reader, detector training, the official evaluator) must run end to end
on a CPU in minutes with no download. The set follows LVIS's rules, so everything LVIS-specific is
exercised: frequency groups defined by the number of *training images* a category appears in
(rare 1-10, common 11-100, frequent > 100), federated labels (``neg_category_ids``: verified
absent; ``not_exhaustive_category_ids``: present, not every instance boxed), polygon masks, and
an open-vocabulary split (the rare categories are the novel ones). Generated once per version
into ``$BOB_CACHE/data`` (atomically), identical on every machine.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from harness.registry import TASKS
from harness.types import DETECTION

from .lvis import DETECTION_METRICS

VERSION = 1
SIZE = 96
CATEGORIES = [  # id, name, shape, colour, frequency, training images it appears in
    (1, "red_square", "square", (230, 40, 40), "f", 150),
    (2, "green_triangle", "triangle", (40, 210, 60), "f", 140),
    (3, "blue_ellipse", "ellipse", (50, 80, 240), "c", 60),
    (4, "yellow_square", "square", (235, 220, 40), "c", 40),
    (5, "magenta_triangle", "triangle", (220, 50, 220), "r", 8),
    (6, "cyan_ellipse", "ellipse", (40, 220, 230), "r", 6),
]
SPLITS = {"train": 240, "val": 60}


def shapes_root() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "data" / f"lvis-shapes-v{VERSION}"


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    unit = {"square": [(-1, -1), (1, -1), (1, 1), (-1, 1)], "triangle": [(0, -1.15), (1, 0.85), (-1, 0.85)],
            "ellipse": [(math.cos(t), 0.65 * math.sin(t)) for t in (i * 2 * math.pi / 20 for i in range(20))]}[shape]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in unit]


def _plan(split: str, rng) -> list[list[int]]:
    """Category ids per image. Training: each category in exactly its quota of images (which fixes
    its LVIS frequency); validation: every category in about a third of the images."""
    n = SPLITS[split]
    images: list[list[int]] = [[] for _ in range(n)]
    for cid, *_, quota in CATEGORIES:
        count = quota if split == "train" else max(8, n // 3)
        for i in rng.choice(n, size=min(count, n), replace=False):
            images[i].append(cid)
    for objs in images:
        if not objs:
            objs.append(int(rng.choice([1, 2])))
        rng.shuffle(objs)
    return images


def _write_split(root: Path, split: str, seed: int) -> dict:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.RandomState(seed)
    by_id = {c[0]: c for c in CATEGORIES}
    images, annotations = [], []
    (root / split).mkdir(parents=True, exist_ok=True)
    for index, cids in enumerate(_plan(split, rng)):
        image_id = index + 1 + (0 if split == "train" else 100_000)
        noise = rng.randint(0, 40, size=(SIZE, SIZE, 3)).astype("uint8")
        im = Image.fromarray(noise, "RGB")
        draw = ImageDraw.Draw(im)
        placed: list[tuple[float, float, float]] = []
        for cid in cids:
            _, name, shape, colour, _, _ = by_id[cid]
            for _ in range(50):  # rejection sampling: shapes do not overlap
                r = rng.uniform(7.0, 16.0)
                cx, cy = rng.uniform(r + 2, SIZE - r - 2, size=2)
                if all(math.hypot(cx - x, cy - y) > r + q + 3 for x, y, q in placed):
                    break
            placed.append((cx, cy, r))
            poly = _polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi) if shape != "ellipse" else rng.uniform(0, math.pi))
            poly = [(min(max(x, 0.0), SIZE - 1.0), min(max(y, 0.0), SIZE - 1.0)) for x, y in poly]
            draw.polygon(poly, fill=colour)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            box = [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
            annotations.append({"id": len(annotations) + 1 + (0 if split == "train" else 1_000_000), "image_id": image_id, "category_id": cid,
                                "bbox": box, "area": round(box[2] * box[3], 2), "segmentation": [[round(v, 2) for p in poly for v in p]]})
        absent = [c[0] for c in CATEGORIES if c[0] not in cids]
        negatives = sorted(int(c) for c in absent if rng.rand() < 0.7)  # federated: only some absences are verified
        not_exhaustive = [int(cids[0])] if rng.rand() < 0.05 else []
        file_name = f"{split}/{image_id:06d}.png"
        im.save(root / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE, "neg_category_ids": negatives,
                       "not_exhaustive_category_ids": not_exhaustive})
    counts = {cid: len({a["image_id"] for a in annotations if a["category_id"] == cid}) for cid in by_id}
    categories = [{"id": cid, "name": name, "synonyms": [name], "frequency": freq, "image_count": counts[cid] if split == "train" else None,
                   "instance_count": sum(a["category_id"] == cid for a in annotations)}
                  for cid, name, _, _, freq, _ in CATEGORIES]
    return {"info": {"description": f"bob lvis/shapes v{VERSION} ({split})"}, "images": images, "annotations": annotations, "categories": categories}


def ensure_shapes_dataset() -> Path:
    """The generated set's folder (``{train,val}.json`` + ``{train,val}/*.png``), written once, atomically."""
    from harness.atomic import generated_folder

    def write(tmp: Path) -> None:
        for seed, split in enumerate(SPLITS):
            (tmp / f"{split}.json").write_text(json.dumps(_write_split(tmp, split, seed)))

    return generated_folder(shapes_root(), "val.json", write, "lvis/shapes dataset")


def shapes_task(data_root=None, **_):
    from .lvis import load_detection_task

    root = ensure_shapes_dataset()
    return load_detection_task("lvis/shapes", "lvis", {s: (root / f"{s}.json", root) for s in SPLITS}, "detection/shapes")


TASKS.add("lvis/shapes", shapes_task, kind=DETECTION, group="detection/shapes", suite="detection", metric="AP", metrics=DETECTION_METRICS,
          class_names=True, description="generated coloured shapes as an LVIS set: 6 categories (2 rare), 240 train / 60 val images of 96 px")
