"""Sweeps on a real one-node SLURM cluster (scripts/start_slurm.sh; CI starts it) through submitit.

Skipped, with the reason, when no SLURM controller answers here."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.store import ResultStore

from .conftest import BOB, write_grid

TESTS = Path(__file__).resolve().parent
VOLATILE = {"timing", "environment", "created", "started", "path", "log", "feature_cache", "slurm", "adaptation"}
MEASURED = {"peak_memory_mb", "peak_memory_kind", "train_samples_per_s", "train_images_per_s", "latency_ms", "frozen_latency_ms", "latency_vs_frozen"}


def slurm_ready() -> str | None:
    if not shutil.which("sinfo"):
        return "SLURM is not installed (run scripts/start_slurm.sh as root)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if out.returncode != 0 or not ({"idle", "mixed", "allocated"} & set(out.stdout.split())):
        return f"no SLURM node is up (sinfo: {out.stdout.strip() or out.stderr.strip()}); run scripts/start_slurm.sh as root"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(slurm_ready() is not None, reason=str(slurm_ready()))]


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("BOB_PLUGINS", "slurm_plugin")
    monkeypatch.setenv("BOB_TEST_COUNTER", str(tmp_path / "executions.txt"))
    sys.path.insert(0, str(TESTS))
    from harness import plugins

    import slurm_plugin  # noqa: F401 - registers 'sleepy' in this process too
    yield tmp_path / "executions.txt"
    sys.path.remove(str(TESTS))


SOLVER_TRACE = {"objective", "grad_max_abs", "iterations"}
ALLOCATION = {"allocation", "threads"}  # where the cell ran (SLURM job id, CPUs granted, thread counts), not what decides its number


def comparable(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    if "reproducibility" in out:
        out["reproducibility"] = {k: v for k, v in out["reproducibility"].items() if k not in ALLOCATION}
    if isinstance(out.get("protocol"), dict):  # an L-BFGS path's last-ulp trace depends on the thread count: metrics and choices must agree
        p = dict(out["protocol"])
        p["candidates"] = [{k: v for k, v in c.items() if k not in SOLVER_TRACE} for c in p.get("candidates") or []]
        if isinstance(p.get("convergence"), dict):
            p["convergence"] = {k: v for k, v in p["convergence"].items() if k not in SOLVER_TRACE}
        out["protocol"] = p
    return out


@pytest.mark.slow
def test_24_cell_sweep_on_slurm_matches_local(tmp_path):
    grid = write_grid(
        tmp_path / "g.yaml",
        "name: s24\nbackbones: [timm:resnet18.a1_in1k, timm:vit_tiny_patch16_224.augreg_in21k]\nweights: random\n"
        "methods: [knn, linear]\ntasks: [digits, shapes/location]\nseeds: [0, 1, 2]\n"
        "hparams:\n  all: {img_size: 16}\n  linear: {search: {C: [0.1, 1.0]}}\n",
    )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 1-CPU array tasks: L-BFGS's sums then round alike, and every number must match
    try:
        local = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(tmp_path / "local"), "--cache-dir", str(tmp_path / "c1")])
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 0, local.output
    out = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "slurm"), "--cache-dir", str(tmp_path / "c2"),
                          "--executor", "slurm", "--chunk-size", "6", "--cpus-per-task", "1", "--time", "20"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted SLURM array" in out.stdout and "array tasks: 4 COMPLETED" in out.stdout
    local_records = {r["id"]: r for r in ResultStore(tmp_path / "local" / "s24").records()}
    slurm_records = {r["id"]: r for r in ResultStore(tmp_path / "slurm" / "s24").records()}
    assert len(local_records) == 24 and set(local_records) == set(slurm_records)
    for cell_id, record in slurm_records.items():
        assert record["status"] == "ok" and record["environment"]["slurm_job_id"]
        assert comparable(record) == comparable(local_records[cell_id])
        counts = {k: v for k, v in record.get("adaptation", {}).items() if k not in MEASURED}  # machine-independent part
        assert counts == {k: v for k, v in local_records[cell_id].get("adaptation", {}).items() if k not in MEASURED}
        assert Path(record["log"]).is_file()
    again = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "slurm"), "--executor", "slurm"], capture_output=True, text=True)
    assert "nothing to run: all 24 cells already done" in again.stdout


def _manifests(store_folder: Path) -> list[dict]:
    path = store_folder / ".slurm" / "submissions.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_raise_cancel_and_timeout_are_recorded_then_rerun(tmp_path, plugin_env):
    grid = write_grid(tmp_path / "g.yaml", "name: states\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [sleepy]\ntasks: [digits]\n"
                      "hparams:\n  sleepy: {mode: [ok, cancel-me, timeout-me, raise]}\n")
    from harness.grid import expand, load_grid

    cells = {c.hparams["mode"]: c for c in expand(load_grid(grid)).cells}
    store = ResultStore(tmp_path / "res" / "states")
    sweep = subprocess.Popen([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "slurm", "--chunk-size", "1",
                              "--time", "1", "--timeout-requeues", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    claim = store.folder / ".claims" / f"{cells['cancel-me'].id}.claim"
    deadline = time.time() + 120
    while not claim.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert claim.exists(), "the cell to cancel never started"
    (manifest,) = _manifests(store.folder)
    task = next(t for t in manifest["tasks"].values() if t["cells"] == [cells["cancel-me"].id])
    subprocess.run(["scancel", task["job_id"]], check=True)
    output, _ = sweep.communicate(timeout=400)
    assert sweep.returncode == 0, output
    got = {mode: store.read(spec.id) for mode, spec in cells.items()}
    assert got["ok"]["status"] == "ok"
    assert got["raise"]["status"] == "failed" and got["raise"]["error"]["type"] == "ValueError" and "asked to fail" in got["raise"]["error"]["message"]
    assert "Traceback" in got["raise"]["error"]["traceback"]
    assert got["cancel-me"]["status"] == "failed" and got["cancel-me"]["error"]["type"] == "SlurmCancelled"
    assert got["timeout-me"]["status"] == "failed" and got["timeout-me"]["error"]["type"] == "SlurmTimeout", got["timeout-me"]["error"]
    assert got["cancel-me"]["spec"]["hparams"] == {"mode": "cancel-me"} and Path(got["cancel-me"]["log"]).is_file()
    status = CliRunner().invoke(main, ["status", str(store.folder)])
    assert "1 ok" in status.output and "3 failed" in status.output and "ended CANCELLED" in status.output and "log:" in status.output

    # after the "fix", a rerun completes only the three failed cells
    ok_mtime = store.path_for(cells["ok"].id).stat().st_mtime_ns
    plugin_env.write_text("")
    rerun = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "slurm", "--retry-failed", "--time", "5"],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "BOB_TEST_FAST": "1"})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "3 to run, 1 done, 3 failed before" in rerun.stdout
    assert all(store.status(s.id) == "ok" for s in cells.values())
    assert store.path_for(cells["ok"].id).stat().st_mtime_ns == ok_mtime
    assert sorted(l.split(":")[0] for l in plugin_env.read_text().split()) == sorted(cells[m].id for m in ("cancel-me", "timeout-me", "raise"))


@pytest.mark.slow
def test_preempted_finetune_resumes_to_the_same_metric(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "name: pre\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [finetune]\ntasks: [digits]\n"
                      "hparams:\n  finetune: {img_size: 16, epochs: 6, augment: true, batch_size: 64}\n")
    record, reference = _preempt_and_resume(tmp_path, grid, "pre", "resumed train800val200 fit from")
    assert record["metrics"]["top1"] == reference["metrics"]["top1"]


@pytest.mark.slow
def test_preempted_detection_cell_resumes_to_the_same_ap(tmp_path):
    """Detection cells checkpoint every epoch through the same loop: a requeued array task resumes
    and ends with the same detections (AP) as an uninterrupted run."""
    from .test_detection import make_mini_lvis

    train, val, images = make_mini_lvis(tmp_path, n_train=24, n_val=6)
    grid = write_grid(tmp_path / "g.yaml", f"name: det\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [detector]\n"
                      f"tasks: ['lvis:{val}@{images}?train={train}']\n"
                      "hparams:\n  detector: {img_size: 64, epochs: 5, lr: 1.0e-3, batch_size: 8, fpn_channels: 32, box_head_dim: 64, "
                      "rois_per_image: 32, proposals: 100}\n")
    record, reference = _preempt_and_resume(tmp_path, grid, "det", "resumed train fit from")
    assert record["metrics"]["AP"] == pytest.approx(reference["metrics"]["AP"], abs=1e-9)
    assert record["metrics"]["n_detections"] == reference["metrics"]["n_detections"]


def _preempt_and_resume(tmp_path: Path, grid: Path, name: str, resumed: str) -> tuple[dict, dict]:
    """Run the one-cell grid uninterrupted (the reference), then again with a USR2 (SLURM's
    pre-preemption signal) after its second epoch checkpoint; both records, after the checks."""
    # the reference: the same cell, uninterrupted, under the same allocation (1 CPU: CPU training is
    # bit-reproducible for a given thread count, not across thread counts)
    ref = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "reference"), "--executor", "slurm", "--time", "30"],
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    (reference,) = ResultStore(tmp_path / "reference" / name).records()
    assert reference["status"] == "ok" and "resumed" not in Path(reference["log"]).read_text()
    store = ResultStore(tmp_path / "slurm" / name)
    sweep = subprocess.Popen([*BOB, "sweep", str(grid), "--results", str(tmp_path / "slurm"), "--executor", "slurm", "--time", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt_dir = store.folder / ".checkpoints"
    deadline = time.time() + 300
    import torch

    while time.time() < deadline:
        ckpts = list(ckpt_dir.glob("*.pt")) if ckpt_dir.exists() else []
        if ckpts:
            try:
                if torch.load(ckpts[0], weights_only=False)["epoch"] >= 2:
                    break
            except Exception:
                pass
        time.sleep(0.5)
    else:
        pytest.fail("no checkpoint appeared")
    (manifest,) = _manifests(store.folder)
    job = manifest["tasks"]["0"]["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what SLURM sends before preempting
    # submitit requeues the task; SLURM holds a requeued job ~2 minutes (Reason=BeginTime). Let the
    # one-node test cluster start it now, as a busy cluster would once the preemptor is done.
    for _ in range(60):
        squeue = subprocess.run(["squeue", "-h", "-j", manifest["array_job_id"], "-o", "%i %T %r"], capture_output=True, text=True).stdout
        if "PENDING" in squeue:
            subprocess.run(["scontrol", "update", f"JobId={squeue.split()[0]}", "StartTime=now"], capture_output=True)
            break
        time.sleep(0.5)
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output
    (record,) = store.records()
    assert record["status"] == "ok", record["error"]
    log = Path(record["log"]).read_text()
    assert resumed in log and "epoch" in log
    assert [p["train_loss"] for p in record["curves"]["train"]] == pytest.approx([p["train_loss"] for p in reference["curves"]["train"]], rel=1e-5)
    return record, reference




def test_two_sweeps_at_once_run_every_cell_exactly_once(tmp_path, plugin_env):
    grid = write_grid(tmp_path / "g.yaml", "name: twice\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [sleepy]\ntasks: [digits]\n"
                      "seeds: [0, 1, 2, 3, 4, 5, 6, 7]\nhparams:\n  sleepy: {seconds: 0.5}\n")
    procs = [subprocess.Popen([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    runs = [l.split(":")[0] for l in plugin_env.read_text().split()]
    assert len(runs) == 8 and len(set(runs)) == 8, runs
    assert sum(1 for r in ResultStore(tmp_path / "res" / "twice").records() if r["status"] == "ok") == 8


def test_local_workers_share_the_grid_and_each_sees_one_gpu(tmp_path, plugin_env):
    grid = write_grid(tmp_path / "g.yaml", "name: workers\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [sleepy]\ntasks: [digits]\n"
                      "seeds: [0, 1, 2, 3, 4, 5]\nhparams:\n  sleepy: {seconds: 1.0}\n")
    out = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--workers", "2", "--gpus", "3,7"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ran 6 cells: 6 ok" in out.stdout, out.stdout + out.stderr
    runs = [l.split(":") for l in plugin_env.read_text().split()]
    assert len(runs) == 6 and len({cell for cell, _ in runs}) == 6
    assert {gpu for _, gpu in runs} == {"3", "7"}  # both workers ran cells, each pinned to its GPU


def test_bad_slurm_input_is_one_line_and_leaves_nothing_to_repair(tmp_path, plugin_env):
    grid = write_grid(tmp_path / "g.yaml", "name: bad\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [sleepy]\ntasks: [digits]\n"
                      "hparams:\n  sleepy: {seconds: 0}\n")
    typo = CliRunner().invoke(main, ["sweep", str(grid), "--executor", "slurm", "--partiton", "debug"])
    assert typo.exit_code == 2 and "No such option '--partiton'" in typo.output and "'--partition'" in typo.output
    for args, message in ((["--partition", "nope"], "invalid partition"), (["--sbatch", "bogus-option=1"], "unrecognized option")):
        out = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "slurm", *args], capture_output=True, text=True)
        assert out.returncode == 2, out.stdout + out.stderr
        errors = [l for l in out.stderr.splitlines() if l.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: sbatch refused the job array:") and message in errors[0], out.stderr
        assert not _manifests(tmp_path / "res" / "bad") and not list((tmp_path / "res" / "bad").glob("*.json"))
        assert not list((tmp_path / "res" / "bad").glob(".claims/*.claim"))
    good = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "slurm", "--partition", "debug"],
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and "ran 1 cells: 1 ok" in good.stdout, good.stdout + good.stderr


@pytest.mark.slow
def test_wandb_offline_runs_from_slurm_array_tasks(tmp_path):
    """--wandb reaches the array tasks: each cell's offline run is written on the node, with its config."""
    pytest.importorskip("wandb")
    from .wandb_files import summarise_run

    grid = write_grid(tmp_path / "g.yaml", "name: wbs\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn]\n"
                      "tasks: [digits, shapes/location]\nhparams:\n  all: {img_size: 16}\n")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    out = subprocess.run([*BOB, "sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "slurm", "--chunk-size", "1",
                          "--cpus-per-task", "1", "--time", "10", "--wandb", "bob-slurm"], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0 and "array tasks: 2 COMPLETED" in out.stdout, out.stdout + out.stderr
    records = {r["id"]: r for r in ResultStore(tmp_path / "res" / "wbs").records()}
    runs = [summarise_run(p) for p in sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))]
    assert len(runs) == 2 and {r["config"]["cell_id"] for r in runs} == set(records)
    for run in runs:
        record = records[run["config"]["cell_id"]]
        assert run["group"] == "wbs" and run["job_type"] == "knn" and record["environment"]["slurm_job_id"]
        assert run["summary"]["final/top1"] == pytest.approx(record["metrics"]["top1"])
