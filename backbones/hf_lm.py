"""Causal language models through ``transformers``: ``hf:<hub id or local model folder>[?dtype=..]``.

A language model is a backbone like an image tower: it has weights (``--weights pretrained |
random | auto | PATH``, resolved the same way as timm's and open_clip's), metadata for the tables
(family, parameters, context length, pre-training data where known) and one job for the methods:
scoring text (``harness.lm_scoring.LMScorer``). ``random`` builds the model from its config, so a
config + tokenizer folder is enough for a random-init baseline.

Names: ``hf:gpt2``, ``hf:facebook/opt-125m``, ``hf:EleutherAI/pythia-160m``, ``hf:./my-model``
(a folder written by ``save_pretrained``). Options after ``?``: ``dtype=float32|bfloat16|float16``
and ``tokenizer=<folder>`` (a model folder without tokenizer files).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from harness.errors import BobError
from harness.registry import BACKBONES, Entry
from harness.types import Backbone

# hub id prefix -> (family, pre-training data); what the model cards say
KNOWN_FAMILIES = (
    ("openai-community/gpt2", "gpt2", "WebText"),
    ("gpt2", "gpt2", "WebText"),
    ("distilgpt2", "gpt2", "OpenWebText (distilled from GPT-2)"),
    ("facebook/opt-", "opt", "OPT corpus (RoBERTa corpus, the Pile subset, PushShift.io Reddit)"),
    ("facebook/galactica-", "galactica", "Galactica scientific corpus (papers, references, knowledge bases)"),
    ("EleutherAI/pythia-", "pythia", "the Pile"),
    ("EleutherAI/gpt-neo-", "gpt-neo", "the Pile"),
    ("bigscience/bloom", "bloom", "ROOTS"),
    ("meta-llama/", "llama", "Llama pre-training mix (public web data)"),
    ("TinyLlama/", "llama", "SlimPajama + StarCoder"),
    ("Qwen/", "qwen", "Qwen pre-training mix"),
    ("microsoft/phi-", "phi", "textbook-quality web and synthetic data"),
)
DTYPES = ("float32", "bfloat16", "float16")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def parse_name(name: str) -> tuple[str, dict[str, str]]:
    """``hf:<id>?dtype=bfloat16`` -> (id, options); unknown options are a one-line error."""
    spec = name.split(":", 1)[1]
    model_id, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"dtype", "tokenizer"}
    if unknown:
        raise BobError(f"backbone {name}: unknown option(s) {', '.join(sorted(unknown))}; use ?dtype={'|'.join(DTYPES)} or ?tokenizer=<folder>")
    if options.get("dtype", "float32") not in DTYPES:
        raise BobError(f"backbone {name}: dtype {options['dtype']!r} is not one of {', '.join(DTYPES)}")
    if not model_id:
        raise BobError("backbone 'hf:' needs a model: hf:<hub id> (e.g. hf:gpt2, hf:facebook/opt-125m) or hf:<local model folder>")
    return model_id, options


def local_folder(model_id: str) -> Path | None:
    path = Path(model_id).expanduser()
    return path if path.is_dir() else None


def _read_config(model_id: str) -> dict | None:
    """config.json without importing transformers: a local folder or the Hugging Face cache."""
    folder = local_folder(model_id)
    file = folder / "config.json" if folder else None
    if file is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "config.json")
            file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # an id that is not a valid repo name: no cache entry
            file = None
    if file is None or not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BobError(f"{file}: not a readable model config ({exc}); re-save the model with save_pretrained") from None


def context_length(config: dict | None) -> int | None:
    if not config:
        return None
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def static_meta(name: str) -> dict[str, Any]:
    """What is known without building: the hub id's family table, else the folder's config."""
    model_id, options = parse_name(name)
    config = _read_config(model_id) if local_folder(model_id) else None
    family, data = None, "unknown"
    for prefix, fam, pretrain_data in KNOWN_FAMILIES:
        if model_id.startswith(prefix):
            family, data = fam, pretrain_data
            break
    if family is None:
        family = (config or {}).get("model_type") or model_id.rstrip("/").split("/")[-1].split("-")[0].lower()
    return {
        "source": "hf",
        "family": family,
        "architecture": f"hf:{(config or {}).get('model_type') or family}",
        "pretrain_method": "causal language modelling",
        "pretrain_data": data,
        "pretrained_tag": model_id,
        "capabilities": ["text", "causal-lm"],
        "context_length": context_length(config),
        "dtype": options.get("dtype", "float32"),
    }


class CausalLMBackbone(Backbone):
    """A causal LM: ``model`` is the ``transformers`` model (built on first use), ``tokenizer`` its
    tokenizer, ``max_length`` its context (from the built model's config). ``preprocess`` is None."""

    def __init__(self, name: str, meta: dict, cache_key: str, build, load_tokenizer):
        super().__init__(name=name, meta=meta, preprocess=None, cache_key=cache_key, build=build)
        self._load_tokenizer = load_tokenizer
        self._tokenizer = None

    @property
    def max_length(self) -> int:
        return context_length(self.model.config.to_dict()) or 2048  # 2048: lm-eval's default when a config names none

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def shard(self, devices: list[str]) -> tuple[str, dict[str, Any]]:
        """Place the model on ``devices`` and return (the device its inputs go to, how it was placed).

        Why: a model larger than one GPU is still scored exactly on the cell's GPUs. With two or
        more devices accelerate's balanced ``device_map`` puts whole blocks (the model's
        ``_no_split_modules``) on each, and its hooks move activations between them: a pipeline
        run in turn, not data parallelism, so the numbers equal one device's. The map is
        returned for the record."""
        if len(devices) < 2:
            self.model.to(devices[0])
            return devices[0], {"how": "one device", "devices": list(devices)}
        from accelerate import dispatch_model

        plan = plan_device_map(self.model, devices)
        dispatch_model(self.model, device_map=plan)
        first = _device_name(next(iter(plan.values())))
        per_device: dict[str, int] = {}
        for target in plan.values():
            per_device[_device_name(target)] = per_device.get(_device_name(target), 0) + 1
        return first, {"how": "accelerate device_map (balanced; whole blocks per device, run in turn)", "devices": list(devices),
                       "modules_per_device": per_device, "device_map": {k: _device_name(v) for k, v in plan.items()}}

    def scorer(self, device: str, batch_size: int = 16, model=None, prefix_tokens: int = 0):
        """An ``LMScorer`` on this model (or on ``model``, e.g. its peft-wrapped copy)."""
        from harness.lm_scoring import LMScorer

        return LMScorer(model if model is not None else self.model, self.tokenizer, device, self.max_length,
                        batch_size=batch_size, prefix_tokens=prefix_tokens, name=self.name)


def _device_key(device: str) -> int | str:
    """accelerate's name of a device: a GPU is its index, the rest their type ('cpu', 'disk')."""
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else ("cpu" if device == "cpu" else device)


def _device_name(key: int | str) -> str:
    return f"cuda:{key}" if isinstance(key, int) else str(key)


def plan_device_map(model, devices: list[str], max_memory: dict[int | str, int | str] | None = None) -> dict[str, int | str]:
    """accelerate's balanced placement of ``model`` over ``devices`` (module name -> device key).

    The memory per device is what accelerate measures (``get_max_memory``) unless ``max_memory``
    is given; ``get_balanced_memory`` spreads the blocks evenly instead of filling the first GPU."""
    from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map

    keys = [_device_key(d) for d in devices]
    if max_memory is None:
        available = get_max_memory()
        missing = [d for d, k in zip(devices, keys) if k not in available]
        if missing:
            raise BobError(f"cannot shard the model over {', '.join(devices)}: {', '.join(missing)} not visible here (CUDA_VISIBLE_DEVICES); "
                           f"lower gpus_per_cell or ask for more GPUs")
        max_memory = {k: available[k] for k in keys}
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    dtype = next(model.parameters()).dtype
    balanced = get_balanced_memory(model, max_memory=dict(max_memory), no_split_module_classes=no_split, dtype=dtype,
                                   low_zero=False)
    plan = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    outside = sorted({_device_name(v) for v in plan.values()} - set(devices))
    if outside:
        raise BobError(f"the model does not fit on {', '.join(devices)} (accelerate would put part of it on {', '.join(outside)}); "
                       f"give the cell more GPUs (gpus_per_cell) or a smaller dtype (hf:<id>?dtype=bfloat16)")
    return plan


def _transformers():
    try:
        import transformers
    except ImportError:
        raise BobError("hf: backbones need transformers: pip install 'bob-harness[lm]'") from None
    transformers.utils.logging.set_verbosity_error()  # per-load progress bars and config notes drown bob's own output
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_FILES)


def load_tokenizer(model_id: str, tokenizer_path: str | None, offline: bool):
    transformers = _transformers()
    source = tokenizer_path or model_id
    folder = local_folder(source)
    if folder is not None and not _has_tokenizer(folder):
        raise BobError(f"model folder {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save one there with "
                       f"tokenizer.save_pretrained('{folder}') or pass hf:{model_id}?tokenizer=<folder with the tokenizer>")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BobError(f"tokenizer of {model_id} could not be loaded from {source} ({first[:200]}); on a machine with internet run "
                       f"`huggingface-cli download {model_id}`, or pass hf:{model_id}?tokenizer=<folder>") from None
    if tok.pad_token_id is None:  # GPT-2-style tokenizers have no pad token; padding positions are masked anyway
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def _weights_file(folder: Path) -> Path | None:
    return next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)


def load_causal_lm(name: str, weights: str = "pretrained", seed: int = 0, display_name: str | None = None) -> CausalLMBackbone:
    """Resolve the weights (before building anything) and return the lazily built backbone."""
    from .weights import WeightsSource, host_reachable, offline_mode, resolve_weights

    model_id, options = parse_name(name)
    meta = static_meta(name)
    folder = local_folder(model_id)
    if folder is None and (model_id.startswith((".", "/", "~")) or model_id.endswith("/")):
        raise BobError(f"backbone {name}: model folder {model_id} does not exist; give an existing folder (save_pretrained) or a hub id such as gpt2")
    if folder is not None and not (folder / "config.json").is_file():
        raise BobError(f"model folder {folder} has no config.json; write the model there with model.save_pretrained('{folder}')")
    online = not offline_mode() and folder is None and host_reachable("huggingface.co")

    def locate() -> WeightsSource:
        if folder is not None:
            file = _weights_file(folder)
            return WeightsSource("cache", str(file)) if file else WeightsSource("none", reason=f"{folder} holds no weights ({' / '.join(WEIGHT_FILES[:2])})")
        from .weights import find_cached_hf_file

        cached = find_cached_hf_file(model_id, WEIGHT_FILES)
        if cached:
            return WeightsSource("cache", cached)
        if online:
            return WeightsSource("download")
        why = "offline mode is set" if offline_mode() else "huggingface.co cannot be reached"
        return WeightsSource("none", reason=f"the weights of {model_id} are not in the local Hugging Face cache and {why}")

    weights_folder = None
    if weights not in ("pretrained", "random", "auto") and Path(weights).expanduser().is_dir():
        weights_folder = Path(weights).expanduser().resolve()  # a save_pretrained folder as --weights
        if _weights_file(weights_folder) is None:
            raise BobError(f"--weights {weights}: the folder holds no weights ({', '.join(WEIGHT_FILES)})")
        from .weights import ResolvedWeights, file_digest

        digest = file_digest(_weights_file(weights_folder))
        rw = ResolvedWeights("pretrained", str(weights_folder), f"file:{digest[:16]}",
                             {"weights": "pretrained", "weights_file": str(weights_folder), "weights_sha256": digest, "pretrain_method": "local checkpoint"})
    else:
        rw = resolve_weights(weights, seed, name, meta, locate, f"`huggingface-cli download {model_id}`", "a save_pretrained folder or a .safetensors/.bin state dict")
    meta.update(rw.meta)
    dtype_name = options.get("dtype", "float32")

    def build():
        import torch

        transformers = _transformers()
        dtype = getattr(torch, dtype_name)
        if rw.resolved == "pretrained" and (weights_folder is not None or weights in ("pretrained", "auto")):
            source = str(weights_folder) if weights_folder is not None else model_id
            model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=not online)
        else:
            cfg = transformers.AutoConfig.from_pretrained(model_id, local_files_only=not online)
            torch.manual_seed(seed)
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
            if rw.file:  # a state-dict checkpoint for this architecture
                model.load_state_dict(_read_state_dict(rw.file), strict=True)
        model.eval()
        return model

    def measure(model) -> dict:
        cfg = model.config
        return {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                "context_length": context_length(cfg.to_dict()), "hidden_size": getattr(cfg, "hidden_size", None)}

    meta["_measure"] = measure
    return CausalLMBackbone(display_name or name, meta, f"hf:{model_id}|{rw.weights_id}|{dtype_name}", build,
                            lambda: load_tokenizer(model_id, options.get("tokenizer"), offline=not online))


def _read_state_dict(file: str) -> dict:
    if file.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(file)
    import torch

    state = torch.load(file, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _resolve(full_name: str) -> Entry:
    meta = static_meta(full_name)  # validates the options

    def factory(weights: str = "pretrained", seed: int = 0, img_size: int | None = None) -> CausalLMBackbone:
        return load_causal_lm(full_name, weights, seed)

    factory.__module__ = __name__
    return Entry(full_name, factory, meta)


BACKBONES.add_prefix("hf", _resolve, "any causal language model works as hf:<hub id or local model folder>[?dtype=bfloat16]")
