"""The sweep end to end through the CLI: records, reruns, failures, aggregation, publishing."""
import json

import pandas as pd
from click.testing import CliRunner

from harness.cli import main
from harness.store import ResultStore

from .conftest import run_bob, write_grid
from .fixtures import make_list_file_dataset

REQUIRED_FIELDS = ["schema", "id", "sweep", "status", "spec", "backbone", "method", "task", "seed", "weights", "hparams", "metrics",
                   "primary_metric", "backbone_meta", "task_meta", "preprocess", "protocol", "timing", "environment", "error", "created"]


def _grid(tmp_path, extra_task=""):
    return write_grid(
        tmp_path / "g.yaml",
        "name: mini\n"
        "backbones: [timm:resnet18.a1_in1k]\nweights: auto\nmethods: [knn, linear]\n"
        f"tasks: [digits, shapes/location{extra_task}]\nseeds: [0, 1]\n"
        "hparams:\n  all: {img_size: 16}\n  linear: {search: {C: [0.1, 1.0]}}\n",
    )


def test_sweep_records_rerun_and_failures(tmp_path):
    broken = make_list_file_dataset(tmp_path / "broken")
    (broken / "images" / "test_0_0.png").write_bytes(b"garbage")
    grid = _grid(tmp_path, f", 'folder:{broken}'")
    runner = CliRunner()

    dry = runner.invoke(main, ["sweep", str(grid), "--results", "res", "--dry-run"])
    assert dry.exit_code == 0 and "12 cells -> 12 to run, 0 done" in dry.output and dry.output.count("would run") == 12
    assert not (tmp_path / "res" / "mini").exists()

    first = runner.invoke(main, ["sweep", str(grid), "--results", "res"])
    assert first.exit_code == 0, first.output
    assert "ran 12 cells: 4 failed, 8 ok; results in res/mini" in first.output
    records = list(ResultStore("res/mini").records())
    assert len(records) == 12
    for r in records:
        assert all(field in r for field in REQUIRED_FIELDS), set(REQUIRED_FIELDS) - set(r)
        assert r["schema"] == "bob.run_record/1" and r["sweep"] == "mini"
        assert r["environment"]["packages"]["torch"] and r["environment"]["packages"]["timm"]
        assert r["timing"]["wall_s"] > 0
    ok = [r for r in records if r["status"] == "ok"]
    assert all(r["backbone_meta"]["weights"] == "random-init" and r["hparams"]["img_size"] == 16 for r in ok)
    assert all(r["preprocess"]["train_augmentation"] == "none" and r["preprocess"]["crop"] == "none" for r in ok)
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 4 and all("test_0_0.png" in r["error"]["message"] and "Traceback" in r["error"]["traceback"] for r in failed)

    again = runner.invoke(main, ["sweep", str(grid), "--results", "res"])
    assert again.exit_code == 0
    assert "0 to run, 8 done, 4 failed before (rerun them with --retry-failed)" in again.output
    assert "nothing to run: all 8 cells already done" in again.output
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "res" / "mini").glob("*.json")}

    (broken / "images" / "test_0_0.png").unlink()
    from .fixtures import colour_image
    import numpy as np

    colour_image(0, np.random.RandomState(0)).save(broken / "images" / "test_0_0.png")
    retry = runner.invoke(main, ["sweep", str(grid), "--results", "res", "--retry-failed"])
    assert "ran 4 cells: 4 ok" in retry.output
    unchanged = [p for p, m in mtimes.items() if p.stat().st_mtime_ns == m]
    assert len(unchanged) == 8  # the finished cells were not touched


def test_run_aggregate_compact_publish(tmp_path):
    out = run_bob("run", "-b", "timm:resnet18.a1_in1k", "-m", "linear", "-t", "digits", "-w", "random",
                  "--set", "img_size=16", "--set", "search.C=[0.1,1.0]", "--out", "res/one")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: top1=") and "random-init weights" in out.stdout
    assert "hyper-parameters chosen on val200" in out.stdout
    record_path = out.stdout.strip().splitlines()[-1].removeprefix("record: ")
    record = json.loads(open(record_path).read())
    assert record["spec"]["hparams"] == {"img_size": 16, "search": {"C": [0.1, 1.0]}}

    grid = _grid(tmp_path)
    assert CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"]).exit_code == 0
    md = CliRunner().invoke(main, ["aggregate", "mini", "--results", "res"])
    assert md.exit_code == 0
    assert "### knn" in md.output and "### linear" in md.output
    assert "| `timm:resnet18.a1_in1k (random-init)` |" in md.output and " ± " in md.output  # 2 seeds -> mean ± std
    csv = CliRunner().invoke(main, ["aggregate", "mini", "--results", "res", "--format", "csv"])
    rows = csv.output.strip().splitlines()
    assert rows[0] == "method,row,task,mean,ci_low,ci_high,n,metric,direction,target,fmt,metric_label,n_deterministic" and len(rows) == 5
    assert all(",2,top1,higher,,.1f," in r for r in rows[1:])  # n = 2 seeds, then the declared metric

    compacted = CliRunner().invoke(main, ["results", "compact", "mini", "--results", "res"])
    assert compacted.exit_code == 0
    df = pd.read_parquet(tmp_path / "res" / "mini.parquet")
    assert len(df) == 8 and set(df["status"]) == {"ok"} and "metric.top1" in df

    pub = CliRunner().invoke(main, ["publish", "mini", "--results", "res", "--name", "mini", "--out", "boards"])
    assert pub.exit_code == 0
    board = (tmp_path / "boards" / "mini" / "leaderboard.md").read_text()
    assert "Random-init weights" in board and "| `timm:resnet18.a1_in1k (random-init)` | cnn | random |" in board
    assert (tmp_path / "boards" / "mini" / "leaderboard.csv").is_file()


def test_missing_tasks_are_shown_as_missing_not_zero(tmp_path):
    from harness.aggregate import aggregate_markdown, records_frame

    store = ResultStore(tmp_path / "s")
    base = {"schema": "bob.run_record/1", "status": "ok", "method": "knn", "seed": 0, "weights": "random", "spec": {"hparams": {}},
            "backbone_meta": {"weights": "pretrained"}, "primary_metric": {"name": "top1"}}
    for i, (bb, task, value) in enumerate([("a", "t1", 80.0), ("a", "t2", 60.0), ("b", "t1", 90.0)]):
        store.write({**base, "id": f"r{i}", "backbone": bb, "task": task, "metrics": {"top1": value}, "primary_metric": {"name": "top1", "value": value}})
    md = aggregate_markdown(records_frame([store]))
    assert "| `a` | 80.0 | 60.0 | 70.0 |" in md
    assert "| `b` | 90.0 | — | — |" in md


def test_auto_cells_that_fell_back_to_random_init_rerun_with_pretrained_weights(tmp_path):
    """`weights: auto` ran random-init offline; once the weights are cached, --retry-fallbacks reruns them."""
    from .fixtures import make_hf_hub_cache

    grid = write_grid(tmp_path / "auto.yaml", "name: auto\nbackbones: [timm:resnet18.a1_in1k]\nweights: auto\nmethods: [knn]\n"
                                              "tasks: [shapes/location]\nhparams:\n  all: {img_size: 16}\n")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    first = run_bob("sweep", str(grid), "--results", "res", env=env)
    assert first.returncode == 0, first.stderr
    (record,) = ResultStore("res/auto").records()
    assert record["status"] == "ok" and record["backbone_meta"]["weights"] == "random-init"

    make_hf_hub_cache(tmp_path / "hub", "timm/resnet18.a1_in1k")  # what `bob prefetch` leaves on a machine with internet
    again = run_bob("sweep", str(grid), "--results", "res", env=env)
    assert "1 cells ran with random-init weights" in again.stdout and "--retry-fallbacks" in again.stdout
    assert "nothing to run" in again.stdout

    retry = run_bob("sweep", str(grid), "--results", "res", "--retry-fallbacks", env=env)
    assert retry.returncode == 0, retry.stderr
    assert "ran 1 cells: 1 ok" in retry.stdout
    (record,) = ResultStore("res/auto").records()
    assert record["backbone_meta"]["weights"] == "pretrained" and record["weights"] == "auto"
    assert "1 cells ran" not in run_bob("sweep", str(grid), "--results", "res", "--dry-run", env=env).stdout


def test_readme_main_job_sweeps_the_quickstart_grid_and_publishes_it(tmp_path):
    """The main job (scripts/quickstart.sh) is `bob sweep grids/quickstart.yaml --publish quickstart`
    on a grid of 18 runnable cells (small backbones x knn/linear/finetune x digits/shapes)."""
    import shlex

    from .conftest import REPO

    command = (REPO / "scripts" / "quickstart.sh").read_text().strip().splitlines()[-1]
    args = shlex.split(command)
    assert args[:3] == [".venv/bin/bob", "sweep", "grids/quickstart.yaml"] and args[args.index("--publish") + 1] == "quickstart"
    dry = CliRunner().invoke(main, ["sweep", str(REPO / "grids" / "quickstart.yaml"), "--results", "res", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "18 cells -> 18 to run, 0 done, 0 failed before, 0 skipped" in dry.output
    assert {"knn", "linear", "finetune"} <= {w for line in dry.output.splitlines() if "would run" in line for w in line.split()}
