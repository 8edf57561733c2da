"""The one place bob calls the compression libraries; their versions are pinned here.

Why one module: torchao's weight-only int4 API has moved three times (``int4_weight_only`` ->
``Int4WeightOnlyConfig`` -> layouts / packing formats), torch-pruning renamed its pruners between
1.x releases. Everything else in ``harness.compress`` calls the functions below, so a new library
version is one module to port (and ``check_versions`` says which versions were validated).

What runs through which library (pyproject extra ``compress``):
- **torchao 0.18** — the affine quantization primitives (``choose_qparams_affine``,
  ``quantize_affine``, ``dequantize_affine``) that all of its weight-only configs are built on. RTN
  calls them per group; GPTQ calls the same ones per column, so both produce torchao's integer grid.
  bob keeps the integer codes (serialised packed, for the size on disk) and runs the model on the
  dequantized float weights (simulated quantization, as the GPTQ and Wanda papers evaluate): the
  int4 tensor subclasses of torchao 0.18 need a CUDA tinygemm or bf16 CPU kernel layout, which would
  make the accuracy depend on the device. The record says so (``kernel``).
- **torch-pruning 1.6** — structured channel pruning of timm models (dependency graph, L2 importance).
- GPTQ and Wanda: written here (``algorithms.py``), tested against the papers' rules; gptqmodel 7.7
  installs beside bob's torch but its CPU path needs its own kernels and packs only for its
  model classes, not for timm / open_clip towers.
"""
from __future__ import annotations

from typing import Any

PINNED = {"torchao": "0.18", "torch_pruning": "1.6"}


def library_versions() -> dict[str, str]:
    out = {}
    for name in PINNED:
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "unknown"))
        except ImportError:
            out[name] = "missing"
    return out


def require(name: str) -> Any:
    """Import a pinned library, or a one-line error naming the extra to install."""
    from ..errors import BobError

    try:
        module = __import__(name)
    except ImportError:
        raise BobError(f"compression needs {name} {PINNED[name]}.x: pip install 'bob-harness[compress]'") from None
    version = str(getattr(module, "__version__", ""))
    if not version.startswith(PINNED[name]):
        raise BobError(f"{name} {version} is installed but harness/compress/adapter.py is written for {PINNED[name]}.x; "
                       f"pip install '{name.replace('_', '-')}=={PINNED[name]}.*'")
    return module


def _primitives():
    require("torchao")
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine, dequantize_affine, quantize_affine

    return MappingType, choose_qparams_affine, quantize_affine, dequantize_affine


def qparams(w, bits: int, group: int):
    """Asymmetric min-max scale and zero point for (out, in) ``w`` in groups of ``group`` input columns
    (the range always holds 0, as in GPTQ's quantizer): shapes (out, in // group)."""
    import torch

    MappingType, choose, _, _ = _primitives()
    scale, zero = choose(w.float(), MappingType.ASYMMETRIC, (1, group), torch.uint8, quant_min=0, quant_max=2**bits - 1)
    return scale.reshape(w.shape[0], -1), zero.reshape(w.shape[0], -1)


def quantize(w, scale, zero, bits: int):
    """(integer codes uint8, dequantized float32) of (out, k) ``w`` with per-group ``scale``/``zero`` (out, k // group)."""
    import torch

    _, _, quant, dequant = _primitives()
    block = (1, w.shape[1] // scale.shape[1])
    codes = quant(w.float(), block, scale, zero, torch.uint8, quant_min=0, quant_max=2**bits - 1)
    return codes, dequant(codes, block, scale, zero, torch.uint8, quant_min=0, quant_max=2**bits - 1, output_dtype=torch.float32)


def channel_prune(model, example_inputs, ratio: float, ignored_layers: list) -> dict[str, Any]:
    """torch-pruning's magnitude (L2) pruner, one step, ``ratio`` of the channels of every prunable
    group; returns what it did. Heads and attention projections stay whole (``ignored_layers``)."""
    tp = require("torch_pruning")
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MagnitudePruner(model, example_inputs, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                       ignored_layers=ignored_layers, global_pruning=False)
    pruner.step()
    after = sum(p.numel() for p in model.parameters())
    return {"params_before": before, "params_after": after, "pruner": "torch_pruning.pruner.MagnitudePruner(importance=L2)"}
