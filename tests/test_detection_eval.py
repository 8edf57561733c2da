"""LVIS / COCO scoring through the official evaluators (#13 acceptance 1) and annotation checks (5)."""
from __future__ import annotations

import copy
import json

import pytest

from harness.errors import BobError
from tasks.lvis import evaluate_coco, evaluate_lvis, fixed_ap, load_detection_json, open_vocabulary_split


def synthetic_lvis() -> dict:
    """3 images, 4 categories (r, c, f, f). Image 1: a 'cat' (c) and a 'dog' (f); image 2: a 'yak' (r);
    image 3: a 'dog'. Federated labels: image 1 says 'yak' is absent (negative) and 'emu' is not
    exhaustively annotated; image 2 says 'dog' is absent."""
    cats = [{"id": 1, "name": "cat", "frequency": "c"}, {"id": 2, "name": "dog", "frequency": "f"},
            {"id": 3, "name": "yak", "frequency": "r"}, {"id": 4, "name": "emu", "frequency": "f"}]
    images = [
        {"id": 1, "width": 100, "height": 100, "file_name": "1.jpg", "neg_category_ids": [3], "not_exhaustive_category_ids": [4]},
        {"id": 2, "width": 100, "height": 100, "file_name": "2.jpg", "neg_category_ids": [2], "not_exhaustive_category_ids": []},
        {"id": 3, "width": 100, "height": 100, "file_name": "3.jpg", "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ]
    boxes = [(1, 1, [10, 10, 30, 30]), (1, 2, [50, 50, 40, 40]), (2, 3, [20, 20, 50, 50]), (3, 2, [5, 5, 60, 60]), (1, 4, [60, 5, 30, 20])]
    anns = [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]]}
            for i, (im, c, b) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": cats}


def as_detections(gt: dict, score: float = 0.9) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score} for a in gt["annotations"]]


def test_ground_truth_as_detections_scores_one_and_groups_split_by_frequency():
    gt = synthetic_lvis()
    m = evaluate_lvis(gt, as_detections(gt))
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert m["APr"] == pytest.approx(1.0) and m["APc"] == pytest.approx(1.0) and m["APf"] == pytest.approx(1.0)
    # drop the rare category's detection: only APr falls
    no_yak = [d for d in as_detections(gt) if d["category_id"] != 3]
    m = evaluate_lvis(gt, no_yak)
    assert m["APr"] == pytest.approx(0.0) and m["APc"] == pytest.approx(1.0) and m["APf"] == pytest.approx(1.0)
    assert m["AP"] == pytest.approx(3 / 4)


def test_federated_labels_decide_which_false_positives_count():
    gt = synthetic_lvis()
    base = as_detections(gt, 0.5)

    def ap_with(extra):
        return evaluate_lvis(gt, base + [extra])

    fp = {"bbox": [70, 70, 20, 20], "score": 0.99}
    negative = ap_with({"image_id": 2, "category_id": 2, **fp})          # 'dog' is in image 2's negative set: counts
    assert negative["APf"] < 1.0 and negative["AP"] < 1.0
    unknown = ap_with({"image_id": 3, "category_id": 1, **fp})           # 'cat' in neither set of image 3: not evaluated
    assert unknown["AP"] == pytest.approx(1.0)
    not_exhaustive = ap_with({"image_id": 1, "category_id": 4, **fp})    # unmatched 'emu' in image 1 (not exhaustive): ignored
    assert not_exhaustive["AP"] == pytest.approx(1.0)


def test_zero_detections_give_zero_ap_and_empty_groups_are_missing():
    gt = synthetic_lvis()
    m = evaluate_lvis(gt, [])
    assert m["AP"] == 0.0 and m["APr"] == 0.0
    no_rare = copy.deepcopy(gt)
    no_rare["categories"] = [c for c in no_rare["categories"] if c["frequency"] != "r"]
    no_rare["annotations"] = [a for a in no_rare["annotations"] if a["category_id"] != 3]
    for img in no_rare["images"]:
        img["neg_category_ids"] = [c for c in img["neg_category_ids"] if c != 3]
    assert evaluate_lvis(no_rare, [])["APr"] is None
    assert evaluate_lvis(no_rare, as_detections(no_rare))["APr"] is None  # not -1
    assert evaluate_coco(no_rare, [])["AP"] == 0.0


def test_fixed_ap_differs_where_the_per_image_cap_bites():
    gt = synthetic_lvis()
    dets = as_detections(gt, 0.5)
    # image 1: 300 confident 'emu' detections (not exhaustive there: ignored as false positives) push
    # the true 'cat' and 'dog' out of the 300-per-image budget of standard AP, but not out of fixed AP
    dets += [{"image_id": 1, "category_id": 4, "bbox": [60 + (i % 5), 5, 30, 20], "score": 0.9 + i * 1e-5} for i in range(300)]
    standard = evaluate_lvis(gt, dets)
    fixed = fixed_ap(gt, dets)
    assert standard["APc"] == pytest.approx(0.0)  # the only 'cat' detection was cut by the cap
    assert fixed["fixed_APc"] == pytest.approx(1.0) and fixed["fixed_AP"] > standard["AP"]


def test_coco_scoring_through_pycocotools():
    gt = synthetic_lvis()
    m = evaluate_coco(gt, as_detections(gt))
    assert m["AP"] == pytest.approx(1.0)
    shifted = [{**d, "bbox": [d["bbox"][0] + d["bbox"][2] * 0.4, d["bbox"][1], d["bbox"][2], d["bbox"][3]]} for d in as_detections(gt)]
    partial = evaluate_coco(gt, shifted)  # IoU ~0.43: no match at any threshold >= 0.5
    assert partial["AP"] == pytest.approx(0.0) and partial["AP50"] == pytest.approx(0.0)


def test_open_vocabulary_split_marks_rare_as_novel():
    base, novel = open_vocabulary_split(synthetic_lvis())
    assert novel == [3] and base == [1, 2, 4]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("annotations"), "not an LVIS annotation file"),
    (lambda d: d["annotations"][0].update(category_id=99), "annotations[0] has unknown category id 99"),
    (lambda d: d["annotations"][1].update(bbox=[80, 80, 40, 40]), "annotations[1]: bbox [80, 80, 40, 40] lies outside image 1 (100x100)"),
    (lambda d: d["annotations"][2].update(image_id=7), "annotations[2] refers to unknown image id 7"),
    (lambda d: d["images"][0].pop("neg_category_ids"), "images[0] (id 1) needs 'neg_category_ids'"),
    (lambda d: d["categories"][0].update(frequency="x"), "categories[0] (cat) has frequency 'x'"),
])
def test_bad_annotations_are_one_line_errors_naming_file_and_entry(tmp_path, mutate, message):
    data = synthetic_lvis()
    mutate(data)
    path = tmp_path / "lvis_v1_val.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BobError) as err:
        load_detection_json(path, "lvis")
    assert str(path) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_missing_images_are_one_line_errors(tmp_path):
    from tasks.lvis import image_paths

    data = synthetic_lvis()
    (tmp_path / "1.jpg").write_bytes(b"x")
    with pytest.raises(BobError, match=r"images\[1\]: image .*2.jpg does not exist \(2 of 3 missing\)"):
        image_paths(data, tmp_path, "lvis_v1_val.json")
