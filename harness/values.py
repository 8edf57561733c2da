"""Turning text from grids and ``--set`` into values. Lives apart from the CLI so that the grid
parser (engine) does not import the command line (which imports everything)."""
from __future__ import annotations

import re

FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(text: str):
    """``--set`` values: ints, floats (``1e-3`` included), booleans, lists (``[1,2]``), else strings."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if FLOAT_RE.match(text):
        return float(text)
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return coerce_numbers(value)


def coerce_numbers(value):
    """PyYAML reads ``1e-3`` as a string (YAML 1.1); grids mean a number."""
    if isinstance(value, str) and FLOAT_RE.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [coerce_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: coerce_numbers(v) for k, v in value.items()}
    return value
