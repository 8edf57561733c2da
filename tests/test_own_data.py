"""Your own dataset (#29): class-folder trees, train/test without val, label tables; the splits bob
makes (seeded, stratified, recorded, in the task id); `bob data verify`; the README's walk-through.

Data: 600 real PNG files, scikit-learn's 8x8 digits upscaled to 32x32, in ten class folders named
after the digits (so zero-shot has class names), written once per module.
"""
from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import BobError
from harness.registry import TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.splits import SplitRule, carve, share, split_hash
from harness.store import ResultStore

from .conftest import BOB, REPO, run_bob

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PER_CLASS = 60
SMALL_VIT = "timm:vit_tiny_patch16_224"


def digit_images() -> dict[str, list]:
    """60 upscaled digit images per class name, in a fixed order."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = {}
    for label, name in enumerate(DIGIT_NAMES):
        rows = np.flatnonzero(digits.target == label)[:PER_CLASS]
        out[name] = [Image.fromarray((digits.images[i] * 255 / 16).clip(0, 255).astype("uint8"), "L").resize((32, 32), Image.NEAREST) for i in rows]
    return out


def write_tree(root: Path, images: dict[str, list], order_seed: int | None = None, layout=None) -> Path:
    """``root/<class>/<nnn>.png``; ``order_seed`` shuffles the order folders and files are created in.
    ``layout(name, i) -> sub-folder`` (e.g. train/test) puts image i of a class elsewhere."""
    jobs = [(name, i, im) for name, ims in images.items() for i, im in enumerate(ims)]
    if order_seed is not None:
        random.Random(order_seed).shuffle(jobs)
    for name, i, im in jobs:
        folder = root / (layout(name, i) if layout else "") / name
        folder.mkdir(parents=True, exist_ok=True)
        im.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def images():
    return digit_images()


@pytest.fixture(scope="module")
def tree(tmp_path_factory, images) -> Path:
    return write_tree(tmp_path_factory.mktemp("own") / "digits", images)


def split_keys(task, root: Path) -> dict[str, list[str]]:
    return {s: [Path(x.image).relative_to(root).as_posix() for x in task.load(s).samples] for s in ("train", "val", "test")}


# -- acceptance 2: the split rules -----------------------------------------------------------------
def test_one_tree_is_split_stratified_disjoint_and_recorded(tree):
    task = TASKS.get(f"folder:{tree}").factory()
    keys = split_keys(task, tree)
    assert task.tune_splits == ("train", "val") and task.final_splits == ("trainval", "test") and task.union_splits == {"trainval": ("train", "val")}
    everything = sorted(k for ks in keys.values() for k in ks)
    assert len(everything) == 600 and len(set(everything)) == 600  # every file once, none in two splits
    for split, want in (("train", 36), ("val", 12), ("test", 12)):
        assert np.bincount(task.load(split).labels, minlength=10).tolist() == [want] * 10, split
    assert task.load("trainval").identity() == task.load("train").identity() + task.load("val").identity()
    names, templates, _ = task.class_text()
    assert names == sorted(DIGIT_NAMES) and "{c}" in templates[0]  # zeroshot prompts with the folder names
    record = task.meta()["split_provenance"]
    assert record["carved"] == {"test": {"from": "all", "fraction": 0.2}, "val": {"from": "all", "fraction": 0.2}}
    assert record["seed"] == 0 and record["defaults"] == {"test": 0.2, "val": 0.2, "seed": 0}
    assert record["counts"] == {"train": 360, "val": 120, "test": 120} and record["per_class"]["val"] == [12] * 10
    for split in ("train", "val", "test"):  # a reviewer rebuilds each hash from the file list
        assert record["sha256"][split] == split_hash(keys[split], task.load(split).labels)


def test_split_ignores_listing_order_and_location_and_follows_the_seed(tmp_path, images, tree, monkeypatch):
    """Two copies written in shuffled orders, at other paths, listed in shuffled order: same split."""
    reference = TASKS.get(f"folder:{tree}").factory().meta()["split_provenance"]["sha256"]
    subset = {name: ims[:20] for name, ims in images.items()}
    a = write_tree(tmp_path / "a" / "data", subset, order_seed=1)
    b = write_tree(tmp_path / "elsewhere" / "b" / "data", subset, order_seed=2)
    hashes_a = TASKS.get(f"folder:{a}").factory().meta()["split_provenance"]["sha256"]
    real_iterdir, real_rglob = Path.iterdir, Path.rglob

    def shuffled(gen):
        items = list(gen)
        random.Random(len(items)).shuffle(items)
        return iter(items)

    monkeypatch.setattr(Path, "iterdir", lambda self: shuffled(real_iterdir(self)))
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: shuffled(real_rglob(self, pattern)))
    assert TASKS.get(f"folder:{b}").factory().meta()["split_provenance"]["sha256"] == hashes_a
    monkeypatch.undo()
    other_seed = TASKS.get(f"folder:{a}?seed=1").factory()
    assert other_seed.meta()["split_provenance"]["sha256"]["test"] != hashes_a["test"]
    assert np.bincount(other_seed.load("test").labels).tolist() == [4] * 10
    assert TASKS.get(f"folder:{tree}").factory().meta()["split_provenance"]["sha256"] == reference  # rebuilt: identical
    custom = TASKS.get(f"folder:{tree}?val=0.1&test=0.3&seed=1").factory()
    assert [len(custom.load(s)) for s in ("train", "val", "test")] == [360, 60, 180]
    assert custom.meta()["split_provenance"]["carved"]["val"] == {"from": "all", "fraction": 0.1}
    ids = {RunSpec("timm:resnet18.a1_in1k", "linear", t).id for t in (f"folder:{tree}", f"folder:{tree}?seed=1", f"folder:{tree}?val=0.1&test=0.3&seed=1")}
    assert len(ids) == 3  # a split is part of the cell's identity


def test_a_class_too_small_to_split_is_a_one_line_error_naming_it(tmp_path, images):
    root = write_tree(tmp_path / "d", {"cat": images["one"][:10], "rare_bird": images["two"][:2], "dog": images["three"][:10]})
    with pytest.raises(BobError, match=r"class 'rare_bird' has 2 image\(s\).*needs at least 3 per class") as err:
        TASKS.get(f"folder:{root}").factory()
    assert "\n" not in str(err.value)
    (root / "empty").mkdir()
    shutil.rmtree(root / "rare_bird")
    with pytest.raises(BobError, match=r"class 'empty' has no images"):
        TASKS.get(f"folder:{root}").factory()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(3, 40), min_size=1, max_size=6), seed=st.integers(0, 5), shuffle=st.integers(0, 10**6))
def test_carve_is_a_stratified_partition_that_ignores_input_order(sizes, seed, shuffle):
    keys = [f"class{c}/{i:03d}.png" for c, n in enumerate(sizes) for i in range(n)]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    rule = SplitRule({"test": 0.2, "val": 0.25}, seed)
    out = {s: [keys[i] for i in idx] for s, idx in carve(keys, labels, rule).items()}
    assert sorted(k for ks in out.values() for k in ks) == sorted(keys)  # a partition: every file once
    for c, n in enumerate(sizes):
        got = {s: sum(k.startswith(f"class{c}/") for k in ks) for s, ks in out.items()}
        assert got["test"] == share(n, 0.2) >= 1 and got["val"] == share(n, 0.25) >= 1 and got["train"] == n - got["test"] - got["val"] >= 1
    order = random.Random(shuffle).sample(range(len(keys)), len(keys))
    again = carve([keys[i] for i in order], [labels[i] for i in order], rule)
    assert {s: [keys[order[i]] for i in idx] for s, idx in again.items()} == out


@pytest.mark.parametrize("suffix, message", [
    ("?val=1.5", r"val=1.5 must be a fraction between 0 and 1"),
    ("?val=0.6&test=0.5", r"leave nothing to train on"),
    ("?vall=0.1", r"unknown option 'vall'"),
    ("?seed=x", r"seed='x' is not an integer"),
])
def test_bad_split_options_are_one_line_errors_at_grid_expansion(tmp_path, suffix, message):
    with pytest.raises(BobError, match=message):
        TASKS.get(f"folder:{tmp_path}{suffix}")  # the resolver, which expansion calls before any cell runs


# -- acceptance 3: train/ + test/ --------------------------------------------------------------------
def test_train_test_folders_get_val_carved_from_train_only_and_the_record_says_so(tmp_path, images):
    root = write_tree(tmp_path / "tt", {n: ims[:30] for n, ims in images.items()}, layout=lambda name, i: "test" if i % 3 == 0 else "train")
    task = TASKS.get(f"folder:{root}").factory()
    keys = split_keys(task, root)
    assert all(k.startswith("train/") for k in keys["train"] + keys["val"]) and all(k.startswith("test/") for k in keys["test"])
    assert not set(keys["val"]) & set(keys["test"]) and len(keys["test"]) == 100  # test exactly as given
    assert np.bincount(task.load("val").labels).tolist() == [4] * 10  # 20 % of each class's 20 training images
    with pytest.raises(BobError, match=r"option test=0.3 does nothing because it has its own test split"):
        TASKS.get(f"folder:{root}?test=0.3").factory()
    prov = task.meta()["split_provenance"]  # what run_cell writes as the record's task_meta (a record: the next test)
    assert prov["given"] == ["train", "test"] and prov["carved"] == {"val": {"from": "train", "fraction": 0.2}}
    assert prov["seed"] == 0 and "sha256('<seed>:<path>')" in prov["rule"] and prov["counts"] == {"train": 160, "val": 40, "test": 100}
    (root / "val" / "zero").mkdir(parents=True)  # train/ + val/ + test/: used as given, refit on train + val
    for src in sorted((root / "train" / "zero").iterdir())[:3]:
        src.rename(root / "val" / "zero" / src.name)
    given = TASKS.get(f"folder:{root}").factory()
    assert [len(given.load(s)) for s in ("train", "val", "test")] == [197, 3, 100] and given.final_splits == ("trainval", "test")
    assert given.meta()["split_provenance"]["carved"] == {}


# -- acceptance 4: label tables ------------------------------------------------------------------------
def test_csv_and_parquet_label_tables(tmp_path, images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_tree(tmp_path / "t" / "img", {n: ims[:10] for n, ims in list(images.items())[:3]})
    rows = [(f"img/{n}/{i:03d}.png", n, "test" if i < 3 else "train") for n in DIGIT_NAMES[:3] for i in range(10)]
    table = tmp_path / "t" / "labels.csv"
    table.write_text("path,label,split\n" + "".join(f"{p},{l},{s}\n" for p, l, s in rows))
    task = TASKS.get(f"csv:{table}").factory()
    assert task.class_text()[0] == sorted(DIGIT_NAMES[:3]) and len(task.load("test")) == 9 and len(task.load("val")) == 3  # val carved from train: 1 of 7 per class
    assert task.meta()["split_provenance"]["carved"] == {"val": {"from": "train", "fraction": 0.2}}
    assert task.load("test").samples[0].image == root / "zero" / "000.png"  # paths relative to the table
    # parquet, integer labels, other column names, no split column: bob splits all rows
    pq.write_table(pa.table({"file": [p for p, _, _ in rows], "y": [DIGIT_NAMES.index(l) for _, l, _ in rows]}), tmp_path / "t" / "labels.parquet")
    ptask = TASKS.get(f"parquet:{tmp_path / 't' / 'labels.parquet'}?path=file&label=y&seed=3").factory()
    assert ptask.num_classes == 3 and ptask.class_text is None and [len(ptask.load(s)) for s in ("train", "val", "test")] == [18, 6, 6]
    # one-line errors naming the row
    broken = rows[:4] + [("img/one/999.png", "one", "train")]
    table.write_text("path,label,split\n" + "".join(f"{p},{l},{s}\n" for p, l, s in broken))
    with pytest.raises(BobError, match=r"labels.csv:6: image img/one/999.png does not exist"):
        TASKS.get(f"csv:{table}").factory()
    table.write_text("path,label,split\nimg/one/000.png,one,dev\n")
    with pytest.raises(BobError, match=r"labels.csv:2: split 'dev' is not train, val or test"):
        TASKS.get(f"csv:{table}").factory()
    table.write_text("path,label\nimg/one/000.png,one\nimg/one/000.png,two\n")
    with pytest.raises(BobError, match=r"labels.csv:3: image img/one/000.png is already listed at .*labels.csv:2"):
        TASKS.get(f"csv:{table}").factory()
    table.write_text("file,label\nimg/one/000.png,one\n")
    with pytest.raises(BobError, match=r"no column 'path' \(columns: file, label\).*\?path=<column>"):
        TASKS.get(f"csv:{table}").factory()
    pq.write_table(pa.table({"path": ["img/one/000.png", "../outside.png"], "label": [0, 1]}), tmp_path / "t" / "bad.parquet")
    with pytest.raises(BobError, match=r"bad.parquet row 2: image path '../outside.png' points outside"):
        TASKS.get(f"parquet:{tmp_path / 't' / 'bad.parquet'}").factory()


def test_selection_never_reads_the_test_split_poisoned_test_labels_change_nothing_but_test(tmp_path, images):
    """Two tables with the same training rows; the second's test labels are wrong. The carved val,
    every candidate's val score and the choice are identical; only the test number moves."""
    write_tree(tmp_path / "img", {n: ims[:12] for n, ims in list(images.items())[:3]})
    rows = [(f"img/{n}/{i:03d}.png", n, "test" if i < 4 else "train") for n in DIGIT_NAMES[:3] for i in range(12)]
    poison = {n: DIGIT_NAMES[(DIGIT_NAMES.index(n) + 1) % 3] for n in DIGIT_NAMES[:3]}
    for name, label_of in (("clean", lambda n, s: n), ("poisoned", lambda n, s: poison[n] if s == "test" else n)):
        (tmp_path / f"{name}.csv").write_text("path,label,split\n" + "".join(f"{p},{label_of(l, s)},{s}\n" for p, l, s in rows))
    hp = {"img_size": 32, "solver": "sgd", "epochs": 20, "search": {"lr": [0.1, 0.01], "wd": [0.0]}}
    clean, poisoned = (run_cell(RunSpec("timm:test_vit", "linear", f"csv:{tmp_path / n}.csv", 0, "random", hp), None) for n in ("clean", "poisoned"))
    assert clean["status"] == poisoned["status"] == "ok", (clean["error"], poisoned["error"])
    prov = clean["task_meta"]["split_provenance"]  # the record says val was carved from train, and how
    assert prov["given"] == ["train", "test"] and prov["carved"] == {"val": {"from": "train", "fraction": 0.2}} and prov["seed"] == 0
    assert clean["protocol"]["selected_on"] == "val" and clean["protocol"]["final_train_split"] == "trainval"
    a, b = clean["task_meta"]["split_provenance"]["sha256"], poisoned["task_meta"]["split_provenance"]["sha256"]
    assert a["train"] == b["train"] and a["val"] == b["val"] and a["test"] != b["test"]
    assert clean["protocol"]["candidates"] == poisoned["protocol"]["candidates"] and clean["protocol"]["selected"] == poisoned["protocol"]["selected"]
    assert clean["metrics"]["top1"] != poisoned["metrics"]["top1"]


# -- acceptance 5: bob data verify ------------------------------------------------------------------
def test_data_verify_reports_layout_counts_duplicates_and_the_task_id(tmp_path, images):
    root = write_tree(tmp_path / "v", {n: ims[:10] for n, ims in list(images.items())[:3]}, layout=lambda name, i: "test" if i < 3 else "train")
    shutil.copy(root / "train" / "two" / "005.png", root / "test" / "two" / "copy_of_005.png")  # a leak under another name
    out = run_bob("data", "verify", f"folder:{root}")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "layout:  train/ + test/ class folders" in text and "bob carves val = 0.2 of train, per class, seed 0" in text
    assert re.search(r"two\s+6\s+1\s+4\s+11", text)  # class, train, val, test, total
    assert "duplicates across splits (same content, sha256): 1" in text
    assert re.search(r"test/two/copy_of_005.png \(test\) = train/two/005.png \((train|val)\)", text)
    assert "unreadable files: none" in text and f"task id: folder:{root}\n" in text
    (root / "train" / "one" / "004.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bad = run_bob("data", "verify", f"folder:{root}?val=0.3")
    assert bad.returncode == 1 and "unreadable files: 1" in bad.stdout and "train/one/004.png" in bad.stdout
    assert f"task id: folder:{root}?val=0.3\n" in bad.stdout
    refused = run_bob("data", "verify", f"folder:{root}?test=0.3")
    assert refused.returncode == 2 and "does nothing because it has its own test split" in refused.stderr and "Traceback" not in refused.stderr


# -- the README's walk-through, and acceptance 1: every method on one tree -------------------------
def readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("## Your own dataset", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory, images):
    """Run the README section's commands as written: files from its ```yaml blocks (first line
    ``# <file name>``), then every line of its ```bash blocks, in a folder holding my_images/."""
    work = tmp_path_factory.mktemp("readme")
    write_tree(work / "my_images", images)
    section = readme_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    env = {**os.environ, "BOB_OFFLINE": "1", "BOB_PROGRESS": "0", "BOB_DEVICE": "cpu", "BOB_CACHE": str(work / "cache")}
    outputs, commands = {}, []
    for lang, body in blocks:
        if lang == "yaml":
            name = body.splitlines()[0].lstrip("# ").strip()
            (work / name).write_text(body)
        elif lang == "bash":
            commands += [line for line in body.splitlines() if line.strip() and not line.startswith("#")]
    assert commands and all(c.startswith("bob ") for c in commands), commands
    for command in commands:
        out = subprocess.run([*BOB, *shlex.split(command)[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        outputs[command] = out.stdout
    return work, outputs


@pytest.mark.slow
def test_readme_walkthrough_goes_from_a_folder_of_images_to_a_leaderboard(readme_run):
    work, outputs = readme_run
    verify = next(v for c, v in outputs.items() if c.startswith("bob data verify"))
    assert "one class-folder tree" in verify and "task id: folder:my_images\n" in verify and "ready" in verify
    board = work / "leaderboards" / "my_images"
    assert {"index.html", "leaderboard.md", "leaderboard.csv", "table.tex"} <= {p.name for p in board.iterdir()}
    md = (board / "leaderboard.md").read_text()
    for name in ("resnet18", "convnext_atto", "vit_tiny"):
        assert name in md
    records = [json.loads(p.read_text()) for p in (work / "results" / "my_images").glob("*.json") if not p.name.startswith(".")]
    assert sorted((r["method"], r["status"]) for r in records) == sorted((m, "ok") for m in ("knn", "linear", "lora") for _ in range(3))
    hashes = {json.dumps(r["task_meta"]["split_provenance"]["sha256"], sort_keys=True) for r in records}
    assert len(hashes) == 1  # the same split for every backbone and method


@pytest.mark.slow
def test_every_classification_method_runs_on_the_tree_with_no_set(readme_run, tmp_path):
    """knn / linear / lora from the README's sweep (its grid fixes no tuned hyper-parameter), plus
    finetune and zero-shot with the folder names on a random-init open_clip model."""
    work, _ = readme_run
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in (work / "results" / "my_images").glob("*.json") if not p.name.startswith("."))
               if r["backbone"].startswith(SMALL_VIT)}
    tree = f"folder:{work / 'my_images'}"
    store = ResultStore(tmp_path / "more")
    records["finetune"] = run_cell(RunSpec(SMALL_VIT, "finetune", tree, 0, "random", {"img_size": 32, "epochs": 1}), store)
    records["zeroshot"] = run_cell(RunSpec("openclip:ViT-S-32", "zeroshot", tree, 0, "random", {"img_size": 32}), store)
    assert set(records) == {"knn", "linear", "lora", "finetune", "zeroshot"}
    for method, record in records.items():
        assert record["status"] == "ok", (method, record["error"])
        assert not set(record["spec"]["hparams"]) - {"img_size", "epochs"}, method  # nothing tuned was fixed by hand
        assert record["protocol"]["reported_on"] == "test" and record["metrics"].get("n_eval", 120) == 120, method
    for method in ("linear", "lora"):  # tuned on the carved val, refitted on train + val
        protocol = records[method]["protocol"]
        assert protocol["tuned_on"] == "train" and protocol["selected_on"] == "val" and protocol["final_train_split"] == "trainval"
        assert len(protocol["candidates"]) > 1
    assert records["zeroshot"]["protocol"]["class_names_source"].startswith("class folder names under")
