"""Where pretrained weights come from, decided *before* building a model.

Why: with no internet, timm's own download retries for ~45 s before failing. bob looks in the
local Hugging Face and torch-hub caches first, then probes the network once per process
(a DNS lookup and a 3 s connect), and only then lets the library download.
"""
from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


@dataclass(frozen=True)
class WeightsSource:
    """``kind``: 'cache' (a local file), 'download' (reachable), 'file' (user's checkpoint) or 'none'."""

    kind: str
    file: str | None = None
    reason: str = ""


def offline_mode() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("BOB_OFFLINE", "HF_HUB_OFFLINE"))


@functools.lru_cache(maxsize=8)
def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    if offline_mode():
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_cached_hf_file(repo_id: str, filenames=("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        path = try_to_load_from_cache(repo_id, name)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def find_cached_url_file(url: str) -> str | None:
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return str(path) if path.is_file() else None


def locate_pretrained(hf_hub_id: str | None, url: str | None) -> WeightsSource:
    if hf_hub_id:
        cached = find_cached_hf_file(hf_hub_id.split("@")[0])
        if cached:
            return WeightsSource("cache", cached)
        if host_reachable("huggingface.co"):
            return WeightsSource("download")
    if url:
        cached = find_cached_url_file(url)
        if cached:
            return WeightsSource("cache", cached)
        host = urlparse(url).hostname
        if host and host_reachable(host):
            return WeightsSource("download")
    if not hf_hub_id and not url:
        return WeightsSource("none", reason="timm has no pretrained weights for this name (give a pretrained tag, e.g. resnet50.a1_in1k)")
    where = hf_hub_id and f"huggingface.co/{hf_hub_id}" or url
    why = "offline mode is set" if offline_mode() else "the host cannot be reached"
    return WeightsSource("none", reason=f"the weights ({where}) are not in the local cache and {why}")


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ResolvedWeights:
    """What ``--weights`` resolved to, the same way for every backbone source. ``file``: a local file
    to load (cache hit or the user's checkpoint); pretrained with no file means: let the library
    download. ``weights_id`` keys the feature cache; ``meta`` goes into the backbone's metadata."""

    resolved: str  # pretrained | random-init
    file: str | None
    weights_id: str
    meta: dict


def resolve_weights(weights: str, seed: int, backbone: str, meta: dict, locate, fetch_hint: str, checkpoint_kinds: str) -> ResolvedWeights:
    """``pretrained`` (an error when unavailable), ``auto`` (pretrained, else random init, noted),
    ``random`` or a checkpoint path. ``locate() -> WeightsSource``; ``meta`` needs ``pretrain_method``
    and ``pretrained_tag`` (a local checkpoint keeps the tag's pre-training label, marked)."""
    from harness.errors import BobError

    notes: dict = {}
    file = None
    if weights in ("pretrained", "auto"):
        source = locate()
        if source.kind == "none":
            if weights == "pretrained":
                raise BobError(f"pretrained weights for {backbone} are unavailable: {source.reason}; on a machine with internet run "
                               f"`bob prefetch` or {fetch_hint} to fill the cache, or pass --weights PATH ({checkpoint_kinds}), "
                               "--weights random or --weights auto")
            resolved, notes["weights_note"] = "random-init", f"auto: {source.reason}; fell back to random init"
        else:
            resolved, file = "pretrained", source.file
    elif weights == "random":
        resolved = "random-init"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BobError(f"--weights {weights}: no such file; give pretrained, random, auto or the path of a checkpoint ({checkpoint_kinds})")
        resolved, file = "pretrained", str(path.resolve())
        notes.update(weights_file=file, weights_sha256=file_digest(path),
                     pretrain_method=meta["pretrain_method"] + " (local checkpoint)" if meta.get("pretrained_tag") else "local checkpoint")
    notes["weights"] = resolved
    if resolved == "random-init":
        notes["pretrain_method"], notes["pretrain_data"] = "random", "none"
        weights_id = f"random-init:seed{seed}"
    elif "weights_sha256" in notes:
        weights_id = f"file:{notes['weights_sha256'][:16]}"
    else:
        weights_id = f"pretrained:{backbone.split(':', 1)[1]}"
    return ResolvedWeights(resolved, file, weights_id, notes)
