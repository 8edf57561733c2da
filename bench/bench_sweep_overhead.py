"""Sweep overhead: per-cell cost of bob's executors on a no-op method (tests/noop_plugin.py):
local (1 and 2 workers) and SLURM job arrays on the local cluster, with and without chunking.
Local: seconds per cell between the first and the last record written (start-up not counted).
SLURM: (wall(N cells) - wall(n cells)) / (N - n), queueing and job start-up included. The plain
alternative measured in the same run: a Python loop that writes one JSON file per cell."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cli, write_result

GRID = "name: {name}\nbackbones: [toy:a, toy:b, toy:c]\nmethods: [noop]\ntasks: [toybias]\nseeds: {seeds}\n"


def sweep_wall(root: Path, name: str, n_seeds: int, *args: str) -> float:
    grid = root / f"{name}.yaml"
    grid.write_text(GRID.format(name=name, seeds=list(range(n_seeds))))
    env = {**os.environ, "BOB_PLUGINS": "tests.noop_plugin", "PYTHONPATH": str(REPO), "BOB_PROGRESS": "0", "BOB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(grid), "--results", str(root / "res"), *args], cwd=root, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - t0


def per_cell_from_records(root: Path, label: str, seeds: int, *args: str) -> float:
    """Seconds per cell between the first and the last record written (start-up excluded)."""
    sweep_wall(root, label, seeds, *args)
    stamps = sorted(p.stat().st_mtime for p in (root / "res" / label).glob("*.json") if not p.name.startswith("."))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def per_cell(root: Path, label: str, small: int, large: int, *args: str) -> float:
    cells = lambda seeds: 12 * seeds  # noqa: E731 - 3 backbones x 4 tasks per seed
    w_small = sweep_wall(root, f"{label}-s", small, *args)
    w_large = sweep_wall(root, f"{label}-l", large, *args)
    return (w_large - w_small) / (cells(large) - cells(small))


def main(quick: bool = False) -> dict:
    small, large = 1, (5 if quick else 20)
    figures: dict = {"method": "noop (sleep 0)"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        for i in range(12 * large):
            (root / f"plain-{i}.json").write_text(json.dumps({"id": i, "status": "ok"}))
        figures["plain_json_write_ms_per_cell"] = round(1000 * (time.perf_counter() - t0) / (12 * large), 3)
        figures["local_ms_per_cell"] = round(1000 * per_cell_from_records(root, "local", large), 1)
        figures["local_2_workers_ms_per_cell"] = round(1000 * per_cell_from_records(root, "local2", large, "--workers", "2"), 1)
        if shutil.which("sbatch") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0:
            slurm = ("--executor", "slurm", "--time", "10", "--cpus-per-task", "1")
            for chunk in (1, 12):
                figures[f"slurm_chunk{chunk}_ms_per_cell"] = round(1000 * per_cell(root, f"slurm{chunk}", small, 3 if quick else 6, *slurm, "--chunk-size", str(chunk)), 1)
        else:
            figures["slurm"] = "not measured: no running SLURM cluster (scripts/start_slurm.sh starts one)"
    figures["local_overhead_vs_plain_write"] = round(figures["local_ms_per_cell"] / max(figures["plain_json_write_ms_per_cell"], 1e-3), 1)
    checks = {"per-cell local overhead measured": figures["local_ms_per_cell"] > 0}
    slurm_part = ", ".join(f"{k.split('_ms')[0].replace('_', ' ')} {v:.0f} ms" for k, v in figures.items() if k.startswith("slurm_chunk"))
    return write_result("sweep_overhead", figures, checks,
                        f"per-cell overhead: local {figures['local_ms_per_cell']:.0f} ms, 2 workers {figures['local_2_workers_ms_per_cell']:.0f} ms "
                        f"(plain JSON write {figures['plain_json_write_ms_per_cell']:.2f} ms)" + (f"; SLURM {slurm_part}" if slurm_part else ""))


if __name__ == "__main__":
    cli(main, __doc__)
