"""Retrieval search memory: exact search over a memory-mapped database (``harness.retrieval_search``)
must hold a bounded amount of memory whatever the database size. Each size runs in a fresh
process; the figure is the peak RSS above the process's level before the search, at 1x and 10x a
database's size, for bob's blocked search (70 queries, ranks of 40 labelled images each + the top
10, as revisited Oxford needs) and for the usual script (load the features, one matrix product,
argsort), as ratios to the database's size on disk."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import REPO, cli, write_result

CHILD = r'''
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[4])

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024

from harness.retrieval_search import l2_normalise, ranks_in_row, score_blocks, top_k_row
path, mode, memory_mb = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
rng = np.random.default_rng(0)
queries = l2_normalise(rng.standard_normal((70, 256)))
for _ in score_blocks(queries[:2], [np.ones((10, 256), np.float32)]):  # warm-up: imports (tqdm), allocator
    pass
Path("/proc/self/clear_refs").write_text("5")
base = hwm()
if mode == "bob":
    db = np.load(path, mmap_mode="r")
    targets = [rng.choice(len(db), 40, replace=False) for _ in queries]
    checksum = 0
    for q0, scores in score_blocks(queries, [db], transform=l2_normalise, chunk=16384, memory_mb=memory_mb):
        for i, row in enumerate(scores):
            checksum += int(ranks_in_row(row, targets[q0 + i]).sum()) + int(top_k_row(row, 10)[0])
else:
    db = l2_normalise(np.load(path))
    order = np.argsort(-(queries @ db.T), axis=1)
print(json.dumps({"mode": mode, "peak_above_base_mb": round(hwm() - base, 1)}))
'''


def run(path: Path, mode: str, memory_mb: float) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(memory_mb), str(REPO)], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "BOB_PROGRESS": "0"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> dict:
    import tempfile

    import numpy as np

    n = 20_000 if quick else 60_000
    memory_mb = 64.0
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for factor in (1, 10):
            path = Path(tmp) / f"db{factor}.npy"
            db = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(factor * n, 256))
            rng = np.random.default_rng(factor)
            for s in range(0, len(db), 50_000):
                db[s:s + 50_000] = rng.standard_normal((min(50_000, len(db) - s), 256), dtype=np.float32)
            db.flush()
            del db
            sizes[factor] = path.stat().st_size / 2**20
        bob_1x, bob_10x = run(Path(tmp) / "db1.npy", "bob", memory_mb), run(Path(tmp) / "db10.npy", "bob", memory_mb)
        plain_10x = run(Path(tmp) / "db10.npy", "plain", memory_mb)
    peak_1x, peak_10x = bob_1x["peak_above_base_mb"], bob_10x["peak_above_base_mb"]
    figures = {"database_rows": {"1x": n, "10x": 10 * n}, "dim": 256, "queries": 70, "memory_mb_setting": memory_mb,
               "database_mb": {"1x": round(sizes[1], 1), "10x": round(sizes[10], 1)},
               "bob_peak_above_base_mb": {"1x": peak_1x, "10x": peak_10x},
               "bob_peak_over_database": {"1x": round(peak_1x / sizes[1], 3), "10x": round(peak_10x / sizes[10], 3)},
               "bob_peak_ratio_10x_over_1x": round(peak_10x / max(peak_1x, 1.0), 2),
               "plain_peak_above_base_mb_10x": plain_10x["peak_above_base_mb"],
               "plain_peak_over_database_10x": round(plain_10x["peak_above_base_mb"] / sizes[10], 3)}
    checks = {"bob's peak at 10x within 1.5x of its peak at 1x": peak_10x <= 1.5 * max(peak_1x, 1.0) + 16,
              "bob's peak at 10x within its memory setting (+50%, +32 MB of interpreter noise)": peak_10x <= 1.5 * memory_mb + 32,
              "the one-shot script holds at least the whole database": plain_10x["peak_above_base_mb"] >= sizes[10]}
    return write_result("retrieval_search", figures, checks,
                        f"exact search peak RSS +{peak_1x:.0f} MB at {n} rows, +{peak_10x:.0f} MB at {10 * n} rows "
                        f"({peak_10x / sizes[10]:.2f}x the {sizes[10]:.0f} MB database); load + one product + argsort: "
                        f"+{plain_10x['peak_above_base_mb']:.0f} MB ({plain_10x['peak_above_base_mb'] / sizes[10]:.2f}x)")


if __name__ == "__main__":
    cli(main, __doc__)
