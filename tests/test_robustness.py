"""Issue 14: robustness. Files follow the umask, bad grids answer in one line before expanding
anything, a killed sweep knows its cells, a damaged cache entry or checkpoint is never trusted,
data lists cannot leave their root, and a full disk loses nothing."""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_bob, write_grid

PLUGIN_ENV = {"BOB_PLUGINS": "tests.noop_plugin", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# -- permissions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    from harness.atomic import atomic_write_bytes
    from harness.features import FeatureCache
    from harness.leaderboard import publish
    from harness.store import ResultStore

    old = os.umask(umask)
    try:
        store = ResultStore(tmp_path / "res" / "s")
        for line in (REPO / "tests" / "golden" / "quickstart.records.jsonl").read_text().splitlines()[:6]:
            store.write(json.loads(line))
        board = publish([store], "b", tmp_path / "boards")
        cache = FeatureCache(tmp_path / "cache")
        cache.save({"k": 1}, np.zeros((2, 3), np.float32), np.zeros(2, np.int64), {})
        atomic_write_bytes(tmp_path / "x.bin", b"x")
    finally:
        os.umask(old)
    files = [*store.folder.glob("*.json"), *board.iterdir(), *(tmp_path / "cache").glob("*.npz"), tmp_path / "x.bin"]
    assert len(files) > 10
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(mode)}


# -- grids a new user might write ---------------------------------------------------------------------------
def test_binary_grid_file_is_a_one_line_error(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    res = run_bob("sweep", str(grid), "--dry-run")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a text file" in res.stderr and "Traceback" not in res.stderr


def test_alias_bomb_and_huge_grids_are_refused_before_expansion(tmp_path):
    levels = ["&a [1,2,3,4,5,6,7,8,9,10]"] + [f"&{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcde", "bcdef")]
    bomb = write_grid(tmp_path / "bomb.yaml", f"backbones: [toy:a]\nmethods: [noop]\ntasks: [toybias]\nhparams: {{noop: {{sleep: [{', '.join(levels)}]}}}}\n")
    res = run_bob("sweep", str(bomb), "--dry-run", env=PLUGIN_ENV, timeout=120)
    import re

    found = re.search(r"the grid expands to ([\d,]+) values \(YAML aliases\?\)", res.stderr)
    assert res.returncode == 2 and found and int(found.group(1).replace(",", "")) > 1_000_000, res.stderr
    axis = "&v [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    many = "{sleep: %s, lr: *v, wd: *v, epochs: *v, k: *v, d: *v, r: *v}" % axis
    unknown = write_grid(tmp_path / "unknown.yaml", f"backbones: [toy:a]\nmethods: [noop]\ntasks: [toybias]\nhparams: {{noop: {many}}}\n")
    res = run_bob("sweep", str(unknown), "--dry-run", env=PLUGIN_ENV, timeout=120)
    assert res.returncode == 2 and "method 'noop' has no hyper-parameter" in res.stderr and res.stderr.count("\n") == 1
    big = write_grid(tmp_path / "big.yaml", f"backbones: [toy:a]\nmethods: [noop]\ntasks: [toybias]\nseeds: {list(range(300))}\n"
                                            f"hparams: {{noop: {{sleep: [0, 0.0, 0.00]}}}}\n")
    res = run_bob("sweep", str(big), "--dry-run", "--max-cells", "1000", env=PLUGIN_ENV, timeout=120)
    assert res.returncode == 2 and "has 3,600 cells, more than max_cells=1,000" in res.stderr and "--max-cells" in res.stderr
    res = run_bob("sweep", str(big), "--dry-run", "--max-cells", "5000", env=PLUGIN_ENV, timeout=120)
    assert res.returncode == 0, res.stderr


def test_status_after_a_kill_knows_the_pending_cells_without_the_grid(tmp_path):
    import subprocess

    grid = write_grid(tmp_path / "g.yaml", "name: st\nbackbones: [toy:a, toy:b]\nmethods: [noop]\ntasks: [toybias]\nseeds: [0, 1, 2]\nhparams: {noop: {sleep: 0.3}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(grid), "--results", "res"], env={**os.environ, **PLUGIN_ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "res" / "st"
    import time

    deadline = time.time() + 120
    def records():
        return [p for p in folder.glob("*.json") if not p.name.startswith(".")]

    while time.time() < deadline and len(records()) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(records())
    assert 2 <= done < 24
    res = run_bob("status", "st", "--results", "res", env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr
    counts = dict(reversed(part.split(" ")) for part in res.stdout.splitlines()[0].split(": ", 1)[1].split(", "))
    assert int(counts["pending"]) + int(counts["running"]) + int(counts["ok"]) == 24  # 2 backbones x 4 tasks x 3 seeds, no --grid
    assert int(counts["ok"]) == done and int(counts["pending"]) >= 24 - done - 1


# -- damaged caches and checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_feature_cache_entry_is_detected_and_recomputed(tmp_path, damage):
    from harness.features import FeatureCache

    cache = FeatureCache(tmp_path)
    key = {"backbone": "b", "split": "train"}
    feats = np.arange(4000, dtype=np.float32).reshape(100, 40)
    cache.save(key, feats, np.arange(100), {"n": 100})
    path = cache.path(key)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01  # one bit, inside the feature array
    path.write_bytes(bytes(data))
    fresh = FeatureCache(tmp_path)  # a new process: nothing in memory
    assert fresh.load(key) is None and fresh.rejected == 1
    fresh.save(key, feats, np.arange(100), {"n": 100})
    again = FeatureCache(tmp_path).load(key)
    assert again is not None and np.array_equal(again[0], feats)


def test_a_checkpoint_that_would_run_code_is_refused_and_training_starts_over(tmp_path):
    import torch

    from harness.methods.finetune import load_checkpoint

    marker = tmp_path / "pwned"
    payload = textwrap.dedent(f"""
        import os, torch
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save({{"model": {{}}, "evil": Evil()}}, "{tmp_path / 'ckpt.pt'}")
    """)
    import subprocess

    subprocess.run([sys.executable, "-c", payload], check=True)
    logs = []
    assert load_checkpoint(tmp_path / "ckpt.pt", "cpu", logs.append) is None
    assert not marker.exists() and not (tmp_path / "ckpt.pt").exists()
    assert "cannot be loaded safely" in logs[0]
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "curve": [{"epoch": 1, "train_loss": 0.5, "lr": 0.1}]}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt", "cpu", logs.append)["epoch"] == 1


# -- data paths ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["../secret.png 0", "/etc/passwd 1", "images/../../x.png 2"])
def test_list_file_paths_outside_the_data_root_are_refused(tmp_path, line):
    from harness.data import read_list_file
    from harness.errors import BobError

    lst = tmp_path / "train800.txt"
    lst.write_text(f"images/a.png 0\n{line}\n")
    with pytest.raises(BobError) as err:
        read_list_file(lst, tmp_path)
    assert f"{lst}:2:" in str(err.value) and "\n" not in str(err.value)


# -- a full disk ----------------------------------------------------------------------------------------------
def test_disk_full_while_writing_records_and_cache_loses_nothing(tmp_path, monkeypatch):
    import harness.atomic as atomic
    from harness.executors.worker import run_worker
    from harness.spec import RunSpec
    from harness.store import ResultStore

    sys.path.insert(0, str(REPO))
    import tests.noop_plugin  # noqa: F401 - registers the no-op method

    real = atomic.atomic_write

    def full_disk(path, write):
        if str(path).endswith((".json", ".npz")) and "plan" not in str(path):
            def partial(tmp):  # the temp file gets some bytes, then the device is full
                Path(tmp).write_bytes(b"{\"id\": ")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, partial)
        return real(path, write)

    monkeypatch.setattr(atomic, "atomic_write", full_disk)
    store = ResultStore(tmp_path / "res" / "full")
    specs = [RunSpec(b, "noop", "toybias/gender_ss", 0, "pretrained", {}).as_dict() for b in ("toy:a", "toy:b")]
    logs = []
    assert run_worker(specs, str(store.folder), since=0.0, cache_dir=str(tmp_path / "cache"), log=logs.append) == []
    assert sum("NOT RECORDED" in line and "No space left on device" in line and "stays pending" in line for line in logs) == 2
    assert not list(store.folder.glob("*.json")) and not list(store.folder.glob(".*.tmp"))  # nothing half-written
    assert not list((store.folder / ".claims").glob("*")) if (store.folder / ".claims").exists() else True
    monkeypatch.setattr(atomic, "atomic_write", real)  # space is back: the next run records both
    records = run_worker(specs, str(store.folder), since=0.0, cache_dir=str(tmp_path / "cache"), log=logs.append)
    assert [r["status"] for r in records] == ["ok", "ok"] and len(list(store.folder.glob("*.json"))) == 2
