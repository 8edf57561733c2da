"""The ``compress`` grid axis: one entry parsed, checked and written in canonical form (no torch).

An entry is ``none`` (the dense model: the cell's id is what it always was) or a mapping::

    {method: rtn, bits: 8}                       # round-to-nearest weight-only (group_size: per row by default)
    {method: rtn, bits: 4, group_size: 128}
    {method: gptq, bits: 4, calibration: {text: corpus.txt, samples: 32, seq_len: 128, seed: 0}}
    {method: magnitude, sparsity: 0.5}            # unstructured, per layer
    {method: wanda, sparsity: 0.5, pattern: "2:4"}
    {method: channel, ratio: 0.3}                 # structured (torch-pruning), timm models

The canonical form has every default filled in, so two spellings of one compression are one cell;
it is part of the cell's identity (``RunSpec.compress``). A calibration text file is identified by
its SHA-256 (filled at expansion), so editing the file makes new cells instead of stale records.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import BobError, did_you_mean

METHODS = ("rtn", "gptq", "magnitude", "wanda", "channel")
QUANT_BITS = (2, 3, 4, 8)  # what the quantizers (torchao's affine primitives, bits<=8 codes) produce
CALIBRATED = ("gptq", "wanda")
KEYS = {"rtn": ("bits", "group_size"), "gptq": ("bits", "group_size", "calibration", "damp", "block_size"),
        "magnitude": ("sparsity",), "wanda": ("sparsity", "pattern", "calibration"), "channel": ("ratio",)}
CALIBRATION_KEYS = ("samples", "seq_len", "seed", "text", "split")
CALIBRATION_DEFAULTS = {"samples": 32, "seq_len": 128, "seed": 0}


def _err(where: str, message: str) -> BobError:
    return BobError(f"{where}: {message}")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_pattern(pattern: str, where: str) -> tuple[int, int] | None:
    """``"2:4"`` -> (2, 4): keep N of every M consecutive input weights; ``unstructured`` -> None."""
    if pattern in (None, "unstructured"):
        return None
    try:
        n, m = (int(x) for x in str(pattern).split(":"))
    except ValueError:
        raise _err(where, f"pattern {pattern!r} is not N:M (e.g. \"2:4\") or unstructured") from None
    if not 0 < n < m:
        raise _err(where, f"pattern {pattern!r} must keep 0 < N < M weights of every M")
    return n, m


def parse_compress(entry: Any, where: str = "compress") -> dict[str, Any]:
    """A grid entry -> its canonical mapping ({} for ``none``); every problem is one line naming the key."""
    if entry in (None, "none", "dense", {}):
        return {}
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict):
        raise _err(where, f"an entry must be none or a mapping like {{method: rtn, bits: 8}}, got {entry!r}")
    method = entry.get("method")
    if method not in METHODS:
        raise _err(where, f"method {method!r} is not one of {', '.join(METHODS)}{did_you_mean(str(method), METHODS)}")
    where = f"{where} ({method})"
    allowed = ("method",) + KEYS[method]
    for key in entry:
        if key not in allowed:
            raise _err(where, f"unknown key '{key}'{did_you_mean(str(key), allowed)}; {method} takes {', '.join(KEYS[method])}")
    out: dict[str, Any] = {"method": method}
    if method in ("rtn", "gptq"):
        bits = entry.get("bits")
        if not isinstance(bits, int) or isinstance(bits, bool) or bits not in QUANT_BITS:
            raise _err(where, f"bits={bits!r} is not supported; {method} quantizes to {', '.join(map(str, QUANT_BITS))} bits")
        group = entry.get("group_size")
        if group is not None and (not isinstance(group, int) or isinstance(group, bool) or group < 2):
            raise _err(where, f"group_size={group!r} must be an integer >= 2, or left out for one group per output row")
        out.update(bits=bits, group_size=group)
    if method == "gptq":
        damp = entry.get("damp", 0.01)
        if not isinstance(damp, (int, float)) or not 0 < float(damp) < 1:
            raise _err(where, f"damp={damp!r} must be in (0, 1) (the GPTQ paper uses 0.01 of the mean Hessian diagonal)")
        block = entry.get("block_size", 128)
        if not isinstance(block, int) or block < 1:
            raise _err(where, f"block_size={block!r} must be a positive integer")
        out.update(damp=float(damp), block_size=block)
    if method in ("magnitude", "wanda"):
        nm = parse_pattern(entry.get("pattern", "unstructured"), where) if method == "wanda" else None
        sparsity = entry.get("sparsity", None if nm is None else 1 - nm[0] / nm[1])
        if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 < float(sparsity) < 1:
            raise _err(where, f"sparsity={sparsity!r} must be a fraction strictly between 0 and 1 (e.g. 0.5)")
        if nm is not None and abs(float(sparsity) - (1 - nm[0] / nm[1])) > 1e-9:
            raise _err(where, f"sparsity={sparsity} contradicts pattern {entry['pattern']!r} (which zeroes {1 - nm[0] / nm[1]:g}); give one of them")
        out["sparsity"] = float(sparsity)
        if method == "wanda":
            out["pattern"] = "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"
    if method == "channel":
        ratio = entry.get("ratio")
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < float(ratio) < 1:
            raise _err(where, f"ratio={ratio!r} must be a fraction of channels strictly between 0 and 1 (e.g. 0.3)")
        out["ratio"] = float(ratio)
    if method in CALIBRATED:
        out["calibration"] = _parse_calibration(entry.get("calibration") or {}, where)
    return out


def _parse_calibration(cal: Any, where: str) -> dict[str, Any]:
    if not isinstance(cal, dict):
        raise _err(where, f"calibration must be a mapping of {', '.join(CALIBRATION_KEYS)}, got {cal!r}")
    for key in cal:
        if key not in CALIBRATION_KEYS:
            raise _err(where, f"calibration has unknown key '{key}'{did_you_mean(str(key), CALIBRATION_KEYS)}; allowed: {', '.join(CALIBRATION_KEYS)}")
    out = {**CALIBRATION_DEFAULTS, **{k: v for k, v in cal.items() if k in ("samples", "seq_len", "seed")}}
    for key in ("samples", "seq_len"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 1:
            raise _err(where, f"calibration.{key}={out[key]!r} must be a positive integer")
    if not isinstance(out["seed"], int) or isinstance(out["seed"], bool):
        raise _err(where, f"calibration.seed={out['seed']!r} must be an integer")
    if cal.get("split") is not None:
        split = str(cal["split"])
        if "test" in split.lower():
            raise _err(where, f"calibration.split={split!r}: calibration never reads a test split; use the task's training split (the default)")
        out["split"] = split
    if cal.get("text") is not None:
        path = Path(str(cal["text"])).expanduser()
        if not path.is_file():
            raise _err(where, f"calibration.text {path} does not exist; give a UTF-8 text file to draw calibration windows from")
        out["text"] = str(path.resolve())
        out["text_sha256"] = file_sha256(path)  # part of the cell id: another file is another cell
    return out


def compress_label(cfg: dict[str, Any]) -> str:
    """Short name for tables: ``dense``, ``rtn-w4g128``, ``gptq-w4``, ``magnitude-50%``, ``wanda-2:4``..."""
    if not cfg:
        return "dense"
    m = cfg["method"]
    if m in ("rtn", "gptq"):
        return f"{m}-w{cfg['bits']}" + (f"g{cfg['group_size']}" if cfg.get("group_size") else "")
    if m == "wanda" and cfg.get("pattern", "unstructured") != "unstructured":
        return f"wanda-{cfg['pattern']}"
    if m in ("magnitude", "wanda"):
        return f"{m}-{round(100 * cfg['sparsity'])}%"
    return f"channel-{round(100 * cfg['ratio'])}%"


def compress_level(cfg: dict[str, Any]) -> str:
    """The level z-scores are computed within: ``dense``, ``int8``, ``int4``, ``sparse-50%``, ``2:4``, ``channel-30%``."""
    if not cfg:
        return "dense"
    if cfg["method"] in ("rtn", "gptq"):
        return f"int{cfg['bits']}"
    if cfg.get("pattern", "unstructured") != "unstructured":
        return cfg["pattern"]
    if cfg["method"] == "channel":
        return f"channel-{round(100 * cfg['ratio'])}%"
    return f"sparse-{round(100 * cfg['sparsity'])}%"
