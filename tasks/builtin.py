"""Tasks whose data needs no download: scikit-learn's digits and generated dSprites-style shapes.

Both follow the VTAB-1k split shape (train800 / val200 / train800val200 / test) so that the
same protocol code runs on them as on the real suites.
"""
from __future__ import annotations

import functools
import math

from harness.registry import register_task
from harness.types import CLASSIFICATION, Task

SHAPES_IMAGE_SIZE = 64
SHAPES_TEST_SIZE = 600
SHAPES_DATA_SEED = 0  # the data is fixed; the cell seed only affects training


def _vtab_shaped_task(name, group, num_classes, train_samples, test_samples, hflip_ok, source) -> Task:
    from harness.data import ImageClassificationDataset

    from .class_names import class_text_for

    train800, val200 = train_samples[:800], train_samples[800:1000]
    splits = {"train800": train800, "val200": val200, "train800val200": train800 + val200, "test": test_samples}
    return Task(
        name=name,
        kind=CLASSIFICATION,
        group=group,
        num_classes=num_classes,
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v, name=f"{name}:{k}")) for k, v in splits.items()},
        union_splits={"train800val200": ("train800", "val200")},
        hflip_ok=hflip_ok,
        source=source,
        class_text=class_text_for(name, None, num_classes),
    )


@functools.lru_cache(maxsize=1)
def _digits_samples():
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from harness.data import Sample

    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.images))
    samples = []
    for i in order:
        pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype("uint8")
        samples.append(Sample(Image.fromarray(pixels, mode="L"), int(digits.target[i]), f"sklearn-digits#{i}"))
    return samples


@register_task("digits", kind=CLASSIFICATION, group="builtin", num_classes=10, train_size=800, class_names=True, description="scikit-learn's 8x8 handwritten digits: 1000 train (800+200) / 797 test, upsampled to the input size")
def digits_task(data_root=None, **_) -> Task:
    samples = _digits_samples()
    return _vtab_shaped_task("digits", "builtin", 10, samples[:1000], samples[1000:], hflip_ok=False, source="sklearn.datasets.load_digits")


# -- generated shapes --------------------------------------------------------------------
SHAPES = ("square", "triangle", "ellipse", "arrow")
ORIENTED_SHAPES = ("arrow", "flag")  # no rotational symmetry: orientation is visible over 360 deg


def _polygon(shape: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    unit = {
        "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
        "triangle": [(0, -1.1), (1, 0.8), (-1, 0.8)],
        "arrow": [(0, -1.2), (0.8, -0.2), (0.3, -0.2), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.2), (-0.8, -0.2)],
        "flag": [(-0.6, -1.1), (0.9, -0.6), (-0.2, -0.1), (-0.2, 1.1), (-0.6, 1.1)],
        "ellipse": [(math.cos(t) * 1.0, math.sin(t) * 0.6) for t in (i * 2 * math.pi / 24 for i in range(24))],
    }[shape]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + size * (x * c - y * s), cy + size * (x * s + y * c)) for x, y in unit]


def _draw(shape, cx, cy, size, angle):
    from PIL import Image, ImageDraw

    im = Image.new("L", (SHAPES_IMAGE_SIZE, SHAPES_IMAGE_SIZE), 0)
    ImageDraw.Draw(im).polygon(_polygon(shape, cx, cy, size, angle), fill=255)
    return im


@functools.lru_cache(maxsize=4)
def _shapes_samples(factor: str, count: int, seed: int):
    """Deterministic from ``seed``; labels are balanced (label = index mod classes)."""
    import numpy as np

    from harness.data import Sample

    rng = np.random.RandomState(seed)
    n = SHAPES_IMAGE_SIZE
    samples = []
    for i in range(count):
        if factor == "location":  # 4 x 4 grid of cells; the shape's centre lies in the labelled cell
            label = i % 16
            row, col = divmod(label, 4)
            size = rng.uniform(3.0, 5.0)
            cell = n / 4
            cx = (col + rng.uniform(0.25, 0.75)) * cell
            cy = (row + rng.uniform(0.25, 0.75)) * cell
            image = _draw(SHAPES[rng.randint(len(SHAPES))], cx, cy, size, rng.uniform(0, 2 * math.pi))
        else:  # orientation: 16 bins over 360 degrees
            label = i % 16
            angle = (label + rng.uniform(0.1, 0.9)) * 2 * math.pi / 16
            size = rng.uniform(14.0, 20.0)
            cx, cy = n / 2 + rng.uniform(-6, 6), n / 2 + rng.uniform(-6, 6)
            image = _draw(ORIENTED_SHAPES[rng.randint(len(ORIENTED_SHAPES))], cx, cy, size, angle)
        samples.append(Sample(image, label, f"shapes/{factor}#{seed}:{i}"))
    order = rng.permutation(count)
    return [samples[j] for j in order]


def _shapes_task(factor: str) -> Task:
    train = _shapes_samples(factor, 1000, SHAPES_DATA_SEED)
    test = _shapes_samples(factor, SHAPES_TEST_SIZE, SHAPES_DATA_SEED + 1)
    return _vtab_shaped_task(f"shapes/{factor}", "builtin/structured", 16, list(train), list(test), hflip_ok=False, source=f"generated (seed {SHAPES_DATA_SEED})")


@register_task("shapes/location", kind=CLASSIFICATION, group="builtin/structured", num_classes=16, train_size=800, class_names=True, description="generated dSprites-style shapes; label = which cell of a 4x4 grid holds the shape")
def shapes_location_task(data_root=None, **_) -> Task:
    return _shapes_task("location")


@register_task("shapes/orientation", kind=CLASSIFICATION, group="builtin/structured", num_classes=16, train_size=800, class_names=True, description="generated asymmetric shapes; label = orientation in 16 bins of 22.5 degrees")
def shapes_orientation_task(data_root=None, **_) -> Task:
    return _shapes_task("orientation")
