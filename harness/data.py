"""One dataset class for every image-classification source.

A sample is ``(image, label)`` where ``image`` is a path on disk or an in-memory PIL image
(generated tasks). List files (``relative/path label`` lines, VTAB-1k / NOAH style), image
folders (``split/class_name/*.png``) and generated data all end up here, so there is exactly
one place that opens images and one error message for an unreadable one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import BobError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass(frozen=True)
class Sample:
    image: Any  # a Path, a PIL.Image.Image, or a zero-argument callable returning one
    label: int
    origin: str = ""  # "file:line" for list files, for error messages

    @property
    def identity(self) -> tuple[str, int]:
        """What the sample is (its file, else its origin) and its label: two splits hold the same
        samples exactly when their identities match."""
        return (str(self.image) if isinstance(self.image, (str, Path)) else self.origin, self.label)


def open_rgb(sample: Sample):
    """The sample's image as RGB; an unreadable file is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    if callable(sample.image):  # lazily decoded (e.g. a Hugging Face datasets row)
        return sample.image().convert("RGB")
    if not isinstance(sample.image, (str, Path)):
        return sample.image.convert("RGB")
    path = Path(sample.image)
    where = f" (listed at {sample.origin})" if sample.origin else ""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise BobError(f"image {path} does not exist{where}; restore the file or remove its line") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BobError(f"cannot read image {path}{where}: {exc}; the file is corrupt, re-create or remove it") from None


class ImageClassificationDataset:
    """A torch-style dataset over samples (no torch import needed to build one)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None, name: str = ""):
        self.samples = list(samples)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = open_rgb(sample)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def with_transform(self, transform: Callable | None) -> "ImageClassificationDataset":
        return ImageClassificationDataset(self.samples, transform, self.name)

    def identity(self) -> list[tuple[str, int]]:
        """What the samples are, for checking that one split is the union of others."""
        return [s.identity for s in self.samples]


def read_list_file(list_file: Path, image_root: Path, num_classes: int | None = None) -> list[Sample]:
    """Parse ``relative/path label`` lines (VTAB-1k/NOAH). Errors name the file and line."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise BobError(f"list file {list_file} does not exist; check --data-root / BOB_DATA and the task's folder")
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BobError(f"{list_file}: not a UTF-8 text file (byte {exc.start}); a list file holds 'relative/path label' lines") from None
    samples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise BobError(f"{list_file}:{lineno}: expected 'relative/path label', got {line.strip()!r}")
        rel, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise BobError(f"{list_file}:{lineno}: label {label_text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise BobError(
                f"{list_file}:{lineno}: label {label} is out of range 0..{(num_classes or 1) - 1}; fix the list file or the class count"
            )
        samples.append(Sample(path_inside(image_root, rel, f"{list_file}:{lineno}"), label, f"{list_file}:{lineno}"))
    return samples


def path_inside(root: Path | str, rel: str, where: str) -> Path:
    """``root / rel``, refusing paths that leave the data root (absolute, ``..``, or a symlinked
    escape is allowed only when it stays under the root once resolved). ``where`` = file:line."""
    rel_path = Path(rel)
    if rel_path.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise BobError(f"{where}: image path {rel!r} is absolute; list paths relative to the data folder {root}")
    if ".." in rel_path.parts:
        raise BobError(f"{where}: image path {rel!r} points outside the data folder {root} ('..'); list paths inside it")
    return Path(root) / rel_path


def scan_image_folder(folder: Path, classes: Sequence[str] | None = None) -> tuple[list[Sample], list[str]]:
    """``folder/<class name>/<image>``, classes sorted by name as torchvision's ImageFolder does."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BobError(f"image folder {folder} does not exist; check --data-root / BOB_DATA")
    if classes is None:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise BobError(f"image folder {folder} has no class sub-folders; expected {folder}/<class>/<image>")
    samples = []
    for label, cls in enumerate(classes):
        cls_dir = folder / cls
        if not cls_dir.is_dir():
            continue
        for path in sorted(cls_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, label, f"{folder}/{cls}"))
    if not samples:
        raise BobError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return samples, list(classes)
