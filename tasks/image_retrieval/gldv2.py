"""Google Landmarks v2, retrieval challenge (Weyand et al., CVPR 2020) from its released files.

Layout (cvdfoundation/google-landmark): ``index.csv`` (``id``), ``retrieval_solution_v2.1.csv``
(``id,images,Usage``: a test image, the space-separated index images of its landmark, and
``Public`` / ``Private`` / ``Ignored``), images at ``index/<a>/<b>/<c>/<id>.jpg`` and
``test/<a>/<b>/<c>/<id>.jpg`` (a, b, c = the id's first three characters).

The protocol is delf's ``compute_retrieval_metrics``: Ignored test images are not evaluated (they
have no landmark in the index, so bob does not extract them); mAP@100 is computed separately over
the Private and the Public queries, each averaged over its queries. The database is every index
image.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from harness.data import Sample
from harness.errors import BobError

from .revisited import missing_files
from .task import DatabasePart, ImageRetrievalTask, Setup, make_task

SOLUTION = "retrieval_solution_v2.1.csv"
USAGES = ("Private", "Public")


def image_path(root: Path, id_: str) -> Path:
    return root / id_[0] / id_[1] / id_[2] / f"{id_}.jpg"


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise BobError(f"{path} does not exist; GLDv2 retrieval needs index.csv and {SOLUTION} (cvdfoundation/google-landmark)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise BobError(f"{path}: no column(s) {', '.join(missing)} in the header {reader.fieldnames}; expected {','.join(columns)}")
        return [(line, row) for line, row in enumerate(reader, 2)]


def load_gldv2_task(name: str, folder: Path, group: str) -> ImageRetrievalTask:
    folder = Path(folder)
    index_ids = [row["id"] for _, row in _rows(folder / "index.csv", ("id",))]
    position = {id_: i for i, id_ in enumerate(index_ids)}
    queries, usage, positives = [], [], []
    for line, row in _rows(folder / SOLUTION, ("id", "images", "Usage")):
        where = f"{folder / SOLUTION}:{line}"
        if row["Usage"] == "Ignored":
            continue
        if row["Usage"] not in USAGES:
            raise BobError(f"{where}: Usage {row['Usage']!r} is not Public, Private or Ignored")
        ids = [i for i in (row["images"] or "").split(" ") if i]
        unknown = [i for i in ids if i not in position]
        if not ids or unknown:
            raise BobError(f"{where}: test image {row['id']}: " + (f"index image {unknown[0]} is not in index.csv" if unknown else "no index image listed"))
        queries.append(Sample(image_path(folder / "test", row["id"]), len(queries), where))
        usage.append(row["Usage"])
        positives.append(np.asarray(sorted(position[i] for i in ids), dtype=np.int64))
    database = [Sample(image_path(folder / "index", id_), i, f"{folder / 'index.csv'}:{i + 2}") for i, id_ in enumerate(index_ids)]
    for what, samples in (("index", database), ("test", queries)):
        missing = missing_files([Path(s.image) for s in samples])
        if missing:
            s = samples[missing[0]]
            raise BobError(f"{s.origin}: {what} image {s.image} does not exist ({len(missing)} of {len(samples)} missing); restore the images")
    empty = np.zeros(0, np.int64)
    setups = [Setup(u.lower(), [p if usg == u else empty for p, usg in zip(positives, usage)], [empty] * len(queries), f"_{u.lower()}") for u in USAGES]
    protocol = {"queries": "test images with a Public or Private solution (Ignored ones are not evaluated)", "database": "every index image",
                "evaluation": "delf MeanAveragePrecision, max_predictions=100, separately on Private and Public"}
    return make_task(name, group, "mAP@100_private", queries=queries, boxes=[None] * len(queries),
                     parts=[DatabasePart(name, "database", database)], setups=setups, scoring="gldv2", protocol=protocol, source=str(folder))
