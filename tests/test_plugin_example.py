"""The README's 'add a backbone' example works as written (extracted from README.md and executed)."""
import re
from pathlib import Path

from harness.registry import BACKBONES
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_backbone_example_registers_and_runs(tmp_path):
    block = re.search(r"\*\*A backbone\*\*.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    try:
        exec(compile(block, "README.md", "exec"), {})
        assert "mine:tiny_cnn" in BACKBONES.names()
        record = run_cell(RunSpec("mine:tiny_cnn", "knn", "digits", 0, "random", {"img_size": 16}), ResultStore(tmp_path / "s"))
        assert record["status"] == "ok", record["error"]
        assert record["metrics"]["top1"] > 10.0 and record["backbone_meta"]["feature_dim"] == 32
    finally:
        BACKBONES._entries.pop("mine:tiny_cnn", None)
