"""One-line range checks for recipe hyper-parameters, shared by the recipes' ``check_hparams``
(run by ``resolve_hparams`` at grid expansion, before any model exists) and their ``apply``."""
from __future__ import annotations

from typing import Any

from ..errors import BobError


def integer(recipe: str, key: str, value: Any, low: int = 1, high: int | None = None, why: str = "") -> int:
    """``value`` as an int in ``low..high``; anything else (a bool, a float, out of range) is a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise BobError(f"{recipe}: {key}={value!r} must be an integer {span}{f' ({why})' if why else ''}")
    return value


def number(recipe: str, key: str, value: Any, low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False, why: str = "") -> float:
    """``value`` as a float in the interval; bounds are closed unless ``open_low`` / ``open_high``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if open_low else '>='} {low}"
        hi = "" if high is None else f"{'<' if open_high else '<='} {high}"
        raise BobError(f"{recipe}: {key}={value!r} must be a number {' and '.join(x for x in (lo, hi) if x)}{f' ({why})' if why else ''}")
    return float(value)


def choice(recipe: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    from ..errors import did_you_mean

    if str(value) not in allowed:
        raise BobError(f"{recipe}: {key}={value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}")
    return str(value)


def flag(recipe: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BobError(f"{recipe}: {key}={value!r} must be true or false")
    return value
