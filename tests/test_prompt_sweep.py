"""Prompt learning end to end (#24): the quickstart grid expands as documented, and a sweep of it
(methods and tasks narrowed) runs through the CLI and publishes the prompt-learning tab."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.grid import expand, load_grid

from .conftest import REPO, run_bob, write_grid


def test_quickstart_grid_has_every_method_both_datasets_two_shot_counts_and_two_seeds():
    from harness.prompt.recipes import PROMPT_RECIPES

    grid = load_grid(REPO / "grids" / "prompt_learning.yaml")
    assert set(PROMPT_RECIPES) | {"linear"} <= set(grid.methods) and grid.seeds == [1, 2]
    expansion = expand(grid)
    cells = expansion.cells
    assert {c.task for c in cells} >= {f"coop:{d}?shots={k}" for d in ("toy_colours", "toy_textures") for k in (1, 4)}
    assert all(c.data.get("fewshot_ids") for c in cells) and len({c.id for c in cells}) == len(cells)
    assert {(c.method, c.task) for c, _ in expansion.skipped} == {(m, t) for m in ("linear", "tip_adapter", "tip_adapter_f")
                                                                for t in {c.task for c in cells} if "protocol=" in t}


@pytest.mark.slow
def test_sweep_publishes_the_prompt_learning_tab(tmp_path):
    grid = yaml.safe_load((REPO / "grids" / "prompt_learning.yaml").read_text())
    grid.update(name="pl", methods=["zsclip", "coop", "tip_adapter"], tasks=[t for t in grid["tasks"] if "textures" not in t],
                hparams={"all": {"img_size": 32}, "coop": {"epochs": 2, "batch_size": 8}, "tip_adapter": {"augment_epochs": 1, "beta_steps": 20, "alpha_steps": 5}})
    path = write_grid(tmp_path / "pl.yaml", yaml.safe_dump(grid))
    out = run_bob("sweep", str(path), "--results", str(tmp_path / "results"), "--publish", "pl")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ran 20 cells: 20 ok" in out.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "pl").glob("*.json") if not p.name.startswith(".")]
    coop = [r for r in records if r.get("method") == "coop" and r["status"] == "ok"]
    assert coop and all(r["spec"]["data"] == r["task_meta"]["split_provenance"]["fewshot"]["cell_id_part"] for r in coop)
    assert all(r["adaptation"]["frozen_towers_sha256"]["before"] == r["adaptation"]["frozen_towers_sha256"]["after"] for r in coop)
    board = Path("leaderboards") / "pl"
    md = (board / "leaderboard.md").read_text()
    for title in ("## Base-to-new", "## Accuracy against shots", "## Cross-dataset", "## Trainable parameters and wall time"):
        assert title in md
    assert "HM of average B, N" in md and "mean of per-dataset HM" in md
    assert (board / "prompt_base2new.csv").read_text().startswith("backbone,method,dataset,base,new,hm")
    shots = (board / "prompt_shots.csv").read_text().splitlines()
    assert any(line.split(",")[2:4] == ["average", "4"] for line in shots)
    page = (board / "index.html").read_text()
    assert "prompt learning" in page and "data:image/png;base64," in page
