"""Compress a built model in place, layer by layer, and measure what came out.

Calibrated methods (GPTQ, Wanda) see each layer's inputs as they arrive through the layers
already compressed before it (the papers' sequential order): one calibration pass per layer,
a forward hook accumulating the Hessian 2/n Σ x xᵀ (GPTQ) or the per-input sum of squares (Wanda).
Measurements are counted on the tensors the model now holds, never copied from the config.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .algorithms import gptq, magnitude_mask, rtn, wanda_mask
from .config import parse_pattern
from .layers import is_dense_name, set_weight_2d, target_layers, weight_2d


def _collect(model, layer, calibrate: Callable[[Any], None], what: str):
    """Run the calibration inputs through ``model``; return the layer's input statistic."""
    import torch

    state: dict[str, Any] = {"n": 0, "stat": None}

    def hook(_module, inputs, _output):
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
        n = x.shape[0]
        if what == "hessian":
            total = state["n"] + n
            stat = 2.0 * x.t() @ x / total  # running 2/n Σ x xᵀ (the reference's add_batch)
            state["stat"] = stat if state["stat"] is None else state["stat"] * (state["n"] / total) + stat
        else:
            sq = (x * x).sum(0)
            state["stat"] = sq if state["stat"] is None else state["stat"] + sq
        state["n"] += n

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            calibrate(model)
    finally:
        handle.remove()
    return state["stat"], state["n"]


def compress_layers(model, cfg: dict[str, Any], calibrate: Callable[[Any], None] | None) -> dict[str, Any]:
    """Apply ``cfg`` (rtn / gptq / magnitude / wanda) to every target layer; returns the per-layer
    compressed tensors (codes or masks) that serialisation and the measurements read."""
    import torch

    method = cfg["method"]
    layers: dict[str, dict[str, Any]] = {}
    tokens = 0
    for name, layer in target_layers(model):
        w = weight_2d(layer).detach().float()
        if method == "rtn":
            out = rtn(w, cfg["bits"], cfg.get("group_size"))
        elif method == "gptq":
            H, tokens = _collect(model, layer, calibrate, "hessian")
            out = gptq(w, H, cfg["bits"], cfg.get("group_size"), cfg["damp"], cfg["block_size"])
        elif method == "magnitude":
            keep = magnitude_mask(w, cfg["sparsity"])
            out = {"mask": keep, "weight": w * keep}
        elif method == "wanda":
            sq, tokens = _collect(model, layer, calibrate, "sumsq")
            keep = wanda_mask(w, torch.sqrt(sq), cfg["sparsity"], parse_pattern(cfg.get("pattern"), "compress"))
            out = {"mask": keep, "weight": w * keep}
        else:  # pragma: no cover - channel pruning is structural (compress_channels)
            raise ValueError(method)
        set_weight_2d(layer, out["weight"].to(layer.weight.dtype))
        layers[name] = {k: v for k, v in out.items() if k != "weight"}
    return {"layers": layers, "calibration_tokens": tokens}


def measure(model, cfg: dict[str, Any], layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bits and sparsity counted on the model's compressed tensors (and their stored codes)."""
    import torch

    modules = dict(model.named_modules())
    out: dict[str, Any] = {"compressed_layers": sorted(layers), "n_compressed_layers": len(layers)}
    if cfg["method"] in ("rtn", "gptq"):
        spans, levels = [], []
        for name, info in layers.items():
            codes = info["codes"].to(torch.int32)
            spans.append(int(codes.max() - codes.min()) + 1)
            w = weight_2d(modules[name]).detach()
            g = w.shape[1] // info["scale"].shape[1]
            groups = w.reshape(w.shape[0], -1, g).reshape(-1, g)
            levels.append(max(len(torch.unique(row)) for row in groups[: min(len(groups), 256)]))  # distinct values per group (sampled)
        out["measured_bits"] = max(math.ceil(math.log2(s)) for s in spans)
        out["max_levels_per_group"] = max(levels)
        out["measured_sparsity"] = None
    else:
        zeros = total = 0
        nm = parse_pattern(cfg.get("pattern"), "compress") if cfg.get("pattern") else None
        groups_ok = groups = 0
        for name in layers:
            w = weight_2d(modules[name]).detach()
            zeros += int((w == 0).sum())
            total += w.numel()
            if nm is not None:
                per_group = (w.reshape(w.shape[0], -1, nm[1]) == 0).sum(-1)
                groups += per_group.numel()
                groups_ok += int((per_group >= nm[1] - nm[0]).sum())
        out["measured_sparsity"] = zeros / total if total else None
        out["measured_bits"] = 32
        if nm is not None:
            out["nm_groups_satisfied"] = groups_ok / groups if groups else None
    out["dense_layers"] = dense_parameters(model, layers)
    return out


def dense_parameters(model, layers: dict[str, Any]) -> list[str]:
    """Every parameter the compression left as it was: declared patterns, norms, biases, embeddings."""
    touched = {f"{n}.weight" for n in layers}
    return [n for n, _ in model.named_parameters() if n not in touched]


def compress_channels(model, cfg: dict[str, Any], example_inputs) -> dict[str, Any]:
    """torch-pruning on a timm model; the patch embedding, the head and attention heads stay whole."""
    import torch

    from .adapter import channel_prune

    ignored = [m for n, m in model.named_modules() if n and (is_dense_name(n) or n.endswith(("attn", "attn.qkv", "attn.proj")))]
    ignored += [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    report = channel_prune(model, example_inputs, cfg["ratio"], ignored)
    report["measured_param_ratio"] = report["params_after"] / report["params_before"]
    report["measured_sparsity"] = 1 - report["measured_param_ratio"]
    report["measured_bits"] = 32
    report["dense_layers"] = ["patch embedding", "head", "attention (qkv, proj)"]
    return report


def pack_bits(codes, bits: int):
    """uint8 codes -> bytes: 8-bit as is; 2/3/4-bit two per byte (3-bit codes in 4-bit nibbles)."""
    import torch

    flat = codes.flatten().to(torch.uint8)
    if bits == 8:
        return flat
    if flat.numel() % 2:
        flat = torch.cat([flat, torch.zeros(1, dtype=torch.uint8)])
    return (flat[0::2] << 4) | flat[1::2]


def packed_state(model, cfg: dict[str, Any], layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a compressed checkpoint stores: packed codes + fp32 scales + uint8 zero points for quantized
    layers, kept values + a packed bit mask for pruned ones, the dense tensors as they are."""
    import numpy as np
    import torch

    state: dict[str, Any] = {}
    touched = {f"{n}.weight": n for n in layers}
    for key, tensor in model.state_dict().items():
        name = touched.get(key)
        if name is None:
            state[key] = tensor.detach().clone()
            continue
        info = layers[name]
        if "codes" in info:
            state[key + ".codes"] = pack_bits(info["codes"], cfg["bits"])
            state[key + ".scale"] = info["scale"].to(torch.float32)
            state[key + ".zero"] = info["zero"].to(torch.uint8)
            state[key + ".shape"] = torch.tensor(list(info["codes"].shape))
        else:
            mask = info["mask"]
            state[key + ".values"] = weight_2d(dict(model.named_modules())[name]).detach()[mask].clone()
            state[key + ".mask"] = torch.from_numpy(np.packbits(mask.flatten().numpy()))
            state[key + ".shape"] = torch.tensor(list(mask.shape))
    return state


def state_bytes(state: dict[str, Any], keys=None) -> int:
    return int(sum(t.numel() * t.element_size() for k, t in state.items() if keys is None or k in keys))


def latency(model, example, repeats: int = 7) -> dict[str, Any]:
    """Median forward time of ``example`` (warm-up first), with batch, threads and device."""
    import statistics
    import time

    import torch

    device = str(next(model.parameters()).device)
    times = []
    with torch.no_grad():
        model(example) if not isinstance(example, dict) else model(**example)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(example) if not isinstance(example, dict) else model(**example)
            times.append(time.perf_counter() - t0)
    batch = (example["input_ids"] if isinstance(example, dict) else example).shape[0]
    return {"median_ms": round(1000 * statistics.median(times), 3), "batch": int(batch), "threads": torch.get_num_threads(),
            "device": device, "repeats": repeats}
