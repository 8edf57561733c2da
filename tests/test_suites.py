"""VTAB-1k and FGVC: registration, the three data sources, the papers' protocol, verification."""
import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import BobError
from harness.registry import TASKS
from harness.store import ResultStore

from .conftest import write_grid
from .fixtures import make_hf_parquet, make_vpt_fgvc, make_vtab_task

VTAB = {
    "caltech101": 102, "cifar100": 100, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37, "svhn": 10, "sun397": 397,
    "patch_camelyon": 2, "eurosat": 10, "resisc45": 45, "diabetic_retinopathy": 5,
    "clevr_count": 8, "clevr_distance": 6, "dmlab": 6, "kitti_distance": 4, "dsprites_location": 16, "dsprites_orientation": 16,
    "smallnorb_azimuth": 18, "smallnorb_elevation": 9,
}
FGVC = {"cub200": 200, "nabirds": 555, "oxford_flowers": 102, "stanford_dogs": 120, "stanford_cars": 196}


def test_all_24_tasks_are_listed_with_classes_and_groups():
    runner = CliRunner()
    out = runner.invoke(main, ["list", "tasks", "--suite", "vtab1k"]).output
    rows = [line.split() for line in out.splitlines() if line.startswith("vtab1k/")]
    assert {r[0]: int(r[3]) for r in rows} == {f"vtab1k/{k}": v for k, v in VTAB.items()}
    groups = {r[0]: r[2] for r in rows}
    assert groups["vtab1k/svhn"] == "vtab1k/natural" and groups["vtab1k/eurosat"] == "vtab1k/specialized" and groups["vtab1k/dmlab"] == "vtab1k/structured"
    out = runner.invoke(main, ["list", "tasks", "--suite", "fgvc"]).output
    rows = [line.split() for line in out.splitlines() if line.startswith("fgvc/")]
    assert {r[0]: int(r[3]) for r in rows} == {f"fgvc/{k}": v for k, v in FGVC.items()}


@pytest.fixture
def suite_data(tmp_path):
    root = tmp_path / "data"
    make_vtab_task(root, "dtd", seed=1)
    make_vtab_task(root, "clevr_count-jpg", seed=2)  # the -jpg variant of a folder name is accepted
    make_vpt_fgvc(root, "CUB_200_2011", "images", class_ids=(5, 17, 200))
    hf = make_hf_parquet(tmp_path / "hf_eurosat", {"train800": 800, "val200": 200, "test": 40}, image_col="img")
    return root, hf


@pytest.mark.slow
def test_three_sources_through_the_full_protocol(tmp_path, suite_data):
    root, hf = suite_data
    grid = write_grid(
        tmp_path / "g.yaml",
        "name: suites\n"
        "backbones: [timm:resnet18.a1_in1k]\nweights: random\n"
        "methods: [knn, linear, finetune]\n"
        "tasks: [vtab1k/dtd, vtab1k/eurosat, vtab1k/clevr_count, fgvc/cub200]\n"
        f"data_root: {root}\n"
        f"data_paths: {{vtab1k/eurosat: 'hf:{hf}?image=img'}}\n"
        "hparams:\n  all: {img_size: 16}\n  linear: {search: {C: [0.1, 10.0]}}\n"
        "  finetune: {epochs: 1, batch_size: 64, search: {lr: [1.0e-3, 1.0e-4]}}\n",
    )
    result = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert result.exit_code == 0, result.output
    records = list(ResultStore(tmp_path / "res" / "suites").records())
    assert len(records) == 12 and all(r["status"] == "ok" for r in records), [r["error"] for r in records if r["error"]]
    for r in records:
        vtab = r["task"].startswith("vtab1k/")
        p = r["protocol"]
        assert p["reported_on"] == "test"
        assert p["final_train_split"] == ("train800val200" if vtab else "trainval")
        if r["method"] != "knn":
            assert p["selected_on"] == ("val200" if vtab else "val") and p["tuned_on"] == ("train800" if vtab else "train")
            assert len(p["candidates"]) == 2
        assert r["preprocess"] == {**r["preprocess"], "resize": "direct", "crop": "none", "img_size": 16, "train_augmentation": "none"}
        assert r["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    by_task = {(r["task"], r["method"]): r for r in records}
    assert by_task[("vtab1k/eurosat", "knn")]["task_meta"]["source"].startswith("hf:")
    assert by_task[("vtab1k/dtd", "knn")]["metrics"]["n_eval"] == 60
    assert by_task[("fgvc/cub200", "knn")]["metrics"]["n_eval"] == 15
    assert by_task[("vtab1k/dtd", "knn")]["metrics"]["top1"] > 50  # colours are easy even for random features

    # a second backbone with only one task: its other cells are missing, never zero
    grid2 = write_grid(
        tmp_path / "g2.yaml",
        f"name: suites\nbackbones: [timm:convnext_atto.d2_in1k]\nweights: random\nmethods: [knn]\ntasks: [vtab1k/dtd]\ndata_root: {root}\n"
        "hparams: {all: {img_size: 32}}\n",
    )
    assert CliRunner().invoke(main, ["sweep", str(grid2), "--results", "res"]).exit_code == 0
    md = CliRunner().invoke(main, ["aggregate", "suites", "--results", "res"]).output
    knn = md.split("### knn")[1].split("###")[0]
    assert "VTAB-1k" in knn and "| backbone | dtd | eurosat | clevr_count | Natural | Specialized | Structured | mean of group means |" in knn
    assert "FGVC" in knn and "| backbone | cub200 | mean |" in knn
    assert "Natural mean over 1 of its 7 tasks" in knn
    vtab_table = knn.split("**VTAB-1k")[1]
    line = next(l for l in vtab_table.splitlines() if l.startswith("| `timm:resnet18"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    dtd, euro, clevr, nat, spec, struc, overall = (float(c) for c in cells[1:8])
    assert nat == dtd and spec == euro and struc == clevr
    assert overall == pytest.approx((nat + spec + struc) / 3, abs=0.06)
    other = next(l for l in vtab_table.splitlines() if l.startswith("| `timm:convnext"))
    assert other.count("—") == 5  # eurosat, clevr_count, Specialized, Structured, overall mean


def test_verify_reports_precise_problems_and_run_refuses_with_the_same(tmp_path):
    root = tmp_path / "data"
    good = make_vtab_task(root, "eurosat", counts={"train800": 800, "val200": 200, "test": 10})
    bad = make_vtab_task(root, "svhn", counts={"train800": 800, "val200": 200, "test": 10})
    lines = (bad / "train800.txt").read_text().splitlines()
    (bad / "train800.txt").write_text("\n".join(lines[:-1]) + "\n")  # 799 lines
    (bad / "train800val200.txt").write_text("\n".join(lines[:-1] + (bad / "val200.txt").read_text().splitlines()) + "\n")
    dmlab = make_vtab_task(root, "dmlab", counts={"train800": 800, "val200": 200, "test": 10})
    test_lines = (dmlab / "test.txt").read_text().splitlines()
    test_lines[2] = "images/test_0002.png 6"  # dmlab has 6 classes: 0..5
    test_lines[4] = "images/missing.png 1"
    (dmlab / "test.txt").write_text("\n".join(test_lines) + "\n")
    (good / "images" / "test_0003.png").write_bytes(b"not an image")

    out = CliRunner().invoke(main, ["data", "verify", "vtab1k", "--root", str(root)])
    assert out.exit_code == 1
    assert "0/19 tasks ready" in out.output
    assert "vtab1k/svhn: split train800 has 799 samples, expected 800" in out.output
    assert f"vtab1k/dmlab: {dmlab / 'test.txt'}:3: label 6 is out of range 0..5" in out.output
    assert f"vtab1k/dmlab: {dmlab / 'test.txt'}:5: image {dmlab / 'images' / 'missing.png'} does not exist" in out.output
    assert f"vtab1k/eurosat: cannot read image {good / 'images' / 'test_0003.png'}" in out.output
    assert "vtab1k/cifar100: data not found" in out.output and "fix: pass --data-root" in out.output
    table = {l.split()[0]: l.split()[1] for l in out.output.splitlines() if l.startswith("vtab1k/") and len(l.split()) > 2 and ":" not in l.split()[0]}
    assert table["vtab1k/svhn"] == "invalid" and table["vtab1k/cifar100"] == "missing"

    with pytest.raises(BobError) as err:
        TASKS.get("vtab1k/svhn").factory(data_root=str(root))
    assert str(err.value).startswith("task vtab1k/svhn: split train800 has 799 samples, expected 800")
    run = CliRunner().invoke(main, ["run", "-b", "timm:resnet18.a1_in1k", "-m", "knn", "-t", "vtab1k/svhn", "-w", "random", "--data-root", str(root), "--out", "r"])
    assert run.exit_code == 1 and "split train800 has 799 samples, expected 800" in run.output


def test_fgvc_class_ids_map_from_train_and_unknown_ids_fail(tmp_path):
    root = tmp_path / "data"
    base = make_vpt_fgvc(root, "Stanford-dogs", "Images", class_ids=(3, 1, 2))
    task = TASKS.get("fgvc/stanford_dogs").factory(data_root=str(root))
    train = task.load("train")
    assert sorted(set(train.labels)) == [0, 1, 2] and task.num_classes == 120
    first = train.samples[0]
    assert ".class_3/" in str(first.image) and first.label == 2  # id 3 -> index 2 (sorted 1, 2, 3)
    anno = json.loads((base / "test.json").read_text())
    anno[next(iter(anno))] = 99
    (base / "test.json").write_text(json.dumps(anno))
    with pytest.raises(BobError, match="class id 99 .* does not occur in train.json"):
        TASKS.get("fgvc/stanford_dogs").factory(data_root=str(root))


def test_grid_task_suite_names_expand():
    from harness.grid import expand_task_names

    assert len(expand_task_names(["vtab1k"])) == 19
    assert len(expand_task_names(["vtab1k/natural", "fgvc"])) == 12
    assert expand_task_names(["digits", "vtab1k/dtd"]) == ["digits", "vtab1k/dtd"]


def test_prepare_writes_the_papers_layouts_from_a_hugging_face_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    for name in ("dtd", "eurosat"):
        make_hf_parquet(mirror / name, {"train800": 800, "val200": 200, "test": 12}, image_col="img", num_labels=3)
    make_hf_parquet(mirror / "cub200", {"train": 9, "val": 3, "test": 6}, image_col="img", num_labels=3)
    root = tmp_path / "data"
    out = CliRunner().invoke(main, ["data", "prepare", "vtab1k", "--root", str(root), "--from-hf", f"hf:{mirror}/{{task}}?image=img",
                                    "--task", "dtd", "--task", "eurosat"])
    assert out.exit_code == 0, out.output
    assert "vtab1k/dtd: wrote 1012 images" in out.output
    lines = (root / "vtab-1k" / "dtd" / "train800val200.txt").read_text().splitlines()
    assert len(lines) == 1000 and lines[0].startswith("images/train800/") and (root / "vtab-1k" / "dtd" / lines[0].split()[0]).is_file()
    verify = CliRunner().invoke(main, ["data", "verify", "vtab1k", "--root", str(root)])
    ready = [l.split()[0] for l in verify.output.splitlines() if " ready " in l]
    assert ready == ["vtab1k/dtd", "vtab1k/eurosat"]
    fg = CliRunner().invoke(main, ["data", "prepare", "fgvc", "--root", str(root), "--from-hf", f"hf:{mirror}/{{task}}?image=img", "--task", "cub200"])
    assert fg.exit_code == 0, fg.output
    task = TASKS.get("fgvc/cub200").factory(data_root=str(root))
    assert len(task.load("trainval")) == 12 and task.load("test").labels == [i % 3 for i in range(6)]
    assert json.loads((root / "fgvc" / "CUB_200_2011" / "train.json").read_text())  # VPT's json, images under images/
    assert (root / "fgvc" / "CUB_200_2011" / "images" / "train" / "000000.png").is_file()
