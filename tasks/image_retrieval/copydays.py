"""Copydays, strong subset (Douze et al. 2009), with the distractor set when present.

Layout (INRIA's release, as DINO's ``eval_copy_detection`` reads it): ``original/*.jpg`` (157 images)
and ``strong/*.jpg`` (229 strongly attacked copies); distractors (DINO: 10k random YFCC100M images)
in ``distractors/`` when present. The protocol is DINO's: the strong images are the queries, the
database is the originals followed by the distractors, and a query's positives are the originals
whose name starts with the same four characters (the image id). mAP is the Holidays / INSTRE
package's AP (the same trapezoid rule as revisitop) over the full ranking; DINO keeps only the top
20, which scores a positive ranked below 20 as 0 instead of its small share.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data import IMAGE_SUFFIXES, Sample
from harness.errors import BobError

from .task import DatabasePart, ImageRetrievalTask, Setup, make_task


def _images(folder: Path, recursive: bool = False) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_copydays_task(name: str, folder: Path, group: str, distractors: Path | None = None) -> ImageRetrievalTask:
    folder = Path(folder)
    for sub in ("original", "strong"):
        if not (folder / sub).is_dir():
            raise BobError(f"Copydays folder {folder} has no {sub}/ sub-folder; expected original/*.jpg and strong/*.jpg (INRIA's release)")
    originals, strongs = _images(folder / "original"), _images(folder / "strong")
    if not originals or not strongs:
        raise BobError(f"Copydays folder {folder}: original/ holds {len(originals)} and strong/ {len(strongs)} images; both are needed")
    distractors = distractors if distractors is not None else (folder / "distractors" if (folder / "distractors").is_dir() else None)
    extra = _images(distractors, recursive=True) if distractors is not None else []
    positives = []
    for q in strongs:
        hits = [j for j, o in enumerate(originals) if o.name[:4] == q.name[:4]]
        if not hits:
            raise BobError(f"{q}: no image in {folder / 'original'} starts with its id '{q.name[:4]}'; every strong copy needs its original")
        positives.append(np.asarray(hits, dtype=np.int64))
    queries = [Sample(p, i, f"{folder}/strong") for i, p in enumerate(strongs)]
    parts = [DatabasePart(name, "database", [Sample(p, i, f"{folder}/original") for i, p in enumerate(originals)])]
    if extra:
        parts.append(DatabasePart(f"{name}:distractors:{distractors}", "distractors", [Sample(p, i, str(distractors)) for i, p in enumerate(extra)]))
    setups = [Setup("strong", positives, [np.zeros(0, np.int64)] * len(queries), "")]
    protocol = {"queries": "strong/ (whole images)", "database": f"original/ + {len(extra)} distractors" + (f" from {distractors}" if extra else ""),
                "positives": "originals with the query's 4-character id prefix (DINO eval_copy_detection)",
                "evaluation": "Holidays-package AP over the full ranking (DINO truncates at 20)"}
    return make_task(name, group, "mAP", queries=queries, boxes=[None] * len(queries), parts=parts, setups=setups, scoring="copydays",
                     protocol=protocol, source=str(folder))
