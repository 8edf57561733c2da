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
