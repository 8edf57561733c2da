"""DomainBed's datasets as leave-one-domain-out tasks: read as DomainBed's loader reads them, split
by its seeded 20 % holdout, model selection by training-domain validation (never reading the test
domain) and the oracle, each labelled."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import tasks.shift.domainbed as dbed  # registers the domainbed tasks and suites
from harness.errors import BobError
from harness.registry import TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from tasks.shift.toy_sets import SHAPES, write_domainbed

DOMAINS = ("cartoon", "photo", "sketch")


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_domainbed(tmp_path / "toy", DOMAINS, SHAPES, per_class=8, seed=3)


def _task(root: Path, test: str, seed: int = 0, select: str = "training"):
    from types import SimpleNamespace

    name = f"domainbed:{root}?test={test}" + ("&select=oracle" if select == "oracle" else "")
    return TASKS.get(name).factory(cell=SimpleNamespace(seed=seed, data={}))


def test_each_image_gets_the_label_and_place_domainbeds_imagefolder_gives_it(dataset):
    """DomainBed reads each domain with torchvision's ImageFolder, domains sorted by name."""
    from torchvision.datasets import ImageFolder

    data = dbed.read_domains(dataset)
    assert data.domains == sorted(DOMAINS) and data.classes == sorted(SHAPES)
    for domain in data.domains:
        official = ImageFolder(str(dataset / domain)).samples
        assert [(str(p), y) for p, y in data.files[domain]] == official


def test_splits_follow_domainbeds_holdout_and_are_reproducible_per_seed(dataset):
    a, b, c = _task(dataset, "photo", 0), _task(dataset, "photo", 0), _task(dataset, "photo", 1)
    pa, pb, pc = (t.split_provenance for t in (a, b, c))
    assert pa["sha256"] == pb["sha256"] and pa["trial_seed"] == 0 and pc["trial_seed"] == 1
    assert pa["sha256"]["train"] != pc["sha256"]["train"] and pa["sha256"]["test"] != pc["sha256"]["test"]
    data = dbed.read_domains(dataset)
    for i, domain in enumerate(data.domains):  # DomainBed: split_dataset(env, int(len * 0.2), seed_hash(trial_seed, i))
        files = data.files[domain]
        order = list(range(len(files)))
        np.random.RandomState(int(hashlib.md5(str((1, i)).encode()).hexdigest(), 16) % 2 ** 31).shuffle(order)
        n_out = int(len(files) * 0.2)
        out = [(str(files[j][0]), files[j][1]) for j in order[:n_out]]
        inn = [(str(files[j][0]), files[j][1]) for j in order[n_out:]]
        got_out = [(str(s.image), s.label) for s in c.load(f"{domain}_out").samples]
        got_in = [(str(s.image), s.label) for s in c.load(f"{domain}_in").samples]
        assert got_out == out and got_in == inn
    train = {str(s.image) for s in c.load("train").samples}
    val = {str(s.image) for s in c.load("val").samples}
    test = {str(s.image) for s in c.load("test").samples} | {str(s.image) for s in c.load("test_out").samples}
    assert not (train & val) and not (train & test) and not (val & test)
    assert all("/photo/" not in p for p in train | val) and all("/photo/" in p for p in test)
    assert pc["counts"]["val"] == 2 * int(32 * 0.2) and pc["counts"]["test"] == 32 - int(32 * 0.2)


def _poison(src: Path, dst: Path, domain: str) -> Path:
    """A copy of ``src`` whose ``domain`` has every class folder renamed to the next class: wrong labels there only."""
    shutil.copytree(src, dst)
    classes = sorted(p.name for p in (dst / domain).iterdir())
    for c in classes:
        (dst / domain / c).rename(dst / domain / f"tmp_{c}")
    for i, c in enumerate(classes):
        (dst / domain / f"tmp_{c}").rename(dst / domain / classes[(i + 1) % len(classes)])
    return dst


def test_training_domain_validation_never_reads_the_test_domain_and_the_oracle_is_labelled(tmp_path, dataset):
    poisoned = _poison(dataset, tmp_path / "poisoned", "photo")
    hp = {"img_size": 32, "search": {"C": [0.1, 1.0]}}

    def run(root, select):
        name = f"domainbed:{root}?test=photo" + ("&select=oracle" if select == "oracle" else "")
        spec = RunSpec("timm:test_vit", "linear", name, 0, "random", hp, data=dbed.data_identity(name, 0, None, None))
        record = run_cell(spec, None, log=lambda *_: None)
        assert record["status"] == "ok", record["error"]
        return record

    clean, bad = run(dataset, "training"), run(poisoned, "training")
    a, b = clean["task_meta"]["split_provenance"]["sha256"], bad["task_meta"]["split_provenance"]["sha256"]
    assert a["train"] == b["train"] and a["val"] == b["val"] and a["test"] != b["test"]
    assert clean["protocol"]["selected_on"] == "val" and clean["protocol"]["final_train_split"] == "train"
    # one training: the training domains' out parts are the ID number, the held-out domain the evaluation set (and the primary)
    assert clean["protocol"]["reported_on"] == "val" and [e["split"] for e in clean["protocol"]["eval_sets"]] == ["test"]
    assert clean["primary_metric"]["name"] == "ood_top1" and clean["metrics"]["ood_top1"] == clean["metrics"]["test_domain/top1"]
    assert clean["metrics"]["test_domain/n_eval"] == 32 - int(32 * 0.2) and clean["metrics"]["n_eval"] == 2 * int(32 * 0.2)
    assert clean["metrics"]["top1"] == bad["metrics"]["top1"]  # the training-domain validation number is untouched
    assert clean["protocol"]["candidates"] == bad["protocol"]["candidates"] and clean["protocol"]["selected"] == bad["protocol"]["selected"]
    selection = clean["task_meta"]["model_selection"]
    assert selection["label"] == "training-domain validation" and selection["oracle"] is False
    oracle = run(dataset, "oracle")
    assert oracle["protocol"]["selected_on"] == "test_out" and oracle["task_meta"]["model_selection"]["oracle"] is True
    assert oracle["task_meta"]["model_selection"]["label"] == "oracle (test-domain validation)"
    assert oracle["task_meta"]["split_provenance"]["sha256"] == clean["task_meta"]["split_provenance"]["sha256"]


def test_registered_tasks_suites_and_the_oracle_rows_are_labelled():
    from harness.suites import suite

    for dataset, (_, domains, _) in dbed.DATASETS.items():
        assert suite("domainbed").group_of(f"shift/domainbed/{dataset}/{dbed.slug(domains[0])}") is not None
        assert TASKS.get(f"shift/domainbed/{dataset}/{dbed.slug(domains[-1])}/oracle").meta["selection"] == "oracle"
    assert "oracle" in suite("domainbed_oracle").title and "oracle" not in suite("domainbed").title
    assert "shift/domainbed/office_home/real_world" in TASKS
    task = TASKS.get("shift/domainbed/toy/sketch/oracle").factory()
    assert task.meta()["model_selection"]["oracle"] and task.group == "domainbed-oracle/toy" and task.tune_splits == ("train", "test_out")


def test_a_cell_id_names_its_trial_seed_and_files(dataset):
    ids = {RunSpec("timm:test_vit", "linear", f"domainbed:{dataset}?test=photo", s, "random",
                   data=dbed.data_identity(f"domainbed:{dataset}?test=photo", s, None, None)).id for s in (0, 0, 1)}
    assert len(ids) == 2


def test_bad_input_is_a_one_line_error_naming_the_folder_and_the_fix(tmp_path, dataset):
    one = tmp_path / "one"
    shutil.copytree(dataset / "photo", one / "photo")
    with pytest.raises(BobError, match=rf"{one}: a DomainBed dataset needs at least two domain folders .* found one \(photo\); lay it out as") as err:
        _task(one, "photo")
    assert "\n" not in str(err.value)
    with pytest.raises(BobError, match=r"has no domain 'clipart'; its domains are cartoon, photo, sketch"):
        _task(tmp_path / "toy", "clipart")
    with pytest.raises(BobError, match=r"select='best' is not one of training, oracle"):
        TASKS.get(f"domainbed:{dataset}?test=photo&select=best")
    with pytest.raises(BobError, match=r"which domain is left out"):
        TASKS.get(f"domainbed:{dataset}")
    shutil.rmtree(dataset / "sketch" / "cross")
    with pytest.raises(BobError, match=r"domain 'sketch' has other classes than 'cartoon' \(differ: cross\)"):
        _task(dataset, "photo")


def test_the_shift_suite_holds_the_three_groups_and_verify_reads_the_generated_sets():
    from harness.suites import hook, suite

    groups = {g.name: g for g in suite("shift").groups}
    assert "shift/domainbed/pacs/photo" in groups["domain_generalization"].tasks
    assert not any(t.endswith("/oracle") for t in groups["domain_generalization"].tasks)  # the oracle never enters the DG mean
    assert "shift/visda2017" in groups["synthetic_to_real"].tasks
    assert "shift/sim10k_cityscapes" in groups["ood_detection"].tasks and groups["ood_detection"].metric == "AP"
    check = hook("shift", "check_data")
    for task in ("shift/domainbed/toy/photo", "shift/visda2017/toy", "shift/sim10k_cityscapes/toy"):
        found = check(task, None, None, True)
        assert found.status == "ready", found.problems
    assert check("shift/domainbed/toy/photo", None, None).counts["test"] == 32
    assert check("shift/sim10k_cityscapes/toy", None, None).counts["val_images"] == 10
    missing = check("shift/domainbed/pacs/photo", "/nonexistent", None)
    assert missing.status == "missing" and "/nonexistent/PACS does not exist" in missing.message()
