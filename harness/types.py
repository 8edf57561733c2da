"""Core types passed between the runner, the plugins and the methods.

Kept free of torch imports: a ``Backbone`` builds its ``nn.Module`` lazily, so a cell whose
features are already cached never constructs (let alone runs) the network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

CLASSIFICATION = "classification"
DETECTION = "detection"
ICL_REGRESSION = "icl_regression"
LM_PROBE = "lm_probe"
RETRIEVAL = "retrieval"  # image-text
IMAGE_RETRIEVAL = "image_retrieval"  # image to image: a query set ranked against a database
TASK_KINDS = (CLASSIFICATION, DETECTION, ICL_REGRESSION, LM_PROBE, RETRIEVAL, IMAGE_RETRIEVAL)


@dataclass
class Preprocess:
    """How images become tensors; part of the feature-cache key and of every record.

    The default eval pipeline is the VTAB protocol of the PEFT papers: resize straight to the
    input size (no crop), the backbone's own normalisation, no augmentation.
    """

    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop: str = "none"
    # set by a task that declares the model's own eval protocol (ImageNet family): resize the shorter side to
    # floor(img_size / crop_pct), centre crop img_size (timm's eval transform); None: the VTAB resize above
    crop_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "img_size": self.img_size,
            "mean": [round(float(m), 6) for m in self.mean],
            "std": [round(float(s), 6) for s in self.std],
            "interpolation": self.interpolation,
            "crop": self.crop,
            "resize": "direct",
        }
        if self.crop_pct is not None:
            out.update(crop="center", crop_pct=float(self.crop_pct), resize="shorter-side", resize_to=self.resize_to, protocol="model-eval")
        return out

    @property
    def resize_to(self) -> int:
        import math

        return int(math.floor(self.img_size / float(self.crop_pct))) if self.crop_pct else self.img_size

    def eval_transform(self) -> Callable:
        from torchvision import transforms as T

        if self.crop_pct is not None:  # timm's transforms_imagenet_eval (crop_mode center)
            return T.Compose([T.Resize(self.resize_to, interpolation=_interp(self.interpolation)), T.CenterCrop(self.img_size),
                              T.ToTensor(), T.Normalize(self.mean, self.std)])
        return T.Compose(
            [
                T.Resize((self.img_size, self.img_size), interpolation=_interp(self.interpolation)),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self, augment: bool, hflip: bool) -> Callable:
        """Without ``augment`` this is the eval transform (the VTAB-1k protocol)."""
        if not augment:
            return self.eval_transform()
        from torchvision import transforms as T

        steps = [T.RandomResizedCrop(self.img_size, scale=(0.6, 1.0), interpolation=_interp(self.interpolation))]
        if hflip:
            steps.append(T.RandomHorizontalFlip())
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}.get(
        name, InterpolationMode.BICUBIC
    )


@dataclass
class Backbone:
    """A feature extractor. ``model`` returns pooled features of size ``feature_dim``.

    ``build`` constructs the ``nn.Module`` on first use of ``model``. ``cache_key`` identifies
    the weights (name + pretrained tag / random-init seed / file hash) without building anything.
    """

    name: str
    meta: dict[str, Any]
    preprocess: Preprocess
    cache_key: str
    build: Callable[[], Any]
    _model: Any = None
    feature_dim: int | None = None
    # timm backbones: () -> (the same weights with the model's own classifier, its pretrained_cfg), for pretrained_head
    with_head: Callable[[], tuple[Any, dict]] | None = None

    @property
    def model(self):
        if self._model is None:
            self._model = self.build()
            # the pooled output's width: timm's head_hidden_size where a pre-logits layer widens it
            # (MobileNetV3's conv_head: 576 -> 1024), else num_features
            self.feature_dim = int(getattr(self._model, "head_hidden_size", 0) or getattr(self._model, "num_features", 0) or self.feature_dim or 0)
            measure = self.meta.pop("_measure", None)
            if measure is not None:
                self.meta.update(measure(self._model))
        return self._model

    @property
    def built(self) -> bool:
        return self._model is not None


@dataclass
class VisionLanguageBackbone(Backbone):
    """An image tower (``model``, the same contract as any image backbone) plus its text tower.

    ``text_encoder()`` returns ``encode(texts: list[str]) -> (N, D) numpy array`` of *unnormalised*
    text embeddings in the image embedding space; building it may raise a one-line BobError (a
    tokenizer that needs a download). ``text_identity`` names the tokenizer and text tower for the
    text-embedding cache key (the weights are already in ``cache_key``).
    """

    text_encoder: Callable[[], Callable[[list], Any]] | None = None
    text_identity: str = ""
    # open-vocabulary detectors only (OWL-ViT): (tokenizer path) -> (encode(prompts), detect(images, queries))
    open_vocabulary_detector: Callable[..., tuple[Callable, Callable]] | None = None
    # open_clip models only: (tokenizer path) -> (the whole open_clip model, its tokenizer), for methods that
    # work inside both towers (prompt learning); the towers are the very modules ``model`` / ``text_encoder`` use
    clip_model: Callable[..., tuple[Any, Any]] | None = None


@dataclass
class Task:
    """A classification task (other kinds subclass this in their plugin modules).

    ``loaders`` maps split name -> callable returning the split's samples. ``union_splits``
    says which splits are the concatenation of others (VTAB's train800val200 = train800 +
    val200) so features are extracted once and concatenated rather than recomputed.
    """

    name: str
    kind: str
    group: str
    num_classes: int
    loaders: dict[str, Callable[[], Any]]
    metric: str = "top1"
    tune_splits: tuple[str, str] | None = ("train800", "val200")
    final_splits: tuple[str, str] = ("train800val200", "test")
    union_splits: dict[str, Sequence[str]] = field(default_factory=dict)
    hflip_ok: bool = True
    source: str = ""
    # () -> (class names in label order, prompt templates with "{c}", where they came from); None: no names known
    class_text: Callable[[], tuple[list[str], list[str], str]] | None = None
    # splits bob made or checked (harness.splits.provenance): rule, fractions, seed, counts, hashes; in every record
    split_provenance: dict[str, Any] | None = None
    # shifted evaluation sets (harness.eval_sets.EvalSet): scored by the model trained on final_splits[0], in the same cell
    eval_sets: list = field(default_factory=list)
    # "backbone": the backbone's preprocessing (VTAB resize); "model": the model's own eval transform (crop_pct, centre crop)
    eval_preprocess: str = "backbone"

    def load(self, split: str):
        if split not in self.loaders:
            raise KeyError(f"task {self.name} has no split '{split}' (splits: {', '.join(self.loaders)})")
        return self.loaders[split]()

    @property
    def splits(self) -> list[str]:
        return list(self.loaders)

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "group": self.group,
            "num_classes": self.num_classes,
            "metric": self.metric,
            "splits": self.splits,
            "source": self.source,
            **({"split_provenance": self.split_provenance} if self.split_provenance else {}),
            **({"eval_sets": [es.describe() for es in self.eval_sets]} if self.eval_sets else {}),
        }


@dataclass
class RunContext:
    """Everything a method needs besides backbone, task and hparams."""

    device: str
    seed: int
    cell_id: str
    feature_cache: Any  # harness.features.FeatureCache
    checkpoint_dir: Path | None
    num_workers: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    log: Callable[[str], None] = print
    on_metrics: Callable[[dict[str, float], int | None], None] | None = None
    distributed: dict[str, Any] = field(default_factory=dict)  # fit() notes world size, per-device batch, accumulation
    shard_devices: tuple[str, ...] = ()  # the devices one process may spread one model over (model-parallel methods)

    def add_time(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds
