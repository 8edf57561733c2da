"""``folder:<path>``: any local classification dataset, in one of two layouts.

* list files (VTAB-1k / NOAH style): ``train800.txt``, ``val200.txt``, ``train800val200.txt``,
  ``test.txt`` (any subset with a train and a test list) holding ``relative/path label`` lines;
* image folders: ``train/<class>/*.png``, optional ``val/<class>/...``, ``test/<class>/...``.
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import BobError
from harness.registry import TASKS, Entry
from harness.types import CLASSIFICATION, Task

LIST_SPLITS = ("train800", "val200", "train800val200", "train", "val", "test")


def load_folder_task(name: str, data_root=None) -> Task:
    from harness.data import ImageClassificationDataset, read_list_file, scan_image_folder

    folder = Path(name.split(":", 1)[1]).expanduser()
    if not folder.is_dir():
        raise BobError(f"task {name}: data folder {folder} does not exist; check the path (train800.txt-style lists or train/ and test/ image folders)")
    lists = {s: folder / f"{s}.txt" for s in LIST_SPLITS if (folder / f"{s}.txt").is_file()}
    names = None  # class folders name their classes (zero-shot prompts); list files do not
    if lists:
        parsed = {split: read_list_file(path, folder) for split, path in lists.items()}
        num_classes = 1 + max(s.label for samples in parsed.values() for s in samples)
        splits = dict(parsed)
    else:
        splits = {}
        classes = None
        for split in ("train", "val", "test"):
            if (folder / split).is_dir():
                splits[split], classes = scan_image_folder(folder / split, classes)
        if not splits:
            raise BobError(f"task {name}: {folder} has neither list files ({', '.join(s + '.txt' for s in LIST_SPLITS)}) nor train/ and test/ image folders")
        num_classes = len(classes)
        names = [c.replace("_", " ") for c in classes]
    train = "train800val200" if "train800val200" in splits else "train"
    if train not in splits or "test" not in splits:
        raise BobError(f"task {name}: {folder} needs a training split ({train}) and a test split; found {', '.join(sorted(splits))}")
    tune = ("train800", "val200") if {"train800", "val200"} <= set(splits) else (("train", "val") if {"train", "val"} <= set(splits) else None)
    return Task(
        name=name,
        kind=CLASSIFICATION,
        group="folder",
        num_classes=num_classes,
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v, name=f"{name}:{k}")) for k, v in splits.items()},
        tune_splits=tune,
        final_splits=(train, "test"),
        union_splits={"train800val200": ("train800", "val200")} if tune == ("train800", "val200") else {},
        source=str(folder),
        class_text=(lambda: (names, ["a photo of a {c}."], f"class folder names under {folder}")) if names else None,
    )


def _resolve(name: str) -> Entry:
    if not name.split(":", 1)[1]:
        raise BobError("task 'folder:' needs a path, e.g. folder:/data/my_dataset")
    return Entry(name, lambda data_root=None, **_: load_folder_task(name, data_root), {"kind": CLASSIFICATION, "group": "folder"})


TASKS.add_prefix("folder", _resolve, "folder:<path> reads a local dataset (list files or image folders)")
