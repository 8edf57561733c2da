"""Zero-shot classification and image-text retrieval with a vision-language backbone (CLIP protocol).

Classification: for each class, fill every prompt template with the class name, encode with the
text tower, L2-normalise each prompt embedding, average over templates, renormalise; logits are
100 x the cosine similarity to the L2-normalised image embedding (CLIP's learned scale ~ 100; a
scale changes no ranking). Nothing is fitted or selected, so the number is on the task's test
split like every other method's. Image embeddings come from the feature cache shared with kNN and
linear probes; class embeddings are cached the same way (key: weights + text tower + prompts).

Retrieval: the task supplies the images, the captions and the recall@k definition
(``task.captions`` / ``task.evaluate``); the method only encodes and computes similarities.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BobError
from ..eval_sets import add_eval_sets, finish_eval_sets
from ..registry import register_method
from ..types import CLASSIFICATION, RETRIEVAL
from .base import Method, MethodResult

ZEROSHOT_METRICS = {  # top1 keeps the standard declaration: zero-shot shares its rows and header with every other method
    "top5": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": "top-5 accuracy (%)"},
    "mean_per_class_recall": {"direction": "higher", "unit": "%", "fmt": ".1f", "label": "mean per-class recall (%)"},
}


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fill_templates(names: list[str], templates: list[str]) -> list[str]:
    """Class-major: prompt ``i * len(templates) + j`` is template j filled with class i.
    ``str.replace`` rather than ``format``: templates may contain other braces."""
    return [t.replace("{c}", n) for n in names for t in templates]


def class_embeddings(prompt_embeddings: np.ndarray, num_classes: int, num_templates: int) -> np.ndarray:
    """Normalise each prompt embedding, average over a class's templates, renormalise (C x D)."""
    per_prompt = l2_normalise(prompt_embeddings).reshape(num_classes, num_templates, -1)
    return l2_normalise(per_prompt.mean(axis=1))


def zeroshot_logits(image_embeddings: np.ndarray, class_emb: np.ndarray, scale: float = 100.0) -> np.ndarray:
    return scale * (l2_normalise(image_embeddings) @ l2_normalise(class_emb).T)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """top-1, top-5 (only when there are at least 5 classes) and mean per-class recall, in %.
    Ties go to the lower class index (a stable sort), so the numbers are deterministic."""
    labels = np.asarray(labels)
    order = np.argsort(-logits, axis=1, kind="stable")
    pred = order[:, 0]
    out = {"top1": float((pred == labels).mean() * 100.0), "n_eval": int(len(labels))}
    if num_classes >= 5:
        out["top5"] = float((order[:, :5] == labels[:, None]).any(axis=1).mean() * 100.0)
    present = [c for c in range(num_classes) if (labels == c).any()]
    out["mean_per_class_recall"] = float(np.mean([(pred[labels == c] == c).mean() for c in present]) * 100.0)
    return out


def read_name_list(value: Any, task_name: str, what: str) -> list[str]:
    """A user override: a list, or a file (.txt one per line; .json/.yaml list, or a mapping task -> list)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise BobError(f"{what}={value}: no such file; give a .txt (one per line) or a .json/.yaml list (or mapping task -> list)")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".json", ".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
        if isinstance(data, dict):
            if task_name not in data:
                raise BobError(f"{path}: no key '{task_name}' (keys: {', '.join(list(data)[:8])}); add the task's {what} under it")
            data = data[task_name]
        if not isinstance(data, list):
            raise BobError(f"{path}: expected a list of {what} for {task_name}, got {type(data).__name__}")
        return [str(v) for v in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def resolve_class_text(task, hp: dict[str, Any]) -> tuple[list[str], list[str], str]:
    names = templates = None
    source = ""
    if task.class_text is not None and (hp.get("classnames") is None or hp.get("templates") is None):
        names, templates, source = task.class_text()
    if hp.get("classnames") is not None:
        names, source = read_name_list(hp["classnames"], task.name, "classnames"), f"classnames={hp['classnames']}"
    if hp.get("templates") is not None:  # a list, a file of templates, or one template string
        given = hp["templates"]
        templates = [given] if isinstance(given, str) and "{c}" in given and not Path(given).is_file() else read_name_list(given, task.name, "templates")
    if names is None:
        raise BobError(f"task {task.name} has no class names for zeroshot: add `names:` (label order) and `templates:` under "
                       f"`tasks: {task.name}:` in tasks/configs/zeroshot.yaml, or pass --set classnames=FILE (one name per line)")
    templates = templates or ["a photo of a {c}."]
    if len(names) != task.num_classes:
        raise BobError(f"task {task.name}: {len(names)} class names ({source}) for {task.num_classes} classes; give one name per label, in label order")
    if any("{c}" not in t for t in templates):
        raise BobError(f"task {task.name}: every template needs the placeholder {{c}}, e.g. 'a photo of a {{c}}.' (got {templates[:2]})")
    return names, templates, source


def text_embeddings(backbone, texts: list[str], ctx, hp: dict[str, Any], tag: str) -> np.ndarray:
    """Unnormalised text-tower embeddings of ``texts``, through the feature cache."""
    digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:24]
    key = {"v": 1, "kind": "text", "backbone": backbone.cache_key, "text": backbone.text_identity, "tokenizer": hp.get("tokenizer"), "texts": digest, "tag": tag}
    cached = ctx.feature_cache.load(key)
    if cached is not None:
        ctx.feature_cache.hits += 1
        return cached[0]
    ctx.feature_cache.misses += 1
    t0 = time.perf_counter()
    encode = backbone.text_encoder(hp.get("tokenizer"))
    emb = np.asarray(encode(texts, int(hp.get("text_batch_size") or 256), ctx.device), dtype=np.float32)
    ctx.add_time("text", time.perf_counter() - t0)
    ctx.feature_cache.save(key, emb, np.arange(len(texts)), {"n": len(texts)})
    return emb


@register_method
class ZeroShot(Method):
    name = "zeroshot"
    kinds = (CLASSIFICATION, RETRIEVAL)
    description = "CLIP zero-shot: class prompts through the text tower (template-averaged), or image-text retrieval"
    defaults = {"classnames": None, "templates": None, "tokenizer": None, "logit_scale": 100.0, "text_batch_size": 256}
    search_space = {}
    backbone_requires = {"capabilities": ["text"], "why": "zero-shot needs a text tower (an openclip:... backbone)"}
    metrics = ZEROSHOT_METRICS

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..features import split_features

        if getattr(backbone, "text_encoder", None) is None:
            raise BobError(f"method zeroshot needs a vision-language backbone with a text tower; {backbone.name} has none")
        split = task.final_splits[1]
        if task.kind == RETRIEVAL:
            return self._retrieval(backbone, task, hparams, ctx, split)
        names, templates, source = resolve_class_text(task, hparams)
        image_emb, labels = split_features(backbone, task, split, ctx, hparams["batch_size"])
        prompt_emb = text_embeddings(backbone, fill_templates(names, templates), ctx, hparams, "classes")
        t0 = time.perf_counter()
        classes = class_embeddings(prompt_emb, len(names), len(templates))
        logits = zeroshot_logits(image_emb, classes, float(hparams["logit_scale"]))
        metrics = classification_metrics(logits, labels, task.num_classes)

        def logits_of(s):  # shifted sets: the same class embeddings (masked per set by harness.eval_sets)
            emb, ys = split_features(backbone, task, s, ctx, hparams["batch_size"])
            return zeroshot_logits(emb, classes, float(hparams["logit_scale"])), ys

        add_eval_sets(task, split, metrics, logits_of)
        ctx.add_time("eval", time.perf_counter() - t0)
        protocol = {"selected_on": None, "selected": {}, "reported_on": split, "note": "zero-shot: nothing fitted or selected",
                    "templates": len(templates), "class_names_source": source, "logit_scale": float(hparams["logit_scale"])}
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, metric_specs=specs)

    def _retrieval(self, backbone, task, hparams, ctx, split: str) -> MethodResult:
        from ..features import split_features

        image_emb, image_ids = split_features(backbone, task, split, ctx, hparams["batch_size"])
        texts, caption_image = task.captions(split)
        text_emb = text_embeddings(backbone, texts, ctx, hparams, "captions")
        t0 = time.perf_counter()
        order = np.argsort(image_ids, kind="stable")  # rows of the similarity matrix = images in index order
        similarity = (l2_normalise(image_emb[order]) @ l2_normalise(text_emb).T).astype(np.float32)
        metrics = task.evaluate(similarity, np.asarray(caption_image))
        ctx.add_time("eval", time.perf_counter() - t0)
        protocol = {"selected_on": None, "selected": {}, "reported_on": split, "note": "zero-shot retrieval: nothing fitted or selected",
                    "images": int(len(image_ids)), "captions": int(len(texts))}
        return MethodResult(metrics, task.metric, protocol)
