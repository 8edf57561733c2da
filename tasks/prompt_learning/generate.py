"""Two small generated datasets written in the CoOp layout (``images/<class>/<n>.png`` and a
``split_zhou_<Name>.json``), read back through the same reader as the real eleven: the quickstart
grid and the tests run every protocol on them without a download.

- ``toy_colours``: six colour classes (noisy tiles of one hue with a random darker blob);
- ``toy_textures``: six texture classes (stripes at four orientations, checkerboard, dots).

12 train / 4 val / 6 test images per class, 32 px, fixed by a data seed (the cell seed only draws
the few-shot subset and seeds training). Written once into ``$BOB_CACHE/data``, atomically.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

VERSION = 1
COUNTS = {"train": 12, "val": 4, "test": 6}
SIZE = 32
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40), "purple": (140, 50, 170),
           "orange": (240, 140, 30)}
TEXTURES = ("horizontal_stripes", "vertical_stripes", "diagonal_stripes", "antidiagonal_stripes", "checkerboard", "dots")
TITLES = {"toy_colours": "ToyColours", "toy_textures": "ToyTextures"}


def toy_root() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "data" / f"prompt-learning-toy-v{VERSION}"


def _colour_image(name: str, rng):
    import numpy as np
    from PIL import Image

    base = np.array(COLOURS[name], dtype=np.float32)
    pixels = base + rng.randn(SIZE, SIZE, 3) * 18
    cy, cx, r = rng.randint(6, SIZE - 6), rng.randint(6, SIZE - 6), rng.randint(3, 7)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] *= 0.6
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"), "RGB")


def _texture_image(name: str, rng):
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    period = rng.uniform(5, 8)
    phase = rng.uniform(0, period)
    coord = {"horizontal_stripes": yy, "vertical_stripes": xx, "diagonal_stripes": xx + yy, "antidiagonal_stripes": xx - yy}.get(name)
    if coord is not None:
        pattern = ((coord + phase) % period) < period / 2
    elif name == "checkerboard":
        pattern = (((xx + phase) // (period / 2)) + ((yy + phase) // (period / 2))) % 2 == 0
    else:  # dots
        pattern = (((xx + phase) % period - period / 2) ** 2 + ((yy + phase) % period - period / 2) ** 2) < (period / 4) ** 2
    grey = np.where(pattern, 200.0, 50.0) + rng.randn(SIZE, SIZE) * 15
    return Image.fromarray(np.clip(np.stack([grey] * 3, -1), 0, 255).astype("uint8"), "RGB")


def write_toy_dataset(name: str, folder: Path) -> None:
    """``folder/images/<class>/<split>_<i>.png`` and ``folder/split_zhou_<Title>.json`` (class-major lists)."""
    import numpy as np

    classes, draw = (list(COLOURS), _colour_image) if name == "toy_colours" else (list(TEXTURES), _texture_image)
    rng = np.random.RandomState(1 + list(TITLES).index(name))
    split = {}
    for s, n in COUNTS.items():
        entries = []
        for label, cname in enumerate(classes):
            (folder / "images" / cname).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rel = f"{cname}/{s}_{i}.png"
                draw(cname, rng).save(folder / "images" / rel)
                entries.append([rel, label, cname])
        split[s] = entries
    (folder / f"split_zhou_{TITLES[name]}.json").write_text(json.dumps(split, indent=1))


def ensure_toy_dataset(name: str) -> Path:
    """The generated dataset's folder, written once (atomically: concurrent cells race harmlessly)."""
    from harness.atomic import generated_folder

    return generated_folder(toy_root() / name, f"split_zhou_{TITLES[name]}.json", lambda tmp: write_toy_dataset(name, tmp), f"{name} dataset")
