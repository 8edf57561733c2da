"""Local execution settings shared by the in-process and worker-process paths (see worker.py)."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$BOB_CACHE/features`` (default ``~/.cache/bob/features``): shared by every sweep on this machine."""
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "features"
