"""Result store at scale: 100,000 cell records written as a sweep writes them (atomic JSON, 2
writer processes), then ``bob status``, ``bob results compact``, ``bob aggregate`` and ``bob
publish`` (each under 60 s on a 2-core machine); then 1,000,000 compacted records and ``bob
aggregate`` on them (under 60 s and 4 GiB). Plain baselines in the same run: reading every record
file with ``json.load`` (what any status must do), and a pandas groupby mean over the Parquet."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cli, write_result

TASKS = ["vtab1k/caltech101", "vtab1k/cifar100", "vtab1k/dtd", "vtab1k/oxford_flowers102", "vtab1k/oxford_iiit_pet", "vtab1k/svhn", "vtab1k/sun397",
         "vtab1k/patch_camelyon", "vtab1k/eurosat", "vtab1k/resisc45", "vtab1k/diabetic_retinopathy", "vtab1k/clevr_count", "vtab1k/clevr_distance",
         "vtab1k/dmlab", "vtab1k/kitti_distance", "vtab1k/dsprites_location", "vtab1k/dsprites_orientation", "vtab1k/smallnorb_azimuth",
         "vtab1k/smallnorb_elevation", "digits", "shapes/location", "shapes/orientation", "fgvc/cub", "fgvc/nabirds", "fgvc/oxford_flowers"]
METHODS = ["knn", "linear", "finetune", "lora"]


def make_record(sweep: str, b: int, method: str, task: str, seed: int) -> dict:
    import hashlib

    cid = hashlib.sha256(f"{b}|{method}|{task}|{seed}".encode()).hexdigest()[:16]
    value = 50 + 40 * ((hash((b, method, task)) % 1000) / 1000) + seed * 0.1
    group = "vtab1k/" + ("natural" if TASKS.index(task) < 7 else "specialized" if TASKS.index(task) < 11 else "structured") if task.startswith("vtab") else "builtin"
    return {"schema": "bob.run_record/1", "id": cid, "sweep": sweep, "status": "ok", "backbone": f"timm:model_{b:04d}", "method": method, "task": task,
            "seed": seed, "weights": "pretrained", "spec": {"backbone": f"timm:model_{b:04d}", "method": method, "task": task, "seed": seed,
                                                            "weights": "pretrained", "hparams": {}},
            "hparams": {"lr": 0.001, "wd": 0.0001, "epochs": 10}, "metrics": {"top1": value, "n_eval": 1000},
            "metric_specs": {"top1": {"name": "top1", "direction": "higher", "target": None, "unit": "%", "fmt": ".1f", "label": "top-1 accuracy (%)"}},
            "primary_metric": {"name": "top1", "value": value, "higher_is_better": True, "direction": "higher", "target": None},
            "backbone_meta": {"family": "vit" if b % 2 else "cnn", "pretrain_method": "supervised", "pretrain_data": "ImageNet-1k", "params_m": 5 + b % 300,
                              "gflops": 1.0 + b % 17, "weights": "pretrained"},
            "task_meta": {"name": task, "group": group}, "protocol": {"tuned_on": "train800", "selected_on": "val200", "final_train_split": "train800val200",
                                                                       "reported_on": "test"},
            "timing": {"wall_s": 12.5, "fit_s": 10.0}, "environment": {"git_sha": "bench", "torch": "2.x", "host": "node01"}, "error": None,
            "created": "2026-11-25T00:00:00+00:00", "path": None}


def _writer(args):
    folder, sweep, jobs = args
    sys.path.insert(0, str(REPO))
    from harness.store import ResultStore

    store = ResultStore(folder)
    for b, method, task, seed in jobs:
        store.write(make_record(sweep, b, method, task, seed))


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of a CLI command in a fresh process."""
    wrapper = "import resource, subprocess, sys, time; t=time.perf_counter(); r=subprocess.run(sys.argv[1:], capture_output=True, text=True); " \
              "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode); sys.stderr.write(r.stderr[-2000:])"
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "BOB_PROGRESS": "0", "PYTHONPATH": str(REPO)})
    wall, rss, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr}")
    return float(wall), float(rss), out.stderr


def main(quick: bool = False) -> dict:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    backbones = 10 if quick else 100
    bob = [sys.executable, "-m", "harness.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "results" / "big"
        jobs = [(b, m, t, s) for b in range(backbones) for m in METHODS for t in TASKS for s in range(10)]
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(2) as pool:
            pool.map(_writer, [(str(folder), "big", jobs[i::2]) for i in range(2)])
        write_s = time.perf_counter() - t0
        n = len(jobs)
        t0 = time.perf_counter()
        for path in folder.glob("*.json"):
            json.loads(path.read_text())
        plain_read_s = time.perf_counter() - t0
        status_s, _, _ = timed([*bob, "status", "big"], root)
        compact_s, _, _ = timed([*bob, "results", "compact", "big"], root)
        aggregate_s, _, _ = timed([*bob, "aggregate", "big"], root)
        publish_s, _, _ = timed([*bob, "publish", "big", "--name", "big"], root)

        # a million compacted records: the 100k Parquet ten times over, as ten row groups of other backbones
        small = pq.read_table(root / "results" / "big.parquet")
        big_path = root / "results" / "big1m.parquet"
        t0 = time.perf_counter()
        with pq.ParquetWriter(big_path, small.schema) as writer:
            for k in range(10):
                df = small.to_pandas()
                for col in ("backbone", "backbone_label"):
                    df[col] = df[col].astype(str) + f"-r{k}"
                writer.write_table(pa.Table.from_pandas(df, schema=small.schema, preserve_index=False))
        gen_s = time.perf_counter() - t0
        agg1m_s, agg1m_rss, _ = timed([*bob, "aggregate", str(big_path)], root)
        t0 = time.perf_counter()
        plain = pd.read_parquet(big_path, columns=["backbone", "method", "task", "primary_value"])
        plain.groupby(["method", "task", "backbone"])["primary_value"].mean()
        plain_agg_s = time.perf_counter() - t0
        rows_1m = pq.ParquetFile(big_path).metadata.num_rows
    figures = {"records": n, "write_s": round(write_s, 1), "write_ms_per_record": round(1000 * write_s / n, 3),
               "plain_json_read_all_s": round(plain_read_s, 2),
               "status_s": round(status_s, 2), "compact_s": round(compact_s, 2), "aggregate_s": round(aggregate_s, 2), "publish_s": round(publish_s, 2),
               "status_vs_plain_read": round(status_s / plain_read_s, 2),
               "compacted_records": rows_1m, "generate_1m_s": round(gen_s, 1), "aggregate_1m_s": round(agg1m_s, 2),
               "aggregate_1m_peak_rss_gb": round(agg1m_rss / 1024, 2), "plain_pandas_groupby_1m_s": round(plain_agg_s, 2),
               "aggregate_1m_vs_plain_groupby": round(agg1m_s / plain_agg_s, 1)}
    checks = {f"{k} < 60 s": figures[k] < 60 for k in ("status_s", "compact_s", "aggregate_s", "publish_s", "aggregate_1m_s")}
    checks["aggregate 1M < 4 GiB"] = figures["aggregate_1m_peak_rss_gb"] < 4
    return write_result("store", figures, checks,
                        f"{n:,} records: status {status_s:.1f} s ({figures['status_vs_plain_read']:.1f}x a plain read of every file), compact {compact_s:.1f} s, "
                        f"aggregate {aggregate_s:.1f} s, publish {publish_s:.1f} s; {rows_1m:,} compacted: aggregate {agg1m_s:.1f} s, "
                        f"{figures['aggregate_1m_peak_rss_gb']:.2f} GiB ({figures['aggregate_1m_vs_plain_groupby']:.0f}x a bare pandas groupby mean, which has no intervals, z-scores or tables)")


if __name__ == "__main__":
    cli(main, __doc__)
