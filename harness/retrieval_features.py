"""Image descriptors for retrieval: a declared pooling at declared scales, through the feature cache.

A descriptor is how an image becomes one vector:
- ``pooling``: ``head`` = the backbone's own pooled output (what every other method sees; any
  backbone); ``cls`` = the class token of a timm ViT's last layer (after its final norm); ``gem`` =
  generalised mean pooling (Radenovic et al.) with exponent ``gem_p`` over the last feature map of
  a timm model (a CNN's H x W cells, a ViT's patch tokens without the prefix tokens) or over the
  patch tokens of an open_clip ViT tower. Values are clamped at 1e-6 first, as in cirtorch and
  DINO's copy-detection GeM. Anything else is a one-line error naming the backbone.
- ``scales``: one or more scales; a scale s resizes the input tensor by s (bilinear, as DINO and
  Battle of the Backbones do), the raw descriptors are averaged over scales, and the average is L2
  normalised at search time. BoB's 3 scales are 1, 1/sqrt(2), 1/2. For patch models each scaled
  side is rounded down to a multiple of the patch size (the position embedding is resampled by
  timm for the new grid).
- ``resize``: ``square`` (the backbone's eval transform: straight to img_size x img_size, the
  protocol of every other bob method) or ``long_side`` (the longer side to img_size, the aspect
  kept, one image per batch: the retrieval literature's setting, e.g. 1024 px on revisited Oxford).

The default descriptor (head, one scale, square) uses ``harness.features.extract_features`` and the
standard cache key, so those features are the very entries knn and linear probes use; any other
descriptor adds itself to the key. Query crops are part of the query split's sample identity, hence
of the key too: probing poolings, scales and whitenings never reruns the backbone needlessly.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BobError

POOLINGS = ("head", "cls", "gem")
RESIZES = ("square", "long_side")
BOB_SCALES = (1.0, 2 ** -0.5, 0.5)  # Battle of the Backbones / DINO multi-scale


@dataclass(frozen=True)
class Descriptor:
    pooling: str = "head"
    gem_p: float = 3.0
    scales: tuple[float, ...] = (1.0,)
    resize: str = "square"

    @property
    def is_default(self) -> bool:
        return self.pooling == "head" and self.scales == (1.0,) and self.resize == "square"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pooling": self.pooling, "scales": [round(s, 6) for s in self.scales], "resize": self.resize}
        if self.pooling == "gem":
            out["gem_p"] = float(self.gem_p)
        return out

    def cache_tag(self) -> dict[str, Any]:
        return {} if self.is_default else {"descriptor": self.as_dict()}


def parse_scales(value: Any) -> tuple[float, ...]:
    """``1`` / ``"single"`` -> (1,); ``"bob"`` -> BoB's three; ``"1,0.7071,0.5"`` -> those (a string,
    because a list in a grid is a sweep)."""
    if value is None or value in ("single", 1, 1.0, "1"):
        return (1.0,)
    if value == "bob":
        return BOB_SCALES
    try:
        scales = tuple(float(v) for v in (str(value).split(",") if not isinstance(value, (list, tuple)) else value))
    except ValueError:
        scales = ()
    if not scales or any(not (0.05 <= s <= 4.0) for s in scales):
        raise BobError(f"scales={value!r}: give 'single', 'bob' (BoB's 1, 1/sqrt(2), 1/2) or comma-separated factors in (0.05, 4], e.g. '1,0.5'")
    return scales


def make_descriptor(hp: dict[str, Any]) -> Descriptor:
    """The descriptor an image_retrieval cell asked for; bad values are one-line errors (raised at grid expansion)."""
    pooling = hp.get("pooling") or "head"
    if pooling not in POOLINGS:
        raise BobError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)} (head = the backbone's own pooled output)")
    resize = hp.get("resize") or "square"
    if resize not in RESIZES:
        raise BobError(f"resize={resize!r}: use square (img_size x img_size) or long_side (longer side = img_size, aspect kept)")
    gem_p = hp.get("gem_p", 3.0)
    if isinstance(gem_p, bool) or not isinstance(gem_p, (int, float)) or not 0 < gem_p <= 100:
        raise BobError(f"gem_p={gem_p!r}: the GeM exponent is a number in (0, 100] (3 in cirtorch, 4 in DINO's copy detection)")
    return Descriptor(pooling, float(gem_p), parse_scales(hp.get("scales")), resize)


# -- pooling -----------------------------------------------------------------------------------------
def gem(x, p: float, dims):
    """Generalised mean over ``dims`` (values clamped at 1e-6)."""
    return x.clamp(min=1e-6).pow(p).mean(dim=dims).pow(1.0 / p)


def _support_error(backbone, descriptor: Descriptor, why: str) -> BobError:
    return BobError(f"pooling={descriptor.pooling} cannot run on {backbone.name}: {why}. Pooling support: head = every backbone; "
                    f"cls = timm models with a class token; gem = timm models (CNN feature maps, ViT patch tokens) and open_clip ViT towers")


def check_support(backbone, model, descriptor: Descriptor) -> None:
    """One-line error when the built model cannot give this descriptor."""
    source = backbone.meta.get("source")
    if descriptor.pooling == "cls":
        if source == "openclip":
            raise _support_error(backbone, descriptor, "an open_clip tower's head output already is its class embedding (use pooling=head)")
        if source != "timm" or getattr(model, "cls_token", None) is None:
            raise _support_error(backbone, descriptor, "it has no class token (use pooling=gem or head)")
    if descriptor.pooling == "gem":
        if source == "timm" and not hasattr(model, "forward_features"):
            raise _support_error(backbone, descriptor, "the model has no forward_features")
        if source == "openclip" and not hasattr(model, "output_tokens"):
            raise _support_error(backbone, descriptor, "only open_clip ViT towers expose their patch tokens")
        if source not in ("timm", "openclip"):
            raise _support_error(backbone, descriptor, f"backbones of source {source!r} expose no feature map")
    if (descriptor.scales != (1.0,) or descriptor.resize != "square") and source == "openclip":
        raise BobError(f"scales={descriptor.scales} / resize={descriptor.resize} need a backbone that runs at other input sizes; "
                       f"{backbone.name}'s open_clip tower has a fixed grid (use scales=single, resize=square)")


def _patch_size(model) -> int | None:
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "patch_size", None)
    if size is None:
        return None
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@contextlib.contextmanager
def any_input_size(model):
    """Let a timm ViT run at any multiple of its patch size (timm's dynamic_img_size, switched on
    for the duration: the position embedding is resampled to each input's grid)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(model, "dynamic_img_size") or not hasattr(embed, "strict_img_size"):
        yield
        return
    from timm.layers import Format

    saved = (model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt)
    model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = True, False, False, Format.NHWC
    try:
        yield
    finally:
        model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = saved


def _pool(backbone, model, x, descriptor: Descriptor):
    if descriptor.pooling == "head":
        return model(x)
    if backbone.meta.get("source") == "openclip":  # gem over the tower's patch tokens
        model.output_tokens = True
        try:
            _, tokens = model(x)
        finally:
            model.output_tokens = False
        return gem(tokens.float(), descriptor.gem_p, dims=1)
    features = model.forward_features(x)
    if features.ndim == 3:  # ViT tokens (B, N, D)
        if descriptor.pooling == "cls":
            return features[:, 0]
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        return gem(features[:, prefix:].float(), descriptor.gem_p, dims=1)
    width = int(getattr(model, "num_features", features.shape[1]))
    dims = (2, 3) if features.shape[1] == width else (1, 2)  # NCHW (CNNs) or NHWC (Swin)
    return gem(features.float(), descriptor.gem_p, dims=dims)


def describe(backbone, model, images, descriptor: Descriptor):
    """Raw (unnormalised) descriptors of a batch: the pooled output at each scale, averaged."""
    import torch.nn.functional as F

    patch = _patch_size(model)
    total = None
    for s in descriptor.scales:
        h, w = images.shape[-2:]
        th, tw = max(1, round(h * s)), max(1, round(w * s))
        if patch:
            th, tw = max(patch, th // patch * patch), max(patch, tw // patch * patch)
        x = images if (th, tw) == (h, w) else F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False)
        out = _pool(backbone, model, x, descriptor).float()
        total = out if total is None else total + out
    return total / len(descriptor.scales)


class LongSide:
    """Resize so the longer side is ``size`` px, aspect kept (a class, so DataLoader workers can pickle it)."""

    def __init__(self, size: int, interpolation: str):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image):
        from PIL import Image

        w, h = image.size
        scale = self.size / max(w, h)
        resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(self.interpolation, Image.BICUBIC)
        return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=resample)


def long_side_transform(preprocess):
    """Longer side to ``img_size``, aspect kept; the backbone's normalisation."""
    from torchvision import transforms as T

    return T.Compose([LongSide(preprocess.img_size, preprocess.interpolation), T.ToTensor(), T.Normalize(preprocess.mean, preprocess.std)])


class _NpyWriter:
    """Rows streamed to an ``.npy`` file (features never pile up in memory)."""

    def __init__(self, n: int, path: Path | None):
        self.n, self.path, self.file, self.array, self.i = n, path, None, None, 0

    def add(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.i == 0:
            shape = (self.n, batch.shape[1])
            if self.path is None:
                self.array = np.empty(shape, np.float32)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "wb")
                np.lib.format.write_array_header_1_0(self.file, {"descr": "<f4", "fortran_order": False, "shape": shape})
        if self.file is not None:
            self.file.write(batch.tobytes())
        else:
            self.array[self.i:self.i + len(batch)] = batch
        self.i += len(batch)

    def close(self) -> np.ndarray:
        if self.file is not None:
            import os

            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            return np.load(self.path, mmap_mode="r")
        return self.array if self.array is not None else np.empty((0, 0), np.float32)


def extract_descriptors(backbone, dataset, descriptor: Descriptor, batch_size: int, device: str, options=None,
                        out_path: Path | None = None, desc: str = "extract") -> tuple[np.ndarray, np.ndarray]:
    """Run the frozen backbone once over ``dataset`` and return float32 descriptors (streamed to
    ``out_path`` when given) and the int64 labels."""
    import torch
    from torch.utils.data import DataLoader

    from .features import ExtractOptions
    from .progress import progress

    opts = options or ExtractOptions.auto(device)
    model = backbone.model.to(device).eval()
    check_support(backbone, model, descriptor)
    transform = backbone.preprocess.eval_transform() if descriptor.resize == "square" else long_side_transform(backbone.preprocess)
    source = dataset.with_transform(transform)
    batch = batch_size if descriptor.resize == "square" else 1  # images of different shapes do not stack
    loader = DataLoader(source, batch_size=batch, shuffle=False, num_workers=opts.workers, pin_memory=opts.pin_memory,
                        prefetch_factor=opts.prefetch if opts.workers else None)
    sink, labels, i = _NpyWriter(len(source), out_path), np.empty(len(source), np.int64), 0
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
    autocast = torch.autocast(device_type=str(device).split(":")[0], dtype=dtype) if dtype is not None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), autocast, any_input_size(model):
            for images, targets in progress(loader, desc=desc, total=len(loader)):
                sink.add(describe(backbone, model, images.to(device), descriptor).cpu().numpy())
                labels[i:i + len(targets)] = np.asarray(targets, dtype=np.int64)
                i += len(targets)
    except (RuntimeError, AssertionError) as exc:  # timm asserts input sizes
        if descriptor.is_default:
            raise
        raise BobError(f"{backbone.name} cannot compute the descriptor {descriptor.as_dict()} ({str(exc).splitlines()[0][:160]}); "
                       "multi-scale and long-side resizing need a backbone that runs at other input sizes") from None
    return sink.close(), labels


def cached_descriptors(backbone, dataset, cache_task: str, split: str, descriptor: Descriptor, ctx, batch_size: int = 64) -> np.ndarray:
    """Descriptors of one split, from the feature cache or by running the backbone once.

    ``cache_task`` names the data the split belongs to (``retrieval/revisitop1m`` for the distractors
    shared by the +1M tasks), so equal data shares one entry whatever task asked for it."""
    from .features import ExtractOptions, FeatureCache, extract_features

    cache = ctx.feature_cache
    options = ExtractOptions.auto(ctx.device, ctx.num_workers or None)
    key = {**FeatureCache.key(backbone, cache_task, split, dataset.identity(), options), **descriptor.cache_tag()}
    cached = cache.load(key)
    if cached is not None:
        cache.hits += 1
        feats, _, meta = cached
        for field in ("params_m", "gflops", "measured_at"):
            if backbone.meta.get(field) is None and meta.get("backbone_meta", {}).get(field) is not None:
                backbone.meta[field] = meta["backbone_meta"][field]
        backbone.feature_dim = backbone.feature_dim or int(feats.shape[1])
        return feats
    cache.misses += 1
    t0 = time.perf_counter()
    staged = cache.staging_path(key)
    try:
        if descriptor.is_default:
            feats, labels = extract_features(backbone, dataset, batch_size, ctx.device, desc=f"extract {split}", options=options, out_path=staged)
        else:
            feats, labels = extract_descriptors(backbone, dataset, descriptor, batch_size, ctx.device, options, staged, desc=f"extract {split}")
        bad = int(sum((~np.isfinite(feats[i:i + 4096])).sum() for i in range(0, len(feats), 4096)))
        if bad:
            raise BobError(f"{backbone.name} produced {bad} NaN/inf feature values on {cache_task}:{split}; check the weights and the input resolution")
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    ctx.add_time("extract", time.perf_counter() - t0)
    measured = {k: backbone.meta.get(k) for k in ("params_m", "gflops", "measured_at")}
    cache.commit(key, staged, feats, labels, {"backbone_meta": measured, "n": len(labels)})
    return feats
