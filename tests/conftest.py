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
