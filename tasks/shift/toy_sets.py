"""Generated sets in the real layouts of DomainBed, VisDA-2017 and Sim10k -> Cityscapes.

Why: the readers, the splits and the scoring must run end to end on a CPU in seconds with no
download, on files laid out exactly as the released datasets are. Each set is written once per
version into ``$BOB_CACHE/data`` (atomically, ``harness.atomic.generated_folder``) and is the
same on every machine (fixed NumPy seeds).

- DomainBed: three domains (``cartoon``, ``photo``, ``sketch``) of the same four shape classes,
  drawn in each domain's style: ``<root>/<domain>/<class>/<image>.png``;
- VisDA-2017: ``train/`` (flat "renders") and ``validation/`` (noisy "photos") of VisDA's twelve
  classes, each with its ``image_list.txt`` (``<class>/<file> <label>``);
- Sim10k -> Cityscapes: ``VOC2012/{JPEGImages,Annotations,ImageSets/Main}`` with VOC xml boxes of
  cars (and persons), and ``leftImg8bit/val/<city>/*_leftImg8bit.png`` with
  ``gtFine/val/<city>/*_gtFine_polygons.json`` polygons.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

VERSION = 1
SHAPES = ("circle", "cross", "square", "triangle")
VISDA_CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant", "skateboard", "train", "truck")


def data_home() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "data"


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    unit = {"square": [(-1, -1), (1, -1), (1, 1), (-1, 1)], "triangle": [(0, -1.15), (1, 0.85), (-1, 0.85)],
            "circle": [(math.cos(t), math.sin(t)) for t in (i * 2 * math.pi / 24 for i in range(24))],
            "cross": [(-0.35, -1), (0.35, -1), (0.35, -0.35), (1, -0.35), (1, 0.35), (0.35, 0.35), (0.35, 1), (-0.35, 1),
                      (-0.35, 0.35), (-1, 0.35), (-1, -0.35), (-0.35, -0.35)]}[kind]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in unit]


def draw_shape(kind: str, style: str, rng, size: int = 32):
    """One image of ``kind`` in a domain's ``style`` (photo: textured, cartoon: flat, sketch: outline)."""
    from PIL import Image, ImageDraw

    if style == "photo":
        base = rng.randint(60, 160, size=3)
        pixels = (base + rng.randint(-50, 50, size=(size, size, 3))).clip(0, 255).astype("uint8")
        im = Image.fromarray(pixels, "RGB")
    else:
        im = Image.new("RGB", (size, size), (255, 255, 255) if style == "sketch" else tuple(int(v) for v in rng.randint(150, 255, size=3)))
    draw = ImageDraw.Draw(im)
    r = rng.uniform(size * 0.22, size * 0.34)
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    poly = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi) if kind != "circle" else 0.0)
    colour = tuple(int(v) for v in rng.randint(0, 120, size=3))
    if style == "sketch":
        draw.line(poly + [poly[0]], fill=(0, 0, 0), width=2)
    elif style == "cartoon":
        draw.polygon(poly, fill=colour, outline=(0, 0, 0))
    else:
        draw.polygon(poly, fill=tuple(min(255, c + int(rng.randint(0, 60))) for c in colour))
    return im


# -- DomainBed ---------------------------------------------------------------------------------------
DOMAINBED_PER_CLASS = 10


def write_domainbed(root: Path, domains=("cartoon", "photo", "sketch"), classes=SHAPES, per_class: int = DOMAINBED_PER_CLASS, seed: int = 0) -> Path:
    """``root/<domain>/<class>/<nnn>.png``: the DomainBed layout."""
    import numpy as np

    for d, domain in enumerate(domains):
        rng = np.random.RandomState(seed * 1000 + d)
        for kind in classes:
            folder = Path(root) / domain / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                draw_shape(kind, domain if domain in ("photo", "cartoon", "sketch") else "photo", rng).save(folder / f"{kind}_{i:03d}.png")
    return Path(root)


def ensure_domainbed_toy() -> Path:
    from harness.atomic import generated_folder

    def write(tmp: Path) -> None:
        write_domainbed(tmp)
        (tmp / ".complete").write_text(f"bob domainbed toy v{VERSION}\n")

    return generated_folder(data_home() / f"domainbed-toy-v{VERSION}", ".complete", write, "DomainBed-layout toy set")


# -- VisDA-2017 --------------------------------------------------------------------------------------
VISDA_COLOURS = ((200, 40, 40), (40, 170, 60), (50, 70, 220))
VISDA_PER_CLASS = {"train": 8, "validation": 5}


def _visda_image(label: int, real: bool, rng, size: int = 32):
    """Class ``label`` = a shape (4) in a colour (3). Synthetic: flat render on grey; Real: textured, noisy."""
    from PIL import Image, ImageDraw

    kind, colour = SHAPES[label // 3], VISDA_COLOURS[label % 3]
    if real:
        pixels = (rng.randint(70, 190, size=3) + rng.randint(-60, 60, size=(size, size, 3))).clip(0, 255).astype("uint8")
        im = Image.fromarray(pixels, "RGB")
        colour = tuple(int(min(255, max(0, c + rng.randint(-40, 40)))) for c in colour)
    else:
        im = Image.new("RGB", (size, size), (128, 128, 128))
    r = rng.uniform(size * 0.25, size * 0.36)
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    ImageDraw.Draw(im).polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi) if kind != "circle" else 0.0), fill=colour)
    return im


def write_visda(root: Path, per_class: dict | None = None, seed: int = 0) -> Path:
    """``root/{train,validation}/<class>/<file>`` + ``image_list.txt`` (``<class>/<file> <label>``), VisDA's layout."""
    import numpy as np

    per_class = per_class or VISDA_PER_CLASS
    for s, split in enumerate(("train", "validation")):
        rng = np.random.RandomState(seed * 100 + s)
        lines = []
        for label, cls in enumerate(VISDA_CLASSES):
            (Path(root) / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class[split]):
                rel = f"{cls}/{'src_1' if split == 'train' else cls}_{i:05d}.{'png' if split == 'train' else 'jpg'}"
                _visda_image(label, split == "validation", rng).save(Path(root) / split / rel)
                lines.append(f"{rel} {label}")
        (Path(root) / split / "image_list.txt").write_text("\n".join(lines) + "\n")
    return Path(root)


def ensure_visda_toy() -> Path:
    from harness.atomic import generated_folder

    def write(tmp: Path) -> None:
        write_visda(tmp)
        (tmp / ".complete").write_text(f"bob visda toy v{VERSION}\n")

    return generated_folder(data_home() / f"visda-toy-v{VERSION}", ".complete", write, "VisDA-2017-layout toy set")


# -- Sim10k -> Cityscapes ----------------------------------------------------------------------------
SIM_SIZE = (96, 64)  # width, height
SIM10K_IMAGES, CITYSCAPES_IMAGES = 24, 10


def _street(rng, real: bool, n_cars: int, n_people: int):
    """A street scene: cars (wide boxes with dark windows) and people (tall thin boxes). Returns the
    image and the objects as (name, polygon). Synthetic: flat colours; real: noise and texture."""
    from PIL import Image, ImageDraw

    w, h = SIM_SIZE
    if real:
        pixels = (rng.randint(80, 170, size=3) + rng.randint(-45, 45, size=(h, w, 3))).clip(0, 255).astype("uint8")
        im = Image.fromarray(pixels, "RGB")
    else:
        im = Image.new("RGB", (w, h), (110, 110, 120))
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, int(h * 0.6), w, h], fill=(70, 70, 70) if not real else (60, 62, 58))
    objects, placed = [], []
    for name, count in (("car", n_cars), ("person", n_people)):
        for _ in range(count):
            for _ in range(40):
                bw, bh = (rng.randint(18, 30), rng.randint(10, 16)) if name == "car" else (rng.randint(4, 7), rng.randint(12, 20))
                x, y = rng.randint(1, w - bw - 1), rng.randint(int(h * 0.35), h - bh - 1)
                if all(x + bw + 2 < a or a + c + 2 < x or y + bh + 2 < b or b + d + 2 < y for a, b, c, d in placed):
                    break
            placed.append((x, y, bw, bh))
            colour = tuple(int(v) for v in rng.randint(120, 255, size=3)) if name == "car" else (30, 30, 160)
            draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=colour)
            if name == "car":
                draw.rectangle([x + 3, y + 2, x + bw - 4, y + bh // 2 - 1], fill=(20, 20, 30))
            objects.append((name, [(x, y), (x + bw - 1, y), (x + bw - 1, y + bh - 1), (x, y + bh - 1)]))
    return im, objects


def write_sim10k(root: Path, n: int = SIM10K_IMAGES, seed: int = 0) -> Path:
    """``root/VOC2012/{JPEGImages,Annotations}``: Sim10k's layout, VOC xml with 1-based inclusive corners."""
    import numpy as np

    rng = np.random.RandomState(seed)
    voc = Path(root) / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        stem = f"{3384645 + i * 7}"
        im, objects = _street(rng, False, int(rng.randint(1, 4)), int(rng.randint(0, 2)))
        im.save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
        (voc / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", SIM_SIZE, objects))
    return Path(root)


def voc_xml(file_name: str, size: tuple[int, int], objects: list) -> str:
    """A Pascal VOC annotation as Sim10k ships it (pixel polygons -> 1-based inclusive corners)."""
    parts = [f"<annotation><folder>VOC2012</folder><filename>{file_name}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, poly in objects:
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
                     f"<bndbox><xmin>{min(xs) + 1}</xmin><ymin>{min(ys) + 1}</ymin><xmax>{max(xs) + 1}</xmax><ymax>{max(ys) + 1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def write_cityscapes(root: Path, n: int = CITYSCAPES_IMAGES, seed: int = 1, city: str = "frankfurt") -> Path:
    """``root/leftImg8bit/val/<city>/*_leftImg8bit.png`` + ``root/gtFine/val/<city>/*_gtFine_polygons.json``."""
    import json

    import numpy as np

    rng = np.random.RandomState(seed)
    images, gts = Path(root) / "leftImg8bit" / "val" / city, Path(root) / "gtFine" / "val" / city
    images.mkdir(parents=True, exist_ok=True)
    gts.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        stem = f"{city}_000000_{i * 19:06d}"
        im, objects = _street(rng, True, int(rng.randint(1, 4)), int(rng.randint(0, 3)))
        im.save(images / f"{stem}_leftImg8bit.png")
        objs = [{"label": name, "polygon": [list(p) for p in poly]} for name, poly in objects]
        if i % 4 == 0:  # a group of cars too crowded to outline one by one, as Cityscapes marks them
            objs.append({"label": "cargroup", "polygon": [[2, 2], [14, 2], [14, 8], [2, 8]]})
        objs.append({"label": "road", "polygon": [[0, int(SIM_SIZE[1] * 0.6)], [SIM_SIZE[0] - 1, int(SIM_SIZE[1] * 0.6)],
                                                  [SIM_SIZE[0] - 1, SIM_SIZE[1] - 1], [0, SIM_SIZE[1] - 1]]})
        (gts / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": SIM_SIZE[1], "imgWidth": SIM_SIZE[0], "objects": objs}))
    return Path(root)


def ensure_sim10k_toy() -> Path:
    from harness.atomic import generated_folder

    def write(tmp: Path) -> None:
        write_sim10k(tmp / "sim10k")
        write_cityscapes(tmp / "cityscapes")
        (tmp / ".complete").write_text(f"bob sim10k/cityscapes toy v{VERSION}\n")

    return generated_folder(data_home() / f"sim10k-cityscapes-toy-v{VERSION}", ".complete", write, "Sim10k/Cityscapes-layout toy pair")
