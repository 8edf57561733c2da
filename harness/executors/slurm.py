"""SLURM executor: submitit job arrays, several cells per array task, requeue on preemption.

Flow: the plan's cells are cut into chunks (``chunk_size`` cells per array task); one ``sbatch``
submits the whole array (all or nothing: a refused submission leaves no state behind). Each
task runs ``run_worker`` over its chunk as a ``submitit.helpers.Checkpointable``: on preemption or
an approaching time limit submitit requeues it, the finished cells are skipped and a fine-tune
resumes from its last epoch checkpoint. ``wait_and_reconcile`` waits for the array and writes a
``failed`` record (with the SLURM state and the task's log) for every cell whose task died
before finishing it (cancelled, timed out, node failure).

Job states come from ``sacct`` when the cluster has accounting, else from ``scontrol show job``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import BobError
from ..spec import RunSpec
from ..store import ResultStore, atomic_write_text

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 1
    gpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int = 256
    account: str | None = None
    qos: str | None = None
    chunk_size: int = 4
    timeout_requeues: int = 3
    signal_delay_s: int | None = None
    sbatch: dict[str, str] = field(default_factory=dict)  # extra sbatch options, e.g. {"constraint": "a100"}


def parse_time(text: str) -> int:
    """Minutes from ``90``, ``45m``, ``2h``, ``MM:SS``, ``H:MM:SS`` or ``D-H:MM:SS`` (SLURM's forms)."""
    text = str(text).strip()
    if m := re.fullmatch(r"(\d+)([mh]?)", text):
        return int(m.group(1)) * (60 if m.group(2) == "h" else 1)
    if m := re.fullmatch(r"(\d+):(\d{2})", text):
        return max(1, int(m.group(1)) + (int(m.group(2)) > 0))
    if m := re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", text):
        days, hours, minutes, seconds = (int(x or 0) for x in m.groups())
        return max(1, days * 1440 + hours * 60 + minutes + (seconds > 0))
    raise BobError(f"--time {text!r}: use minutes (90), H:MM:SS (1:30:00) or D-H:MM:SS")


class CellChunk:
    """What one array task runs; requeued (same arguments) on preemption and time-out."""

    def __call__(self, spec_dicts, store_folder, since, data_root, data_paths, cache_dir, wandb_target, procs_per_cell=1):
        from .worker import limit_threads_to_allocation, run_worker

        limit_threads_to_allocation()

        log_path = None
        try:
            import submitit

            log_path = str(submitit.JobEnvironment().paths.stdout)
        except Exception:
            pass
        # a distributed cell: this array task holds the cell's whole allocation and starts its ranks with
        # torch.distributed's launcher (one node); a requeued task resumes from rank 0's checkpoint
        records = run_worker(spec_dicts, store_folder, since, data_root, data_paths, cache_dir, None, wandb_target, log_path,
                             procs_per_cell=procs_per_cell)
        return [r["id"] for r in records]

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _executor(store: ResultStore, opts: SlurmOptions):
    try:
        import submitit
    except ImportError:
        raise BobError("--executor slurm needs submitit: pip install 'bob-harness[slurm]'") from None
    folder = store.folder / ".slurm"
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=opts.timeout_requeues)
    params: dict[str, Any] = {
        "time": opts.time_min,
        "cpus_per_task": opts.cpus_per_task,
        "array_parallelism": opts.array_parallelism,
        "job_name": f"bob-{store.sweep}",
        "signal_delay_s": opts.signal_delay_s if opts.signal_delay_s is not None else min(90, max(10, opts.time_min * 6)),
    }
    for key in ("partition", "mem", "account", "qos", "gpus_per_task"):
        if getattr(opts, key):
            params[key] = getattr(opts, key)
    if opts.sbatch:
        params["additional_parameters"] = dict(opts.sbatch)
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError) as exc:
        raise BobError(f"invalid SLURM option: {str(exc).splitlines()[0]}") from None
    return executor


def submit(cells: list[RunSpec], store: ResultStore, opts: SlurmOptions, since: float, data_root=None, data_paths=None,
           cache_dir=None, wandb_target=None, procs_per_cell: int = 1) -> dict[str, Any]:
    """Submit one job array; returns the submission manifest (also appended to .slurm/submissions.jsonl)."""
    if not cells:
        return {}
    if opts.chunk_size < 1:
        raise BobError(f"--chunk-size must be at least 1, got {opts.chunk_size}")
    executor = _executor(store, opts)
    chunks = [cells[i : i + opts.chunk_size] for i in range(0, len(cells), opts.chunk_size)]
    args = [[s.as_dict() for s in chunk] for chunk in chunks]
    n = len(chunks)
    folder = str(store.folder.resolve())
    with captured_stderr() as sbatch_stderr:
        try:
            jobs = executor.map_array(CellChunk(), args, [folder] * n, [since] * n, [data_root] * n, [data_paths or {}] * n,
                                      [str(cache_dir) if cache_dir else None] * n, [wandb_target] * n, [int(procs_per_cell)] * n)
        except Exception as exc:  # CalledProcessError or submitit's own wrapper around it
            error = exc
        else:
            error = None
    if error is not None:
        raise BobError(f"sbatch refused the job array: {_sbatch_message(sbatch_stderr.text or str(error))}") from None
    array_id = str(jobs[0].job_id).split("_")[0]
    manifest = {
        "array_job_id": array_id,
        "submitted": time.time(),
        "since": since,
        "tasks": {str(i): {"job_id": job.job_id, "cells": [s.id for s in chunk], "stdout": str(job.paths.stdout)} for i, (job, chunk) in enumerate(zip(jobs, chunks))},
    }
    manifest_path = store.folder / ".slurm" / "submissions.jsonl"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest_path, "a", encoding="utf-8") as f:  # one line per submission; appends of one line are atomic enough here
        f.write(json.dumps(manifest) + "\n")
    return manifest


class captured_stderr:
    """Captures file descriptor 2 (where submitit lets sbatch's complaints go) into ``.text``."""

    def __enter__(self):
        import sys
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        return False


def _sbatch_message(text: str) -> str:
    """sbatch's own words on one line: its error lines, without the repeated 'sbatch: error:' prefix."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    errors = [re.sub(r"^sbatch:\s*(error:\s*)?", "", l) for l in lines if "error" in l.lower() or l.startswith("sbatch:")]
    chosen = errors or lines[-1:] or ["unknown error"]
    return "; ".join(dict.fromkeys(chosen))


# -- job states -----------------------------------------------------------------------------------
def _states_by_job_id(array_job_id: str) -> dict[str, str]:
    """``{"<array>_<task>" or "<job>": STATE}`` from sacct (accounting on) or scontrol."""
    states: dict[str, str] = {}
    try:
        out = subprocess.run(["sacct", "-j", array_job_id, "-X", "-n", "-P", "-o", "JobID,State"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                job, _, state = line.partition("|")
                if job and "[" not in job:
                    states[job] = state.split()[0] if state else "UNKNOWN"
            if states:
                return states
    except (OSError, subprocess.SubprocessError):
        pass
    out = subprocess.run(["scontrol", "-o", "show", "job", array_job_id], capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        state = fields.get("JobState", "UNKNOWN")
        task, array = fields.get("ArrayTaskId"), fields.get("ArrayJobId")
        if task and array:
            for part in task.split("%")[0].split(","):  # a pending range like 3-5%2
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    states[f"{array}_{i}"] = state
        elif "JobId" in fields:
            states[fields["JobId"]] = state
    return states


def task_states(manifest: dict[str, Any]) -> dict[str, str]:
    """``{task index: STATE}`` for one submission (UNKNOWN where SLURM no longer knows the task).

    A requeued single-task array can come back under its plain job id; that is looked up too."""
    by_id = _states_by_job_id(manifest["array_job_id"])
    tasks = manifest["tasks"]
    out = {}
    for index, task in tasks.items():
        job_id = str(task["job_id"])
        state = by_id.get(job_id) or (by_id.get(job_id.split("_")[0]) if len(tasks) == 1 else None)
        out[index] = state or "UNKNOWN"
    return out


def queue_empty(array_job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", array_job_id, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and not out.stdout.strip()


def wait_and_reconcile(store: ResultStore, manifest: dict[str, Any], poll_s: float = 3.0, follow: bool = True) -> dict[str, str]:
    """Wait until every array task has ended; give every unfinished cell a failed record."""
    from ..progress import progress
    from ..runner import now_iso
    from ..store import RECORD_SCHEMA
    from .worker import finished_since

    tasks = manifest["tasks"]
    total = sum(len(t["cells"]) for t in tasks.values())
    bar = progress(range(total), desc=f"slurm {manifest['array_job_id']}", total=total, leave=True) if follow else None
    done_before = 0
    unknown_since: float | None = None
    unfinished = {c for t in tasks.values() for c in t["cells"]}
    while True:
        states = task_states(manifest)
        unfinished = {c for c in unfinished if not finished_since(store, c, manifest["since"])}
        done = total - len(unfinished)
        if bar is not None and hasattr(bar, "update"):
            bar.update(done - done_before)
        done_before = done
        if all(state in FINAL_STATES for state in states.values()):
            break
        if "UNKNOWN" in states.values() and queue_empty(manifest["array_job_id"]):
            # nothing queued and SLURM forgot some tasks (MinJobAge passed): judge by the records
            unknown_since = unknown_since or time.time()
            if done == total or time.time() - unknown_since > 30:
                break
        else:
            unknown_since = None
        time.sleep(poll_s)
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    from ..claims import Claims

    claims = Claims(store.folder)
    specs = submitted_specs(store)
    for index, task in tasks.items():
        state = states.get(index, "UNKNOWN")
        for cell_id in task["cells"]:
            if finished_since(store, cell_id, manifest["since"]):
                continue
            claims.release(cell_id)  # its owner is gone
            spec = specs.get(cell_id)
            store.write({
                "schema": RECORD_SCHEMA, "id": cell_id, "sweep": store.sweep, "status": "failed",
                **({"spec": spec, **{k: v for k, v in spec.items() if k != "hparams"}} if spec else {}),
                "metrics": {}, "created": now_iso(), "log": task["stdout"],
                "slurm": {"job_id": task["job_id"], "state": state},
                "error": {"type": f"Slurm{state.title().replace('_', '')}", "traceback": None,
                          "message": f"SLURM array task {task['job_id']} ended {state} before this cell finished; log: {task['stdout']}"},
            })
    return states


def submitted_specs(store: ResultStore) -> dict[str, dict]:
    """``{cell id: spec}`` of every cell ever submitted to SLURM from this sweep folder."""
    try:
        return json.loads((store.folder / ".slurm" / "specs.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def remember_specs(store: ResultStore, cells: list[RunSpec]) -> None:
    """Keep the specs of submitted cells so that a reconciled failure record carries its spec."""
    known = submitted_specs(store)
    known.update({s.id: s.as_dict() for s in cells})
    atomic_write_text(store.folder / ".slurm" / "specs.json", json.dumps(known))
