"""Issue 20: bob's zero-shot classification and image-text retrieval equal clip-benchmark's own
evaluation (``clip_benchmark.metrics``) of the same tiny random-init open_clip model on the same
local data: top-1, top-5, mean per-class recall; recall@1/5/10 both ways."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.registry import BACKBONES, TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

from .fixtures import colour_image

pytest.importorskip("clip_benchmark")
MODEL = "openclip:bob-tiny-clip"


def _numpy2_float(value):
    """clip-benchmark 1.6.2's ``accuracy`` calls float() on a shape-(1,) array, which NumPy 2 refuses;
    this float accepts it (the value is unchanged) so that its own ``evaluate`` runs as released."""
    return float(np.asarray(value).reshape(-1)[0]) if np.ndim(value) else float(value)


def test_zeroshot_classification_equals_clip_benchmark(tmp_path, monkeypatch):
    import tasks  # noqa: F401
    import torch
    from clip_benchmark.metrics import zeroshot_classification

    record = run_cell(RunSpec(MODEL, "zeroshot", "digits", 0, "random", {"img_size": 32}), ResultStore(tmp_path / "r"))
    assert record["status"] == "ok", record["error"]
    backbone = BACKBONES.get(MODEL).factory(weights="random", seed=0, img_size=32)
    model, tokenizer = backbone.clip_model()
    task = TASKS.get("digits").factory()
    names, templates, _ = task.class_text()
    data = task.load("test").with_transform(backbone.preprocess.eval_transform())
    data.classes = names  # clip_benchmark reads the class list from the dataset
    loader = torch.utils.data.DataLoader(data, batch_size=100)
    monkeypatch.setattr(zeroshot_classification, "float", _numpy2_float, raising=False)
    ref = zeroshot_classification.evaluate(model, loader, tokenizer, names, templates, "cpu", amp=False)
    m = record["metrics"]
    assert abs(m["top1"] / 100 - ref["acc1"]) <= 1e-6 and abs(m["top5"] / 100 - ref["acc5"]) <= 1e-6
    assert abs(m["mean_per_class_recall"] / 100 - ref["mean_per_class_recall"]) <= 1e-6
    assert 0.0 < ref["acc5"] < 1.0 and ref["acc1"] < ref["acc5"]  # not a degenerate comparison


def make_retrieval_set(root: Path, n_images: int = 15, captions_per_image: int = 3) -> tuple[Path, Path]:
    rng = np.random.RandomState(0)
    words = ["red", "green", "blue"]
    (root / "imgs").mkdir(parents=True)
    images = []
    for i in range(n_images):
        colour_image(i % 3, rng, 24).save(root / "imgs" / f"{i:03d}.png")
        images.append({"filename": f"{i:03d}.png", "split": "test", "imgid": i,
                       "sentences": [{"raw": f"a {words[i % 3]} picture {i} {j} {'big' if (i * j) % 2 else 'small'}"} for j in range(captions_per_image)]})
    ann = root / "dataset_flickr30k.json"
    ann.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return ann, root / "imgs"


def test_zeroshot_retrieval_equals_clip_benchmark(tmp_path):
    import torch
    from clip_benchmark.metrics import zeroshot_retrieval
    from PIL import Image

    ann, image_dir = make_retrieval_set(tmp_path)
    record = run_cell(RunSpec(MODEL, "zeroshot", f"retrieval:{ann}@{image_dir}", 0, "random", {"img_size": 32}), ResultStore(tmp_path / "r"))
    assert record["status"] == "ok", record["error"]
    backbone = BACKBONES.get(MODEL).factory(weights="random", seed=0, img_size=32)
    model, tokenizer = backbone.clip_model()
    transform = backbone.preprocess.eval_transform()
    items = [(transform(Image.open(image_dir / im["filename"]).convert("RGB")), [s["raw"] for s in im["sentences"]])
             for im in json.loads(ann.read_text())["images"]]
    loader = torch.utils.data.DataLoader(items, batch_size=4, collate_fn=lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b]))
    ref = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    m = record["metrics"]
    for k in (1, 5, 10):
        assert abs(m[f"i2t_r{k}"] / 100 - ref[f"text_retrieval_recall@{k}"]) <= 1e-6, (k, m, ref)
        assert abs(m[f"t2i_r{k}"] / 100 - ref[f"image_retrieval_recall@{k}"]) <= 1e-6, (k, m, ref)
    assert 0.0 < ref["image_retrieval_recall@1"] < 1.0  # not a degenerate comparison
