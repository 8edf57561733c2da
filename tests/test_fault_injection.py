"""Issue 14, fault injection: a sweep killed at random moments, and many sweeps of one grid at
once, end with every cell recorded exactly once and every record readable."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO, write_grid

PLUGIN_ENV = {"BOB_PLUGINS": "tests.noop_plugin", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
GRID = "name: fi\nbackbones: [toy:a, toy:b, toy:c]\nmethods: [noop]\ntasks: [toybias]\nseeds: [0, 1, 2, 3, 4]\nhparams: {noop: {sleep: 0.05}}\n"
N_CELLS = 3 * 4 * 5


def sweep(grid: Path, *args: str, log: Path, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """``bob sweep`` in its own process group, so a kill takes its worker processes too."""
    env = {**os.environ, **PLUGIN_ENV, "BOB_NOOP_LOG": str(log)}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(grid), "--results", "res", *args], env=env,
                            stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True)


def check_store(folder: Path) -> dict[str, dict]:
    """Every record file parses, is named after its id, and no temp file passes for a record."""
    records = {}
    for path in folder.glob("*.json"):
        if path.name.startswith("."):
            continue
        record = json.loads(path.read_text())  # raises if any record is unreadable
        assert path.stem == record["id"] and record["status"] in ("ok", "failed", "skipped")
        records[record["id"]] = record
    return records  # temp files (".<name>.<random>.tmp") never match "<id>.json" and are skipped above


@pytest.mark.slow
def test_sigkill_at_ten_random_moments_then_rerun_records_every_cell_once(tmp_path):
    grid = write_grid(tmp_path / "fi.yaml", GRID.replace("[0, 1, 2, 3, 4]", str(list(range(20)))).replace("sleep: 0.05", "sleep: 0.15"))
    folder, log = tmp_path / "res" / "fi", tmp_path / "runs.log"
    rng = random.Random(14)
    kills, seen = 0, {}
    for _ in range(10):
        proc = sweep(grid, "--workers", "2", log=log)
        time.sleep(rng.uniform(1.0, 5.0))  # start-up, claiming, running and writing all get hit
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        records = check_store(folder)
        for cid, created in seen.items():  # a recorded cell is never run (or written) again
            assert records[cid]["created"] == created
        seen = {cid: r["created"] for cid, r in records.items()}
    assert kills >= 8  # the moments landed while the sweep was running
    proc = sweep(grid, "--workers", "2", log=log)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    records = check_store(folder)
    planned = json.loads((folder / ".plan.json").read_text())["cells"]
    assert set(records) == set(planned) and len(records) == 3 * 4 * 20
    assert all(r["status"] == "ok" for r in records.values())
    assert all(records[cid]["created"] == created for cid, created in seen.items())
    assert set(Counter(log.read_text().split())) == set(records)


@pytest.mark.slow
def test_eight_concurrent_sweeps_of_one_grid_run_each_cell_once(tmp_path):
    grid = write_grid(tmp_path / "fi.yaml", GRID.replace("sleep: 0.05", "sleep: 0.2"))
    folder, log = tmp_path / "res" / "fi", tmp_path / "runs.log"
    procs = [sweep(grid, log=log, stdout=subprocess.PIPE) for _ in range(8)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outputs.append(out)
    records = check_store(folder)
    assert len(records) == N_CELLS and all(r["status"] == "ok" for r in records.values())
    runs = Counter(log.read_text().split())
    assert set(runs) == set(records) and set(runs.values()) == {1}  # nothing lost, nothing run twice
    # each sweep's closing line counts the cells it ran itself and those other sweeps finished (issue 28)
    ran_here, elsewhere_total = 0, 0
    for out in outputs:
        to_run = int(re.search(r"-> (\d+) to run", out).group(1))
        if to_run == 0:
            assert "nothing to run" in out
            continue
        closing = re.search(r"ran (\d+) cells: [^;]*(?:; (\d+) finished elsewhere \(by concurrent sweeps\))?(?:; (\d+) still running elsewhere)?; results in", out)
        assert closing, out
        here, elsewhere, pending = (int(g or 0) for g in closing.groups())
        assert here + elsewhere + pending == to_run, out
        ran_here += here
        elsewhere_total += elsewhere
    assert ran_here == N_CELLS  # summed over the sweeps, every cell was counted as run exactly once
    assert elsewhere_total > 0  # and the sweeps saw each other's cells as finished elsewhere, not as their own
