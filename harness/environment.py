"""What produced a number: code version, package versions, device, host (cached per process)."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "transformers", "tokenizers", "peft", "lm_eval", "datasets", "lvis", "pycocotools", "numpy",
            "scikit-learn", "pillow", "bob-harness")


def harness_version() -> str:
    try:
        return metadata.version("bob-harness")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """The git sha of the harness source tree (and whether it had uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        sha = proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()) if sha else None
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"git_sha": sha, "git_dirty": dirty}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def environment(device: str) -> dict[str, Any]:
    return {
        "harness_version": harness_version(),
        **git_state(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": describe_device(device),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "sweep_invocation": os.environ.get(SWEEP_INVOCATION_ENV),
    }


SWEEP_INVOCATION_ENV = "BOB_SWEEP_INVOCATION"


def new_sweep_invocation() -> str:
    """A token for one ``bob sweep`` run, put in the environment its worker processes and SLURM
    array tasks inherit; each record carries it, so the sweep's closing line can tell the cells it
    ran from those that concurrent sweeps of the same grid finished."""
    import uuid

    token = uuid.uuid4().hex[:12]
    os.environ[SWEEP_INVOCATION_ENV] = token
    return token


def default_device() -> str:
    forced = os.environ.get("BOB_DEVICE")
    if forced:
        return forced
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
