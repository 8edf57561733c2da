"""open_clip backbones: ``openclip:<model>/<pretrained tag>`` for every pair ``open_clip.list_pretrained()``
knows, and ``openclip:<model>`` (no tag) for random init or a local checkpoint.

The image tower (``model.visual``: images -> embeddings in the joint space) is the backbone every
vision method sees, so kNN, linear probes, fine-tuning and the PEFT recipes run on it unchanged;
the text tower is reached through ``text_encoder()`` for zero-shot classification and retrieval.
Weights resolve exactly like timm's (pretrained | random | auto | PATH), with the local Hugging
Face cache looked up first, so an offline machine never waits on a download.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.errors import BobError, did_you_mean
from harness.registry import BACKBONES, Entry
from harness.types import Preprocess, VisionLanguageBackbone

from .openclip_catalog import MODELS, PRETRAINED
from .openclip_names import family_of, parse_pretrain_data

# Tiny open_clip configs bob ships (``openclip_configs/*.json``, registered with open_clip on first use):
# random-init CLIPs of a few hundred thousand tower parameters for smoke tests and CPU quickstarts
# (prompt learning on both towers, widths that differ between the towers and the two model classes).
BOB_CONFIG_DIR = Path(__file__).with_name("openclip_configs")
BOB_MODELS = {
    "bob-tiny-clip": {"family": "vit", "native_img_size": 32, "params_m": None},
    "bob-tiny-clip-ct": {"family": "vit", "native_img_size": 32, "params_m": None},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def split_name(name: str) -> tuple[str, str | None]:
    model, _, tag = name.partition("/")
    return model, tag or None


def static_meta(name: str) -> dict[str, Any]:
    """Metadata known without building anything (the generated catalog, else parsed from the name)."""
    model, tag = split_name(name)
    info = MODELS.get(model) or BOB_MODELS.get(model, {})
    return {
        "source": "openclip",
        "family": info.get("family") or family_of(model),
        "architecture": f"openclip:{model}",  # not a timm architecture: timm-only recipes skip it by declaration
        "pretrained_tag": tag,
        "pretrain_method": "vision-language" if tag else "unknown",
        "pretrain_data": (PRETRAINED.get(name) or {}).get("pretrain_data") or (parse_pretrain_data(tag, model) if tag else "unknown"),
        "params_m": info.get("params_m"),
        "gflops": info.get("gflops"),
        "capabilities": ["image", "text"],
        "tokenizer": info.get("hf_tokenizer") or "open_clip bundled BPE",
    }


def _open_clip():
    """open_clip is the ``clip`` extra; without it the error says how to install it."""
    try:
        import open_clip
    except ImportError:
        raise BobError("openclip backbones need open_clip: pip install 'bob-harness[clip]' (or pip install open_clip_torch)") from None
    if not getattr(open_clip, "_bob_configs_added", False):
        open_clip.add_model_config(BOB_CONFIG_DIR)
        open_clip._bob_configs_added = True
    return open_clip


@functools.lru_cache(maxsize=1)
def _installed_names() -> tuple[frozenset, frozenset]:
    open_clip = _open_clip()
    return frozenset(open_clip.list_models()), frozenset(f"{m}/{t}" for m, t in open_clip.list_pretrained())


def validate_name(name: str) -> None:
    """Unknown model or tag: a one-line error with close matches (checked against the installed open_clip)."""
    model, tag = split_name(name)
    known_models = set(MODELS) | set(BOB_MODELS)
    known_pairs = set(PRETRAINED)
    if model not in known_models or (tag and name not in known_pairs):
        models, pairs = _installed_names()  # a newer open_clip than the catalog may know it
        known_models |= models
        known_pairs |= pairs
    if model not in known_models:
        raise BobError(f"unknown backbone 'openclip:{name}': open_clip has no model '{model}'{did_you_mean(model, known_models)}; "
                       "`bob list backbones --source openclip` shows them")
    if tag and name not in known_pairs:
        tags = sorted(p for p in known_pairs if p.startswith(model + "/"))
        hint = did_you_mean(name, tags) or (f" (its tags: {', '.join(t.split('/', 1)[1] for t in tags)})" if tags else " (it has no pretrained tags)")
        raise BobError(f"unknown backbone 'openclip:{name}': open_clip has no pretrained tag '{tag}' for {model}{hint}")


def _pretrained_source(model: str, tag: str):
    from .weights import locate_pretrained

    info = PRETRAINED.get(f"{model}/{tag}")
    if info is None:
        cfg = _open_clip().get_pretrained_cfg(model, tag) or {}
        info = {"hf_hub": (cfg.get("hf_hub") or "").rstrip("/") or None, "url": cfg.get("url") or None}
    return locate_pretrained(info.get("hf_hub"), info.get("url"))


def _preprocess(model: str, tag: str | None, img_size: int | None) -> tuple[Preprocess, int]:
    info = PRETRAINED.get(f"{model}/{tag}", {}) if tag else {}
    native = int((MODELS.get(model) or BOB_MODELS.get(model, {})).get("native_img_size") or 224)
    return Preprocess(
        img_size=int(img_size or native),
        mean=tuple(info.get("mean") or OPENAI_MEAN),
        std=tuple(info.get("std") or OPENAI_STD),
        interpolation=info.get("interpolation") or "bicubic",
    ), native


def make_tokenizer(model: str, context_length: int | None = None, path: str | None = None):
    """open_clip's tokenizer for ``model``; one that needs a Hugging Face download while offline is a
    one-line error saying how to provide it (``tokenizer=PATH`` or filling the cache)."""
    open_clip = _open_clip()

    hf_name = (open_clip.get_model_config(model) or {}).get("text_cfg", {}).get("hf_tokenizer_name")
    if path:
        if not Path(path).exists():
            raise BobError(f"tokenizer={path}: no such file or folder; give a local Hugging Face tokenizer folder (tokenizer.json ...)")
        cfg = (open_clip.get_model_config(model) or {}).get("text_cfg", {})
        return open_clip.tokenizer.HFTokenizer(path, context_length=context_length or cfg.get("context_length", 77),
                                               **(cfg.get("tokenizer_kwargs") or {}))
    if hf_name:
        from .weights import find_cached_hf_file, host_reachable

        if not find_cached_hf_file(hf_name, ("tokenizer.json", "tokenizer_config.json", "spiece.model")) and not host_reachable("huggingface.co"):
            raise BobError(
                f"openclip:{model} needs the Hugging Face tokenizer '{hf_name}', which is not in the local cache and huggingface.co "
                f"cannot be reached; on a machine with internet run `huggingface-cli download {hf_name}` to fill the cache, "
                f"or pass a local tokenizer folder with --set tokenizer=PATH")
    return open_clip.get_tokenizer(model, context_length=context_length) if context_length else open_clip.get_tokenizer(model)


def load_openclip_backbone(name: str, weights: str = "pretrained", seed: int = 0, img_size: int | None = None) -> VisionLanguageBackbone:
    """Resolve weights, preprocessing and cache identity now; build the CLIP model on first use."""
    from .weights import WeightsSource, resolve_weights

    validate_name(name)
    model_name, tag = split_name(name)
    meta = static_meta(name)
    preprocess, native = _preprocess(model_name, tag, img_size)
    meta.update({"native_img_size": native, "params_m": None, "gflops": None})

    def locate():
        if not tag:
            return WeightsSource("none", reason=f"openclip:{name} names no pretrained tag (use openclip:{name}/<tag>, see `bob list backbones --source openclip`)")
        return _pretrained_source(model_name, tag)

    chosen = resolve_weights(weights, seed, f"openclip:{name}", meta, locate,
                             f"`python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{tag}')\"`" if tag else "a tagged name",
                             "an open_clip .pt/.bin/.safetensors checkpoint")
    meta.update(chosen.meta)
    weights_id = chosen.weights_id
    pretrained_arg = chosen.file or (tag if chosen.resolved == "pretrained" else None)  # a tag without a file: open_clip downloads

    @functools.lru_cache(maxsize=1)
    def full_model():
        import logging
        import warnings

        import torch

        open_clip = _open_clip()
        torch.manual_seed(seed)  # random-init weights are a function of the cell seed
        kwargs: dict[str, Any] = {"pretrained": pretrained_arg}
        if preprocess.img_size != native:
            kwargs["force_image_size"] = preprocess.img_size
        root = logging.getLogger()
        level = root.level
        if pretrained_arg is None:  # open_clip logs a warning for the random init that was asked for
            root.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*initialized randomly.*")
                model = open_clip.create_model(model_name, **kwargs)
        except RuntimeError as exc:
            if pretrained_arg and Path(pretrained_arg).is_file():
                raise BobError(f"--weights {pretrained_arg} does not fit openclip:{model_name}: {str(exc).splitlines()[0]}") from None
            raise
        finally:
            root.setLevel(level)
        model.eval()
        return model

    def build():
        visual = full_model().visual
        if not isinstance(getattr(visual, "num_features", None), int):  # the joint-space width is what the tower returns
            visual.num_features = int(getattr(visual, "output_dim", None) or (_open_clip().get_model_config(model_name) or {})["embed_dim"])
        return visual

    def text_encoder(tokenizer_path: str | None = None):
        import numpy as np
        import torch

        tokenizer = make_tokenizer(model_name, path=tokenizer_path)
        clip = full_model()

        def encode(texts: list, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
            clip.to(device)
            out = []
            with torch.no_grad():
                for start in range(0, len(texts), batch_size):
                    tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
                    out.append(clip.encode_text(tokens).float().cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

        return encode

    from .timm_backbones import measure_model

    meta["_measure"] = lambda model: {**measure_model(model, preprocess.img_size, f"openclip:{name}", native), "measured_on": "image tower"}
    meta["preprocess_source"] = f"open_clip pretrained cfg ({tag})" if tag and name in PRETRAINED else "OpenAI CLIP defaults"
    return VisionLanguageBackbone(
        name=f"openclip:{name}", meta=meta, preprocess=preprocess, cache_key=f"openclip:{name}|{weights_id}", build=build,
        text_encoder=text_encoder, text_identity=f"openclip-text:{model_name}|{meta['tokenizer']}",
        clip_model=lambda tokenizer_path=None: (full_model(), make_tokenizer(model_name, path=tokenizer_path)),
    )


def _factory_for(name: str):
    def factory(weights: str = "pretrained", seed: int = 0, img_size: int | None = None) -> VisionLanguageBackbone:
        return load_openclip_backbone(name, weights, seed, img_size)

    return factory


def _resolve_any(full_name: str) -> Entry:
    name = full_name.split(":", 1)[1]
    if not name:
        raise BobError("backbone 'openclip:' needs a model name, e.g. openclip:ViT-B-32/laion2b_s34b_b79k or openclip:ViT-S-32")
    validate_name(name)
    return Entry(full_name, _factory_for(name), static_meta(name))


for _name in PRETRAINED:
    BACKBONES.add(f"openclip:{_name}", _factory_for(_name), **static_meta(_name))
BACKBONES.add_prefix("openclip", _resolve_any, "any open_clip model works as openclip:<model>[/<pretrained tag>] (no tag: --weights random or PATH)")
