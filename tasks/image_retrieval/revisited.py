"""Revisited Oxford and Paris (Radenovic et al., CVPR 2018) from their released files.

Layout (revisitop's and cirtorch's): ``<folder>/gnd_<name>.pkl`` + ``<folder>/jpg/<image>.jpg``; the
pickle holds ``imlist`` (database image names, no extension), ``qimlist`` (query names) and ``gnd``
(per query: ``bbx`` = x1, y1, x2, y2 of the query object, ``easy``, ``hard``, ``junk`` = indices into
``imlist``). The 1M distractors (``revisitop1m/revisitop1m.txt`` + ``revisitop1m/jpg/``) are an
optional second database part.

The protocol (revisitop's ``example_process_images`` / ``example_evaluate``): each query image is
cropped to its ``bbx`` before any processing; the three setups are Easy (positives: easy; junk:
junk + hard), Medium (easy + hard; junk) and Hard (hard; junk + easy); mAP and mP@1/5/10 per setup.
Battle of the Backbones skips the crop (and shrinks every image to 224 px): ``query_crop=false``
reproduces that for comparison, and the record says which was run.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import Sample
from harness.errors import BobError

from .task import DatabasePart, ImageRetrievalTask, Setup, make_task

BOX_TOLERANCE = 1.0  # px: a box may overhang its image by rounding, not more
REVISITED_SETUPS = (("easy", "_E", ("easy",), ("junk", "hard")), ("medium", "_M", ("easy", "hard"), ("junk",)),
                    ("hard", "_H", ("hard",), ("junk", "easy")))


class _GroundTruthUnpickler(pickle.Unpickler):
    """Only plain containers and numpy arrays: a ground-truth file never needs to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
               ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("copy_reg", "_reconstructor"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BobError(f"{what} {path} does not exist; check --data-root / --data-path") from None
    try:
        return _GroundTruthUnpickler(io.BytesIO(data), encoding="latin1").load()  # latin1: pickles written by Python 2 / old numpy
    except Exception as exc:
        raise BobError(f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                       "expected the revisited ground truth (a pickled dict with imlist, qimlist, gnd)") from None


def _indices(value: Any, where: str, key: str, n: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BobError(f"{where}: '{key}' must be a list of database indices, got {type(value).__name__}") from None
    if len(arr) and (np.any(arr != np.round(arr)) or arr.min() < 0 or arr.max() >= n):
        bad = next(v for v in arr if v != round(v) or v < 0 or v >= n)
        raise BobError(f"{where}: '{key}' holds {bad:g}, not an index into imlist (0..{n - 1})")
    return arr.astype(np.int64)


def read_ground_truth(path: Path) -> dict[str, Any]:
    """The validated pickle: names as strings, boxes as 4 floats, index arrays. Anything of another
    layout is a one-line error naming the file and the entry."""
    doc = read_pickle(path, "ground-truth pickle")
    expect = "expected revisitop's layout {imlist: [names], qimlist: [names], gnd: [{bbx, easy, hard, junk}] per query}"
    if not isinstance(doc, dict):
        raise BobError(f"{path}: the pickle holds a {type(doc).__name__}, not a dict; {expect}")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in doc]
    if missing:
        raise BobError(f"{path}: not a revisited ground-truth file: missing key(s) {', '.join(missing)} (found: {', '.join(map(str, list(doc)[:6]))}); {expect}")
    imlist, qimlist, gnd = doc["imlist"], doc["qimlist"], doc["gnd"]
    for key, value in (("imlist", imlist), ("qimlist", qimlist)):
        if not isinstance(value, (list, tuple, np.ndarray)) or not all(isinstance(v, (str, bytes)) for v in value):
            raise BobError(f"{path}: '{key}' must be a list of image names; {expect}")
    imlist = [v.decode() if isinstance(v, bytes) else str(v) for v in imlist]
    qimlist = [v.decode() if isinstance(v, bytes) else str(v) for v in qimlist]
    if not isinstance(gnd, (list, tuple)) or len(gnd) != len(qimlist):
        raise BobError(f"{path}: 'gnd' must hold one entry per query: {len(gnd) if hasattr(gnd, '__len__') else type(gnd).__name__} "
                       f"entries for {len(qimlist)} queries in qimlist")
    entries = []
    for i, g in enumerate(gnd):
        where = f"{path}: gnd[{i}] (query {qimlist[i]})"
        if not isinstance(g, dict):
            raise BobError(f"{where}: expected a dict with bbx, easy, hard, junk; got {type(g).__name__}")
        absent = [k for k in ("bbx", "easy", "hard", "junk") if k not in g]
        if absent:
            raise BobError(f"{where}: missing key(s) {', '.join(absent)}; {expect}")
        try:
            box = [float(v) for v in np.asarray(g["bbx"], dtype=np.float64).reshape(-1)]
        except (TypeError, ValueError):
            box = []
        if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise BobError(f"{where}: bbx {g['bbx']!r} is not a box x1, y1, x2, y2 with x2 > x1 and y2 > y1")
        entries.append({"bbx": tuple(box), **{k: _indices(g[k], where, k, len(imlist)) for k in ("easy", "hard", "junk")}})
    return {"imlist": imlist, "qimlist": qimlist, "gnd": entries}


def missing_files(paths: list[Path]) -> list[int]:
    """Indices of ``paths`` that do not exist, listing each folder once (fast for a million files)."""
    listing: dict[Path, set[str]] = {}
    out = []
    for i, path in enumerate(paths):
        folder = path.parent
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(folder))
            except OSError:
                listing[folder] = set()
        if path.name not in listing[folder]:
            out.append(i)
    return out


def check_box(image_path: Path, box: tuple, where: str) -> None:
    """The box lies inside its image (within rounding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as im:
            width, height = im.size
    except FileNotFoundError:
        raise BobError(f"{where}: query image {image_path} does not exist; restore it under jpg/") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BobError(f"{where}: cannot read query image {image_path} ({exc}); the file is corrupt") from None
    x1, y1, x2, y2 = box
    t = BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise BobError(f"{where}: bbx [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside its {width}x{height} image {image_path.name}; "
                       "fix the box (x1, y1, x2, y2 in pixels)")


def read_distractors(folder: Path) -> list[Sample]:
    """revisitop1m: ``revisitop1m.txt`` (one image path per line, relative to ``jpg/``)."""
    listing = folder / "revisitop1m.txt"
    if not listing.is_file():
        raise BobError(f"distractor list {listing} does not exist; the 1M set is revisitop1m/revisitop1m.txt + revisitop1m/jpg/ "
                       "(revisitop's download_distractors)")
    lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    paths = [folder / "jpg" / line for line in lines]
    missing = missing_files(paths)
    if missing:
        i = missing[0]
        raise BobError(f"{listing}:{i + 1}: distractor image {paths[i]} does not exist ({len(missing)} of {len(paths)} missing); "
                       "restore the images under revisitop1m/jpg/")
    return [Sample(p, i, f"{listing}:{i + 1}") for i, p in enumerate(paths)]


def load_revisited_task(name: str, pkl: Path, group: str, distractors: Path | None = None, check_images: bool = True) -> ImageRetrievalTask:
    gt = read_ground_truth(pkl)
    jpg = pkl.parent / "jpg"
    db_paths = [jpg / f"{n}.jpg" for n in gt["imlist"]]
    if check_images:
        missing = missing_files(db_paths)
        if missing:
            i = missing[0]
            raise BobError(f"{pkl}: imlist[{i}] ({gt['imlist'][i]}): database image {db_paths[i]} does not exist "
                           f"({len(missing)} of {len(db_paths)} missing); restore the images under {jpg}")
    queries, boxes = [], []
    for i, (qname, g) in enumerate(zip(gt["qimlist"], gt["gnd"])):
        path = jpg / f"{qname}.jpg"
        if check_images:
            check_box(path, g["bbx"], f"{pkl}: gnd[{i}] (query {qname})")
        queries.append(Sample(path, i, f"{pkl}: qimlist[{i}]"))
        boxes.append(g["bbx"])
    database = [Sample(p, i, f"{pkl}: imlist[{i}]") for i, p in enumerate(db_paths)]
    parts = [DatabasePart(name.replace("+1m", ""), "database", database)]
    if distractors is not None:
        parts.append(DatabasePart("retrieval/revisitop1m", "distractors", read_distractors(distractors)))
    setups = []
    for setup, suffix, positive_keys, junk_keys in REVISITED_SETUPS:
        setups.append(Setup(setup, [np.concatenate([g[k] for k in positive_keys]) for g in gt["gnd"]],
                            [np.concatenate([g[k] for k in junk_keys]) for g in gt["gnd"]], suffix))
    protocol = {"queries": "cropped to their bbx (PIL crop, revisitop's example_process_images)", "query_in_database": False,
                "setups": {s: {"positives": list(p), "junk": list(j)} for s, _, p, j in REVISITED_SETUPS},
                "evaluation": "revisitop compute_map: junk removed from the ranking, trapezoidal AP, mP@k with kq = min(max position, k)",
                "distractors": str(distractors) if distractors else None}
    return make_task(name, group, "mAP_M", queries=queries, boxes=boxes, parts=parts, setups=setups, scoring="revisited",
                     protocol=protocol, source=str(pkl), query_cache_name=parts[0].cache_name)
