"""Deterministic mode and the record of everything that decides a cell's number.

Why: the same cell run locally (two intra-op threads) and as a SLURM array task (one CPU) can
give different fine-tuning numbers, because a different thread count changes the order of
floating-point reductions and training amplifies it. A record must say what the number depends
on (threads, allocation, device model, algorithm flags, AMP, DataLoader workers, seeds), and a
``deterministic: true`` cell must give bit-identical metrics whatever executor ran it.

Deterministic mode (``deterministic_mode``) fixes, for the duration of one cell:

- ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic kernel raises,
  rather than silently varying), cuDNN deterministic with benchmarking off, TF32 off;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS needs it for deterministic GEMMs; it takes effect
  only if set before the process's first CUDA GEMM, which is why the worker processes set it at
  start too, see ``prepare_process``);
- intra-op threads = ``DETERMINISTIC_THREADS`` (1) whatever the machine or allocation, so the
  reduction order is the same on a laptop, in a worker process and in a 1-CPU SLURM task;
- seeded DataLoader workers (``seeded_loader_kwargs``: a generator seeded from the cell's seed
  and a ``worker_init_fn`` that seeds numpy and ``random`` in each worker).

Everything is restored when the cell ends, so a worker that runs a deterministic cell and then a
default one does not carry the settings over.
"""
from __future__ import annotations

import contextlib
import os
import platform
import random
from typing import Any, Iterator

DETERMINISTIC_THREADS = 1
CUBLAS_WORKSPACE = ":4096:8"
SEED_RULES = {  # the random sources every cell seeds (methods add theirs through ``random_sources``)
    "python_random": "random.seed(seed)",
    "numpy": "np.random.seed(seed)",
    "torch": "torch.manual_seed(seed) (CPU and every CUDA device)",
    "dataloader_workers": "worker k: numpy and random seeded from torch.initial_seed() (= loader base seed + k)",
}


def prepare_process(deterministic: bool) -> None:
    """Settings that must precede the first CUDA GEMM of a process (a worker or an array task)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms, fixed threads and cuBLAS workspace for one cell; restored after."""
    if not enabled:
        yield
        return
    import torch

    cudnn = torch.backends.cudnn
    saved = {
        "threads": torch.get_num_threads(),
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn": (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32 = True, False, False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(DETERMINISTIC_THREADS)
    with contextlib.suppress(RuntimeError):  # allowed only before inter-op work started; eager numerics do not depend on it
        torch.set_num_interop_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32 = saved["cudnn"]
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
        if saved["cublas"] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved["cublas"]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch already seeds worker k with base seed + k; numpy and
    ``random`` are seeded from it, so augmentations drawn with them repeat too."""
    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def seeded_loader_kwargs(seed: int, num_workers: int) -> dict[str, Any]:
    """``DataLoader(**seeded_loader_kwargs(seed, n))``: a generator seeded from the cell's seed (the
    shuffle order and the workers' base seed) and seeded workers."""
    import torch

    return {"generator": torch.Generator().manual_seed(int(seed)), "num_workers": int(num_workers),
            "worker_init_fn": seed_worker if num_workers else None}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_model(device: str) -> str:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def allocation() -> dict[str, Any]:
    """What the process was given: SLURM's allocation, visible GPUs, the CPUs it may run on."""
    env = os.environ
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    return {
        "slurm_cpus_per_task": env.get("SLURM_CPUS_PER_TASK"),
        "slurm_gpus_per_task": env.get("SLURM_GPUS_PER_TASK") or env.get("SLURM_GPUS_ON_NODE"),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "cpus_usable": affinity,
        "cpu_count": os.cpu_count(),
    }


def algorithm_flags() -> dict[str, Any]:
    import torch

    return {
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def amp_label(device: str, hparams: dict[str, Any]) -> str:
    """The autocast dtype the cell's training runs under ("off" for methods without AMP)."""
    if "amp" not in hparams:
        return "off"
    from .methods.finetune import amp_dtype_for

    dtype = amp_dtype_for(device, hparams["amp"])
    return str(dtype).replace("torch.", "") if dtype is not None else "off"


def reproducibility(device: str, seed: int, deterministic: bool, hparams: dict[str, Any], num_workers: int = 0,
                    random_sources: dict[str, str] | None = None) -> dict[str, Any]:
    """The record's ``reproducibility`` block, taken inside the cell's settings (after
    ``deterministic_mode`` applied them): what two runs must share to give the same number."""
    import torch

    workers = hparams.get("num_workers", hparams.get("workers", num_workers))
    return {
        "deterministic": bool(deterministic),
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS")},
        "allocation": allocation(),
        "device": str(device),
        "device_model": device_model(device),
        "algorithms": algorithm_flags(),
        "amp": amp_label(device, hparams),
        "dataloader_workers": int(workers or 0),
        "seed": int(seed),
        "seeds": {**SEED_RULES, **(random_sources or {})},
    }
