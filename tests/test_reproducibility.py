"""Issue 28: a record names everything that decides its number, deterministic mode gives the same
bits whatever ran the cell, and `bob reproduce` proves (or refuses to prove) a stored number."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.errors import BobError
from harness.grid import expand, load_grid, parse_grid
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

from .conftest import REPO, run_bob
from .fixtures import make_image_folder_dataset

TINY_FT = {"img_size": 16, "epochs": 1, "batch_size": 64}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.slow
def test_thread_count_is_recorded_and_is_the_only_difference_between_a_1_and_a_2_thread_run(tmp_path):
    spec = RunSpec("timm:vit_tiny_patch16_224.augreg_in21k", "finetune", "digits", 0, "random", TINY_FT)
    saved = torch.get_num_threads()
    records = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            records[n] = run_cell(spec, ResultStore(tmp_path / f"t{n}"), log=lambda m: None)
    finally:
        torch.set_num_threads(saved)
    assert all(r["status"] == "ok" for r in records.values())
    one, two = (flatten(records[n]["reproducibility"]) for n in (1, 2))
    assert {k for k in one if one[k] != two.get(k)} == {"threads.intra_op"}
    assert one["threads.intra_op"] == 1 and two["threads.intra_op"] == 2
    rec = records[1]["reproducibility"]
    assert rec["deterministic"] is False and rec["amp"] == "off" and rec["dataloader_workers"] == 0
    assert rec["algorithms"]["use_deterministic_algorithms"] is False and rec["device_model"]
    assert {"slurm_cpus_per_task", "cuda_visible_devices"} <= set(rec["allocation"])
    assert {"python_random", "numpy", "torch", "epoch_order", "model_init"} <= set(rec["seeds"])
    assert set(rec["data"]) == {"train800", "val200", "train800val200", "test"}


def test_deterministic_is_a_grid_key_part_of_the_cell_id_and_restored_after_the_cell(tmp_path):
    base = {"name": "d", "backbones": ["timm:resnet18.a1_in1k"], "methods": ["knn"], "tasks": ["digits"], "weights": "random"}
    plain, det = expand(parse_grid(base)).cells[0], expand(parse_grid({**base, "deterministic": True})).cells[0]
    assert plain.id != det.id and det.deterministic and "deterministic" not in plain.as_dict()
    assert RunSpec.from_dict(det.as_dict()) == det and RunSpec.from_dict(det.as_dict()).id == det.id
    with pytest.raises(BobError, match="'deterministic' must be true or false"):
        parse_grid({**base, "deterministic": "yes"})
    threads = torch.get_num_threads()
    record = run_cell(RunSpec("timm:resnet18.a1_in1k", "knn", "digits", 0, "random", {"img_size": 16}, deterministic=True),
                      ResultStore(tmp_path), log=lambda m: None)
    assert record["status"] == "ok" and record["deterministic"] is True
    flags = record["reproducibility"]
    assert flags["deterministic"] and flags["threads"]["intra_op"] == 1 and flags["algorithms"]["use_deterministic_algorithms"]
    assert flags["algorithms"]["cublas_workspace_config"] == ":4096:8" and not flags["algorithms"]["cudnn_benchmark"]
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()  # nothing leaks to the next cell


def _weights(path: Path, seed: int) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(path))
    return path


@pytest.mark.slow
def test_reproduce_a_deterministic_record_then_refuse_changed_inputs(tmp_path):
    data = make_image_folder_dataset(tmp_path / "data", {"train": 6, "test": 3})
    weights = _weights(tmp_path / "w.safetensors", 0)
    args = ["run", "-b", "timm:resnet18.a1_in1k", "-m", "finetune", "-t", f"folder:{data}", "-w", str(weights), "--deterministic",
            "--set", "img_size=16", "--set", "epochs=2", "--out", "res/runs"]
    run = run_bob(*args)
    assert run.returncode == 0, run.stdout + run.stderr
    record_path = Path(run.stdout.split("record: ")[1].strip())
    record = json.loads(record_path.read_text())
    assert record["spec"]["deterministic"] and record["backbone_meta"]["weights_sha256"]

    ok = run_bob("reproduce", record["id"], "--results", "res")  # by cell id, looked up under results
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "reproduced: every difference is 0" in ok.stdout and "verified weights file sha256" in ok.stdout
    table = [l.split() for l in ok.stdout.splitlines() if l.split() and l.split()[0] in record["metrics"]]
    assert {row[0] for row in table} == set(record["metrics"]) and all(float(row[3]) == 0.0 for row in table)

    sampled = run_bob("reproduce", "runs", "--results", "res", "--sample", "1")  # a spot-check of a sweep's cells
    assert sampled.returncode == 0 and "1/1 sampled cells reproduced" in sampled.stdout, sampled.stdout + sampled.stderr

    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps({**record, "metrics": {**record["metrics"], "top1": record["metrics"]["top1"] + 0.5}}))
    bad = run_bob("reproduce", str(altered))
    assert bad.returncode == 1 and "NOT reproduced: top1 differs by -0.5 (tolerance 0)" in bad.stdout, bad.stdout + bad.stderr

    _weights(weights, 1)  # the checkpoint overwritten: refused before anything runs
    refused = run_bob("reproduce", str(record_path))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and f"the weights file {weights} changed" in lines[0], refused.stdout + refused.stderr

    _weights(weights, 0)
    shutil.rmtree(data)
    make_image_folder_dataset(data, {"train": 6, "test": 3}, seed=5)  # same layout and counts, other pixels
    refused = run_bob("reproduce", str(record_path))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and f"of task folder:{data} changed (sample sha256" in lines[0], refused.stdout + refused.stderr


def test_tolerance_is_exact_for_deterministic_cells_and_a_band_otherwise():
    from harness.reproduce import compare

    stored = {"metrics": {"top1": 50.0, "n_eval": 100, "loss": float("nan")}, "spec": {"deterministic": False},
              "metric_specs": {"n_eval": {"tolerance": 0}}}
    new = {"metrics": {"top1": 50.4, "n_eval": 100, "loss": float("nan")}}
    rows = {r.metric: r for r in compare(stored, new)}
    assert rows["top1"].ok and rows["top1"].tolerance == pytest.approx(0.5)  # 1 % of the stored value
    assert rows["n_eval"].ok and rows["n_eval"].tolerance == 0  # a declared band wins
    assert rows["loss"].ok  # NaN reproduces NaN
    assert not {r.metric: r for r in compare(stored, {"metrics": {**new["metrics"], "top1": 50.6}})}["top1"].ok
    assert not {r.metric: r for r in compare({**stored, "spec": {"deterministic": True}}, new)}["top1"].ok  # exact
    assert not {r.metric: r for r in compare(stored, {"metrics": {"top1": 50.0}})}["n_eval"].ok  # a metric the rerun lacks


def test_a_declared_tolerance_travels_from_the_declaration_into_the_record_and_bob_reproduce():
    """A task or method declares a metric's reproduction band (``tolerance``) beside its direction;
    the record's metric_specs carry it and ``bob reproduce`` applies it. Undeclared: the record's
    declaration is unchanged (no tolerance key) and the relative default applies."""
    from harness.metrics import resolve_specs, spec_from
    from harness.reproduce import compare

    specs = resolve_specs(["top1", "ap"], {"ap": {"direction": "higher", "fmt": ".2f", "tolerance": 0.25}})
    record_specs = {name: s.as_dict() for name, s in specs.items()}  # what runner.py writes
    assert record_specs["ap"]["tolerance"] == 0.25 and "tolerance" not in record_specs["top1"]
    assert spec_from("ap", record_specs["ap"]) == specs["ap"]  # read back from a record unchanged
    stored = {"metrics": {"top1": 80.0, "ap": 40.0}, "spec": {"deterministic": False}, "metric_specs": record_specs}
    rows = {r.metric: r for r in compare(stored, {"metrics": {"top1": 80.7, "ap": 40.3}})}
    assert rows["ap"].tolerance == 0.25 and not rows["ap"].ok  # 0.3 > the declared 0.25 (the 1% default would accept it)
    assert rows["top1"].tolerance == pytest.approx(0.8) and rows["top1"].ok
    for bad in (-0.1, "small", True):
        with pytest.raises(BobError, match="tolerance .* must be a number >= 0"):
            spec_from("ap", {"tolerance": bad})


def _quickstart_finetune(tmp_path: Path) -> Path:
    """The quickstart grid's fine-tuning cells, deterministic, with one epoch (the CPU budget of a test)."""
    import yaml

    grid = yaml.safe_load((REPO / "grids" / "quickstart.yaml").read_text())
    grid.update(name="qsdet", methods=["finetune"], deterministic=True, weights="random")
    grid["hparams"]["finetune"]["epochs"] = 1
    path = tmp_path / "qsdet.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _metrics(root: Path) -> dict[str, dict]:
    records = {r["id"]: r for r in ResultStore(root / "qsdet").records()}
    assert len(records) == 6 and all(r["status"] == "ok" and r["spec"]["deterministic"] for r in records.values())
    return {cid: r["metrics"] for cid, r in records.items()}


@pytest.mark.slow
def test_deterministic_quickstart_finetune_cells_are_bit_identical_locally_and_with_two_workers(tmp_path):
    grid = _quickstart_finetune(tmp_path)
    local = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    workers = run_bob("sweep", str(grid), "--results", str(tmp_path / "workers"), "--workers", "2", env={"OMP_NUM_THREADS": "2"})
    assert workers.returncode == 0 and "ran 6 cells: 6 ok" in workers.stdout, workers.stdout + workers.stderr
    assert _metrics(tmp_path / "local") == _metrics(tmp_path / "workers")  # exact float equality, metric by metric


@pytest.mark.slow
@pytest.mark.slurm
def test_deterministic_quickstart_finetune_cells_are_bit_identical_on_slurm_with_one_cpu(tmp_path):
    from .test_slurm import slurm_ready

    if slurm_ready():
        pytest.skip(slurm_ready())
    grid = _quickstart_finetune(tmp_path)
    local = run_bob("sweep", str(grid), "--results", str(tmp_path / "local"), env={"OMP_NUM_THREADS": "2"})
    assert local.returncode == 0, local.stdout + local.stderr
    slurm = run_bob("sweep", str(grid), "--results", str(tmp_path / "slurm"), "--executor", "slurm", "--cpus-per-task", "1",
                    "--chunk-size", "3", "--time", "20")
    assert slurm.returncode == 0 and "ran 6 cells: 6 ok" in slurm.stdout, slurm.stdout + slurm.stderr
    assert _metrics(tmp_path / "local") == _metrics(tmp_path / "slurm")
    slurm_records = list(ResultStore(tmp_path / "slurm" / "qsdet").records())
    assert all(r["reproducibility"]["allocation"]["slurm_cpus_per_task"] == "1" for r in slurm_records)
