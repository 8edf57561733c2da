"""The ``image_retrieval`` task kind: a query set, a database and, per query, which database
images are positive (and which are junk) in each evaluation setup. The score is a ranking.

The task owns its protocol: which queries are cropped to which box, the database's parts (the
revisited sets' 1M distractors are a second part, cached once for both +1M tasks), the setups
(revisited Easy / Medium / Hard, GLDv2's private and public splits, or one setup) and the metrics
(``tasks.image_retrieval.metrics``). A method only turns images into vectors and ranks the
database: ``targets()`` says which database indices it must locate in each query's ranking, and
``score(ranks)`` turns their positions into metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from harness.data import ImageClassificationDataset, Sample, open_rgb
from harness.types import IMAGE_RETRIEVAL, Task

from . import metrics as M

Box = tuple[float, float, float, float]


class CroppedImageDataset(ImageClassificationDataset):
    """Images cropped to a box (x1, y1, x2, y2 in pixels; None = whole image) before the transform,
    as the revisited protocol requires of its queries (``PIL.Image.crop`` with the box as given,
    which is what revisitop's own example does). The box is part of each sample's identity, so a
    cropped and an uncropped query set never share a feature-cache entry."""

    def __init__(self, samples: Sequence[Sample], boxes: Sequence[Box | None], transform=None, name: str = ""):
        super().__init__(samples, transform, name)
        self.boxes = list(boxes)

    def __getitem__(self, index: int):
        sample, box = self.samples[index], self.boxes[index]
        image = open_rgb(sample)
        if box is not None:
            image = image.crop(tuple(float(v) for v in box))
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label

    def with_transform(self, transform) -> "CroppedImageDataset":
        return CroppedImageDataset(self.samples, self.boxes, transform, self.name)

    def identity(self) -> list:
        return [[*s.identity, None if b is None else [round(float(v), 3) for v in b]] for s, b in zip(self.samples, self.boxes)]


@dataclass
class DatabasePart:
    """A slice of the database: ``cache_name``/``split`` key its features (shared across tasks)."""

    cache_name: str
    split: str
    samples: list[Sample]

    def dataset(self) -> ImageClassificationDataset:
        return ImageClassificationDataset(self.samples, name=f"{self.cache_name}:{self.split}")


@dataclass
class Setup:
    """One evaluation setup: per query, the positive and the junk database indices."""

    name: str
    positives: list[np.ndarray]
    junk: list[np.ndarray]
    suffix: str = ""


@dataclass
class ImageRetrievalTask(Task):
    query_samples: list[Sample] = field(default_factory=list)
    query_boxes: list[Box | None] = field(default_factory=list)
    parts: list[DatabasePart] = field(default_factory=list)
    setups: list[Setup] = field(default_factory=list)
    scoring: str = "bob"  # revisited | bob | gldv2 | copydays
    protocol: dict[str, Any] = field(default_factory=dict)
    query_cache_name: str = ""  # the data the queries belong to (``+1m`` tasks share their base set's queries)

    def queries(self, crop: bool = True) -> CroppedImageDataset:
        boxes = self.query_boxes if crop else [None] * len(self.query_samples)
        return CroppedImageDataset(self.query_samples, boxes, name=f"{self.name}:query")

    @property
    def n_database(self) -> int:
        return sum(len(p.samples) for p in self.parts)

    @property
    def crops_queries(self) -> bool:
        return any(b is not None for b in self.query_boxes)

    def targets(self) -> list[np.ndarray]:
        """Per query: the sorted database indices whose ranks the scoring needs (every setup's
        positives and junk)."""
        out = []
        for q in range(len(self.query_samples)):
            parts = [s.positives[q] for s in self.setups] + [s.junk[q] for s in self.setups]
            out.append(np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64))
        return out

    def score(self, ranks: list[np.ndarray]) -> dict[str, float]:
        """Metrics from ``ranks[q]`` = the 0-based ranks of ``targets()[q]`` in query q's ranking."""
        targets = self.targets()
        out: dict[str, float] = {}
        for setup in self.setups:
            per_query = []
            for q, (t, r) in enumerate(zip(targets, ranks)):
                pos = r[np.isin(t, setup.positives[q])]
                junk = r[np.isin(t, setup.junk[q])]
                per_query.append((pos, junk, len(setup.positives[q])))
            if self.scoring == "gldv2":
                kept = [(p, n) for p, _, n in per_query if n > 0]
                out[f"mAP@100{setup.suffix}"] = M.map_at_k([p for p, _ in kept], [n for _, n in kept], 100)
            elif self.scoring == "copydays":
                out[f"mAP{setup.suffix}"] = M.setup_metrics(per_query, suffix="", recall=False, mrr=False)["mAP"]
            else:
                revisited = self.scoring == "revisited"
                out.update(M.setup_metrics(per_query, suffix=setup.suffix, recall=not revisited, mrr=not revisited))
        return out


def make_task(name: str, group: str, metric: str, *, queries: list[Sample], boxes: list[Box | None], parts: list[DatabasePart],
              setups: list[Setup], scoring: str, protocol: dict[str, Any], source: str, query_cache_name: str = "") -> ImageRetrievalTask:
    loaders = {"query": (lambda: CroppedImageDataset(queries, boxes, name=f"{name}:query"))}
    for part in parts:
        loaders[part.split] = part.dataset
    return ImageRetrievalTask(
        name=name, kind=IMAGE_RETRIEVAL, group=group, num_classes=0, loaders=loaders, metric=metric, tune_splits=None,
        final_splits=("database", "query"), hflip_ok=False, source=source, query_samples=queries, query_boxes=boxes, parts=parts,
        setups=setups, scoring=scoring, protocol=protocol, query_cache_name=query_cache_name or name)
