"""VisDA-2017 (Synthetic -> Real classification) and Sim10k -> Cityscapes (car detection), read from
files in the datasets' released layouts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tasks.shift.sim10k as sim10k  # registers the tasks
import tasks.shift.visda as visda
from harness.errors import BobError
from harness.registry import TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from tasks.shift.toy_sets import VISDA_CLASSES, voc_xml, write_cityscapes, write_sim10k, write_visda

SMALL_DETECTOR = {"img_size": 96, "epochs": 1, "lr": 1e-3, "batch_size": 8, "fpn_channels": 32, "box_head_dim": 64, "rois_per_image": 32, "proposals": 100}


# -- VisDA-2017 ----------------------------------------------------------------------------------------
@pytest.fixture
def visda_root(tmp_path) -> Path:
    return write_visda(tmp_path / "visda2017", {"train": 10, "validation": 3}, seed=1)


def _official_list(folder: Path) -> list[tuple[str, int]]:
    """The reference loaders' rule (tllib's ImageList): each line is '<path relative to the split folder> <label>'."""
    out = []
    for line in (folder / "image_list.txt").read_text().splitlines():
        path, label = line.split()
        out.append((str(folder / path), int(label)))
    return out


def test_visda_labels_are_the_list_files_and_real_is_the_evaluation_set(visda_root):
    assert visda.CLASSES == VISDA_CLASSES and len(visda.CLASSES) == 12
    task = TASKS.get("shift/visda2017").factory(overrides={"shift/visda2017": str(visda_root)})
    real = [(str(s.image), s.label) for s in task.load("real").samples]
    assert real == _official_list(visda_root / "validation")
    synthetic = sorted(_official_list(visda_root / "train"))
    train, val, test = ([(str(s.image), s.label) for s in task.load(k).samples] for k in ("train", "val", "test"))
    assert sorted(train + val + test) == synthetic and len(set(train) | set(val) | set(test)) == len(synthetic)
    for part in (val, test):  # stratified: each class gives round(10 * 0.1) = 1 image to val and to test
        assert sorted(y for _, y in part) == list(range(12))
    prov = task.split_provenance
    assert prov["carved"] == {"val": {"from": "train (Synthetic)", "fraction": 0.1}, "test": {"from": "train (Synthetic)", "fraction": 0.1}}
    assert prov["counts"] == {"train": 96, "val": 12, "test": 12, "real": 36}
    assert task.tune_splits == ("train", "val") and task.final_splits == ("trainval", "test")
    assert [(e.name, e.split, e.role) for e in task.eval_sets] == [("real", "real", "ood")]
    for s in task.load("real").samples:  # every image sits in the folder of its class
        assert Path(s.image).parent.name == VISDA_CLASSES[s.label]


def test_mean_per_class_accuracy_is_the_mean_of_each_classs_accuracy():
    pred, labels = [0, 0, 0, 1, 2, 2, 2, 2], [0, 0, 1, 1, 2, 2, 2, 2]
    out = visda.mean_class_accuracy(pred, labels, 3)
    assert out["top1"] == pytest.approx(7 / 8 * 100) and out["mean_class_acc"] == pytest.approx((100 + 50 + 100) / 3)
    assert out["per_class_acc"] == {"0": 100.0, "1": 50.0, "2": 100.0}


def test_a_visda_list_line_whose_image_is_missing_is_a_one_line_error_naming_file_and_line(visda_root):
    lines = (visda_root / "validation" / "image_list.txt").read_text().splitlines()
    (visda_root / "validation" / lines[4].split()[0]).unlink()
    with pytest.raises(BobError, match=rf"{visda_root / 'validation' / 'image_list.txt'}:5: image .* does not exist; restore it .* or delete the line") as err:
        TASKS.get("shift/visda2017").factory(overrides={"shift/visda2017": str(visda_root)})
    assert "\n" not in str(err.value)
    shutil.rmtree(visda_root / "train")
    with pytest.raises(BobError, match=r"train/image_list.txt does not exist; VisDA-2017 ships"):
        visda.read_split(visda_root / "train")
    bad = visda_root.parent / "bad"
    write_visda(bad, {"train": 2, "validation": 2})
    text = (bad / "validation" / "image_list.txt").read_text().replace("aeroplane_00000.jpg 0", "aeroplane_00000.jpg 3")
    (bad / "validation" / "image_list.txt").write_text(text)
    with pytest.raises(BobError, match=r"image_list.txt:1: image in folder 'aeroplane' has label 3 \(car\)"):
        visda.read_split(bad / "validation")


def test_a_linear_probe_trains_on_synthetic_and_reports_real(tmp_path):
    record = run_cell(RunSpec("timm:test_vit", "linear", "shift/visda2017/toy", 0, "random", {"img_size": 32, "epochs": 5, "lr": 0.01, "wd": 0.0}),
                      None, log=lambda *_: None)
    assert record["status"] == "ok", record["error"]
    assert record["protocol"]["final_train_split"] == "trainval" and record["protocol"]["reported_on"] == "test"
    m = record["metrics"]
    assert m["n_eval"] == 12 and m["real/n_eval"] == 60 and record["task_meta"]["split_provenance"]["target_domain"] == "Real (validation/)"
    assert record["primary_metric"]["name"] == "ood_top1" and m["ood_top1"] == m["real/top1"]
    assert 0.0 <= m["real/mean_class_acc"] <= 100.0 and record["metric_specs"]["real/mean_class_acc"]["direction"] == "higher"
    # every Real class has 5 images: the mean of the per-class accuracies equals the overall accuracy
    assert m["real/mean_class_acc"] == pytest.approx(m["real/top1"])


# -- Sim10k -> Cityscapes --------------------------------------------------------------------------
@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return write_sim10k(tmp_path / "data" / "sim10k", n=6), write_cityscapes(tmp_path / "data" / "cityscapes", n=4)


def test_sim10k_voc_boxes_become_coco_boxes_of_cars_only(tmp_path):
    voc = tmp_path / "s" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "Annotations").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (50, 40)).save(voc / "JPEGImages" / "7.jpg")
    (voc / "Annotations" / "7.xml").write_text(
        voc_xml("7.jpg", (50, 40), [("car", [(10, 5), (29, 5), (29, 14), (10, 14)]), ("person", [(40, 5), (44, 5), (44, 30), (40, 30)])]))
    gt, files = sim10k.read_sim10k(tmp_path / "s")
    # xml corners are 1-based inclusive: xmin=11, xmax=30 -> x = 10, width = 20
    assert gt["categories"] == [{"id": 1, "name": "car"}] and files[1] == voc / "JPEGImages" / "7.jpg"
    assert [a["bbox"] for a in gt["annotations"]] == [[10.0, 5.0, 20.0, 10.0]]
    assert gt["images"] == [{"id": 1, "file_name": "7.jpg", "width": 50, "height": 40}]


def test_cityscapes_polygons_give_car_boxes_and_cargroups_are_crowd(pair):
    _, city = pair
    gt, files, source = sim10k.read_cityscapes(city)
    polygons = sorted((city / "gtFine" / "val").glob("*/*_gtFine_polygons.json"))
    expected = []
    for image_id, path in enumerate(polygons, 1):
        for obj in json.loads(path.read_text())["objects"]:
            if obj["label"] in ("car", "cargroup"):
                xs, ys = [p[0] for p in obj["polygon"]], [p[1] for p in obj["polygon"]]
                expected.append((image_id, [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], int(obj["label"] == "cargroup")))
    assert [(a["image_id"], a["bbox"], a["iscrowd"]) for a in gt["annotations"]] == expected
    assert any(a["iscrowd"] for a in gt["annotations"]) and "gtFine_polygons" in source
    assert all(files[i["id"]].name.endswith("_leftImg8bit.png") for i in gt["images"])
    # the COCO-format conversion, when present, is read instead (reduced to car, renumbered to id 1)
    coco = {"images": [{"id": 5, "file_name": files[1].name, "width": 96, "height": 64}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 26, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0},
                            {"id": 2, "image_id": 5, "category_id": 24, "bbox": [30, 2, 5, 20], "area": 100, "iscrowd": 0}],
            "categories": [{"id": 24, "name": "person"}, {"id": 26, "name": "car"}]}
    (city / "annotations").mkdir()
    (city / sim10k.COCO_CONVERSION).write_text(json.dumps(coco))
    gt, files, source = sim10k.read_cityscapes(city)
    assert [(a["category_id"], a["bbox"]) for a in gt["annotations"]] == [(1, [1, 2, 10, 8])] and "COCO-format" in source
    assert files[5] == polygons[0].parents[3] / "leftImg8bit" / "val" / "frankfurt" / files[5].name


def test_a_sim10k_xml_without_car_boxes_is_a_one_line_error_naming_it(pair):
    sim, city = pair
    xml = sorted((sim / "VOC2012" / "Annotations").glob("*.xml"))[2]
    xml.write_text(voc_xml(xml.stem + ".jpg", (96, 64), [("person", [(3, 3), (8, 3), (8, 20), (3, 20)])]))
    with pytest.raises(BobError, match=rf"{xml}: has no 'car' box \(objects: person\); .* delete this xml") as err:
        TASKS.get("shift/sim10k_cityscapes").factory(overrides={"shift/sim10k_cityscapes": f"{sim}@{city}"})
    assert "\n" not in str(err.value)
    with pytest.raises(BobError, match=r"give both folders"):
        TASKS.get("shift/sim10k_cityscapes").factory(overrides={"shift/sim10k_cityscapes": str(sim)})
    shutil.rmtree(city)
    with pytest.raises(BobError, match=rf"{sim.parent / 'cityscapes'} does not exist; put Sim10k .* and Cityscapes"):
        TASKS.get("shift/sim10k_cityscapes").factory(data_root=str(sim.parent))


def test_the_detector_trains_on_sim10k_and_is_scored_on_cityscapes_with_pycocotools(tmp_path):
    record = run_cell(RunSpec("timm:resnet18.a1_in1k", "detector", "shift/sim10k_cityscapes/toy", 0, "random", {**SMALL_DETECTOR, "freeze": "all"}),
                      None, log=lambda *_: None)
    assert record["status"] == "ok", record["error"]
    assert {"AP", "AP50"} <= set(record["metrics"]) and record["metrics"]["n_images"] == 10
    assert record["protocol"]["trained_on"] == "train" and record["protocol"]["reported_on"] == "val" and record["protocol"]["evaluator"] == "coco"
    assert "Sim10k" in record["task_meta"]["source"] and record["primary_metric"]["name"] == "AP"


def test_a_plain_vit_detects_on_non_square_street_images(tmp_path):
    """Cityscapes and Sim10k are wide: a ViT's simple pyramid pads the batch to its square input (ViTDet's rule)."""
    record = run_cell(RunSpec("timm:vit_tiny_patch16_224", "detector", "shift/sim10k_cityscapes/toy", 0, "random", {**SMALL_DETECTOR, "freeze": "all"}),
                      None, log=lambda *_: None)
    assert record["status"] == "ok", record["error"]
    assert {"AP", "AP50"} <= set(record["metrics"]) and record["metrics"]["n_images"] == 10
