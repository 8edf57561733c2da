"""One cell on several processes: rank helpers, the epoch order, and the launch.

World size is part of the run context, not of the method (DESIGN.md). ``fit()`` asks this module
who it is (``world()``), how to cut each global batch (:class:`GlobalBatchSampler`) and how to wrap
the model (:func:`wrap_ddp`); the runner asks it to launch a cell on ``procs`` processes
(:func:`launch_cell`) through PyTorch's own elastic launcher (what ``torchrun`` runs).

Why the order lives here: the epoch order must be a function of (seed, epoch) only, whatever the
world size or the number of loader workers, so that 1 process and N processes with the same global
batch see the same samples in the same optimiser steps (and the same loss curve). Each global
batch is cut into ``world x accum`` micro-batches; every rank's loss is weighted by its share of
the global batch so that DDP's gradient mean equals the single-process mean exactly.

On CPU the backend is ``gloo`` and ``gpus_per_cell`` counts processes (there is no GPU to give
each one); on CUDA it is ``nccl`` and rank ``r`` uses ``cuda:LOCAL_RANK``.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the cell (1 process, rank 0 when torch.distributed is not initialised)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return World(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)))
    except ImportError:
        pass
    return World()


def is_main() -> bool:
    return world().main


def barrier() -> None:
    if world().size > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum of ``values`` over the ranks (float64, so an epoch's loss sum is exact enough to compare)."""
    if world().size == 1:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The epoch's order: exactly what ``DataLoader(shuffle=True, generator=manual_seed(seed * 100003 +
    epoch))`` draws in one process (so single-process results are unchanged by this module)."""
    import torch

    g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
    torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader draws its worker base seed first
    return torch.randperm(n, generator=g).tolist()


class GlobalBatchSampler:
    """Batches of indices for one rank: the epoch's permutation (seed, epoch) cut into global
    batches, each cut into ``world x accum`` contiguous micro-batches; rank ``r`` takes micro-batch
    ``m * world + r`` for ``m < accum``. An empty share (a last batch smaller than world x accum)
    becomes one sample with weight 0, so every rank still joins the gradient all-reduce.

    Items are ``(epoch, index)`` pairs: :class:`SeededItems` draws each sample's augmentation from
    (seed, epoch, index), so workers and world size do not change what a sample looks like."""

    def __init__(self, n: int, global_batch: int, seed: int, world_size: int = 1, rank: int = 0, accum: int = 1, drop_last: bool = False):
        self.n, self.global_batch, self.seed = n, int(global_batch), int(seed)
        self.world_size, self.rank, self.accum, self.drop_last = world_size, rank, max(1, int(accum)), drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def steps(self) -> list[list[tuple[list[int], int]]]:
        """Per optimiser step: this rank's micro-batches as (indices, real samples) and the step's global size."""
        order = epoch_permutation(self.n, self.seed, self.epoch)
        out = []
        for start in range(0, self.n, self.global_batch):
            batch = order[start:start + self.global_batch]
            if self.drop_last and len(batch) < self.global_batch:
                break
            parts = self.world_size * self.accum
            bounds = [round(i * len(batch) / parts) for i in range(parts + 1)] if len(batch) % parts else [i * len(batch) // parts for i in range(parts + 1)]
            micro = []
            for m in range(self.accum):
                c = m * self.world_size + self.rank
                chunk = batch[bounds[c]:bounds[c + 1]]
                micro.append((chunk, len(chunk)) if chunk else ([batch[0]], 0))
            out.append((micro, len(batch)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro, _ in self.steps():
            for indices, _n in micro:
                yield [(self.epoch, i) for i in indices]

    def __len__(self) -> int:
        return len(self.steps()) * self.accum


class SeededItems:
    """``dataset[(epoch, i)]``: item ``i`` with torch, numpy and ``random`` seeded from (seed, epoch, i)
    (the caller's RNG states are restored), so a random augmentation is the same in the main process,
    in any loader worker and on any rank."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        import random

        import numpy as np
        import torch

        epoch, i = key
        s = (self.seed * 1_000_003 + epoch * 7_919 + i * 104_729) % (2**31 - 1)
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s)
            try:
                return self.dataset[i]
            finally:
                random.setstate(py)
                np.random.set_state(npy)


def default_loader_workers(device: str) -> int:
    """Loader workers when the user sets none: on CUDA the allocation's CPUs (SLURM_CPUS_PER_TASK, else
    the CPU count) shared by this node's ranks, at most 8; on CPU none (decoding would compete with
    the model for the same cores)."""
    if not str(device).startswith("cuda"):
        return 0
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    n = int(cpus) if cpus and cpus.isdigit() else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(8, n // max(1, local) - 1))


def wrap_ddp(model, device: str, sync_bn: bool):
    """The model under DistributedDataParallel (``sync_bn``: BatchNorm statistics computed over every
    rank's share of the batch; otherwise per rank, as timm's train.py does by default)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [torch.device(device).index] if str(device).startswith("cuda") else None
    # a recipe may leave a parameter without gradient in a step (prompt depth, gated branches)
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True), model


# -- launch -----------------------------------------------------------------------------------------
def allocation(device: str | None) -> tuple[str, int]:
    """(what a ``gpus_per_cell`` counts, how many this machine has): GPUs on CUDA, else processes
    (at most the CPU count: more would only time-slice)."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return "GPUs", torch.cuda.device_count()
    return "CPU processes", os.cpu_count() or 1


def shard_devices(procs: int, device: str | None) -> tuple[str, ...]:
    """The devices a model-parallel cell (``Method.model_parallel``: one process, one model spread
    over its GPUs) may use: ``cuda:0..procs-1`` of the allocation; on CPU the one ``cpu``."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return tuple(f"cuda:{i}" for i in range(int(procs)))
    return ("cpu",)


def check_procs(procs: int, device: str | None, source: str = "--gpus-per-cell") -> None:
    """A one-line error before any cell runs when the allocation cannot hold one cell."""
    from .errors import BobError

    if int(procs) < 1:
        raise BobError(f"{source}={procs}: give 1 or more")
    what, have = allocation(device)
    if int(procs) > have:
        raise BobError(f"{source}={procs} is more than this allocation has ({have} {what}); lower it or ask for more {what}")


def _rank_entry(spec_dict: dict, store_folder: str | None, kwargs: dict, side: str) -> dict | None:
    """One rank of a cell: join the group, run the cell, hand rank 0's record back. A failed cell
    raises (the launcher then stops the other ranks, none left waiting in a collective)."""
    import json

    import torch
    import torch.distributed as dist

    from .runner import run_cell
    from .spec import RunSpec
    from .store import ResultStore

    device = kwargs.pop("device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank()
    store = ResultStore(store_folder) if store_folder and rank == 0 else None
    log = kwargs.pop("log", print) if rank == 0 else (lambda message: None)
    record = run_cell(RunSpec.from_dict(spec_dict), store, device=device, log=log, write_record=False, **kwargs)
    if record["status"] == "failed":
        path = Path(side) / f"rank{rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, default=str), encoding="utf-8")
        raise RuntimeError(f"rank {rank}: {record['error']['message']}")
    dist.barrier()
    dist.destroy_process_group()
    return record if rank == 0 else None


def _entry(spec_dict, store_folder, kwargs, side):  # picklable for the spawn start method
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_rank_entry)(spec_dict, store_folder, kwargs, side)


def launch_cell(spec, store, procs: int, nodes: int = 1, *, device: str | None = None, log: Callable[[str], None] = print,
                **run_kwargs) -> dict[str, Any]:
    """Run one cell on ``procs`` processes per node through ``torch.distributed``'s elastic launcher
    and write its one record (rank 0's) here, after every rank finished: a failing rank leaves a
    ``failed`` record with its traceback and no other trace in the store."""
    import json
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from .runner import failed_record, store_record

    side = tempfile.mkdtemp(prefix=f"bob-{spec.id}-")
    config = LaunchConfig(min_nodes=nodes, max_nodes=nodes, nproc_per_node=int(procs), run_id=f"bob-{spec.id}-{uuid.uuid4().hex[:6]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0" if nodes == 1 else os.environ.get("BOB_RDZV_ENDPOINT", "localhost:29400"),
                          max_restarts=0, monitor_interval=0.1, start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=side))
    kwargs = {**run_kwargs, "device": device}
    try:
        results = elastic_launch(config, _entry)(spec.as_dict(), str(store.folder) if store is not None else None, kwargs, side)
        record = results[0]
    except SignalException:  # the launcher itself was told to stop (SLURM preempting or requeueing the task): no record, the cell resumes
        raise
    except Exception as exc:
        record = None
        failures = getattr(exc, "failures", None) or {}
        killed = [r for r, f in failures.items() if f.exitcode is not None and f.exitcode < 0]  # died by a signal: the cause
        first = exc.get_first_failure()[0] if hasattr(exc, "get_first_failure") else None  # else the rank that failed first
        paths = [] if killed else sorted(Path(side).glob("rank*.json"), key=lambda p: (int(p.stem[4:]) != first, int(p.stem[4:])))
        for path in paths:  # a rank's own failed record: the cell's error, with its traceback
            record = json.loads(path.read_text(encoding="utf-8"))
            record["error"]["rank"] = int(path.stem[4:])
            break
        if record is None:
            record = failed_record(spec, store, "RankFailed", _failure_message(exc), _failure_traceback(exc))
        record.setdefault("distributed", {})["world_size"] = int(procs) * int(nodes)
    finally:
        import shutil

        shutil.rmtree(side, ignore_errors=True)
    return store_record(record, store)


def _failure_message(exc: BaseException) -> str:
    failures = getattr(exc, "failures", None) or {}
    for rank, failure in sorted(failures.items(), key=lambda kv: (not (kv[1].exitcode or 0) < 0, kv[0])):
        return f"rank {rank} failed (exit code {failure.exitcode}{', ' + failure.signal_name() if failure.exitcode < 0 else ''}): {str(failure.message)[:300]}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _failure_traceback(exc: BaseException) -> str:
    failures = getattr(exc, "failures", None) or {}
    parts = []
    for rank, failure in sorted(failures.items()):
        data = failure.error_file_data or {}
        stack = (data.get("message") or {}).get("extraInfo", {}).get("py_callstack") if isinstance(data.get("message"), dict) else None
        parts.append(f"--- rank {rank} ---\n{stack or failure.message}")
    return "\n".join(parts) or "".join(traceback.format_exception(exc))


def check_cells(specs, world_size: int) -> None:
    """Every trained cell's global batch must split into world size x accum_steps equal shares: a
    one-line error naming the cell before any cell runs."""
    from .errors import BobError
    from .registry import METHODS

    for spec in specs:
        method = METHODS.get(spec.method).factory()
        if getattr(method, "frozen_backbone", True):
            continue
        hp = method.resolve_hparams(spec.hparams)
        bs, accum = hp.get("batch_size"), int(hp.get("accum_steps") or 1)
        if isinstance(bs, int) and bs % (world_size * accum):
            raise BobError(f"cell {spec.label()}: batch_size={bs} (the global batch) is not divisible by world size {world_size} x accum_steps {accum}; "
                           f"use a multiple of {world_size * accum}")
