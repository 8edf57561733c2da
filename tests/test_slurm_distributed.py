"""Distributed cells on the one-node SLURM cluster (issue 22, acceptance 2): a 2-rank cell through
submitit writes one record; a killed rank fails the cell with the cause; a requeued 2-rank cell
resumes from rank 0's checkpoint. Skipped, with the reason, when no SLURM controller answers."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.store import ResultStore

from .conftest import BOB, REPO, write_grid
from .test_slurm import _manifests, slurm_ready

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(slurm_ready() is not None, reason=str(slurm_ready()))]
PLUGIN_ENV = {"BOB_PLUGINS": "tests.rank_plugin", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_two_rank_cells_through_submitit_one_record_each_and_a_killed_rank_fails_its_cell(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "name: rk\nbackbones: [toy:a]\nmethods: [rankprobe]\ntasks: [toybias/gender_ss]\ngpus_per_cell: 2\n"
                      "hparams: {rankprobe: {fail_rank: [-1, 1], fail: kill}}\n")
    out = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "slurm", "--chunk-size", "1", "--time", "10"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, **PLUGIN_ENV})
    assert out.returncode == 0, out.stdout + out.stderr
    records = {r["spec"]["hparams"]["fail_rank"]: r for r in ResultStore(tmp_path / "res" / "rk").records()}
    assert set(records) == {-1, 1}
    assert records[-1]["status"] == "ok" and records[-1]["metrics"]["world"] == 2.0 and records[-1]["distributed"]["world_size"] == 2
    failed = records[1]
    assert failed["status"] == "failed" and failed["error"]["type"] == "RankFailed" and "rank 1" in failed["error"]["message"]
    assert "SIGKILL" in failed["error"]["message"] and failed["error"]["traceback"]
    files = sorted(p.name for p in (tmp_path / "res" / "rk").iterdir() if not p.name.startswith("."))
    assert files == sorted(f"{r['id']}.json" for r in records.values())  # nothing else in the store


@pytest.mark.slow
def test_requeued_two_rank_finetune_resumes_from_its_checkpoint(tmp_path):
    import torch

    grid = write_grid(tmp_path / "g.yaml", "name: pre\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [finetune]\ntasks: [digits]\n"
                      "gpus_per_cell: 2\nhparams:\n  finetune: {img_size: 16, epochs: 5, augment: true, batch_size: 64}\n")
    store = ResultStore(tmp_path / "slurm" / "pre")
    sweep = subprocess.Popen([*BOB, "sweep", str(grid), "--results", str(tmp_path / "slurm"), "--executor", "slurm", "--time", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt_dir, deadline = store.folder / ".checkpoints", time.time() + 400
    while time.time() < deadline:
        if sweep.poll() is not None:
            pytest.fail(f"the sweep ended before its second checkpoint: {sweep.communicate()[0][-3000:]}")
        ckpts = list(ckpt_dir.glob("*.pt")) if ckpt_dir.exists() else []
        try:
            if ckpts and torch.load(ckpts[0], weights_only=False)["epoch"] >= 2:
                break
        except Exception:
            pass
        time.sleep(0.5)
    else:
        sweep.kill()
        pytest.fail("no checkpoint appeared")
    (manifest,) = _manifests(store.folder)
    subprocess.run(["scancel", "--signal=USR2", manifest["tasks"]["0"]["job_id"]], check=True)  # SLURM's pre-preemption signal
    for _ in range(60):  # the one-node cluster holds a requeued job ~2 minutes: start it now
        squeue = subprocess.run(["squeue", "-h", "-j", manifest["array_job_id"], "-o", "%i %T %r"], capture_output=True, text=True).stdout
        if "PENDING" in squeue:
            subprocess.run(["scontrol", "update", f"JobId={squeue.split()[0]}", "StartTime=now"], capture_output=True)
            break
        time.sleep(0.5)
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output
    (record,) = store.records()
    assert record["status"] == "ok", record["error"]
    assert "resumed train800val200 fit from" in Path(record["log"]).read_text()
    assert len(record["curves"]["train"]) == 5 and record["distributed"]["world_size"] == 2
    assert not list(ckpt_dir.glob("*.pt"))
