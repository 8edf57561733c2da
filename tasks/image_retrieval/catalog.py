"""Registered image-retrieval tasks, where their data lives, and the ``retrieval:<path>`` spelling.

``retrieval:`` already names image-text sets (``retrieval:<karpathy json>@<images>``); it now
dispatches on what the path is: a ``.json`` file or a spec with ``@`` stays image-text; a folder or
a ``gnd_*.pkl`` file is image-to-image retrieval, read by its layout: a ``gnd_*.pkl`` (revisited
Oxford/Paris style), ``original/`` + ``strong/`` (Copydays), ``index.csv`` + the retrieval solution
(GLDv2), otherwise a ``<class>/<image>`` tree with BoB's split. Options after ``?``: ``cap=N``
(images per class), ``distractors=DIR`` (revisitop1m layout for gnd sets, any image folder for
Copydays).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

from harness.errors import BobError
from harness.registry import TASKS, Entry
from harness.types import IMAGE_RETRIEVAL

from .classfolder import BOB_CAPS
from .metrics import KS

PCT = {"direction": "higher", "unit": "%", "fmt": ".1f"}
REVISITED_METRICS = {f"{m}_{s}": {**PCT, "label": f"{m} ({name}) (%)"} for s, name in (("E", "Easy"), ("M", "Medium"), ("H", "Hard"))
                     for m in ("mAP", *(f"mP@{k}" for k in KS))}
CLASS_METRICS = {"mAP": {**PCT, "label": "mAP (%)"}, **{f"mP@{k}": {**PCT, "label": f"mean precision@{k} (revisitop's, %)"} for k in KS},
                 **{f"mR@{k}": {**PCT, "label": f"mean recall@{k}: share of positives in the top {k} (%)"} for k in KS},
                 "MRR": {**PCT, "label": "mean reciprocal rank of the first positive (%)"}}
GLDV2_METRICS = {f"mAP@100_{u}": {**PCT, "label": f"mAP@100, {u} queries (%)"} for u in ("private", "public")}
COPYDAYS_METRICS = {"mAP": {**PCT, "label": "mAP, strong subset (%)"}}
METRICS_OF = {"revisited": REVISITED_METRICS, "bob": CLASS_METRICS, "gldv2": GLDV2_METRICS, "copydays": COPYDAYS_METRICS}
PRIMARY_OF = {"revisited": "mAP_M", "bob": "mAP", "gldv2": "mAP@100_private", "copydays": "mAP"}
OPTIONS = ("cap", "distractors")


def _options(spec: str, where: str) -> tuple[str, dict[str, str]]:
    path, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise BobError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; use ?cap=N (images per class) or ?distractors=DIR")
    return path, options


def _cap(options: dict, default: int | None, where: str) -> int | None:
    if "cap" not in options:
        return default
    try:
        cap = int(options["cap"])
    except ValueError:
        cap = 0
    if cap < 1:
        raise BobError(f"{where}: cap={options['cap']!r} must be a positive number of images per class")
    return cap


def layout_of(path: Path) -> str:
    """revisited | copydays | gldv2 | classes, from the files a path holds."""
    if path.suffix == ".pkl" or (path.is_dir() and any(path.glob("gnd_*.pkl"))):
        return "revisited"
    if (path / "original").is_dir() and (path / "strong").is_dir():
        return "copydays"
    if (path / "index.csv").is_file():
        return "gldv2"
    return "classes"


def load_local(name: str, path: Path, group: str, options: dict[str, str], cap_default: int | None = None, cap_source: str = "none"):
    """An image-retrieval task from a path in any supported layout."""
    from .classfolder import load_class_folder_task
    from .copydays import load_copydays_task
    from .gldv2 import load_gldv2_task
    from .revisited import load_revisited_task

    layout = layout_of(path)
    distractors = Path(options["distractors"]).expanduser() if options.get("distractors") else None
    if layout == "revisited":
        pkl = path if path.suffix == ".pkl" else sorted(path.glob("gnd_*.pkl"))[0]
        return load_revisited_task(name, pkl, group, distractors)
    if layout == "copydays":
        return load_copydays_task(name, path, group, distractors)
    if layout == "gldv2":
        return load_gldv2_task(name, path, group)
    return load_class_folder_task(name, path, group, _cap(options, cap_default, name), f"?cap={options['cap']}" if "cap" in options else cap_source)


def local_entry(name: str, spec: str) -> Entry | None:
    """The ``retrieval:<path>`` entry when the path is image-to-image (None: an image-text spec)."""
    path_text = spec.partition("?")[0]
    path = Path(path_text).expanduser()
    if "@" in spec or path_text.endswith(".json") or not (path.is_dir() or path.suffix == ".pkl"):
        return None
    _, options = _options(spec, f"task {name}")

    def factory(data_root=None, **_):
        return load_local(name, path, "retrieval/local", options)

    factory.__module__ = __name__
    return Entry(name, factory, {"kind": IMAGE_RETRIEVAL, "group": "retrieval/local", "metrics": METRICS_OF[_scoring(layout_of(path))],
                                 "description": f"image retrieval on {path} ({layout_of(path)} layout)"})


def _scoring(layout: str) -> str:
    return {"classes": "bob"}.get(layout, layout)


# -- the registered sets ------------------------------------------------------------------------------
def _locate(task_id: str, data_root: str | None, candidates: tuple[str, ...], marker: Callable[[Path], bool], how: str) -> Path:
    root = data_root or os.environ.get("BOB_DATA")
    folders = [Path(root).expanduser() / c for c in candidates] if root else []
    for folder in folders:
        if marker(folder):
            return folder
    looked = ", ".join(str(f) for f in folders) or "no data root given (--data-root or BOB_DATA)"
    raise BobError(f"task {task_id}: data not found (looked in {looked}); {how}, or pass --data-path {task_id}=<folder>")


def _revisited_factory(task_id: str, dataset: str, distractors: bool):
    def make(data_root=None, overrides: dict | None = None, **_):
        from .revisited import load_revisited_task

        override = (overrides or {}).get(task_id) or (overrides or {}).get(task_id.replace("+1m", ""))
        options: dict[str, str] = {}
        if override:
            path_text, options = _options(override, f"--data-path {task_id}")
            path = Path(path_text).expanduser()
            pkl = path if path.suffix == ".pkl" else path / f"gnd_{dataset}.pkl"
        else:
            folder = _locate(task_id, data_root, (dataset, f"datasets/{dataset}", f"revisitop/data/datasets/{dataset}"),
                             lambda f: (f / f"gnd_{dataset}.pkl").is_file(), f"put gnd_{dataset}.pkl and jpg/ in <root>/{dataset}/ (revisitop's download)")
            pkl = folder / f"gnd_{dataset}.pkl"
        one_m = None
        if distractors:
            if options.get("distractors"):
                one_m = Path(options["distractors"]).expanduser()
            else:
                base = pkl.parent.parent
                candidates = [base / "revisitop1m"] + ([Path(data_root).expanduser() / d for d in ("revisitop1m", "datasets/revisitop1m")] if data_root else [])
                one_m = next((c for c in candidates if (c / "revisitop1m.txt").is_file()), None)
                if one_m is None:
                    raise BobError(f"task {task_id}: the 1M distractors were not found (looked in {', '.join(map(str, candidates))}); put "
                                   "revisitop1m.txt and jpg/ in <root>/revisitop1m/ (revisitop's download_distractors), or give ?distractors=DIR")
        return load_revisited_task(task_id, pkl, "retrieval/landmarks", one_m)

    return make


def _folder_factory(task_id: str, candidates: tuple[str, ...], loader: str, group: str, how: str):
    def make(data_root=None, overrides: dict | None = None, **_):
        override = (overrides or {}).get(task_id)
        options: dict[str, str] = {}
        if override:
            path_text, options = _options(override, f"--data-path {task_id}")
            folder = Path(path_text).expanduser()
        else:
            marker = {"classes": Path.is_dir, "gldv2": lambda f: (f / "index.csv").is_file(),
                      "copydays": lambda f: (f / "original").is_dir()}[loader]
            folder = _locate(task_id, data_root, candidates, marker, how)
        if loader == "classes":
            from .classfolder import load_class_folder_task

            return load_class_folder_task(task_id, folder, group, _cap(options, BOB_CAPS.get(task_id), task_id),
                                          f"?cap={options['cap']}" if "cap" in options else "Battle of the Backbones")
        if loader == "gldv2":
            from .gldv2 import load_gldv2_task

            return load_gldv2_task(task_id, folder, group)
        from .copydays import load_copydays_task

        return load_copydays_task(task_id, folder, group, Path(options["distractors"]).expanduser() if options.get("distractors") else None)

    return make


def _toy_factory(task_id: str, part: str):
    def make(data_root=None, **_):
        from .generate import ensure_toy_sets

        root = ensure_toy_sets()
        if part == "classes":
            from .classfolder import load_class_folder_task

            return load_class_folder_task(task_id, root / "classes", "retrieval/toy")
        from .revisited import load_revisited_task

        return load_revisited_task(task_id, root / "revisited" / "gnd_toyrevisited.pkl", "retrieval/toy",
                                   root / "revisitop1m" if part == "revisited+1m" else None)

    return make


REGISTERED: dict[str, tuple[Callable, str, str, str]] = {  # task id -> (factory, group, scoring, description)
    "retrieval/roxford5k": (_revisited_factory("retrieval/roxford5k", "roxford5k", False), "retrieval/landmarks", "revisited",
                            "revisited Oxford: 70 cropped queries, 4,993 images; mAP / mP@k, Easy, Medium, Hard"),
    "retrieval/rparis6k": (_revisited_factory("retrieval/rparis6k", "rparis6k", False), "retrieval/landmarks", "revisited",
                           "revisited Paris: 70 cropped queries, 6,322 images; mAP / mP@k, Easy, Medium, Hard"),
    "retrieval/roxford5k+1m": (_revisited_factory("retrieval/roxford5k+1m", "roxford5k", True), "retrieval/landmarks", "revisited",
                               "revisited Oxford + the 1M distractors (revisitop1m)"),
    "retrieval/rparis6k+1m": (_revisited_factory("retrieval/rparis6k+1m", "rparis6k", True), "retrieval/landmarks", "revisited",
                              "revisited Paris + the 1M distractors (revisitop1m)"),
    "retrieval/gldv2": (_folder_factory("retrieval/gldv2", ("gldv2", "google-landmark", "GLDv2"), "gldv2", "retrieval/landmarks",
                                        "put index.csv, retrieval_solution_v2.1.csv, index/ and test/ in <root>/gldv2/"), "retrieval/landmarks", "gldv2",
                        "Google Landmarks v2 retrieval: 1,129 queries (public / private), 762k index images; mAP@100"),
    "retrieval/instre": (_folder_factory("retrieval/instre", ("instre/INSTRE-S1", "INSTRE-S1", "instre"), "classes", "retrieval/instance",
                                         "put the INSTRE-S1 class folders in <root>/instre/INSTRE-S1/"), "retrieval/instance", "bob",
                         "INSTRE-S1 class folders, BoB's split (50 images per class, first 20% queries)"),
    "retrieval/copydays": (_folder_factory("retrieval/copydays", ("copydays", "Copydays"), "copydays", "retrieval/instance",
                                           "put original/, strong/ (and distractors/) in <root>/copydays/"), "retrieval/instance", "copydays",
                           "Copydays strong subset: 229 queries vs 157 originals (+ distractors when present); mAP"),
    "retrieval/cub200": (_folder_factory("retrieval/cub200", ("CUB_200_2011/images", "fgvc/CUB_200_2011/images", "cub200"), "classes", "retrieval/class",
                                         "put CUB_200_2011/images/<class>/ in the data root"), "retrieval/class", "bob",
                         "CUB-200-2011 class folders, BoB's split (first 20% of each class are queries)"),
    "retrieval/inat": (_folder_factory("retrieval/inat", ("inat/val", "inat2021/val", "iNat_validation", "inaturalist/val"), "classes", "retrieval/class",
                                       "put the iNat validation class folders in <root>/inat/val/"), "retrieval/class", "bob",
                       "iNaturalist validation class folders, BoB's split (5 images per class: 1 query, 4 database)"),
    "retrieval/toy/revisited": (_toy_factory("retrieval/toy/revisited", "revisited"), "retrieval/toy", "revisited",
                                "generated revisited-style set (real gnd pickle): 8 cropped queries, 52 images, easy/hard/junk labels"),
    "retrieval/toy/revisited+1m": (_toy_factory("retrieval/toy/revisited+1m", "revisited+1m"), "retrieval/toy", "revisited",
                                   "the generated revisited-style set + generated distractors in revisitop1m's layout"),
    "retrieval/toy/classes": (_toy_factory("retrieval/toy/classes", "classes"), "retrieval/toy", "bob",
                              "generated class-folder tree (6 classes x 10 images), BoB's split"),
}

for _task_id, (_factory, _group, _scoring_name, _description) in REGISTERED.items():
    TASKS.add(_task_id, _factory, kind=IMAGE_RETRIEVAL, group=_group, suite="image_retrieval", metric=PRIMARY_OF[_scoring_name],
              metrics=METRICS_OF[_scoring_name], description=_description)
