"""Generated retrieval sets in the real layouts, so the whole family runs offline in seconds.

- ``revisited/``: a tiny revisited-Oxford-style set: 4 "landmarks" (a fixed arrangement of coloured
  polygons each), database views of each that are easy (large, clear), hard (small, partly
  occluded, darker) or junk (a sliver of the landmark), clutter-only images, and 2 queries per
  landmark whose object sits inside clutter at a known box. Written as revisitop writes it:
  ``gnd_toyrevisited.pkl`` (imlist, qimlist, gnd with bbx / easy / hard / junk) + ``jpg/*.jpg``.
- ``revisitop1m/``: a few clutter images in the 1M distractors' layout (``revisitop1m.txt`` + ``jpg/``).
- ``classes/``: a class-folder tree (6 classes x 10 images) for BoB's class-level split.

Written once per version into ``$BOB_CACHE/data`` (atomically), identical on every machine.
"""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

VERSION = 1
WIDTH, HEIGHT = 96, 72
LANDMARKS = 4
VIEWS = {"easy": 4, "hard": 3, "junk": 2}
CLUTTER = 16
QUERIES_PER_LANDMARK = 2
DISTRACTORS = 24
CLASS_SHAPES = ("square", "triangle", "ellipse")
CLASS_COLOURS = ((220, 40, 40), (40, 90, 230))
PER_CLASS = 10


def toy_root() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "data" / f"retrieval-toy-v{VERSION}"


def _unit(shape: str) -> list[tuple[float, float]]:
    if shape == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if shape == "triangle":
        return [(0, -1.1), (1, 0.8), (-1, 0.8)]
    return [(math.cos(t), 0.6 * math.sin(t)) for t in (i * 2 * math.pi / 20 for i in range(20))]


def _polygon(shape, cx, cy, r, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _unit(shape)]


def _motif(landmark: int):
    """A landmark: 5 coloured polygons at fixed places of a unit square (its 'facade')."""
    import numpy as np

    rng = np.random.RandomState(1000 + landmark)
    return [(CLASS_SHAPES[rng.randint(3)], rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.22), rng.uniform(0, math.pi),
             tuple(int(v) for v in rng.randint(60, 255, size=3))) for _ in range(5)]


def _background(rng):
    from PIL import Image, ImageDraw

    pixels = rng.randint(0, 50, size=(HEIGHT, WIDTH, 3)).astype("uint8")
    im = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(6):  # grey clutter
        g = int(rng.randint(40, 140))
        draw.polygon(_polygon(CLASS_SHAPES[rng.randint(3)], rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(4, 12), rng.uniform(0, 6)), fill=(g, g, g))
    return im, draw


def _draw_landmark(draw, motif, x0, y0, size, dim: float = 1.0):
    for shape, u, v, r, angle, colour in motif:
        draw.polygon(_polygon(shape, x0 + u * size, y0 + v * size, r * size, angle), fill=tuple(int(c * dim) for c in colour))


def _view(rng, motif, kind: str):
    """An image showing the landmark (easy / hard / junk / query) and the landmark's box."""
    from PIL import ImageDraw

    im, draw = _background(rng)
    size = {"easy": rng.uniform(52, 66), "query": rng.uniform(40, 50), "hard": rng.uniform(30, 38), "junk": rng.uniform(60, 70)}[kind]
    x0, y0 = rng.uniform(0, WIDTH - size), rng.uniform(0, HEIGHT - size)
    if kind == "junk":  # only a sliver of the facade is in the frame
        x0 = WIDTH - size * 0.25
    _draw_landmark(draw, motif, x0, y0, size, dim=0.6 if kind == "hard" else 1.0)
    if kind == "hard":  # an occluder over a third of it
        ImageDraw.Draw(im).rectangle([x0, y0, x0 + size / 3, y0 + size], fill=(30, 30, 30))
    box = (max(0.0, x0), max(0.0, y0), min(float(WIDTH), x0 + size), min(float(HEIGHT), y0 + size))
    return im, box


def _write_revisited(root: Path) -> None:
    import numpy as np

    rng = np.random.RandomState(7)
    jpg = root / "revisited" / "jpg"
    jpg.mkdir(parents=True)
    imlist, gnd = [], [{"easy": [], "hard": [], "junk": []} for _ in range(LANDMARKS * QUERIES_PER_LANDMARK)]
    entries = [(lm, kind) for lm in range(LANDMARKS) for kind, n in VIEWS.items() for _ in range(n)] + [(None, "clutter")] * CLUTTER
    for j in rng.permutation(len(entries)):
        lm, kind = entries[j]
        name = f"toy_{len(imlist):04d}"
        im = _background(rng)[0] if lm is None else _view(rng, _motif(lm), kind)[0]
        im.save(jpg / f"{name}.jpg", quality=95)
        if lm is not None:
            for q in range(QUERIES_PER_LANDMARK):
                gnd[lm * QUERIES_PER_LANDMARK + q][kind].append(len(imlist))
        imlist.append(name)
    qimlist = []
    for lm in range(LANDMARKS):
        for q in range(QUERIES_PER_LANDMARK):
            im, box = _view(rng, _motif(lm), "query")
            name = f"query_{lm}_{q}"
            im.save(jpg / f"{name}.jpg", quality=95)
            qimlist.append(name)
            gnd[lm * QUERIES_PER_LANDMARK + q]["bbx"] = [round(v, 2) for v in box]
    with open(root / "revisited" / "gnd_toyrevisited.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f, protocol=2)


def _write_distractors(root: Path) -> None:
    import numpy as np

    rng = np.random.RandomState(11)
    folder = root / "revisitop1m"
    names = []
    for i in range(DISTRACTORS):
        rel = f"{i % 3}/distractor_{i:04d}.jpg"
        (folder / "jpg" / rel).parent.mkdir(parents=True, exist_ok=True)
        _background(rng)[0].save(folder / "jpg" / rel, quality=95)
        names.append(rel)
    (folder / "revisitop1m.txt").write_text("\n".join(names) + "\n")


def _write_classes(root: Path) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.RandomState(5)
    for shape in CLASS_SHAPES:
        for colour in CLASS_COLOURS:
            cls = f"{shape}_{'red' if colour[0] > 100 else 'blue'}"
            (root / "classes" / cls).mkdir(parents=True)
            for i in range(PER_CLASS):
                im = Image.fromarray(rng.randint(0, 40, size=(48, 48, 3)).astype("uint8"), "RGB")
                jitter = tuple(int(np.clip(c + rng.randint(-30, 30), 0, 255)) for c in colour)
                ImageDraw.Draw(im).polygon(_polygon(shape, rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(9, 14), rng.uniform(0, 0.6)), fill=jitter)
                im.save(root / "classes" / cls / f"{i:03d}.png")


def ensure_toy_sets() -> Path:
    """The generated sets' root (written once, atomically)."""
    from harness.atomic import generated_folder

    def write(tmp: Path) -> None:
        _write_revisited(tmp)
        _write_distractors(tmp)
        _write_classes(tmp)
        (tmp / "DONE").write_text(f"bob retrieval toy sets v{VERSION}\n")

    return generated_folder(toy_root(), "DONE", write, "retrieval toy sets")
