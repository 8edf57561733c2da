"""Detection methods (#13): detector / ov_detector / ov_zeroshot on LVIS-format data, end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import BobError
from harness.registry import BACKBONES, METHODS
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

from .conftest import REPO, run_bob

SMALL_DETECTOR = {"img_size": 96, "epochs": 1, "lr": 1e-3, "batch_size": 8, "fpn_channels": 32, "box_head_dim": 64, "rois_per_image": 32, "proposals": 100}


def make_mini_lvis(tmp_path: Path, n_train: int = 24, n_val: int = 8) -> tuple[Path, Path, Path]:
    """A small LVIS set cut from the generated shapes (real json + PNG files)."""
    from tasks.detection_shapes import ensure_shapes_dataset

    root = ensure_shapes_dataset()
    out = []
    for split, n in (("train", n_train), ("val", n_val)):
        data = json.loads((root / f"{split}.json").read_text())
        data["images"] = data["images"][:n]
        keep = {img["id"] for img in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        path = tmp_path / f"mini_{split}.json"
        path.write_text(json.dumps(data))
        out.append(path)
    return out[0], out[1], root


def mini_task(tmp_path: Path) -> str:
    train, val, images = make_mini_lvis(tmp_path)
    return f"lvis:{val}@{images}?train={train}"


def make_tiny_owl(folder: Path) -> Path:
    from transformers import OwlViTConfig

    OwlViTConfig(text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16},
                 vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "image_size": 64, "patch_size": 16},
                 projection_dim=32).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_detection_grid_trains_and_is_published(tmp_path):
    """grids/detection.yaml through `bob sweep --publish`: random-init backbones reach an AP clearly above
    zero on the generated shapes, scored by the lvis evaluator, and the leaderboard has the detection table."""
    out = run_bob("sweep", str(REPO / "grids" / "detection.yaml"), "--results", str(tmp_path / "results"), "--workers", "2", "--publish", "det")
    assert out.returncode == 0, out.stdout + out.stderr
    records = list(ResultStore(tmp_path / "results" / "detection").records())
    assert len(records) == 2 and all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    cnn = next(r for r in records if "resnet18" in r["backbone"])
    assert cnn["metrics"]["AP"] > 0.2 and cnn["metrics"]["AP50"] > 0.5  # random init, 3 epochs: it learned to detect
    assert {"APr", "APc", "APf", "fixed_AP", "AR@300"} <= set(cnn["metrics"]) and cnn["primary_metric"]["name"] == "AP"
    assert cnn["adaptation"]["freeze"] == "none" and cnn["protocol"]["evaluator"] == "lvis"
    detections = json.loads(Path(cnn["artifacts"]["detections.json"]).read_text())  # the official results format, beside the record
    assert detections and set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    board = (tmp_path / "leaderboards" / "det" / "leaderboard.md").read_text()
    assert "Detection" in board and "| APr |" in board and "fixed AP" in board and "timm:vit_tiny_patch16_224" in board
    assert "lower" not in board.split("## Per task")[1].split("##")[0]  # AP is higher-is-better


def test_pyramids_and_freeze_settings():
    import torch

    from harness.detect.build import apply_freeze
    from harness.detect.pyramid import PyramidBackbone

    cnn = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", img_size=64).model
    vit = BACKBONES.get("timm:vit_tiny_patch16_224").factory(weights="random", img_size=64).model
    clip = BACKBONES.get("openclip:ViT-S-32").factory(weights="random", img_size=64).model
    for encoder, layout, strides in ((cnn, "fpn", [4, 8, 16, 32]), (vit, "simple", [4, 8, 16, 32]), (clip, "simple", [8, 16, 32, 64])):
        pyramid = PyramidBackbone(encoder, 64, 16)
        assert pyramid.layout == layout and pyramid.strides == strides
        maps = pyramid(torch.zeros(2, 3, 64, 64))
        assert [m.shape[-1] for m in maps.values()] == [max(1, 64 // s) for s in strides] and all(m.shape[1] == 16 for m in maps.values())
    assert apply_freeze(cnn, "all") == [] and not any(p.requires_grad for p in cnn.parameters())
    last = apply_freeze(vit, "stages:1")
    assert last and all(n.startswith("blocks.11.") for n in last)
    assert {n for n, p in vit.named_parameters() if p.requires_grad} == set(last)
    with pytest.raises(BobError, match="freeze='some'"):
        METHODS.get("detector").factory().resolve_hparams({"freeze": "some"})


def test_frozen_backbone_detector_trains_only_the_detection_head(tmp_path):
    task = mini_task(tmp_path)
    record = run_cell(RunSpec("timm:resnet18.a1_in1k", "detector", task, 0, "random", {**SMALL_DETECTOR, "freeze": "all", "masks": True}),
                      ResultStore(tmp_path / "r"))
    assert record["status"] == "ok", record["error"]
    assert record["adaptation"]["trainable_backbone_params"] == 0 and record["adaptation"]["trainable_params"] > 0
    assert "mask_AP" in record["metrics"]  # Mask R-CNN: masks scored by the evaluator too (iou_type segm)
    detections = json.loads(Path(record["artifacts"]["detections.json"]).read_text())
    assert all(isinstance(d["segmentation"], dict) for d in detections[:5])


def test_open_vocabulary_detector_and_owl_zero_shot_run_offline(tmp_path):
    task = mini_task(tmp_path)
    ov = run_cell(RunSpec("openclip:ViT-S-32", "ov_detector", task, 0, "random", SMALL_DETECTOR), ResultStore(tmp_path / "r"))
    assert ov["status"] == "ok", ov["error"]
    assert ov["protocol"]["open_vocabulary"] and ov["protocol"]["trained_categories"] == 4 and ov["protocol"]["novel_categories"] == 2
    assert "APr" in ov["metrics"]  # the novel-class result
    owl = make_tiny_owl(tmp_path / "owl-tiny")
    zs = run_cell(RunSpec(f"hf-owl:{owl}", "ov_zeroshot", task, 0, "random", {}), ResultStore(tmp_path / "r"))
    assert zs["status"] == "ok", zs["error"]
    assert zs["metrics"]["n_detections"] == 8 * min(300, 16 * 6) and zs["protocol"]["protocol"].startswith("scenic")  # 4x4 patch boxes x 6 classes
    assert zs["backbone_meta"]["weights"] == "random-init"
    skipped = run_cell(RunSpec("timm:resnet18.a1_in1k", "ov_detector", task, 0, "random", {}), None)
    assert skipped["status"] == "skipped" and "text tower" in skipped["error"]["message"]
    no_owl = run_cell(RunSpec("openclip:ViT-S-32", "ov_zeroshot", task, 0, "random", {}), None)
    assert no_owl["status"] == "skipped"


def test_scenic_top_k_ranks_box_class_pairs_not_argmax_classes():
    import numpy as np

    from harness.methods.detector import scenic_top_k

    scores = np.array([[0.9, 0.8, 0.1], [0.3, 0.2, 0.7]])  # box 0 is good for two classes
    assert scenic_top_k(np.zeros((2, 4)), scores, 3) == [(0, 0, 0.9), (0, 1, 0.8), (1, 2, 0.7)]


def test_evaluation_only_set_and_bad_detection_input_are_one_line(tmp_path):
    train, val, images = make_mini_lvis(tmp_path)
    out = run_bob("run", "-b", "timm:resnet18.a1_in1k", "-m", "detector", "-t", f"lvis:{val}@{images}", "-w", "random")
    assert out.returncode != 0 and "has no training split" in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr
    bad = json.loads(val.read_text())
    bad["annotations"][0]["bbox"] = [90, 90, 30, 30]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = run_bob("run", "-b", "timm:resnet18.a1_in1k", "-m", "detector", "-t", f"lvis:{tmp_path / 'bad.json'}@{images}", "-w", "random")
    text = out.stdout + out.stderr
    assert "annotations[0]: bbox [90, 90, 30, 30] lies outside image" in text and str(tmp_path / "bad.json") in text
    out = run_bob("run", "-b", "timm:resnet18.a1_in1k", "-m", "detector", "-t", f"lvis:{val}@{tmp_path / 'nowhere'}", "-w", "random")
    assert "image folder" in out.stdout + out.stderr and "does not exist" in out.stdout + out.stderr


def test_a_subset_by_image_ids_is_evaluated_alone(tmp_path):
    from harness.registry import TASKS

    train, val, images = make_mini_lvis(tmp_path)
    ids = [img["id"] for img in json.loads(val.read_text())["images"]][:3]
    (tmp_path / "ids.txt").write_text("\n".join(map(str, ids)))
    task = TASKS.get(f"lvis:{val}@{images}?train={train}&image_ids={tmp_path / 'ids.txt'}").factory()
    assert [i["id"] for i in task.split("val").gt["images"]] == ids and len(task.split("train").gt["images"]) == 24
    assert {a["image_id"] for a in task.split("val").gt["annotations"]} <= set(ids)
    (tmp_path / "bad.txt").write_text("1 2 3")
    with pytest.raises(BobError, match="image id 1 of the subset is not in"):
        TASKS.get(f"lvis:{val}@{images}?image_ids={tmp_path / 'bad.txt'}").factory()


def test_owl_weights_resolve_before_building(tmp_path):
    """A model folder with weights loads them (pretrained); a config-only folder is random init under
    auto (and says so) and an error under pretrained: decided up front, so the cache key is honest."""
    import torch
    from transformers import OwlViTForObjectDetection

    config_only = make_tiny_owl(tmp_path / "config-only")
    auto = BACKBONES.get(f"hf-owl:{config_only}").factory(weights="auto")
    assert auto.meta["weights"] == "random-init" and "fell back to random init" in auto.meta["weights_note"] and "random-init" in auto.cache_key
    with pytest.raises(BobError, match="holds no weights"):
        BACKBONES.get(f"hf-owl:{config_only}").factory(weights="pretrained")
    from transformers import OwlViTConfig

    torch.manual_seed(3)
    model = OwlViTForObjectDetection(OwlViTConfig.from_pretrained(config_only)).eval()
    model.save_pretrained(tmp_path / "with-weights")
    loaded = BACKBONES.get(f"hf-owl:{tmp_path / 'with-weights'}").factory(weights="pretrained")
    assert loaded.meta["weights"] == "pretrained" and "|folder:" in loaded.cache_key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.owlvit.get_image_features(pixel_values=x)
        expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
