"""zeroshot on the ImageNet family (issue 21): CLIP's 1000 ImageNet class names and its 80 templates
from open_clip's packaged metadata; ImageNet-R/-A scored within their 200 classes."""
from __future__ import annotations

import pytest

from harness.plugins import load_plugins
from harness.runner import run_cell
from harness.spec import RunSpec


@pytest.mark.slow
def test_zeroshot_on_imagenet_sets_with_clip_names_and_80_templates():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    from tasks.shift.imagenet import imagenet_class_text

    names, templates, source = imagenet_class_text()
    assert names == list(IMAGENET_CLASSNAMES) and len(templates) == 80
    assert templates == [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES] and "open_clip" in source
    load_plugins()
    record = run_cell(RunSpec(backbone="openclip:bob-tiny-clip", method="zeroshot", task="shift/imagenet_toy", weights="random", seed=0,
                              hparams={"img_size": 32}), device="cpu")
    assert record["status"] == "ok", record["error"]
    m, protocol = record["metrics"], record["protocol"]
    assert protocol["templates"] == 80 and "open_clip.zero_shot_metadata" in protocol["class_names_source"]
    for which in ("r", "a"):
        assert m[f"imagenet_{which}/top1"] >= m[f"imagenet_{which}/top1_all"]
        assert next(s for s in protocol["eval_sets"] if s["name"] == f"imagenet_{which}")["classes_scored"] == 200
    assert {"imagenet_v2_mf/top1", "imagenet_sketch/top5", "real/top1", "ood_top1", "id_ood_gap"} <= set(m)
    assert record["primary_metric"]["name"] == "ood_top1"
