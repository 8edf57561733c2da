"""bob publish: the leaderboard folder, the page in a real browser, and wandb offline runs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.store import ResultStore

from .conftest import write_grid
from .wandb_files import summarise_run

BACKBONES = {"timm:a_small": (5.0, "cnn"), "timm:b_mid": (22.0, "vit"), "timm:c_big": (86.0, "vit"), "timm:d_partial": (40.0, "swin")}


def _records(folder: Path) -> ResultStore:
    store = ResultStore(folder / "board")
    scores = {"timm:a_small": 60, "timm:b_mid": 70, "timm:c_big": 80, "timm:d_partial": 75}
    i = 0
    for bb, (params, family) in BACKBONES.items():
        for task, offset in (("digits", 0), ("shapes/location", -10), ("vtab1k/dtd", -20)):
            if bb == "timm:d_partial" and task != "digits":
                continue
            for seed in (0, 1, 2):
                value = scores[bb] + offset + seed
                store.write({"schema": "bob.run_record/1", "id": f"r{i}", "sweep": "board", "status": "ok", "backbone": bb, "method": "linear",
                             "task": task, "seed": seed, "weights": "pretrained", "spec": {"hparams": {}}, "hparams": {"img_size": 32},
                             "metrics": {"top1": value}, "primary_metric": {"name": "top1", "value": value},
                             "backbone_meta": {"weights": "pretrained", "family": family, "pretrain_method": "supervised", "pretrain_data": "ImageNet-1k",
                                               "params_m": params, "gflops": params / 3},
                             "task_meta": {"group": "vtab1k/natural" if task.startswith("vtab1k") else "builtin"},
                             "protocol": {"selected_on": "val200", "tuned_on": "train800", "final_train_split": "train800val200", "reported_on": "test"}})
                i += 1
    store.write({"schema": "bob.run_record/1", "id": "f1", "sweep": "board", "status": "failed", "backbone": "timm:c_big", "method": "linear",
                 "task": "digits", "seed": 9, "weights": "pretrained", "spec": {"hparams": {"lr": 9}}, "metrics": {},
                 "error": {"type": "NonFiniteLossError", "message": "loss became nan", "traceback": "Traceback ..."}})
    return store


@pytest.fixture
def board(tmp_path):
    store = _records(tmp_path)
    result = CliRunner().invoke(main, ["publish", str(store.folder), "--name", "demo", "--out", str(tmp_path / "leaderboards")])
    assert result.exit_code == 0, result.output
    return tmp_path / "leaderboards" / "demo"


def test_publish_writes_every_artifact(board):
    names = {p.name for p in board.iterdir()}
    assert {"index.html", "leaderboard.md", "leaderboard.csv", "results.parquet", "table.tex", "METHODOLOGY.md",
            "score_vs_params.png", "score_vs_gflops.png", "rank_heatmap.png"} <= names
    for png in board.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = (board / "leaderboard.md").read_text()
    assert "## linear: overall" in md and "| 1 | `timm:c_big` |" in md
    assert "| `timm:d_partial` |" in md and "1/3 *" in md and "excluded, never zero" in md
    assert "loss became nan" in md  # failed cells are listed, not hidden
    tex = (board / "table.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"timm:c\_big & \textbf{" in tex
    csv = pd.read_csv(board / "leaderboard.csv")
    assert {"mean", "ci_low", "ci_high", "n", "z", "rank"} <= set(csv.columns)
    row = csv[(csv["row"] == "timm:b_mid") & (csv["task"] == "digits")].iloc[0]
    assert row["mean"] == 71.0 and row["n"] == 3 and 70.0 <= row["ci_low"] < 71.0 < row["ci_high"] <= 72.0
    assert len(pd.read_parquet(board / "results.parquet")) == 31
    method = (board / "METHODOLOGY.md").read_text()
    assert "z = (g - mean) / std" in method and "higher is better" in method and "bootstrap" in method and "train800val200" in method
    page = (board / "index.html").read_text()
    assert "<script src" not in page and "<link rel=\"stylesheet\"" not in page and "http://" not in page and "https://" not in page


def _chrome():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium not installed (Debian packages chromium and chromium-driver; scripts/test.sh installs them as root)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run", "--window-size=1300,800"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_page_in_headless_chromium(board, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _chrome()
    try:
        driver.get((board / "index.html").resolve().as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#board tbody tr.data-row")
        assert len(rows) == len(BACKBONES)  # one row per backbone
        assert [r.get_attribute("data-backbone") for r in rows][0] == "timm:c_big"  # default: by BoB score

        def column(key):
            headers = [th.get_attribute("data-key") for th in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
            idx = headers.index(key) + 1
            return [float(td.get_attribute("data-value")) for td in driver.find_elements(By.CSS_SELECTOR, f"#board tbody tr td:nth-child({idx})")]

        driver.find_element(By.CSS_SELECTOR, 'th[data-key="params"]').click()
        assert column("params") == sorted(column("params"), reverse=True)
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="params"]').click()
        assert column("params") == [5.0, 22.0, 40.0, 86.0]

        driver.find_element(By.ID, "filter").send_keys("vit")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#board tbody tr.data-row")) == 2
        from selenium.webdriver.common.keys import Keys

        driver.find_element(By.ID, "filter").send_keys(Keys.BACKSPACE * 3)  # typing fires the page's input handler
        assert len(driver.find_elements(By.CSS_SELECTOR, "#board tbody tr.data-row")) == len(BACKBONES)

        tab = next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button") if b.text == "vtab1k")
        tab.click()
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
        assert headers[:2] == ["backbone", "dtd"] and "mean" in headers[-1]
        partial = driver.find_element(By.CSS_SELECTOR, 'tr[data-backbone="timm:d_partial"] td:nth-child(2)')
        assert partial.text == "—"
        cell = driver.find_element(By.CSS_SELECTOR, 'tr[data-backbone="timm:b_mid"] td:nth-child(2)')
        assert cell.text.startswith("51.0 ± ")  # mean over 3 seeds with its interval
        driver.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").stat().st_size > 10000

        requests = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    finally:
        driver.quit()


@pytest.mark.slow
def test_wandb_offline_runs_carry_config_metrics_and_summary_table(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    grid = write_grid(tmp_path / "g.yaml", "name: wb\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn, finetune]\ntasks: [digits]\n"
                      "hparams:\n  all: {img_size: 16}\n  finetune: {epochs: 2}\n")
    result = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res", "--publish", "wb", "--wandb", "bob-test"])
    assert result.exit_code == 0, result.output
    runs = [summarise_run(p) for p in sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))]
    assert len(runs) == 3
    records = {r["method"]: r for r in ResultStore(tmp_path / "res" / "wb").records()}
    cells = {r["job_type"]: r for r in runs if r["job_type"] != "leaderboard"}
    assert set(cells) == {"knn", "finetune"}
    ft = cells["finetune"]
    assert ft["group"] == "wb" and "timm:resnet18.a1_in1k" in ft["tags"] and "digits" in ft["tags"]
    assert ft["config"]["backbone"] == "timm:resnet18.a1_in1k" and ft["config"]["hparams"] == {"img_size": 16, "epochs": 2}
    assert ft["config"]["cell_id"] == records["finetune"]["id"]
    losses = [h["train800val200/loss"] for h in ft["history"] if "train800val200/loss" in h]
    assert losses == pytest.approx([p["train_loss"] for p in records["finetune"]["curves"]["train"]])
    assert ft["summary"]["final/top1"] == pytest.approx(records["finetune"]["metrics"]["top1"])
    assert cells["knn"]["summary"]["final/top1"] == pytest.approx(records["knn"]["metrics"]["top1"])
    (board,) = [r for r in runs if r["job_type"] == "leaderboard"]
    table_files = list((tmp_path / "wandb").glob("offline-run-*/files/media/table/leaderboard_*.table.json"))
    assert len(table_files) == 1
    table = json.loads(table_files[0].read_text())
    assert table["columns"][:3] == ["method", "row", "score"] and len(table["data"]) == 2
    assert any(k.startswith("plots/") for k in board["summary"])


def test_without_wandb_installed_the_run_goes_on(tmp_path):
    code = (
        "import sys; sys.modules['wandb'] = None\n"  # makes `import wandb` raise ImportError
        "from click.testing import CliRunner\nfrom harness.cli import main\n"
        "r = CliRunner().invoke(main, ['run', '-b', 'timm:resnet18.a1_in1k', '-m', 'knn', '-t', 'digits', '-w', 'random', '--set', 'img_size=16', '--wandb', 'p', '--out', 'o'])\n"
        "print('EXIT', r.exit_code); print(r.output)\n"
    )
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, cwd=tmp_path, env={**os.environ})
    assert "EXIT 0" in proc.stdout and "ok: top1=" in proc.stdout
    assert "wandb is not installed" in proc.stdout + proc.stderr


def republish_committed(name: str, tmp_path: Path) -> tuple[Path, list[dict]]:
    """leaderboards/NAME/results.parquet holds every full record: write them into a store and publish it."""
    from harness.leaderboard import publish
    from tests.conftest import REPO

    store = ResultStore(tmp_path / "res" / name)
    records = [json.loads(text) for text in pd.read_parquet(REPO / "leaderboards" / name / "results.parquet")["record_json"]]
    for record in records:
        store.write(record)
    return publish([store], name, tmp_path / "boards"), records


@pytest.mark.slow
def test_methods_tab_compares_adaptation_methods_in_headless_chromium(tmp_path):
    """The published PEFT records (leaderboards/peft/results.parquet holds every full record):
    the page's Methods tab puts all methods side by side with their % trainable parameters."""
    from selenium.webdriver.common.by import By

    board, records = republish_committed("peft", tmp_path)
    methods = {record["method"] for record in records}
    driver = _chrome()
    try:
        driver.get((board / "index.html").resolve().as_uri())
        next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button") if b.get_attribute("data-tab") == "methods").click()
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
        assert headers[0] == "method · backbone" and headers[-2:] == ["mean", "% trainable (with head)"]
        rows = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")]
        # one row per (method, backbone) of the published records; the committed board has one backbone
        assert {r[0].split(" · ")[0] for r in rows} == methods >= {"lora", "vpt_deep", "ssf", "finetune", "linear"}
        assert len(rows) == len(methods)
        means = [float(r[-2]) for r in rows]
        assert means == sorted(means, reverse=True)  # best first
        trainable = {r[0].split(" · ")[0]: float(r[-1]) for r in rows}
        assert trainable["finetune"] > 100 > trainable["partial"] > trainable["lora"] > trainable["vpt_shallow"] > 0
    finally:
        driver.quit()


@pytest.mark.slow
def test_detection_tab_shows_sub_metrics_beside_ap_in_headless_chromium(tmp_path):
    """The published detection records: the detection tab has AP per task and, beside it, the suite's
    declared sub-metrics (APr, APc, APf, AP50, fixed AP); the mean column averages AP only."""
    from selenium.webdriver.common.by import By

    board, records = republish_committed("detection", tmp_path)
    driver = _chrome()
    try:
        driver.get((board / "index.html").resolve().as_uri())
        next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button") if b.get_attribute("data-tab") == "detection").click()
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
        assert headers[1] == "shapes" and {"shapes · APr", "shapes · APc", "shapes · APf", "shapes · AP50", "shapes · fixed AP"} <= set(headers)
        assert headers[-1] == "mean"  # one primary metric (AP): a plain mean, not a mean z over mixed metrics
        for record in records:
            row = driver.find_element(By.CSS_SELECTOR, f'tr[data-backbone="{record["backbone"]} (random-init)"]')
            cells = dict(zip(headers, [td.text for td in row.find_elements(By.CSS_SELECTOR, "td")]))
            assert cells["shapes"] == cells["mean"] == f"{record['metrics']['AP']:.3f}"
            assert cells["shapes · APr"] == f"{record['metrics']['APr']:.3f}"
    finally:
        driver.quit()
