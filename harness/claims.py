"""Per-cell claim files: two sweeps (or two SLURM array tasks) never run one cell at once.

A claim is ``<sweep>/.claims/<cell id>.claim``, created with O_CREAT|O_EXCL (atomic on local and
NFS v3+ filesystems) and holding who took it. The owner refreshes its mtime (a heartbeat) while
the cell runs. A claim is stale when its heartbeat is older than ``ttl`` seconds, or when its
owner was a process on this host that no longer exists; a stale claim is broken by renaming it
away (only one breaker's rename succeeds) and claiming again.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

DEFAULT_TTL_S = float(os.environ.get("BOB_CLAIM_TTL", "300"))


def owner_info() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array": f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if os.environ.get("SLURM_ARRAY_JOB_ID") else None,
        "claimed_at": time.time(),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    def __init__(self, sweep_folder: Path, ttl_s: float = DEFAULT_TTL_S):
        self.folder = Path(sweep_folder) / ".claims"
        self.ttl_s = ttl_s

    def path(self, cell_id: str) -> Path:
        return self.folder / f"{cell_id}.claim"

    def read(self, cell_id: str) -> dict | None:
        try:
            info = json.loads(self.path(cell_id).read_text())
            info["heartbeat"] = self.path(cell_id).stat().st_mtime
            return info
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_stale(self, info: dict) -> bool:
        if time.time() - info.get("heartbeat", 0) > self.ttl_s:
            return True
        if info.get("host") == socket.gethostname() and not info.get("slurm_job_id") and not _pid_alive(int(info.get("pid", 0))):
            return True
        return False

    def _mine(self, info: dict) -> bool:
        """A requeued SLURM task takes back the claim its earlier run left."""
        me = owner_info()
        if me["slurm_array"] and info.get("slurm_array") == me["slurm_array"]:
            return True
        return bool(me["slurm_job_id"]) and info.get("slurm_job_id") == me["slurm_job_id"] and not me["slurm_array"]

    def try_claim(self, cell_id: str) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(cell_id)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.read(cell_id)
                if info is None:
                    continue  # vanished between our open and read: try again
                if not (self.is_stale(info) or self._mine(info)):
                    return False
                graveyard = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
                try:
                    os.rename(path, graveyard)  # only one breaker wins this rename
                    graveyard.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(owner_info(), f)
            return True
        return False

    def release(self, cell_id: str) -> None:
        self.path(cell_id).unlink(missing_ok=True)

    def heartbeat(self, cell_id: str) -> "Heartbeat":
        return Heartbeat(self.path(cell_id), max(1.0, self.ttl_s / 4))

    def active(self) -> dict[str, dict]:
        """Fresh claims: the cells running now."""
        out = {}
        if self.folder.is_dir():
            for p in self.folder.glob("*.claim"):
                info = self.read(p.stem)
                if info and not self.is_stale(info):
                    out[p.stem] = info
        return out


class Heartbeat:
    """Context manager touching the claim file every ``interval`` seconds while a cell runs."""

    def __init__(self, path: Path, interval: float):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
