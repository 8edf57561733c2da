"""A tiny ImageNet family in the released layouts, for the quickstart grid and the tests.

Every folder the real datasets ship is there (ImageNet-1k's 1000 wnid folders in train/ and val/,
ImageNetV2's 0..999, ImageNet-Sketch's 1000 wnids, ImageNet-R's and -A's 200), but only a few
classes hold images: coloured squares, one colour per class, each OOD set with its own shift
(darker for V2, grey-ish sketches, a hue change for R, heavy noise for A). val images carry the
official ``ILSVRC2012_val_<n>.JPEG`` names and ``imagenet/real.json`` the ReaL layout (a list
over val numbers of label lists), so every reader runs exactly as on the real data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

VERSION = 1
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 210, 40), (140, 50, 170), (30, 200, 200)]


def toy_root() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "data" / f"shift-imagenet-toy-v{VERSION}"


def populated_classes(n: int = 4) -> list[int]:
    """ImageNet indices of the classes holding images: in both ImageNet-R's and -A's 200."""
    from .imagenet import subset_mask

    both = sorted(set(subset_mask("r")) & set(subset_mask("a")))
    return both[:: max(1, len(both) // n)][:n]


def _image(label_pos: int, rng, shift: str, size: int = 16):
    import numpy as np
    from PIL import Image

    base = np.array(COLOURS[label_pos % len(COLOURS)], dtype=np.float32)
    noise = {"none": 20, "v2": 25, "sketch": 15, "r": 20, "a": 70}[shift]
    if shift == "v2":
        base = base * 0.8
    elif shift == "sketch":
        base = 0.5 * base + 0.5 * base.mean()
    elif shift == "r":
        base = base[[1, 2, 0]] * 0.5 + base * 0.5
    pixels = np.clip(base + rng.randn(size, size, 3) * noise, 0, 255).astype("uint8")
    return Image.fromarray(pixels, "RGB")


def write_imagenet_family(root: Path, classes: list[int] | None = None, train_per_class: int = 6, val_per_class: int = 3,
                          ood_per_class: int = 2, seed: int = 0) -> Path:
    """Write the family's layout under ``root`` (see the module docstring); returns ``root``."""
    import numpy as np

    from .imagenet import V2_VARIANTS, subset_mask, synsets

    root = Path(root)
    rng = np.random.RandomState(seed)
    wnids = synsets()
    classes = classes if classes is not None else populated_classes()
    for split in ("train", "val"):
        for w in wnids:
            (root / "imagenet" / split / w).mkdir(parents=True, exist_ok=True)
    real, val_number = {}, 0
    for pos, c in enumerate(classes):
        for i in range(train_per_class):
            _image(pos, rng, "none").save(root / "imagenet" / "train" / wnids[c] / f"{wnids[c]}_{i + 1}.JPEG", "JPEG")
        for i in range(val_per_class):
            val_number += 1
            _image(pos, rng, "none").save(root / "imagenet" / "val" / wnids[c] / f"ILSVRC2012_val_{val_number:08d}.JPEG", "JPEG")
            # ReaL: most images keep their label, one per class gains a second, the last one is unlabelled (excluded)
            real[val_number] = [] if i == val_per_class - 1 and pos == 0 else ([c, classes[(pos + 1) % len(classes)]] if i == 1 else [c])
    (root / "imagenet" / "real.json").write_text(json.dumps([real.get(n, []) for n in range(1, val_number + 1)]))
    for name, folder in V2_VARIANTS.items():
        for k in range(1000):
            (root / folder / str(k)).mkdir(parents=True, exist_ok=True)
        for pos, c in enumerate(classes):
            for i in range(ood_per_class):
                _image(pos, rng, "v2").save(root / folder / str(c) / f"{name}_{c}_{i}.jpeg", "JPEG")
    for w in wnids:
        (root / "sketch" / w).mkdir(parents=True, exist_ok=True)
    for pos, c in enumerate(classes):
        for i in range(ood_per_class):
            _image(pos, rng, "sketch").save(root / "sketch" / wnids[c] / f"sketch_{i}.JPEG", "JPEG")
    for which in ("r", "a"):
        folder = root / f"imagenet-{which}"
        for c in subset_mask(which):
            (folder / wnids[c]).mkdir(parents=True, exist_ok=True)
        for pos, c in enumerate(classes):
            for i in range(ood_per_class):
                _image(pos, rng, which).save(folder / wnids[c] / f"{which}_{i}.jpg", "JPEG")
    (root / "DONE").write_text("ok\n")
    return root


def toy_family() -> Path:
    """The generated family under the bob cache (written once, atomically)."""
    from harness.atomic import generated_folder

    return generated_folder(toy_root(), "DONE", write_imagenet_family, "ImageNet-family toy sets")
