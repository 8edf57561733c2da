"""Image-text retrieval tasks (kind ``retrieval``) in the Karpathy-split json format.

``dataset_flickr30k.json`` / ``dataset_coco.json`` (Karpathy & Fei-Fei 2015, the splits every
retrieval paper reports): ``{"images": [{"filename", "filepath"?, "split": train|restval|val|test,
"sentences": [{"raw": ...}, ...]}, ...]}``. Flickr30k test = 1,000 images x 5 captions; MS-COCO
test = 5,000 images (the "5k" setting). ``retrieval:<json>@<image dir>`` reads any local set.

The metric lives here, next to the data: image-to-text recall@k counts an image as found when *any*
of its captions ranks in the top k; text-to-image recall@k counts a caption as found when its one
image ranks in the top k. Ties rank by index (what a stable sort gives), so the numbers are exact
and deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import BobError
from harness.registry import TASKS, Entry
from harness.suites import register_suite
from harness.types import RETRIEVAL, Task

RECALL_KS = (1, 5, 10)
RETRIEVAL_METRICS = {
    **{f"i2t_r{k}": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": f"image-to-text recall@{k} (%)"} for k in RECALL_KS},
    **{f"t2i_r{k}": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": f"text-to-image recall@{k} (%)"} for k in RECALL_KS},
    "mean_recall": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": "mean of the six recalls (%)"},
}
BUILTIN_SETS = {  # task id -> (folder names under the data root, json file, image folder candidates)
    "retrieval/flickr30k": (("flickr30k", "Flickr30k"), "dataset_flickr30k.json", ("flickr30k-images", "images", ".")),
    "retrieval/coco": (("coco", "mscoco", "COCO"), "dataset_coco.json", (".", "images")),
}


def _ranks_of(scores: np.ndarray, target_cols: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of column ``target_cols[r]`` in each row of ``scores``, ties by index."""
    rows = np.arange(len(scores))
    target = scores[rows, target_cols][:, None]
    cols = np.arange(scores.shape[1])[None, :]
    return ((scores > target) | ((scores == target) & (cols < target_cols[:, None]))).sum(axis=1)


def retrieval_recalls(similarity: np.ndarray, caption_image: np.ndarray, ks=RECALL_KS, chunk: int = 256) -> dict[str, float]:
    """``similarity``: images x captions; ``caption_image[t]``: the image of caption t (several
    captions may share an image; every image needs at least one)."""
    similarity = np.asarray(similarity)
    similarity = similarity if similarity.dtype.kind == "f" else similarity.astype(np.float64)
    caption_image = np.asarray(caption_image, dtype=np.int64)
    n_images, n_captions = similarity.shape
    if len(caption_image) != n_captions:
        raise ValueError(f"{len(caption_image)} caption->image entries for {n_captions} captions")
    t2i = np.concatenate([_ranks_of(similarity[:, s:s + chunk].T, caption_image[s:s + chunk]) for s in range(0, n_captions, chunk)])
    i2t = np.full(n_images, np.iinfo(np.int64).max)
    for s in range(0, n_captions, chunk):  # an image's rank = the best rank among its captions
        block = similarity[caption_image[s:s + chunk]]  # each caption's image row
        ranks = _ranks_of(block, np.arange(s, min(s + chunk, n_captions)))
        np.minimum.at(i2t, caption_image[s:s + chunk], ranks)
    if (i2t == np.iinfo(np.int64).max).any():
        raise ValueError("an image has no caption")
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t < k).mean() * 100.0)
        out[f"t2i_r{k}"] = float((t2i < k).mean() * 100.0)
    out["mean_recall"] = float(np.mean([out[f"i2t_r{k}"] for k in ks] + [out[f"t2i_r{k}"] for k in ks]))
    out["n_images"], out["n_captions"] = int(n_images), int(n_captions)
    return out


@dataclass
class RetrievalTask(Task):
    """Per split: an image dataset whose labels are image indices, and the captions pointing at them."""

    caption_splits: dict[str, tuple[list[str], list[int]]] = field(default_factory=dict)

    def captions(self, split: str) -> tuple[list[str], list[int]]:
        return self.caption_splits[split]

    def evaluate(self, similarity: np.ndarray, caption_image: np.ndarray) -> dict[str, float]:
        return retrieval_recalls(similarity, caption_image)


def read_karpathy_json(json_file: Path, image_dir: Path) -> dict[str, tuple[list, list[str], list[int]]]:
    """split -> (image samples labelled by their index in the split, captions, caption -> image index)."""
    from harness.data import Sample, path_inside

    from .jsonfile import read_json

    doc = read_json(json_file, f"retrieval annotations {json_file} do not exist; give the Karpathy-split json (dataset_flickr30k.json / dataset_coco.json)")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise BobError(f"{json_file}: not a Karpathy-split file: expected {{\"images\": [{{filename, split, sentences}}, ...]}}")
    out: dict[str, tuple[list, list[str], list[int]]] = {}
    for i, entry in enumerate(doc["images"]):
        where = f"{json_file}: images[{i}]"
        if not isinstance(entry, dict) or "filename" not in entry or "split" not in entry:
            raise BobError(f"{where}: needs 'filename', 'split' and 'sentences'")
        sentences = entry.get("sentences") or []
        texts = [s.get("raw") if isinstance(s, dict) else None for s in sentences]
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise BobError(f"{where} ({entry['filename']}): needs at least one sentence with a non-empty 'raw' caption")
        split = "train" if entry["split"] == "restval" else str(entry["split"])
        samples, captions, owner = out.setdefault(split, ([], [], []))
        rel = str(Path(entry.get("filepath") or "") / entry["filename"])
        path = path_inside(image_dir, rel, where)
        samples.append(Sample(path, len(samples), f"{where} ({rel})"))
        captions += [t.strip() for t in texts]
        owner += [len(samples) - 1] * len(texts)
    return out


def load_retrieval_task(name: str, json_file: Path, image_dir: Path, group: str) -> RetrievalTask:
    from harness.data import ImageClassificationDataset

    splits = read_karpathy_json(json_file, image_dir)
    if "test" not in splits:
        raise BobError(f"{json_file}: no image has split 'test' (splits: {', '.join(sorted(splits)) or 'none'}); retrieval is reported on test")
    missing = [s for s in splits["test"][0] if not Path(s.image).is_file()]
    if missing:
        raise BobError(f"{missing[0].origin}: image {missing[0].image} does not exist ({len(missing)} of {len(splits['test'][0])} test images missing); "
                       f"check the image folder ({image_dir})")
    return RetrievalTask(
        name=name, kind=RETRIEVAL, group=group, num_classes=0,
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v[0], name=f"{name}:{k}")) for k, v in splits.items()},
        metric="mean_recall", tune_splits=None, final_splits=("train" if "train" in splits else "test", "test"), hflip_ok=True,
        source=str(json_file), caption_splits={k: (v[1], v[2]) for k, v in splits.items()},
    )


def _builtin_factory(task_id: str):
    folders, json_name, image_dirs = BUILTIN_SETS[task_id]

    def make(data_root=None, overrides: dict | None = None, **_) -> RetrievalTask:
        import os

        override = (overrides or {}).get(task_id)
        if override:
            return _from_spec(task_id, override, "retrieval")
        root = data_root or os.environ.get("BOB_DATA")
        candidates = [Path(root) / f for f in folders] if root else []
        for folder in candidates:
            if (folder / json_name).is_file():
                image_dir = next((folder / d for d in image_dirs if (folder / d).is_dir() and d != "."), folder)
                return load_retrieval_task(task_id, folder / json_name, image_dir, "retrieval")
        looked = ", ".join(str(c / json_name) for c in candidates) or "no data root given (--data-root or BOB_DATA)"
        raise BobError(f"task {task_id}: data not found (looked for {looked}); put the Karpathy json and the images there, "
                       f"or pass --data-path {task_id}=<json>@<image dir>")

    return make


def _from_spec(name: str, spec: str, group: str) -> RetrievalTask:
    json_part, sep, image_part = spec.partition("@")
    json_file = Path(json_part).expanduser()
    image_dir = Path(image_part).expanduser() if sep else json_file.parent
    if not image_dir.is_dir():
        raise BobError(f"task {name}: image folder {image_dir} does not exist; write retrieval:<karpathy json>@<image folder>")
    return load_retrieval_task(name, json_file, image_dir, group)


def _resolve(name: str) -> Entry:
    spec = name.split(":", 1)[1]
    if not spec:
        raise BobError("task 'retrieval:' needs a path: retrieval:<karpathy json>@<image folder> (image-text) "
                       "or retrieval:<folder or gnd_*.pkl> (image-to-image)")
    from .image_retrieval.catalog import local_entry

    image_to_image = local_entry(name, spec)  # a folder or a gnd pickle: image-to-image retrieval
    if image_to_image is not None:
        return image_to_image
    return Entry(name, lambda data_root=None, **_: _from_spec(name, spec, "retrieval/local"),
                 {"kind": RETRIEVAL, "group": "retrieval/local", "metrics": RETRIEVAL_METRICS})


_DESCRIPTIONS = {"retrieval/flickr30k": "Flickr30k 1k test images x 5 captions (Karpathy split)",
                 "retrieval/coco": "MS-COCO 5k test images x 5 captions (Karpathy split)"}
for _task_id in BUILTIN_SETS:
    TASKS.add(_task_id, _builtin_factory(_task_id), kind=RETRIEVAL, group="retrieval", suite="retrieval", metric="mean_recall",
              metrics=RETRIEVAL_METRICS, description=_DESCRIPTIONS[_task_id])
TASKS.add_prefix("retrieval", _resolve, "retrieval:<karpathy json>@<image folder> reads a local image-text set, "
                  "retrieval:<folder or gnd_*.pkl>[?cap=N] an image-to-image set (class folders, revisited, Copydays, GLDv2 layouts)")

register_suite(
    "retrieval", title="Image-text retrieval", rule="mean_of_tasks", group_columns=False,
    caption="Image-text retrieval (mean of image-to-text and text-to-image recall@1/5/10, %, Karpathy test split)",
    groups=[{"name": "retrieval", "title": "Retrieval", "tasks": list(BUILTIN_SETS)}],
)
