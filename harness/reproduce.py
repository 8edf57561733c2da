"""``bob reproduce``: rerun a stored record's cell into a scratch store and compare, metric by metric.

Why: cells are content-hashed and skipped once done, so a stored number is never recomputed by a
sweep; this is how a reader (or CI) proves that it can be obtained again. The rerun uses the
record's own spec, data root and settings (for a default-mode cell, the recorded intra-op thread
count), a fresh feature cache (a cache hit would prove nothing) and a scratch result store (the
stored record is never touched).

Before rerunning, the inputs are checked against the record: the weights file's SHA-256 and the
data's per-split sample hashes (``harness.fingerprint``). A changed input is a one-line refusal
naming it: a difference would then say nothing about bob.

Tolerance: exact (difference 0) for a deterministic cell; otherwise the band the metric declares
(``tolerance`` in its ``metric_specs`` entry), else ``DEFAULT_RELATIVE_BAND`` of the stored value.
"""
from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import BobError

DEFAULT_RELATIVE_BAND = 0.01  # 1 % of the stored value, for cells that did not run deterministically
ABS_FLOOR = 1e-9


@dataclass
class Comparison:
    metric: str
    stored: Any
    new: Any
    difference: float | None
    tolerance: float
    ok: bool


@dataclass
class Reproduction:
    record_path: Path
    cell_id: str
    label: str
    deterministic: bool
    checked: list[str]
    rows: list[Comparison] = field(default_factory=list)
    new_status: str = "ok"
    new_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.new_status == "ok" and all(r.ok for r in self.rows)

    @property
    def failing(self) -> list[Comparison]:
        return [r for r in self.rows if not r.ok]


def find_record(target: str, results_root: str | Path = "results") -> tuple[dict[str, Any], Path]:
    """A record file's path, or a cell id looked up in every sweep under ``results_root``."""
    path = Path(target)
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8")), path
        except json.JSONDecodeError as exc:
            raise BobError(f"{path}: not a record (invalid JSON: {exc})") from None
    root = Path(results_root)
    hits = sorted(root.glob(f"*/{target}.json")) + sorted(root.glob(f"{target}.json")) if root.is_dir() else []
    for hit in hits:
        record = json.loads(hit.read_text(encoding="utf-8"))
        if record.get("status") == "ok":
            return record, hit
    if hits:
        return json.loads(hits[0].read_text(encoding="utf-8")), hits[0]
    raise BobError(f"no record for '{target}': neither a record file nor a cell id under {root}/<sweep>/; give the record's path or --results")


def check_inputs(record: dict[str, Any], record_path: Path) -> list[str]:
    """Verify the weights file and the data against the record; a change is a one-line BobError."""
    from .fingerprint import data_fingerprint, file_sha256
    from .registry import TASKS
    from .spec import RunSpec

    if record.get("status") != "ok":
        raise BobError(f"{record_path}: the record's status is {record.get('status')!r}; only a finished (ok) cell has numbers to reproduce")
    repro = record.get("reproducibility")
    if not repro:
        raise BobError(f"{record_path}: the record has no reproducibility block (written by an older bob); "
                       "its inputs cannot be verified: rerun the cell with `bob sweep` first")
    checked = []
    meta = record.get("backbone_meta") or {}
    if meta.get("weights_sha256"):
        weights_file = meta.get("weights_file") or record["spec"]["weights"]
        if not Path(weights_file).is_file():
            raise BobError(f"cannot reproduce {record['id']}: the weights file {weights_file} is gone (sha256 {meta['weights_sha256'][:16]}... recorded)")
        now = file_sha256(weights_file)
        if now != meta["weights_sha256"]:
            raise BobError(f"cannot reproduce {record['id']}: the weights file {weights_file} changed "
                           f"(sha256 {meta['weights_sha256'][:16]}... recorded, {now[:16]}... now)")
        checked.append(f"weights file sha256 {now[:16]}...")
    else:
        checked.append(f"weights {meta.get('weights', record['spec'].get('weights'))} (no file to hash)")
    if repro.get("data"):
        spec = RunSpec.from_dict(record["spec"])
        entry = TASKS.get(spec.task)
        per_cell = {"cell": spec} if entry.meta.get("data_identity") else {}
        try:
            task = entry.factory(data_root=repro.get("data_root"), overrides=repro.get("data_paths") or {}, **per_cell)
            current = data_fingerprint(task)
        except BobError as exc:
            raise BobError(f"cannot reproduce {record['id']}: the data of task {spec.task} cannot be read now ({exc})") from None
        for split, stored in repro["data"].items():
            now = current.get(split)
            if now != stored:
                what = "is gone" if now is None else (f"changed size ({stored.get('n')} -> {now.get('n')} samples)" if now.get("n") != stored.get("n")
                                                     else f"changed (sample sha256 {stored.get('sample_sha256')} recorded, {now.get('sample_sha256')} now)")
                raise BobError(f"cannot reproduce {record['id']}: split '{split}' of task {spec.task} {what}")
        checked.append(f"data: {len(repro['data'])} split(s) of {spec.task} match their sample hashes")
    else:
        checked.append(f"data: no sample hashes recorded for {record['spec']['task']} (not checked)")
    return checked


def tolerance_for(record: dict[str, Any], metric: str, stored: Any, deterministic: bool, band: float | None = None) -> float:
    if deterministic:
        return 0.0
    declared = ((record.get("metric_specs") or {}).get(metric) or {}).get("tolerance")
    if declared is not None:
        return float(declared)
    relative = DEFAULT_RELATIVE_BAND if band is None else band
    return max(ABS_FLOOR, relative * abs(stored)) if isinstance(stored, (int, float)) else 0.0


def compare(record: dict[str, Any], new: dict[str, Any], band: float | None = None) -> list[Comparison]:
    deterministic = bool((record.get("spec") or {}).get("deterministic"))
    rows = []
    for metric, stored in sorted((record.get("metrics") or {}).items()):
        value = (new.get("metrics") or {}).get(metric)
        tol = tolerance_for(record, metric, stored, deterministic, band)
        numeric = isinstance(stored, (int, float)) and isinstance(value, (int, float)) and not isinstance(stored, bool)
        if numeric:
            both_nan = math.isnan(stored) and math.isnan(value)
            diff = 0.0 if both_nan or stored == value else float(value) - float(stored)
            ok = both_nan or abs(diff) <= tol
        else:
            diff, ok = None, stored == value
        rows.append(Comparison(metric, stored, value, diff, tol, ok))
    return rows


def rerun(record: dict[str, Any], scratch: Path, executor: str = "local", workers: int = 2, device: str | None = None,
          log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Run the record's cell into ``scratch`` (a fresh store and feature cache) by ``executor``."""
    from .features import FeatureCache
    from .spec import RunSpec
    from .store import ResultStore

    spec = RunSpec.from_dict(record["spec"])
    repro = record.get("reproducibility") or {}
    store = ResultStore(scratch / (record.get("sweep") or "reproduce"))
    cache_dir = scratch / "features"
    data_root, data_paths = repro.get("data_root"), repro.get("data_paths") or {}
    since = time.time()
    if executor == "local":
        import torch

        threads = torch.get_num_threads()
        recorded = (repro.get("threads") or {}).get("intra_op")
        if recorded and not spec.deterministic:  # the recorded setting (deterministic mode fixes its own)
            torch.set_num_threads(int(recorded))
        try:
            from .runner import run_cell

            return run_cell(spec, store, data_root=data_root, data_paths=data_paths, feature_cache=FeatureCache(cache_dir), device=device, log=log)
        finally:
            torch.set_num_threads(threads)
    if executor == "workers":
        from .executors.worker import run_workers

        run_workers(workers, None, spec_dicts=[spec.as_dict()], store_folder=str(store.folder), since=since, data_root=data_root,
                    data_paths=data_paths, cache_dir=str(cache_dir), device=device)
    elif executor == "slurm":
        from .executors.slurm import SlurmOptions, remember_specs, submit, wait_and_reconcile

        cpus = (repro.get("allocation") or {}).get("slurm_cpus_per_task")
        opts = SlurmOptions(cpus_per_task=int(cpus) if cpus and str(cpus).isdigit() else 1, chunk_size=1, time_min=60)
        remember_specs(store, [spec])
        manifest = submit([spec], store, opts, since, data_root=data_root, data_paths=data_paths, cache_dir=str(cache_dir))
        wait_and_reconcile(store, manifest, follow=False)
    else:
        raise BobError(f"--executor {executor}: use local, workers or slurm")
    new = store.read(spec.id)
    if new is None:
        raise BobError(f"the rerun of {spec.id} by the {executor} executor wrote no record in {store.folder}")
    return new


def reproduce_record(record: dict[str, Any], record_path: Path, executor: str = "local", scratch: Path | None = None,
                     band: float | None = None, workers: int = 2, device: str | None = None) -> Reproduction:
    from .spec import RunSpec

    checked = check_inputs(record, record_path)
    spec = RunSpec.from_dict(record["spec"])
    out = Reproduction(record_path, record["id"], spec.label(), spec.deterministic, checked)
    with tempfile.TemporaryDirectory(prefix="bob-reproduce-") as tmp:
        new = rerun(record, Path(scratch) if scratch else Path(tmp), executor, workers, device)
    out.new_status = new.get("status", "failed")
    if out.new_status != "ok":
        out.new_error = (new.get("error") or {}).get("message")
    out.rows = compare(record, new, band)
    return out


def sample_records(sweep_or_path: str, n: int, results_root: str | Path = "results", seed: int = 0) -> list[tuple[dict[str, Any], Path]]:
    """``n`` random finished cells of a sweep (seeded: the same spot-check each time)."""
    from .store import resolve_store

    store = resolve_store(sweep_or_path, results_root)
    ok = [(r, store.path_for(r["id"])) for r in store.records() if r.get("status") == "ok"]
    if not ok:
        raise BobError(f"{store.folder}: no finished (ok) records to sample")
    return random.Random(seed).sample(ok, min(n, len(ok)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return "-" if value is None else str(value)


def report(rep: Reproduction) -> str:
    """The per-metric table and a verdict line that names every metric outside its tolerance."""
    from .cli import format_table

    lines = [f"cell {rep.cell_id} ({rep.label}){' [deterministic]' if rep.deterministic else ''}: {rep.record_path}",
             *(f"  verified {c}" for c in rep.checked)]
    rows = [{"metric": r.metric, "stored": _fmt(r.stored), "new": _fmt(r.new), "difference": _fmt(r.difference),
             "tolerance": "exact" if rep.deterministic else f"{r.tolerance:.3g}", "": "" if r.ok else "EXCEEDS"} for r in rep.rows]
    lines.append(format_table(rows, ["metric", "stored", "new", "difference", "tolerance", ""]))
    if rep.new_status != "ok":
        lines.append(f"NOT reproduced: the rerun ended {rep.new_status}: {rep.new_error}")
    elif rep.failing:
        lines.append("NOT reproduced: " + "; ".join(f"{r.metric} differs by {_fmt(r.difference)} (tolerance {'0' if rep.deterministic else f'{r.tolerance:.3g}'})"
                                                   for r in rep.failing))
    else:
        lines.append("reproduced: every difference " + ("is 0" if rep.deterministic else "is within its tolerance"))
    return "\n".join(lines)
