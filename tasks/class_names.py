"""Class names and prompt templates for zero-shot classification (``tasks/configs/zeroshot.yaml``).

Names must be in the label order of the data bob reads, so they live with the tasks: listed in
the YAML (generated from the packages that define the VTAB/TFDS orders, see
``scripts/make_class_names.py``), or declared as read from the dataset's own files
(``names_from``: the class folders of CUB / Stanford Dogs, NABirds' ``classes.txt``), mapped
through the same sorted class ids as VPT's json reader. A task factory attaches
``task.class_text``; the zero-shot method calls it and never needs to know where names come from.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Callable

from harness.errors import BobError

CONFIG = Path(__file__).with_name("configs") / "zeroshot.yaml"


@functools.lru_cache(maxsize=1)
def zeroshot_config() -> dict:
    import yaml

    return (yaml.safe_load(CONFIG.read_text(encoding="utf-8")) or {}).get("tasks", {})


def has_class_names(task_id: str) -> bool:
    return task_id in zeroshot_config()


def class_text_for(task_id: str, data_folder: str | None = None, num_classes: int | None = None) -> Callable | None:
    """A callable returning (names, templates, source) for ``task_id``, or None when none are declared."""
    entry = zeroshot_config().get(task_id)
    if entry is None:
        return None

    def resolve() -> tuple[list[str], list[str], str]:
        where = f"{CONFIG}: tasks: {task_id}"
        templates = list(entry.get("templates") or [])
        if not templates or any("{c}" not in t for t in templates):
            raise BobError(f"{where}: every template needs the placeholder {{c}} (got {templates[:2]})")
        if "names" in entry:
            names = [str(n) for n in entry["names"]]
        else:
            if not data_folder:
                raise BobError(f"{where}: names are read from the dataset's files, but the task has no data folder")
            names = names_from_dataset(Path(data_folder), entry["names_from"], where)
        if num_classes is not None and len(names) != num_classes:
            raise BobError(f"{where}: {len(names)} class names for {num_classes} classes; the list must follow the label order exactly")
        return names, templates, f"{CONFIG.name}: {entry.get('source', task_id)}"

    return resolve


def _vpt_class_order(folder: Path) -> tuple[dict, list]:
    """(annotations of train.json, class ids in label order) - the order of tasks.suites.read_vpt_json."""
    anno = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    return anno, sorted(set(anno.values()), key=lambda v: (str(type(v)), v))


def names_from_dataset(folder: Path, how: dict, where: str) -> list[str]:
    anno, order = _vpt_class_order(folder)
    if how.get("kind") == "image_folder":  # class folder of the class's images, cleaned: 001.Black_footed_Albatross -> Black footed Albatross
        first = {}
        for rel, cid in anno.items():
            first.setdefault(cid, Path(rel).parts[0] if len(Path(rel).parts) > 1 else None)
        missing = [cid for cid in order if not first.get(cid)]
        if missing:
            raise BobError(f"{where}: images of class {missing[0]!r} are not in a class folder; list the names instead")
        strip = re.compile(how.get("strip") or "^")
        return [strip.sub("", first[cid]).replace("_", " ").strip() for cid in order]
    if how.get("kind") == "classes_file":  # NABirds: "<class id> <name>" per line
        path = folder / how.get("file", "classes.txt")
        if not path.is_file():
            raise BobError(f"{where}: {path} does not exist (the dataset's own class list); copy it from the original download")
        table = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            cid, _, name = line.strip().partition(" ")
            if name:
                table[cid] = name.strip()
        missing = [cid for cid in order if str(cid) not in table and str(cid).lstrip("0") not in table]
        if missing:
            raise BobError(f"{path}: no line for class id {missing[0]!r} used in {folder / 'train.json'}")
        return [table.get(str(cid), table.get(str(cid).lstrip("0"))) for cid in order]
    raise BobError(f"{where}: names_from kind {how.get('kind')!r} is unknown (use image_folder or classes_file)")
