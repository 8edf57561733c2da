"""Shared fixtures. Every test runs offline (BOB_OFFLINE=1: no network probe) with its own
feature cache and result folders, so tests never see each other's state."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOB = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BOB_OFFLINE", "1")
    monkeypatch.setenv("BOB_CACHE", str(tmp_path / "bob-cache"))
    monkeypatch.setenv("BOB_PROGRESS", "0")
    monkeypatch.setenv("BOB_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)
    yield


def run_bob(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real command line in a child process (what a user types)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*BOB, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def write_grid(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (scripts/test.sh runs two workers with ``--dist loadgroup``) a module's
    tests stay on one worker, so its module-scoped fixtures are built once, and every SLURM test
    shares one worker: CI's cluster is one 2-CPU node, and two sweeps on it at once would queue."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = "slurm" if item.get_closest_marker("slurm") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
