"""The compression transform between weight resolution and the method (DESIGN.md, "Compression").

``compress_backbone`` rewires a lazily built backbone: its ``cache_key`` gains the compression key
(so every frozen-feature cache keys on the compressed model), and its ``build`` returns the
compressed model. A compressed model is built once per (weights identity, compression config,
calibration hash) — kept in this process and, when ``$BOB_CACHE`` is writable, on disk
(``$BOB_CACHE/compressed/<key>.pt`` + ``.json``) for the other workers — and every cell that needs
it gets a copy. ``BUILDS`` counts real compressions (the tests count them).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..spec import RunSpec, canonical_json
from .config import compress_label, compress_level

BUILDS: Counter = Counter()  # key -> number of times the compression actually ran (in this process)
_MEMO: dict[str, tuple[Any, dict[str, Any]]] = {}
LATENCY_BATCH = 8
CACHE_VERSION = 1  # bump when the algorithms' output changes: cached compressed models are then rebuilt


def cache_root() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "compressed"


def dense_twin(spec: RunSpec) -> RunSpec:
    import dataclasses

    return dataclasses.replace(spec, compress={})


def _is_lm(backbone) -> bool:
    return getattr(backbone, "preprocess", None) is None and hasattr(backbone, "tokenizer")


def _example(backbone, model, cfg):
    """Latency / tracing input: a batch of images at the backbone's size, or of token windows."""
    import torch

    g = torch.Generator().manual_seed(0)
    if _is_lm(backbone):
        length = (cfg.get("calibration") or {}).get("seq_len", 128)
        conf = model.config.to_dict()  # not backbone.max_length: that builds the model being built
        limit = next((conf[k] for k in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length") if conf.get(k)), None)
        length = min(length, int(limit) if limit else length)
        return {"input_ids": torch.randint(0, int(model.config.vocab_size), (LATENCY_BATCH, length), generator=g)}
    size = backbone.preprocess.img_size
    return torch.randn(LATENCY_BATCH, 3, size, size, generator=g)


def compress_backbone(backbone, spec: RunSpec, task) -> None:
    """Make ``backbone`` build the compressed model of ``spec.compress`` (in place, nothing built yet)."""
    cfg = dict(spec.compress)
    cal_cfg = cfg.get("calibration")
    calibration, load = None, None
    if cal_cfg is not None:
        from .calibration import image_calibration, text_calibration

        if _is_lm(backbone):
            calibration, load = text_calibration(backbone.tokenizer, cal_cfg)
        else:
            calibration, load = image_calibration(task, backbone.preprocess, cal_cfg)
    key = hashlib.sha256(canonical_json({"v": CACHE_VERSION, "weights": backbone.cache_key, "compress": cfg,
                                         "calibration": calibration["sha256"] if calibration else None}).encode()).hexdigest()[:24]
    dense_build, dense_key = backbone.build, backbone.cache_key
    backbone.cache_key = f"{dense_key}|compress:{key}"
    backbone.meta["_compression_key"] = key

    def build():
        model, report = _compressed(key, dense_build, backbone, cfg, calibration, load)
        backbone.meta["_compression_report"] = report
        return model

    backbone.build = build
    backbone.meta["_compression_static"] = {"key": key, "method": cfg["method"], "label": compress_label(cfg), "level": compress_level(cfg),
                                            "config": cfg, "calibration": calibration, "dense_cache_key": dense_key}


def _compressed(key: str, dense_build, backbone, cfg, calibration, load) -> tuple[Any, dict[str, Any]]:
    if key in _MEMO:
        model, report = _MEMO[key]
        return copy.deepcopy(model), report
    folder = cache_root()
    file, meta_file = folder / f"{key}.pt", folder / f"{key}.json"
    if file.is_file() and meta_file.is_file():
        import torch

        model = torch.load(file, map_location="cpu", weights_only=False)  # bob's own cache file, written below
        report = json.loads(meta_file.read_text())
        _MEMO[key] = (model, report)
        return copy.deepcopy(model), report
    model = dense_build()
    report = build_compressed(model, backbone, cfg, calibration, load, folder / f"{key}.packed.pt")
    BUILDS[key] += 1
    _MEMO[key] = (model, report)
    try:
        import torch

        from ..atomic import atomic_write_bytes

        import io

        buf = io.BytesIO()
        torch.save(model, buf)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, buf.getvalue())
        atomic_write_bytes(meta_file, json.dumps(report).encode())
    except (OSError, ImportError):  # a read-only cache: this process still reuses it
        pass
    return copy.deepcopy(model), report


def build_compressed(model, backbone, cfg: dict[str, Any], calibration, load, packed_file: Path) -> dict[str, Any]:
    """Compress ``model`` in place; the report the records carry (sizes, bits, sparsity, latency)."""
    import time

    import torch

    from .adapter import library_versions
    from .apply import compress_channels, compress_layers, latency, measure, packed_state, state_bytes
    from .checks import check_layers

    model.eval()
    example = _example(backbone, model, cfg)
    dense_latency = latency(model, example)
    dense_state = {k: v for k, v in model.state_dict().items()}
    dense_bytes = state_bytes(dense_state)
    t0 = time.perf_counter()
    if cfg["method"] == "channel":
        report = compress_channels(model, cfg, example)
        packed = {k: v for k, v in model.state_dict().items()}
        layers: dict[str, Any] = {}
    else:
        check_layers(cfg, model, backbone.name)
        calibrate = None
        if load is not None:
            inputs = load()

            def calibrate(m):
                for s in range(0, len(inputs), LATENCY_BATCH):
                    batch = inputs[s : s + LATENCY_BATCH]
                    m(input_ids=batch) if _is_lm(backbone) else m(batch)

        done = compress_layers(model, cfg, calibrate)
        layers = done["layers"]
        report = measure(model, cfg, layers)
        report["calibration_tokens"] = done["calibration_tokens"]
        packed = packed_state(model, cfg, layers)
    compress_s = time.perf_counter() - t0
    packed_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(packed, packed_file)
    quant_keys = [k for k in packed if any(k.startswith(f"{n}.weight.") for n in layers)]
    dense_of_layers = sum(dense_state[f"{n}.weight"].numel() * dense_state[f"{n}.weight"].element_size() for n in layers)
    versions = library_versions()
    library = {"rtn": f"torchao {versions['torchao']} (affine quant primitives)", "gptq": f"bob GPTQ on torchao {versions['torchao']} grid",
               "magnitude": "bob (torch)", "wanda": "bob (torch)", "channel": f"torch-pruning {versions['torch_pruning']}"}[cfg["method"]]
    report.update({
        "library": library, "library_versions": versions,
        "kernel": "structurally smaller model" if cfg["method"] == "channel" else "simulated: dequantized / masked float32 weights, dense kernels",
        "nominal_bits": cfg.get("bits", 32), "nominal_sparsity": cfg.get("sparsity", cfg.get("ratio")),
        "serialized_bytes": packed_file.stat().st_size, "parameter_bytes": state_bytes(packed),
        "dense_parameter_bytes": dense_bytes,
        "compressed_layer_bytes": state_bytes(packed, quant_keys) if layers else None,
        "compressed_layer_dense_bytes": dense_of_layers if layers else None,
        "latency": latency(model, example), "dense_latency": dense_latency, "compress_s": round(compress_s, 3),
    })
    if layers:
        report["compressed_layer_ratio"] = report["compressed_layer_bytes"] / dense_of_layers
    return report


def compression_record(backbone, spec: RunSpec) -> dict[str, Any]:
    """The record's ``compression`` block (also for a cell whose features came from the cache)."""
    static = dict(backbone.meta.get("_compression_static") or {})
    report = backbone.meta.get("_compression_report")
    if report is None:
        key = static.get("key")
        if key and key in _MEMO:
            report = _MEMO[key][1]
        elif key and (cache_root() / f"{key}.json").is_file():
            report = json.loads((cache_root() / f"{key}.json").read_text())
    return {**static, **(report or {"report": "not built in this cell and not in the cache"}), "dense_twin_id": dense_twin(spec).id}
