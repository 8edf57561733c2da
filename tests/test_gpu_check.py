"""bench/gpu_check.py runs on CPU in CI (issue 22), so the GPU check cannot rot before a GPU is at hand."""
import json
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                                            "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = [l for l in proc.stdout.splitlines() if l.startswith("SUMMARY: gpu_check on cpu")]
    assert len(summary) == 1
    figures = json.loads(out.read_text())
    assert set(figures["cells"]) == {"knn", "linear", "finetune", "lora", "detector"}
    assert all(c["status"] == "ok" for c in figures["cells"].values()), figures["cells"]
    assert figures["bf16_vs_fp32"]["max_rel_loss_diff"] < 0.05 and figures["checks"]["every_family_ran"]
    assert figures["throughput"]["extract_ratio"] > 0 and figures["throughput"]["train_ratio"] > 0
    assert figures["ddp"]["world_sizes"][0] == 1 and figures["ddp"]["backend"] == "gloo" and figures["ddp"]["speedup"] > 0
