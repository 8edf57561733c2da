"""The result store: one JSON record per cell in ``<results>/<sweep>/<cell id>.json``.

Writes are atomic (temp file in the same folder, fsync, ``os.replace``) so that a killed
writer, or many SLURM jobs writing to one shared folder, never leave a half-written record:
readers see either the old record or the new one.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator

from .atomic import atomic_write_text  # noqa: F401 - the store's writers (re-exported)
from .errors import BobError

RECORD_SCHEMA = "bob.run_record/1"
DEFAULT_RESULTS_ROOT = Path("results")


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True, allow_nan=True, default=str) + "\n")


class ResultStore:
    """The records of one sweep: a folder of ``<id>.json`` files."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    @property
    def sweep(self) -> str:
        return self.folder.name

    def path_for(self, cell_id: str) -> Path:
        return self.folder / f"{cell_id}.json"

    def write(self, record: dict[str, Any]) -> Path:
        path = self.path_for(record["id"])
        atomic_write_json(path, record)
        return path

    def artifact_path(self, cell_id: str, name: str) -> Path:
        """``<sweep>/artifacts/<cell id>/<name>``: outside the record glob, next to the record."""
        return self.folder / "artifacts" / cell_id / name

    def write_artifact(self, cell_id: str, name: str, value: Any) -> Path:
        path = self.artifact_path(cell_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(value, separators=(",", ":"), allow_nan=True, default=str))  # compact: detections run to millions
        return path

    def read(self, cell_id: str) -> dict[str, Any] | None:
        path = self.path_for(cell_id)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:  # cannot happen through write(); someone edited it
            warnings.warn(f"{path}: not valid JSON ({exc}); treating the cell as not done")
            return None

    def status(self, cell_id: str) -> str | None:
        rec = self.read(cell_id)
        return None if rec is None else rec.get("status")

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                warnings.warn(f"{path}: not valid JSON ({exc}); skipped")

    def leftover_temp_files(self) -> list[Path]:
        """Temp files of writers that died mid-write (harmless; ``bob results clean`` removes them)."""
        return sorted(self.folder.glob(".*.tmp")) if self.folder.is_dir() else []


def resolve_store(sweep_or_path: str, results_root: Path | str = DEFAULT_RESULTS_ROOT) -> ResultStore:
    """A sweep name (``quickstart``) or a folder path, checked to exist."""
    candidate = Path(sweep_or_path)
    if candidate.is_dir():
        return ResultStore(candidate)
    under_root = Path(results_root) / sweep_or_path
    if under_root.is_dir():
        return ResultStore(under_root)
    existing = sorted(p.name for p in Path(results_root).glob("*") if p.is_dir()) if Path(results_root).is_dir() else []
    from .errors import did_you_mean

    raise BobError(
        f"no results for '{sweep_or_path}': neither a folder nor {under_root}{did_you_mean(sweep_or_path, existing)}; "
        f"run `bob sweep GRID.yaml` first or pass the results folder"
    )
