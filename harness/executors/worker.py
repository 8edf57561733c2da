"""The loop every executor runs: claim a cell, run it, release it, go on.

Used in-process (``--executor local``), by each local worker process (``--workers N``) and by
each SLURM array task. Claims make concurrent workers safe; the record check after claiming
makes a requeued or duplicate worker skip what another one finished since ``since``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..claims import Claims
from ..errors import RecordWriteError
from ..registry import METHODS
from ..spec import RunSpec
from ..store import ResultStore


def finished_since(store: ResultStore, cell_id: str, since: float) -> bool:
    """A record written after this sweep started (by anyone) means the cell needs no work."""
    path = store.path_for(cell_id)
    try:
        return path.stat().st_mtime >= since and store.status(cell_id) in ("ok", "failed", "skipped")
    except FileNotFoundError:
        return False


def pin_threads(n: int) -> None:
    """Let torch (and OpenMP) use ``n`` threads in this process."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    import torch

    torch.set_num_threads(n)


def limit_threads_to_allocation() -> None:
    """Use only the CPUs SLURM allocated: torch would otherwise start one thread per core of the
    whole node and array tasks sharing a node would slow each other down many times over."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        pin_threads(int(cpus))


def run_worker(
    spec_dicts: list[dict[str, Any]],
    store_folder: str,
    since: float,
    data_root: str | None = None,
    data_paths: dict[str, str] | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    wandb_target: str | None = None,
    log_path: str | None = None,
    progress_desc: str | None = None,
    log: Callable[[str], None] = print,
    procs_per_cell: int = 1,
    nodes_per_cell: int = 1,
) -> list[dict[str, Any]]:
    """Run the cells this worker can claim; returns the records it wrote. ``procs_per_cell`` > 1:
    each cell runs on that many processes through torch.distributed's launcher (GPUs on CUDA,
    gloo processes on CPU) and rank 0's record is written once every rank finished."""
    from ..features import FeatureCache
    from ..progress import progress
    from ..runner import run_cell
    from ..wandb_logging import cell_logger_factory
    from .local import default_cache_dir

    store = ResultStore(store_folder)
    claims = Claims(store.folder)
    cache = FeatureCache(Path(cache_dir) if cache_dir else default_cache_dir())
    logger_factory = cell_logger_factory(wandb_target, store.sweep)
    records = []
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    for spec in progress(specs, desc=progress_desc or f"sweep {store.sweep}", total=len(specs), leave=True):
        if finished_since(store, spec.id, since) or not claims.try_claim(spec.id):
            continue
        try:
            if finished_since(store, spec.id, since):  # finished between our check and our claim
                continue
            with claims.heartbeat(spec.id):
                multi = procs_per_cell * nodes_per_cell > 1
                model_parallel = multi and getattr(METHODS.get(spec.method).factory(), "model_parallel", False)
                if multi and not model_parallel:
                    from ..distributed import launch_cell

                    record = launch_cell(spec, store, procs_per_cell, nodes_per_cell, device=device, data_root=data_root, data_paths=data_paths,
                                         feature_cache=FeatureCache(cache.folder), checkpoint_dir=store.folder / ".checkpoints", log=log,
                                         extra={"log": log_path} if log_path else None)
                else:
                    from ..distributed import shard_devices

                    # one process; a model-parallel cell (inference) spreads its one model over the cell's GPUs, no ranks
                    record = run_cell(spec, store, data_root=data_root, data_paths=data_paths, feature_cache=cache,
                                      checkpoint_dir=store.folder / ".checkpoints", device=device, log=log, logger_factory=logger_factory,
                                      extra={"log": log_path} if log_path else None,
                                      shard_devices=shard_devices(procs_per_cell, device) if model_parallel else ())
        except RecordWriteError as exc:
            log(f"NOT RECORDED {spec.label()}: {exc}")
            continue
        finally:
            claims.release(spec.id)
        records.append(record)
        if record["status"] == "failed":
            log(f"FAILED {spec.label()}: {record['error']['message']} (record: {record.get('path')})")
        elif record["status"] == "ok":
            pm = record["primary_metric"]
            log(f"ok {spec.label()}: {pm['name']}={pm['value']:.2f}")
    return records


def _worker_process(index: int, gpu: str | None, kwargs: dict) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch is imported in this process
    n_workers = max(1, kwargs.pop("n_workers"))
    pin_threads(max(1, (os.cpu_count() or 1) // n_workers))  # N workers share the cores instead of each taking all
    specs = kwargs.pop("spec_dicts")
    offset = (index * len(specs)) // n_workers
    run_worker(specs[offset:] + specs[:offset], progress_desc=f"worker {index}", **kwargs)


def run_workers(n_workers: int, gpus: list[str] | None, **kwargs) -> None:
    """N local processes over the same cell list (each starts at a different offset; claims
    keep them from running a cell twice). Worker k sees only GPU ``gpus[k % len(gpus)]``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = []
    for i in range(n_workers):
        gpu = gpus[i % len(gpus)] if gpus else None
        p = ctx.Process(target=_worker_process, args=(i, gpu, {**kwargs, "n_workers": n_workers}), name=f"bob-worker-{i}")
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
