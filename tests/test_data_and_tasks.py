import numpy as np
import pytest

from harness.data import read_list_file
from harness.errors import BobError
from harness.registry import TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

from .fixtures import make_image_folder_dataset, make_list_file_dataset


def test_builtin_tasks_have_vtab_shaped_splits_and_are_deterministic():
    digits = TASKS.get("digits").factory()
    assert [len(digits.load(s)) for s in ("train800", "val200", "train800val200", "test")] == [800, 200, 1000, 797]
    loc = TASKS.get("shapes/location").factory()
    a = np.asarray(loc.load("train800")[5][0])
    from tasks import builtin

    builtin._shapes_samples.cache_clear()
    b = np.asarray(TASKS.get("shapes/location").factory().load("train800")[5][0])
    assert a.shape == (64, 64, 3) and (a == b).all()
    labels = loc.load("train800val200").labels
    assert sorted(set(labels)) == list(range(16)) and min(np.bincount(labels)) >= 60


def test_shapes_location_label_matches_where_the_shape_is():
    task = TASKS.get("shapes/location").factory()
    for image, label in [task.load("test")[i] for i in range(40)]:
        mask = np.asarray(image)[..., 0] > 0
        ys, xs = np.nonzero(mask)
        row, col = divmod(label, 4)
        assert col * 16 <= xs.mean() < (col + 1) * 16 and row * 16 <= ys.mean() < (row + 1) * 16


def test_folder_task_reads_list_files_and_image_folders(tmp_path):
    lists = TASKS.get(f"folder:{make_list_file_dataset(tmp_path / 'lists')}").factory()
    assert lists.num_classes == 3 and lists.tune_splits == ("train800", "val200")
    image, label = lists.load("test")[0]
    assert image.mode == "RGB" and label == 0
    folders = TASKS.get(f"folder:{make_image_folder_dataset(tmp_path / 'folders')}").factory()
    assert folders.num_classes == 3 and folders.final_splits == ("trainval", "test") and len(folders.load("trainval")) == 30
    assert folders.tune_splits == ("train", "val") and len(folders.load("val")) == 6  # train/ + test/: bob carves val from train (#29)


def test_list_file_errors_name_file_and_line(tmp_path):
    root = make_list_file_dataset(tmp_path / "d")
    (root / "bad.txt").write_text("images/test_0_0.png 0\nimages/test_0_1.jpg 7\n")
    with pytest.raises(BobError, match=r"bad.txt:2: label 7 is out of range 0..2"):
        read_list_file(root / "bad.txt", root, num_classes=3)
    (root / "bad.txt").write_text("images/test_0_0.png zero\n")
    with pytest.raises(BobError, match=r"bad.txt:1: label 'zero' is not an integer"):
        read_list_file(root / "bad.txt", root)


def test_missing_data_folder_is_a_failed_record_with_one_line_message(tmp_path):
    store = ResultStore(tmp_path / "s")
    record = run_cell(RunSpec("timm:resnet18.a1_in1k", "knn", f"folder:{tmp_path / 'nope'}", 0, "random", {"img_size": 16}), store)
    assert record["status"] == "failed"
    assert "data folder" in record["error"]["message"] and "does not exist" in record["error"]["message"]
    assert "\n" not in record["error"]["message"]


def test_corrupt_image_fails_the_cell_naming_the_file(tmp_path):
    root = make_list_file_dataset(tmp_path / "d")
    (root / "images" / "test_1_2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    record = run_cell(RunSpec("timm:resnet18.a1_in1k", "knn", f"folder:{root}", 0, "random", {"img_size": 16}), ResultStore(tmp_path / "s"))
    assert record["status"] == "failed"
    assert "test_1_2.png" in record["error"]["message"] and "test.txt:7" in record["error"]["message"]
    assert "corrupt" in record["error"]["message"]
