"""In-process executor: cells one after another, a progress bar, failures recorded and skipped over."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..features import FeatureCache
from ..progress import progress
from ..runner import run_cell
from ..spec import RunSpec
from ..store import ResultStore


def default_cache_dir() -> Path:
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "features"


def run_local(
    cells: list[RunSpec],
    store: ResultStore,
    *,
    data_root: str | None = None,
    data_paths: dict[str, str] | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
    logger_factory=None,
) -> list[dict[str, Any]]:
    feature_cache = FeatureCache(cache_dir if cache_dir is not None else default_cache_dir())
    checkpoint_dir = store.folder / ".checkpoints"
    records = []
    bar = progress(cells, desc=f"sweep {store.sweep}", total=len(cells), leave=True)
    for spec in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(spec.label()[:60])
        record = run_cell(
            spec,
            store,
            data_root=data_root,
            data_paths=data_paths,
            feature_cache=feature_cache,
            checkpoint_dir=checkpoint_dir,
            device=device,
            log=log,
            logger_factory=logger_factory,
        )
        records.append(record)
        if record["status"] == "failed":
            log(f"FAILED {spec.label()}: {record['error']['message']} (record: {record.get('path')})")
        elif record["status"] == "ok":
            pm = record["primary_metric"]
            log(f"ok {spec.label()}: {pm['name']}={pm['value']:.2f}")
    return records
