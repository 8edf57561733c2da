"""Plan and run a sweep: which cells are done, which to run, which are skipped and why."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grid import Expansion, Grid, expand
from .spec import RunSpec
from .store import ResultStore


@dataclass
class SweepPlan:
    grid: Grid
    store: ResultStore
    expansion: Expansion
    done: list[RunSpec] = field(default_factory=list)
    failed_before: list[RunSpec] = field(default_factory=list)
    to_run: list[RunSpec] = field(default_factory=list)
    fell_back: list[RunSpec] = field(default_factory=list)
    retry_failed: bool = False
    retry_fallbacks: bool = False

    def describe(self) -> str:
        e = self.expansion
        total = len(e.cells) + len(e.skipped)
        lines = [
            f"sweep '{self.grid.name}': {total} cells -> {len(self.to_run)} to run, {len(self.done)} done, "
            f"{len(self.failed_before)} failed before{' (rerun them with --retry-failed)' if self.failed_before and not self.retry_failed else ''}, "
            f"{len(e.skipped)} skipped" + (f", {e.excluded} excluded by rules" if e.excluded else "")
        ]
        if self.fell_back:
            lines.append(
                f"  {len(self.fell_back)} cells ran with random-init weights because `weights: auto` found no pretrained weights"
                + (" (rerunning them)" if self.retry_fallbacks else "; once `bob prefetch` has cached the weights, rerun them with --retry-fallbacks")
            )
        reasons = Counter(reason for _, reason in e.skipped)
        for reason, count in reasons.items():
            lines.append(f"  skipped {count}: {reason}")
        lines.append(f"  results: {self.store.folder}")
        return "\n".join(lines)


def plan_sweep(grid: Grid, results_root: str | Path = "results", retry_failed: bool = False, retry_fallbacks: bool = False) -> SweepPlan:
    """Sort the grid's cells into done / failed before / to run.

    ``weights: auto`` is part of a cell's id (the id is known before any weights are looked up),
    so a cell that fell back to random init counts as done; ``retry_fallbacks`` reruns those
    cells, e.g. once ``bob prefetch`` has filled the cache on a machine with internet.
    """
    store = ResultStore(Path(results_root) / grid.name)
    expansion = expand(grid)
    plan = SweepPlan(grid, store, expansion, retry_failed=retry_failed, retry_fallbacks=retry_fallbacks)
    for spec in expansion.cells:
        record = store.read(spec.id)
        status = None if record is None else record.get("status")
        if status == "ok":
            if spec.weights == "auto" and (record.get("backbone_meta") or {}).get("weights") == "random-init":
                plan.fell_back.append(spec)
                if retry_fallbacks:
                    plan.to_run.append(spec)
                    continue
            plan.done.append(spec)
        elif status == "failed":
            plan.failed_before.append(spec)
            if retry_failed:
                plan.to_run.append(spec)
        else:
            plan.to_run.append(spec)
    return plan


PLAN_FILE = ".plan.json"


def save_plan(plan: SweepPlan) -> None:
    """Store the sweep's cell list beside its records (``.plan.json``, atomic, merged with any
    earlier plan), so that ``bob status`` knows the pending cells after a kill without ``--grid``."""
    import json

    from .atomic import atomic_write_text

    path = plan.store.folder / PLAN_FILE
    cells = planned_cells(plan.store.folder)
    cells.update({s.id: s.as_dict() for s in plan.expansion.cells})
    atomic_write_text(path, json.dumps({"grid": plan.grid.source, "cells": cells}, sort_keys=True, default=str))


def planned_cells(folder: Path) -> dict[str, dict]:
    import json

    try:
        return dict(json.loads((Path(folder) / PLAN_FILE).read_text(encoding="utf-8")).get("cells") or {})
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return {}


def record_skipped(plan: SweepPlan) -> None:
    """Unsupported cells get a 'skipped' record so tables can say why a cell is empty."""
    from .runner import now_iso
    from .store import RECORD_SCHEMA

    for spec, reason in plan.expansion.skipped:
        if plan.store.status(spec.id) is None:
            plan.store.write(
                {
                    "schema": RECORD_SCHEMA,
                    "id": spec.id,
                    "sweep": plan.store.sweep,
                    "status": "skipped",
                    "spec": spec.as_dict(),
                    **{k: v for k, v in spec.as_dict().items() if k != "hparams"},
                    "metrics": {},
                    "error": {"type": "Unsupported", "message": reason, "traceback": None},
                    "created": now_iso(),
                }
            )


def summarise(records: list[dict[str, Any]]) -> Counter:
    return Counter(r.get("status", "?") for r in records)


def sweep_status(sweep_or_path: str, results_root: str | Path = "results", grid_file: str | None = None) -> dict[str, Any]:
    """What ``bob status`` prints: states by count, running cells, failed cells, ETA."""
    import time

    from .claims import Claims
    from .executors.slurm import submitted_specs
    from .store import resolve_store

    store = resolve_store(sweep_or_path, results_root)
    records = {r["id"]: r for r in store.records()}
    known = set(records) | set(submitted_specs(store)) | set(planned_cells(store.folder))
    if grid_file:
        from .grid import expand, load_grid

        known |= {s.id for s in expand(load_grid(grid_file)).cells}
    active = Claims(store.folder).active()
    running = [{"id": cid, "host": info.get("host"), "slurm": info.get("slurm_array") or info.get("slurm_job_id"),
                "age_s": time.time() - info["heartbeat"]} for cid, info in active.items()]
    counts = {"pending": 0, "running": len(running), "ok": 0, "failed": 0, "skipped": 0}
    for r in records.values():
        counts[r.get("status", "failed")] = counts.get(r.get("status", "failed"), 0) + 1
    counts["pending"] = len(known - set(records) - set(active))
    walls = [r["timing"]["wall_s"] for r in records.values() if r.get("status") == "ok" and r.get("timing", {}).get("wall_s")]
    mean_wall = sum(walls) / len(walls) if walls else None
    unfinished = counts["pending"] + counts["running"]
    eta = mean_wall * unfinished / max(1, counts["running"]) if mean_wall and unfinished else None
    return {"folder": str(store.folder), "counts": counts, "running": running, "failed": [r for r in records.values() if r.get("status") == "failed"],
            "eta_s": eta, "mean_wall_s": mean_wall}
