"""Class-folder retrieval sets (``<folder>/<class>/<image>``): INSTRE, CUB-200, iNat, any local tree.

Battle of the Backbones' split (``TwoLeveldataset`` in hsouri/bob-retrieval): class folders sorted
by name; in each, the image files sorted by name and cut to the first ``cap`` (BoB: INSTRE 50,
iNat 5, ObjectNet 50, CUB-200 none); the first floor(20 %) of them are queries, the rest go to the
database; a query's positives are the database images of its class. bob follows it exactly, with
two declared differences: image suffixes are matched case-insensitively (.jpg/.jpeg/.png/...; BoB
listed .jpg .JPG .JPEG .png .PNG), and a class too small to give a query (fewer than 5 images) is an
error naming the folder, where BoB silently left it without queries.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.data import IMAGE_SUFFIXES, Sample
from harness.errors import BobError

from .task import DatabasePart, ImageRetrievalTask, Setup, make_task

QUERY_FRACTION = 0.2  # BoB's qvs
BOB_CAPS = {"retrieval/instre": 50, "retrieval/inat": 5, "retrieval/cub200": None}


def bob_split(folder: Path, cap: int | None = None, query_fraction: float = QUERY_FRACTION) -> tuple[list[Sample], list[Sample], list[np.ndarray], list[str]]:
    """(queries, database, positives per query, class names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BobError(f"class folder tree {folder} does not exist; expected {folder}/<class>/<image>")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise BobError(f"{folder} has no class sub-folders; expected {folder}/<class>/<image>")
    need = math.ceil(1 / query_fraction) if query_fraction > 0 else 1
    queries, database, query_class, db_class = [], [], [], []
    for label, cls in enumerate(classes):
        files = sorted(p.name for p in (folder / cls).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if cap:
            files = files[:cap]
        n_query = int(len(files) * query_fraction // 1)
        if n_query < 1 or n_query >= len(files):
            raise BobError(f"class folder {folder / cls} has {len(files)} image(s){f' (cap {cap})' if cap else ''}; the {query_fraction:.0%} query split "
                           f"needs at least {need} (1 query, the rest in the database): add images or remove the folder")
        for i, name in enumerate(files):
            sample = Sample(folder / cls / name, label, f"{folder}/{cls}")
            (queries if i < n_query else database).append(sample)
            (query_class if i < n_query else db_class).append(label)
    db_class_arr = np.asarray(db_class)
    by_class = {c: np.nonzero(db_class_arr == c)[0] for c in range(len(classes))}
    positives = [by_class[c] for c in query_class]
    queries = [Sample(s.image, i, s.origin) for i, s in enumerate(queries)]
    database = [Sample(s.image, i, s.origin) for i, s in enumerate(database)]
    return queries, database, positives, classes


def load_class_folder_task(name: str, folder: Path, group: str, cap: int | None = None, cap_source: str = "none") -> ImageRetrievalTask:
    queries, database, positives, classes = bob_split(folder, cap)
    setups = [Setup("all", positives, [np.zeros(0, np.int64)] * len(queries), "")]
    protocol = {"split": "Battle of the Backbones: per class, files sorted, first floor(20%) queries, the rest database",
                "cap_per_class": cap, "cap_source": cap_source, "classes": len(classes), "queries": "whole images",
                "evaluation": "revisitop compute_map (no junk) + BoB's mR@k; MRR junk-free over queries with positives"}
    return make_task(name, group, "mAP", queries=queries, boxes=[None] * len(queries), parts=[DatabasePart(name, "database", database)],
                     setups=setups, scoring="bob", protocol=protocol, source=str(folder))
