import json
import os
import subprocess
import sys
import time

from click.testing import CliRunner

from harness.claims import Claims
from harness.cli import main
from harness.store import ResultStore

from .conftest import write_grid
from .fixtures import make_vtab_task


def test_claims_are_exclusive_and_stale_ones_are_broken(tmp_path):
    a, b = Claims(tmp_path, ttl_s=300), Claims(tmp_path, ttl_s=300)
    assert a.try_claim("cell") and not b.try_claim("cell")  # held by a live process (this one)
    a.release("cell")
    assert b.try_claim("cell")
    b.release("cell")
    # a claim left by a process that died on this host is stale at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".claims" / "cell.claim").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead), "slurm_job_id": None}))
    assert a.try_claim("cell")
    # a claim from another host goes stale when its heartbeat stops for ttl seconds
    (tmp_path / ".claims" / "other.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1, "slurm_job_id": "77"}))
    assert not a.try_claim("other")
    old = time.time() - 301
    os.utime(tmp_path / ".claims" / "other.claim", (old, old))
    assert a.try_claim("other")


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    claims = Claims(tmp_path, ttl_s=4)
    assert claims.try_claim("c")
    old = time.time() - 100
    os.utime(claims.path("c"), (old, old))
    with claims.heartbeat("c"):
        time.sleep(1.5)
    assert time.time() - claims.path("c").stat().st_mtime < 2


def test_status_counts_running_pending_failed_and_eta(tmp_path):
    store = ResultStore(tmp_path / "res" / "st")
    for i, status in enumerate(["ok", "ok", "failed"]):
        store.write({"id": f"c{i}", "status": status, "backbone": "b", "method": "knn", "task": "digits", "seed": 0, "timing": {"wall_s": 10.0},
                     "log": "/logs/x.out" if status == "failed" else None,
                     "error": {"type": "ValueError", "message": "ValueError: boom", "traceback": "..."} if status == "failed" else None})
    Claims(store.folder).try_claim("c3")  # running now (this process holds it)
    (store.folder / ".slurm").mkdir()
    (store.folder / ".slurm" / "specs.json").write_text(json.dumps({f"c{i}": {} for i in range(6)}))
    out = CliRunner().invoke(main, ["status", "st", "--results", str(tmp_path / "res")])
    assert out.exit_code == 0, out.output
    assert "2 pending, 1 running, 2 ok, 1 failed, 0 skipped" in out.output
    assert "failed c2 b knn digits s0: ValueError: boom [log: /logs/x.out]" in out.output
    assert "running c3" in out.output and "ETA: ~0.5 min for 3 unfinished cells" in out.output


def test_prefetch_reports_what_is_cached_and_what_cannot_be_had(tmp_path):
    root = tmp_path / "data"
    make_vtab_task(root, "dtd", counts={"train800": 800, "val200": 200, "test": 5})
    grid = write_grid(tmp_path / "g.yaml", f"name: pf\nbackbones: [timm:resnet18.a1_in1k, {{name: timm:convnext_atto.d2_in1k, weights: random}}]\n"
                      f"weights: auto\nmethods: [knn]\ntasks: [digits, vtab1k/dtd, vtab1k/svhn]\ndata_root: {root}\n")
    out = CliRunner().invoke(main, ["prefetch", str(grid)])
    assert out.exit_code == 2
    rows = {l.split()[0]: l.split()[2] for l in out.output.splitlines() if l.startswith(("timm:", "digits", "vtab1k/"))}
    assert rows == {"timm:resnet18.a1_in1k": "missing", "digits": "cached", "vtab1k/dtd": "cached", "vtab1k/svhn": "missing"}
    assert "timm:convnext_atto.d2_in1k" not in out.output  # random-init needs nothing
    assert "error: 2 item(s) could not be fetched" in out.output
