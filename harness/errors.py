"""User-facing errors.

Why a dedicated type: the CLI prints a ``BobError`` as one line (``error: ...``) and exits 2,
while any other exception is a bug and keeps its traceback. Every message names the file, key
or value at fault and says how to fix it.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class BobError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line


class NonFiniteLossError(BobError):
    """Training diverged; recorded as a failed cell, never as a number."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like ``name`` (case-insensitive, also on the part after a prefix)."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if not hits and ":" in name:  # e.g. timm:vit_smal -> compare the part after the prefix
        prefix, _, rest = name.partition(":")
        stripped = {c.split(":", 1)[-1].lower(): c for c in candidates if c.startswith(prefix + ":")}
        hits = [stripped[h].lower() for h in difflib.get_close_matches(rest.lower(), list(stripped), n=n, cutoff=0.6)]
    if not hits:
        hits = [c.lower() for c in candidates if name.lower() in c.lower()][:n]
    return [lowered[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean x?)`` or ``''`` -- appended to unknown-name errors."""
    hits = close_matches(name, candidates)
    if not hits:
        return ""
    return " (did you mean " + " or ".join(hits) + "?)"


class RecordWriteError(BobError):
    """A finished cell's record could not be written (disk full, permissions): nothing partial is
    left behind, the cell stays pending, and the next run computes it again."""
