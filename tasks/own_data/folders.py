"""A local image dataset as it usually lies on disk, read into the splits it came with.

Layouts, checked in this order:

* list files (VTAB-1k / NOAH style): ``train800.txt``, ``val200.txt``, ``train800val200.txt``,
  ``train.txt``, ``val.txt``, ``test.txt`` holding ``relative/path label`` lines;
* split folders: ``train/<class>/<image>`` + ``test/<class>/...`` (+ optional ``val/<class>/...``);
* one class-folder tree (torchvision's ImageFolder): ``<root>/<class>/<image>`` and nothing else:
  bob splits it (``task.py``).

Class folders name the classes (sorted, as ImageFolder does); hidden files and folders
(``.DS_Store``, ``.ipynb_checkpoints``) are skipped; images may sit in sub-folders of a class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BobError

LIST_SPLITS = ("train800", "val200", "train800val200", "train", "val", "test")
SPLIT_FOLDERS = ("train", "val", "test")
POOL = "all"  # the split name of data that came without splits


@dataclass
class UserData:
    """The user's files before bob splits anything: the splits they came with (``{"all": ...}``
    when none), class names (None: integer labels) and the root that keys are relative to."""

    root: Path
    layout: str
    splits: dict[str, list]  # split -> [harness.data.Sample]
    class_names: list[str] | None
    num_classes: int
    ignored: list[Path] = field(default_factory=list)  # files that are not images (verify lists them)
    label_source: str = ""

    def key(self, sample) -> str:
        """A sample's file relative to the root, the same on every machine (splits are made from it)."""
        return Path(sample.image).relative_to(self.root).as_posix()


def visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def scan_class_folder(folder: Path, label: int) -> tuple[list, list[Path]]:
    """Images under one class folder (any depth, sorted by path) and the other files found there."""
    from harness.data import IMAGE_SUFFIXES, Sample

    images, other = [], []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else other).append(path)
    return [Sample(p, label, f"{folder}") for p in images], other


def read_class_tree(folder: Path, classes: list[str] | None = None, what: str = "") -> tuple[list, list[str], list[Path]]:
    """``folder/<class>/<image>``; ``classes`` fixes the label order (a val/test folder follows train's)."""
    found = [p.name for p in visible_children(folder) if p.is_dir()]
    if classes is None:
        classes = found
        if not classes:
            loose = [p for p in visible_children(folder) if p.is_file()]
            hint = f" (it holds {len(loose)} loose files)" if loose else ""
            raise BobError(f"{folder} has no class folders{hint}; put each class's images in {folder}/<class name>/")
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise BobError(f"{folder}/{extra[0]} is a class that {what or 'the training split'} lacks; every class needs training images "
                           f"(add {extra[0]}/ to the training folder or remove it here)")
    samples, ignored = [], []
    for label, cls in enumerate(classes):
        if (folder / cls).is_dir():
            got, other = scan_class_folder(folder / cls, label)
            samples += got
            ignored += other
    return samples, list(classes), ignored


def read_folder(folder: Path, name: str) -> UserData:
    """Detect the layout of ``folder`` and read it (one-line BobError on a layout it cannot use)."""
    from harness.data import read_list_file

    if not folder.is_dir():
        raise BobError(f"task {name}: data folder {folder} does not exist; check the path (a folder of class folders, "
                       "train/ + test/ class folders, or train800.txt-style lists)")
    folder = folder.absolute()  # samples name absolute files (the feature cache keys on them); split keys stay relative
    lists = {s: folder / f"{s}.txt" for s in LIST_SPLITS if (folder / f"{s}.txt").is_file()}
    if lists:
        parsed = {split: read_list_file(path, folder) for split, path in lists.items()}
        labels = [s.label for samples in parsed.values() for s in samples]
        if not labels:
            raise BobError(f"task {name}: the list files in {folder} ({', '.join(p.name for p in lists.values())}) list no images")
        return UserData(folder, f"list files ({', '.join(p.name for p in lists.values())})", parsed, None, 1 + max(labels),
                        label_source="integer labels of the list files")
    present = [s for s in SPLIT_FOLDERS if (folder / s).is_dir()]
    if present:
        if "train" not in present or "test" not in present:
            raise BobError(f"task {name}: {folder} has {' and '.join(p + '/' for p in present)} but needs train/ and test/ "
                           "(bob carves val/ from train/); or put all class folders directly under it for bob to split")
        splits, ignored = {}, []
        train, classes, other = read_class_tree(folder / "train")
        splits["train"], ignored = train, other
        for split in ("val", "test"):
            if split in present:
                splits[split], _, other = read_class_tree(folder / split, classes, f"{folder}/train/")
                ignored += other
        layout = " + ".join(f"{s}/" for s in present) + " class folders"
    else:
        samples, classes, ignored = read_class_tree(folder)
        ignored = [p for p in visible_children(folder) if p.is_file()] + ignored  # loose files beside the class folders
        splits, layout = {POOL: samples}, "one class-folder tree (bob splits it)"
    return UserData(folder, layout, splits, classes, len(classes), ignored, label_source=f"class folder names under {folder}")
