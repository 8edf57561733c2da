"""Prompt learning's domain-generalisation protocol (#24 with #21's readers): 16-shot-style ImageNet
training, evaluation on ImageNetV2 / -Sketch / -A / -R. Tiny random-init open_clip config on the
generated ImageNet family (tasks/shift/generate.py: all 1000 wnid folders, four with images)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.errors import BobError
from harness.grid import Grid, expand
from harness.prompt.sets import masked_top1
from harness.runner import run_cell
from tasks.shift.generate import populated_classes, write_imagenet_family
from tasks.shift.imagenet import subset_mask, synsets

TASK = "coop:imagenet?shots=2&protocol=dg"
TARGETS = ("imagenet_v2_mf", "imagenet_sketch", "imagenet_a", "imagenet_r")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_imagenet_family(tmp_path_factory.mktemp("dg") / "data")


def _cell(method: str, root: Path, hp: dict | None = None):
    paths = {"shift/imagenet": str(root)}
    grid = Grid("t", [("openclip:bob-tiny-clip", "random")], [method], [TASK], [0], {method: {"img_size": 32, **(hp or {})}}, data_paths=paths)
    cells = expand(grid).cells
    assert cells, f"{method} x {TASK} was skipped"
    record = run_cell(cells[0], data_paths=paths, device="cpu", log=lambda s: None)
    assert record["status"] == "ok", record.get("error")
    return record


def _poison_targets(src: Path, dst: Path) -> None:
    """Every target image moved to another populated class's folder: its label changes."""
    shutil.copytree(src, dst)
    classes = populated_classes()
    wn = synsets()
    folders = {"imagenetv2-matched-frequency-format-val": [str(c) for c in classes], "sketch": [wn[c] for c in classes],
               "imagenet-a": [wn[c] for c in classes], "imagenet-r": [wn[c] for c in classes]}
    for folder, names in folders.items():
        moves = [(dst / folder / a, dst / folder / b) for a, b in zip(names, names[1:] + names[:1])]
        staged = []
        for a, b in moves:
            for f in sorted(a.iterdir()):
                tmp = b.parent / f"{f.name}.{a.name}.tmp"
                f.rename(tmp)
                staged.append((tmp, b / f"from_{a.name}_{f.name}"))
        for tmp, target in staged:
            tmp.rename(target)


@pytest.mark.slow
def test_coop_and_zsclip_report_every_target_and_training_never_reads_target_labels(tree, tmp_path):
    zs = _cell("zsclip", tree)
    for name in TARGETS:
        assert f"{name}_top1" in zs["metrics"] and zs["metrics"][f"n_{name}"] == 8, name
    assert {"source_top1", "target_mean_top1"} <= set(zs["metrics"])
    assert zs["primary_metric"]["name"] == "target_mean_top1"
    # A and R: masked (200 classes, the papers' number) and strict (1000); masking can only help
    for name in ("imagenet_a", "imagenet_r"):
        assert zs["metrics"][f"{name}_top1"] >= zs["metrics"][f"{name}_top1_all"]
        assert f"{name}_top1_all" in zs["metric_specs"]
    assert "imagenet_v2_mf_top1_all" not in zs["metrics"]
    assert zs["metrics"]["target_mean_top1"] == pytest.approx(np.mean([zs["metrics"][f"{t}_top1"] for t in TARGETS]))
    prov = zs["task_meta"]["split_provenance"]
    assert prov["targets"]["imagenet_r"]["class_mask"].endswith("imagenet_r_indices.txt") and prov["targets"]["imagenet_r"]["classes"] == 200
    assert prov["fewshot"]["counts"] == {"train": 8, "val": 8}  # 4 populated classes x 2 shots; val carved from the rest of train

    poisoned = tmp_path / "poisoned"
    _poison_targets(tree, poisoned)
    hp = {"epochs": 2, "batch_size": 4, "n_ctx": 4}
    clean, dirty = _cell("coop", tree, hp), _cell("coop", poisoned, hp)
    for name in TARGETS:
        assert f"{name}_top1" in clean["metrics"], name
    assert clean["curves"]["train"] == dirty["curves"]["train"]
    for key in ("source_top1", "final_train_loss"):
        assert clean["metrics"][key] == dirty["metrics"][key], key

    # the DG table: source + each target (papers' order) + their mean; not mixed into the cross-dataset table
    from tasks.prompt_learning.tables import cross_table, rows_of

    targets, table = cross_table(rows_of([zs, clean]), "dg")
    assert targets == list(TARGETS) and {r["method"] for r in table} == {"zsclip", "coop"}
    row = next(r for r in table if r["method"] == "coop")
    assert row["source_top1"] == clean["metrics"]["source_top1"] and row["imagenet_r"] == clean["metrics"]["imagenet_r_top1"]
    assert cross_table(rows_of([zs, clean])) == ([], [])


def test_masks_are_applied_to_predictions():
    # hand logits over 1000 classes: the top class is outside R's 200, the second inside and correct
    r = subset_mask("r")
    outside = next(c for c in range(1000) if c not in set(r))
    logits = np.zeros((2, 1000), np.float32)
    logits[:, outside] = 5.0
    logits[0, r[3]] = 4.0
    logits[1, r[7]] = 4.0
    masked, strict = masked_top1(logits, np.array([r[3], r[5]]), r)
    assert (masked, strict) == (50.0, 0.0)
    assert masked_top1(logits, np.array([outside, r[5]]), None) == (50.0, None)


def test_dg_task_uses_issue_21_masks_and_rejects_other_datasets(tree):
    from tasks.prompt_learning.task import build_coop_task, parse_coop_id

    task = build_coop_task(TASK, None, {"shift/imagenet": str(tree)})
    sets = {s.name: s for s in task.prompt_sets}
    assert set(sets) == {"imagenet", *TARGETS}
    assert sets["imagenet_a"].label_mask == subset_mask("a") and sets["imagenet_r"].label_mask == subset_mask("r")
    assert sets["imagenet_sketch"].label_mask is None and all(len(s.class_names) == 1000 for s in sets.values())
    assert {s.label for s in task.load("imagenet_r").samples} <= set(subset_mask("r"))
    with pytest.raises(BobError, match="protocol=dg trains on ImageNet"):
        parse_coop_id("coop:dtd?shots=16&protocol=dg")
