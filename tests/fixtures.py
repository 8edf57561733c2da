"""Tiny datasets written in real on-disk formats (PNG/JPEG files + list files or class folders)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


def colour_image(label: int, rng: np.random.RandomState, size: int = 20) -> Image.Image:
    base = np.array(COLOURS[label], dtype=np.float32)
    pixels = np.clip(base + rng.randn(size, size, 3) * 25, 0, 255).astype("uint8")
    return Image.fromarray(pixels, "RGB")


def make_list_file_dataset(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """VTAB-1k/NOAH style: images/ + train800.txt, val200.txt, train800val200.txt, test.txt (small counts)."""
    per_class = per_class or {"train800": 8, "val200": 2, "test": 4}
    rng = np.random.RandomState(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for split, n in per_class.items():
        lines[split] = []
        for label in range(len(COLOURS)):
            for i in range(n):
                rel = f"images/{split}_{label}_{i}.{'jpg' if i % 2 else 'png'}"
                colour_image(label, rng).save(root / rel)
                lines[split].append(f"{rel} {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def make_image_folder_dataset(root: Path, per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    per_split = per_split or {"train": 10, "test": 4}
    rng = np.random.RandomState(seed)
    names = ["red", "green", "blue"]
    for split, n in per_split.items():
        for label, name in enumerate(names):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour_image(label, rng).save(root / split / name / f"{i}.png")
    return root
