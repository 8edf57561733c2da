"""Writes the golden records and the leaderboard files that the code of commit fe3ceb1 published
from them (issue 15, acceptance 3: tables unchanged on the same records).

Run once, before the table code changed: ``python tests/golden/make_golden.py``. The records are
the published quickstart's own (from ``leaderboards/quickstart/results.parquet``) plus synthetic
VTAB-1k and ICL records in the record schema, made with a fixed RNG.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def quickstart_records() -> list[dict]:
    import pandas as pd

    df = pd.read_parquet(REPO / "leaderboards" / "quickstart" / "results.parquet")
    return [json.loads(r) for r in df["record_json"]]


def _record(sweep, backbone, method, task, group, seed, value, metric, higher, meta, i):
    return {
        "schema": 1, "id": f"{sweep}-{i:05d}", "sweep": sweep, "status": "ok",
        "spec": {"backbone": backbone, "method": method, "task": task, "seed": seed, "weights": "pretrained", "hparams": {}},
        "backbone": backbone, "method": method, "task": task, "seed": seed, "weights": "pretrained", "hparams": {},
        "metrics": {metric: value}, "primary_metric": {"name": metric, "value": value, "higher_is_better": higher},
        "backbone_meta": {**meta, "weights": "pretrained"}, "task_meta": {"name": task, "group": group},
        "protocol": {"tuned_on": "train800", "selected_on": "val200", "final_train_split": "train800val200", "reported_on": "test"},
        "timing": {"wall_s": 1.0}, "environment": {"git_sha": "fe3ceb1"}, "error": None, "created": "2026-11-25T00:00:00+00:00",
    }


def vtab_records() -> list[dict]:
    sys.path.insert(0, str(REPO))
    from tasks.suites import suite_config

    rng = np.random.default_rng(15)
    cfg = suite_config("vtab1k")
    backbones = {"timm:vit_small_patch16_224.augreg_in21k": ("vit", 22.0), "timm:resnet50.a1_in1k": ("cnn", 23.5), "timm:convnext_tiny.fb_in1k": ("convnext", 27.8)}
    out, i = [], 0
    for b, (family, params) in backbones.items():
        for t in cfg["tasks"]:
            if b.startswith("timm:convnext") and t["name"].startswith("kitti"):  # one row lacks a Structured task
                continue
            for method in ("linear", "knn"):
                for seed in (0, 1):
                    v = float(np.round(rng.uniform(20, 95), 3))
                    meta = {"family": family, "pretrain_method": "supervised", "pretrain_data": "ImageNet-1k", "params_m": params, "gflops": 4.0}
                    out.append(_record("golden-vtab", b, method, f"vtab1k/{t['name']}", f"vtab1k/{t['group']}", seed, v, "top1", True, meta, i))
                    i += 1
    return out


def icl_records() -> list[dict]:
    rng = np.random.default_rng(16)
    out, i = [], 0
    for b in ("scratch:gpt2-tiny", "baseline:least_squares", "baseline:knn3"):
        for task, group in (("icl/linear", "icl"), ("icl/sparse_linear", "icl"), ("icl/boolean/parity", "icl/boolean")):
            for seed in (0, 1, 2):
                v = float(np.round(rng.uniform(0.0, 1.2), 4))
                meta = {"family": "transformer" if "gpt" in b else "baseline", "pretrain_method": "random", "pretrain_data": "none", "params_m": 0.5 if "gpt" in b else None}
                out.append(_record("golden-icl", b, "icl_eval", task, group, seed, v, "err_at_2d", False, meta, i))
                i += 1
    return out


SETS = {"quickstart": quickstart_records, "vtab": vtab_records, "icl": icl_records}


def publish_set(name: str, records: list[dict], out_root: Path) -> Path:
    from harness.leaderboard import publish
    from harness.store import ResultStore

    store = ResultStore(out_root / "results" / f"golden-{name}")
    for r in records:
        store.write(dict(r, sweep=f"golden-{name}"))
    return publish([store], name, out_root / "leaderboards")


def main() -> None:
    import shutil
    import tempfile

    sys.path.insert(0, str(REPO))
    for name, make in SETS.items():
        records = make()
        (HERE / f"{name}.records.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        with tempfile.TemporaryDirectory() as tmp:
            board = publish_set(name, records, Path(tmp))
            shutil.copy(board / "leaderboard.csv", HERE / f"{name}.leaderboard.csv")
            shutil.copy(board / "leaderboard.md", HERE / f"{name}.leaderboard.md")
        print(f"{name}: {len(records)} records")


if __name__ == "__main__":
    main()
