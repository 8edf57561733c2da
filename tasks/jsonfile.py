"""Reading an annotation json with the one-line errors every task reader gives."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import BobError


def read_json(path: Path, missing: str) -> Any:
    """The parsed file; ``missing`` is the message when it does not exist (say what file is expected)."""
    path = Path(path)
    if not path.is_file():
        raise BobError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BobError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)}{where})") from None
