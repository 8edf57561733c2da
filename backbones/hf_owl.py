"""OWL-ViT / OWLv2 open-vocabulary detectors from ``transformers``: ``hf-owl:<hub id or local folder>``.

The model is both an image backbone (its CLIP image embedding, so kNN and linear probes run on it)
and an open-vocabulary detector: ``open_vocabulary_detector()`` returns ``encode(prompts)`` (text
queries -> embeddings) and ``detect(images, queries)`` (per image: absolute xyxy boxes and a
box x query score matrix), which the ``ov_zeroshot`` method turns into LVIS results with the
scenic protocol. A model folder without tokenizer files uses open_clip's bundled CLIP BPE (the
same vocabulary OWL-ViT was trained with), so a model built from its config runs offline.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.errors import BobError
from harness.registry import BACKBONES, Entry
from harness.types import Preprocess, VisionLanguageBackbone

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
KNOWN = {  # the released checkpoints (pre-training data as in the papers)
    "google/owlvit-base-patch32": "WIT-400M (CLIP) + O365/VG boxes",
    "google/owlvit-base-patch16": "WIT-400M (CLIP) + O365/VG boxes",
    "google/owlvit-large-patch14": "WIT-400M (CLIP) + O365/VG boxes",
    "google/owlv2-base-patch16": "WebLI pseudo-boxes + O365/VG",
    "google/owlv2-base-patch16-ensemble": "WebLI pseudo-boxes + O365/VG",
    "google/owlv2-large-patch14-ensemble": "WebLI pseudo-boxes + O365/VG",
}


def static_meta(name: str) -> dict[str, Any]:
    return {"source": "hf-owl", "family": "vit", "architecture": f"hf-owl:{name}", "pretrain_method": "vision-language + detection",
            "pretrain_data": KNOWN.get(name, "unknown"), "capabilities": ["image", "text", "open-vocabulary-detection"],
            "params_m": None, "gflops": None}


def _config(name: str):
    """The model's config from a local folder, the Hugging Face cache, or the hub (one-line error offline)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        where = "folder" if Path(name).expanduser().exists() else "hub id"
        raise BobError(f"hf-owl:{name}: no model config found for this {where} ({str(exc).splitlines()[0][:120]}); give a folder with "
                       "config.json (save_pretrained) or a hub id that is in the local Hugging Face cache") from None


def image_tower(detector):
    """The detector's CLIP image embedding (pooled, projected) as an ``nn.Module``: what vision methods see."""
    import torch

    class OwlImageTower(torch.nn.Module):
        def __init__(self, det):
            super().__init__()
            self.detector = det
            self.num_features = int(det.config.projection_dim)

        def forward(self, pixel_values):
            core = getattr(self.detector, "owlvit", None) or getattr(self.detector, "owlv2")
            out = core.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    return OwlImageTower(detector)


def load_owl_backbone(name: str, weights: str = "pretrained", seed: int = 0, img_size: int | None = None) -> VisionLanguageBackbone:
    from .weights import WeightsSource, file_digest

    config = _config(name)
    model_type = config.model_type
    if model_type not in ("owlvit", "owlv2"):
        raise BobError(f"hf-owl:{name} is a '{model_type}' model, not OWL-ViT (owlvit) or OWLv2 (owlv2)")
    native = int(config.vision_config.image_size)
    if img_size and int(img_size) != native:
        raise BobError(f"hf-owl:{name} runs at its native {native} px (its box head is tied to the patch grid); drop img_size")
    meta = static_meta(name)
    meta.update({"native_img_size": native, "model_type": model_type})
    folder = Path(name).expanduser()
    local_weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if weights == "random":
        resolved = "random-init"
    elif weights in ("pretrained", "auto"):
        # decided before building, like every source: a fallback must never share the pretrained cache key
        from .weights import locate_pretrained

        source = WeightsSource("file", str(local_weights[0])) if local_weights else (
            WeightsSource("none", reason=f"the folder {folder} holds no weights (*.safetensors / *.bin)") if folder.is_dir()
            else locate_pretrained(name, None))
        if source.kind == "none":
            if weights == "pretrained":
                raise BobError(f"pretrained weights for hf-owl:{name} are unavailable: {source.reason}; on a machine with internet run "
                               "`bob prefetch`, or use --weights random / auto")
            resolved, meta["weights_note"] = "random-init", f"auto: {source.reason}; fell back to random init"
        else:
            resolved = "pretrained"
    else:
        raise BobError(f"hf-owl:{name}: --weights {weights} is not supported; the weights come with the model folder or hub id "
                       "(pretrained | auto), or random for a model built from its config")
    meta["weights"] = resolved
    if resolved == "random-init":
        meta["pretrain_method"], meta["pretrain_data"] = "random", "none"
    weights_id = (f"random-init:seed{seed}" if resolved == "random-init"
                  else f"folder:{file_digest(local_weights[0])[:16]}" if local_weights else f"pretrained:{name}")

    @functools.lru_cache(maxsize=1)
    def detector():
        import torch
        import transformers

        cls = transformers.Owlv2ForObjectDetection if model_type == "owlv2" else transformers.OwlViTForObjectDetection
        torch.manual_seed(seed)
        if resolved == "random-init":
            model = cls(config)
        else:
            try:
                model = cls.from_pretrained(name)
            except OSError as exc:
                raise BobError(f"hf-owl:{name}: the weights do not load ({str(exc).splitlines()[0][:120]})") from None
        return model.eval()

    def build():
        return image_tower(detector())

    @functools.lru_cache(maxsize=2)
    def open_vocabulary_detector(tokenizer_path: str | None = None):
        return _detector_api(detector(), name, model_type, native, tokenizer_path)

    return VisionLanguageBackbone(
        name=f"hf-owl:{name}", meta=meta, preprocess=Preprocess(native, CLIP_MEAN, CLIP_STD, "bilinear"),
        cache_key=f"hf-owl:{name}|{weights_id}", build=build, text_encoder=lambda tokenizer_path=None: open_vocabulary_detector(tokenizer_path)[0],
        text_identity=f"owl-text:{name}", open_vocabulary_detector=open_vocabulary_detector,
    )


def _tokenizer(name: str, context_length: int, path: str | None):
    """(texts -> (input_ids, attention_mask)): the model's own CLIP tokenizer files when present, else
    open_clip's bundled CLIP BPE (same vocabulary and special tokens)."""
    source = path or name
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source)

        def encode(texts):
            out = tok(list(texts), padding="max_length", truncation=True, max_length=context_length, return_tensors="pt")
            return out["input_ids"], out["attention_mask"]

        return encode
    except (OSError, ValueError, TypeError):
        if path:
            raise BobError(f"tokenizer={path}: no tokenizer files there (tokenizer.json or vocab.json + merges.txt)") from None
    import open_clip

    simple = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)

    def encode(texts):
        ids = simple(list(texts), context_length=context_length)
        return ids, (ids != 0).long()

    return encode


def _detector_api(model, name: str, model_type: str, size: int, tokenizer_path: str | None):
    import numpy as np
    import torch

    tokenize = _tokenizer(name, int(model.config.text_config.max_position_embeddings), tokenizer_path)
    core = getattr(model, "owlvit", None) or getattr(model, "owlv2")

    def encode(prompts: list, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
        model.to(device)
        out = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                ids, mask = tokenize(prompts[start:start + batch_size])
                emb = core.get_text_features(input_ids=ids.to(device), attention_mask=mask.to(device))
                emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output
                out.append(emb.float().cpu().numpy())
        return np.concatenate(out)

    def pixels(image):
        """OWL-ViT resizes to a square; OWLv2 pads to a square (bottom/right, grey) and then resizes."""
        from PIL import Image
        from torchvision.transforms import functional as F

        image = image.convert("RGB")
        if model_type == "owlv2":
            side = max(image.size)
            canvas = Image.new("RGB", (side, side), (128, 128, 128))
            canvas.paste(image, (0, 0))
            image = canvas
        tensor = F.to_tensor(F.resize(image, [size, size], antialias=True))
        return F.normalize(tensor, CLIP_MEAN, CLIP_STD)

    def detect(images: list, queries: np.ndarray, device: str = "cpu") -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: (N x 4 absolute xyxy boxes, N x Q sigmoid scores)."""
        model.to(device)
        q = torch.as_tensor(queries, dtype=torch.float32, device=device)
        results = []
        with torch.no_grad():
            batch = torch.stack([pixels(im) for im in images]).to(device)
            feature_map = model.image_embedder(pixel_values=batch)[0]
            b, h, w, d = feature_map.shape
            feats = feature_map.reshape(b, h * w, d)
            logits = model.class_predictor(feats, q[None].expand(b, -1, -1), None)[0]
            boxes = model.box_predictor(feats, feature_map)  # (b, N, 4) cx, cy, w, h in [0, 1]
        for im, lg, bx in zip(images, logits, boxes):
            width, height = im.size
            sx, sy = (max(width, height),) * 2 if model_type == "owlv2" else (width, height)
            cx, cy, bw, bh = bx.float().cpu().unbind(-1)
            xyxy = torch.stack([(cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy], -1)
            xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
            xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
            results.append((xyxy.numpy(), torch.sigmoid(lg.float()).cpu().numpy()))
        return results

    return encode, detect


def _factory_for(name: str):
    def factory(weights: str = "pretrained", seed: int = 0, img_size: int | None = None):
        return load_owl_backbone(name, weights, seed, img_size)

    return factory


def _resolve(full_name: str) -> Entry:
    name = full_name.split(":", 1)[1]
    if not name:
        raise BobError("backbone 'hf-owl:' needs a hub id or a model folder, e.g. hf-owl:google/owlvit-base-patch32")
    return Entry(full_name, _factory_for(name), static_meta(name))


for _name in KNOWN:
    BACKBONES.add(f"hf-owl:{_name}", _factory_for(_name), **static_meta(_name))
BACKBONES.add_prefix("hf-owl", _resolve, "hf-owl:<hub id or folder> loads an OWL-ViT / OWLv2 detector from transformers")
