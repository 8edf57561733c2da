"""Prompt learning (#24): the reference K-shot rule, the protocols, every method's parameter
discipline on two open_clip architectures, honest selection (poisoned labels), TPT's reset, the
tables' averages, and one-line errors. Tiny random-init open_clip configs (bob-tiny-clip: CLIP;
bob-tiny-clip-ct: CustomTextCLIP, other widths) on the generated pair in the CoOp layout."""
from __future__ import annotations

import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from harness.errors import BobError
from harness.features import FeatureCache
from harness.grid import Grid, expand
from harness.registry import BACKBONES, METHODS, TASKS
from harness.runner import check_supported, run_cell
from harness.spec import RunSpec
from harness.types import RunContext

ARCHS = ("bob-tiny-clip", "bob-tiny-clip-ct")
WIDTHS = {"bob-tiny-clip": {"text": 48, "vision": 64, "embed": 32}, "bob-tiny-clip-ct": {"text": 40, "vision": 48, "embed": 24}}
TRAINED = ("coop", "cocoop", "kgcoop", "maple", "promptsrc", "tip_adapter_f", "clip_adapter", "tpt")
SMALL = {"coop": {"n_ctx": 4}, "maple": {"depth": 2}, "promptsrc": {"depth_text": 2, "depth_vision": 2}, "tip_adapter_f": {"augment_epochs": 1}}


# -- data ---------------------------------------------------------------------------------------------
def reference_split() -> dict:
    """Five classes of unequal sizes, interleaved, label 3 appearing first (the rule's class order is
    first appearance, and its generator use depends on each class's size)."""
    order = [3, 0, 4, 1, 2]
    sizes = {"train": {0: 7, 1: 9, 2: 5, 3: 12, 4: 6}, "val": {0: 3, 1: 5, 2: 2, 3: 4, 4: 6}, "test": {c: 2 for c in range(5)}}
    return {s: [[f"c{c}/{s}_{i}.jpg", c, f"class_{c}"] for i in range(max(n.values())) for c in order if i < n[c]] for s, n in sizes.items()}


# Chosen by Dassl's own DatasetBase.generate_fewshot_dataset (KaiyangZhou/Dassl.pytorch @ c61a1b5, run on
# reference_split() after random.seed(seed), train then val with min(K, 4)): "class:index" of each pick, in order.
DASSL_GOLDEN = {
    (1, 4): ("c3:2 c3:9 c3:1 c3:4 c0:0 c0:3 c0:5 c0:4 c4:5 c4:3 c4:1 c4:0 c1:7 c1:0 c1:6 c1:3 c2:3 c2:0 c2:2 c2:1",
             "c3:2 c3:3 c3:0 c3:1 c0:0 c0:1 c0:2 c4:2 c4:0 c4:4 c4:3 c1:4 c1:0 c1:1 c1:3 c2:0 c2:1"),
    (2, 1): ("c3:0 c0:0 c4:0 c1:5 c2:1", "c3:2 c0:1 c4:4 c1:1 c2:0"),
    (3, 5): ("c3:3 c3:9 c3:8 c3:2 c3:5 c0:4 c0:3 c0:6 c0:0 c0:2 c4:0 c4:3 c4:2 c4:4 c4:5 c1:3 c1:7 c1:4 c1:6 c1:8 c2:3 c2:1 c2:0 c2:2 c2:4",
             "c3:0 c3:2 c3:3 c3:1 c0:0 c0:1 c0:2 c4:4 c4:0 c4:2 c4:5 c1:2 c1:3 c1:4 c1:1 c2:0 c2:1"),
}


def short(paths: list[str]) -> str:
    return " ".join(p.split("/")[0] + ":" + p.rsplit("_", 1)[1].split(".")[0] for p in paths)


def dassl_rule(split: dict, k: int, seed: int) -> tuple[list[str], list[str]]:
    """The rule as Dassl writes it: the global generator seeded, a defaultdict per label, random.sample."""
    state = random.getstate()
    random.seed(seed)
    try:
        out = []
        for items, shots in ((split["train"], k), (split["val"], min(k, 4))):
            groups = defaultdict(list)
            for item in items:
                groups[item[1]].append(item)
            out.append([it[0] for its in groups.values() for it in (random.sample(its, shots) if len(its) >= shots else its)])
        return out[0], out[1]
    finally:
        random.setstate(state)


def write_dtd(root: Path, split: dict) -> Path:
    folder = root / "dtd"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return folder


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    """The generated pair, written once for the module (passed as data paths)."""
    from tasks.prompt_learning.generate import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    for name in ("toy_colours", "toy_textures"):
        write_toy_dataset(name, root / name)
    return root


def toy_paths(root: Path) -> dict[str, str]:
    return {f"coop:{n}": str(root / n) for n in ("toy_colours", "toy_textures")}


def cell_for(method: str, task: str, seed: int, paths: dict, hp: dict | None = None, arch: str = "bob-tiny-clip") -> RunSpec:
    cells = expand(Grid("t", [(f"openclip:{arch}", "random")], [method], [task], [seed], {method: {"img_size": 32, **(hp or {})}}, data_paths=paths)).cells
    assert cells, f"{method} x {task} was skipped"
    return cells[0]


# -- 1. the K-shot sampler ---------------------------------------------------------------------------
def test_fewshot_subset_is_dassls_for_the_same_split_file_and_seed(tmp_path):
    from tasks.prompt_learning.fewshot import draw_fewshot

    split = reference_split()
    train_labels, val_labels = [i[1] for i in split["train"]], [i[1] for i in split["val"]]
    for (seed, k), (golden_train, golden_val) in DASSL_GOLDEN.items():
        draw = draw_fewshot(train_labels, val_labels, k, seed)
        assert short([split["train"][i][0] for i in draw.train]) == golden_train
        assert short([split["val"][i][0] for i in draw.val]) == golden_val
    for seed in (1, 2, 3, 7):
        for k in (1, 2, 4, 5):
            draw = draw_fewshot(train_labels, val_labels, k, seed)
            assert ([split["train"][i][0] for i in draw.train], [split["val"][i][0] for i in draw.val]) == dassl_rule(split, k, seed)
    # the task records the same images, and different seeds draw different ones
    folder = write_dtd(tmp_path, split)
    task = TASKS.get("coop:dtd?shots=4").factory(data_root=str(tmp_path), cell=RunSpec("b", "coop", "coop:dtd?shots=4", 1))
    record = task.split_provenance["fewshot"]
    assert short(record["train"]) == DASSL_GOLDEN[(1, 4)][0] and short(record["val"]) == DASSL_GOLDEN[(1, 4)][1]
    assert record["seed"] == 1 and record["k"] == 4 and record["counts"] == {"train": 20, "val": 17}
    assert [s.image for s in task.load("train").samples][:2] == [folder / "images" / "c3/train_2.jpg", folder / "images" / "c3/train_9.jpg"]


def test_cell_id_holds_the_chosen_images_hash_and_a_changed_split_file_changes_it(tmp_path):
    split = reference_split()
    write_dtd(tmp_path, split)

    def ids(seed=1, method="coop"):
        grid = Grid("t", [("openclip:bob-tiny-clip", "random")], [method], ["coop:dtd?shots=2"], [seed], data_root=str(tmp_path))
        return expand(grid).cells[0]

    first = ids()
    assert first.data["fewshot_ids"] and first.id == ids().id and first.id != ids(seed=2).id
    assert first.id == RunSpec.from_dict(first.as_dict()).id  # the identity survives the trip to a worker
    assert RunSpec("b", "m", "digits").as_dict().keys() == {"backbone", "method", "task", "seed", "weights", "hparams"}  # other ids unchanged
    split["test"].append(["c0/test_9.jpg", 0, "class_0"])  # a change the draw does not see still changes the cell
    write_dtd(tmp_path, split)
    changed = ids()
    assert changed.id != first.id and changed.data["fewshot_ids"] == first.data["fewshot_ids"]
    next(e for e in split["train"] if e[0] == "c3/train_2.jpg")[0] = "c3/renamed.jpg"  # one of the chosen images
    write_dtd(tmp_path, split)
    assert ids().data["fewshot_ids"] != first.data["fewshot_ids"]
    with pytest.raises(BobError, match="the data changed since the grid was expanded"):  # never re-drawn silently
        TASKS.get("coop:dtd?shots=2").factory(data_root=str(tmp_path), cell=first)


def test_any_classification_task_runs_few_shot(tmp_path):
    from .fixtures import make_image_folder_dataset

    data = make_image_folder_dataset(tmp_path / "colours", {"train": 12, "test": 4})
    task = f"fewshot:folder:{data}?shots=2"
    spec = expand(Grid("t", [("openclip:bob-tiny-clip", "random")], ["linear"], [task], [3], {"linear": {"img_size": 32, "epochs": 5}})).cells[0]
    record = run_cell(spec, device="cpu", log=lambda s: None)
    assert record["status"] == "ok", record["error"]
    fewshot = record["task_meta"]["split_provenance"]["fewshot"]
    assert fewshot["counts"] == {"train": 6, "val": 6} and fewshot["cell_id_part"] == spec.data and len(fewshot["ids"]) == 12
    assert record["protocol"]["selected_on"] == "val" and record["metrics"]["n_eval"] == 12  # tuned on the few-shot val, reported on the folder's test
    other = expand(Grid("t", [("openclip:bob-tiny-clip", "random")], ["zsclip"], [task], [4], {"zsclip": {"img_size": 32}})).cells[0]
    assert other.data["fewshot_ids"] != spec.data["fewshot_ids"]


# -- 2. every method: declared parameters only, frozen towers, widths from the model, a loss that falls ----
@pytest.fixture(scope="module")
def cells(toy_root):
    """(arch, method) -> (PromptCell, learner) on 4-shot colours."""
    from harness.prompt.engine import PromptCell

    out = {}
    for arch in ARCHS:
        backbone = BACKBONES.get(f"openclip:{arch}").factory(weights="random", seed=0, img_size=32)
        spec = cell_for("coop", "coop:toy_colours?shots=4", 1, toy_paths(toy_root))
        task = TASKS.get(spec.task).factory(overrides=toy_paths(toy_root), cell=spec)
        for method in TRAINED:
            hp = METHODS.get(method).factory().resolve_hparams({"img_size": 32, "epochs": 4, "batch_size": 8, "augment": False, **SMALL.get(method, {})})
            ctx = RunContext(device="cpu", seed=1, cell_id=f"{arch}-{method}", feature_cache=FeatureCache(None), checkpoint_dir=None)
            cell = PromptCell(method, backbone, task, hp, ctx)
            if method == "tip_adapter_f":
                from harness.prompt.engine import build_cache
                from harness.prompt.learners import TipAdapterF

                keys, values = build_cache(cell)
                learner = TipAdapterF(cell.towers, cell.hp, cell.train_classes, keys=keys, values=values)
            else:
                learner = cell.build_learner()
            out[arch, method] = (cell, learner)
    return out


def _batch(cell):
    import torch

    ds = cell.task.load("train").with_transform(cell.backbone.preprocess.eval_transform())
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.tensor(ds.labels)


def _loss(cell, learner, images, labels):
    import torch

    if learner.prompts_vision:
        return learner.loss(images, labels)
    with torch.no_grad():
        feats = cell.towers.encode_image(images)
    return learner.loss(images, labels, feats)


@pytest.mark.parametrize("arch", ARCHS)
def test_only_declared_parameters_get_gradients_and_widths_come_from_the_model(cells, arch):
    from harness.prompt.towers import state_sha256

    for method in TRAINED:
        cell, learner = cells[arch, method]
        towers = cell.towers
        assert (towers.text_width, towers.vision_width, towers.embed_dim) == tuple(WIDTHS[arch].values())
        before = state_sha256(towers.clip)
        declared = set(learner.declared())
        for name, p in learner.named_parameters():
            p.requires_grad_(name in declared)
            p.grad = None
        images, labels = _batch(cell)
        _loss(cell, learner, images[:6], labels[:6]).backward()
        got = {n for n, p in learner.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        assert got == declared, (method, declared ^ got)
        assert all(p.grad is None for p in towers.clip.parameters()), method
        assert state_sha256(towers.clip) == before
        shapes = {n: tuple(p.shape) for n, p in learner.named_parameters()}
        w = WIDTHS[arch]
        expect = {"coop": {"prompt.ctx": (4, w["text"])}, "kgcoop": {"prompt.ctx": (4, w["text"])}, "tpt": {"prompt.ctx": (4, w["text"])},
                  "cocoop": {"meta_net.0.weight": (w["embed"] // 16, w["embed"]), "meta_net.2.weight": (w["text"], w["embed"] // 16)},
                  "maple": {"prompt.ctx": (2, w["text"]), "proj.weight": (w["vision"], w["text"]), "deep_proj.0.weight": (w["vision"], w["text"])},
                  "promptsrc": {"vpt": (4, w["vision"]), "deep_text.0": (4, w["text"]), "deep_vision.0": (4, w["vision"])},
                  "clip_adapter": {"adapter.0.weight": (w["embed"] // 4, w["embed"]), "adapter.2.weight": (w["embed"], w["embed"] // 4)},
                  "tip_adapter_f": {"keys": (24, w["embed"])}}[method]
        assert {k: shapes[k] for k in expect} == expect, method


def test_every_method_lowers_its_loss_on_a_learnable_task_and_leaves_the_towers_unchanged(cells):
    import torch

    from harness.prompt.towers import state_sha256

    arch = "bob-tiny-clip"
    for method in TRAINED:
        cell, learner = cells[arch, method]
        images, labels = _batch(cell)
        before_towers = state_sha256(cell.towers.clip)
        with torch.no_grad():
            start = float(_loss(cell, learner, images, labels))
        cell.hp = {**cell.hp, "epochs": 4}  # the method's own (the reference's) learning rate
        report = cell.train(learner, {"m": method})
        with torch.no_grad():
            end = float(_loss(cell, learner, images, labels))
        assert end < start, (method, start, end)
        assert len(report["curve"]) == 4 and state_sha256(cell.towers.clip) == before_towers


def test_class_token_position_moves_the_name_not_the_end_token(cells):
    import torch

    from harness.prompt.learners import TextContext

    cell, _ = cells["bob-tiny-clip", "coop"]
    towers = cell.towers
    names = ["red", "dark green"]
    for position in ("end", "middle", "front"):
        prompt = TextContext(towers, 4, "", position=position)
        ct = towers.class_text(names, prompt.prefix, "cpu")
        emb = prompt.embeddings(ct)
        assert emb.shape == ct.embeddings.shape
        for i, name in enumerate(names):
            k = ct.name_lens[i]
            name_emb = ct.embeddings[i, 1 + 4:1 + 4 + k]
            at = {"end": 1 + 4, "middle": 1 + 2, "front": 1}[position]
            assert torch.equal(emb[i, at:at + k], name_emb), (position, name)
            ctx_rows = [j for j in range(1, 1 + 4 + k) if not at <= j < at + k]
            assert torch.equal(emb[i, ctx_rows], prompt.ctx.detach()), (position, name)
            assert torch.equal(emb[i, 1 + 4 + k:], ct.embeddings[i, 1 + 4 + k:])  # '.', end token and padding stay where the ids say


def test_vision_prompts_need_a_vit_and_depth_within_the_towers(cells):
    cell, _ = cells["bob-tiny-clip", "maple"]
    with pytest.raises(BobError, match="depth=5 must be an integer from 1 to 2"):
        from harness.prompt.learners import MaPLe

        MaPLe(cell.towers, {**cell.hp, "depth": 5}, cell.train_classes)


# -- 3. base-to-new ---------------------------------------------------------------------------------
def test_new_classes_are_never_seen_in_training(toy_root, tmp_path):
    """Poison the new classes' training and validation entries (labels permuted among them, names
    garbled, images deleted): base and new accuracy and the learned prompt do not move."""
    poisoned = tmp_path / "toy_colours"
    shutil.copytree(toy_root / "toy_colours", poisoned)
    split_file = poisoned / "split_zhou_ToyColours.json"
    split = json.loads(split_file.read_text())
    new = [3, 4, 5]  # 6 classes: base = 0, 1, 2
    perm = {3: 5, 4: 3, 5: 4}
    for s in ("train", "val"):
        for entry in split[s]:
            if entry[1] in new:
                (poisoned / "images" / entry[0]).unlink(missing_ok=True)
                entry[1], entry[2] = perm[entry[1]], f"poison_{entry[1]}"
    split_file.write_text(json.dumps(split))
    task = "coop:toy_colours?shots=4&protocol=base2new"
    runs = []
    for paths in (toy_paths(toy_root), {**toy_paths(toy_root), "coop:toy_colours": str(poisoned)}):
        spec = cell_for("coop", task, 1, paths, {"epochs": 3, "batch_size": 4})
        record = run_cell(spec, data_paths=paths, device="cpu", log=lambda s: None)
        assert record["status"] == "ok", record["error"]
        runs.append(record)
    clean, dirty = runs
    assert clean["task_meta"]["split_provenance"]["base2new"] == {**clean["task_meta"]["split_provenance"]["base2new"], "base_labels": [0, 1, 2], "new_labels": [3, 4, 5]}
    trained_on = {s.split("/")[0] for s in clean["task_meta"]["split_provenance"]["fewshot"]["train"]}
    assert trained_on == {"red", "green", "blue", "yellow", "purple", "orange"}  # drawn over all classes, as the reference...
    assert clean["task_meta"]["split_provenance"]["counts"]["train"] == 12  # ...but only the base classes' 3 x 4 train
    for key in ("base_top1", "new_top1", "hm", "final_train_loss"):
        assert clean["metrics"][key] == dirty["metrics"][key], key
    assert clean["curves"]["train"] == dirty["curves"]["train"]
    m = clean["metrics"]
    assert m["hm"] == pytest.approx(2 * m["base_top1"] * m["new_top1"] / (m["base_top1"] + m["new_top1"]))


def test_base_to_new_averages_equal_hand_computations():
    from tasks.prompt_learning.tables import base2new_table

    def rec(method, dataset, seed, b, n):
        return {"backbone": "bb", "method": method, "dataset": dataset, "protocol": "base2new", "shots": 16, "seed": seed,
                "metrics": {"base_top1": b, "new_top1": n}, "trainable_params": 1, "wall_s": 1.0, "fit_s": 0.5}

    rows = [rec("coop", "dtd", 1, 80.0, 40.0), rec("coop", "dtd", 2, 70.0, 50.0), rec("coop", "eurosat", 1, 90.0, 30.0), rec("coop", "eurosat", 2, 90.0, 30.0)]
    datasets, table = base2new_table(rows)
    assert datasets == ["dtd", "eurosat"]
    row = table[0]
    # dtd: B = 75, N = 45, HM = 2*75*45/120 = 56.25; eurosat: B = 90, N = 30, HM = 45
    assert row["dtd"] == pytest.approx((75.0, 45.0, 56.25)) and row["eurosat"] == pytest.approx((90.0, 30.0, 45.0))
    avg = row["average"]
    assert avg["base"] == pytest.approx(82.5) and avg["new"] == pytest.approx(37.5)
    assert avg["hm_of_means"] == pytest.approx(2 * 82.5 * 37.5 / 120.0)  # 51.5625: the papers' convention
    assert avg["mean_of_hms"] == pytest.approx((56.25 + 45.0) / 2)  # 50.625: differs, and is labelled apart


# -- 4. Tip-Adapter's alpha / beta on the few-shot val, never test ------------------------------------------
def test_tip_adapter_chooses_alpha_beta_on_the_few_shot_val_and_never_reads_test_labels(toy_root, tmp_path):
    poisoned = tmp_path / "toy_colours"
    shutil.copytree(toy_root / "toy_colours", poisoned)
    split_file = poisoned / "split_zhou_ToyColours.json"
    split = json.loads(split_file.read_text())
    pairs = [(e[1], e[2]) for e in split["test"]]
    random.Random(0).shuffle(pairs)
    split["test"] = [[e[0], *p] for e, p in zip(split["test"], pairs)]  # every test label poisoned (names kept consistent per label)
    split_file.write_text(json.dumps(split))
    task = "coop:toy_colours?shots=4"
    for method, hp in (("tip_adapter", {"augment_epochs": 2, "beta_steps": 30, "alpha_steps": 10}),
                       ("tip_adapter_f", {"augment_epochs": 2, "beta_steps": 30, "alpha_steps": 10, "epochs": 3, "select": "val"})):
        records = []
        for paths in (toy_paths(toy_root), {**toy_paths(toy_root), "coop:toy_colours": str(poisoned)}):
            spec = cell_for(method, task, 2, paths, hp)
            record = run_cell(spec, data_paths=paths, device="cpu", log=lambda s: None)
            assert record["status"] == "ok", record["error"]
            records.append(record)
        clean, dirty = records
        assert clean["protocol"]["selected_on"] == "val" and set(clean["protocol"]["selected"]) == {"alpha", "beta"}
        assert clean["protocol"]["selected"] == dirty["protocol"]["selected"] and clean["protocol"]["tip"] == dirty["protocol"]["tip"]
        assert dirty["metrics"]["top1"] < clean["metrics"]["top1"]  # the poison did reach the test score, and only it
        if method == "tip_adapter_f":
            assert clean["protocol"]["selection"]["selected_on"] == "val"
            assert clean["protocol"]["selection"]["history"] == dirty["protocol"]["selection"]["history"]


def test_tip_search_grid_is_the_references():
    from harness.prompt.tip import search_grid

    betas, alphas = search_grid((7, 3), (200, 20))
    assert len(betas) == 200 and betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(199 * 6.9 / 200 + 0.1)
    assert len(alphas) == 20 and alphas[1] == pytest.approx(2.9 / 20 + 0.1)


# -- 5. TPT resets after each image --------------------------------------------------------------------------
def test_tpt_resets_the_prompt_after_each_test_image(cells):
    import torch

    from harness.data import open_rgb
    from harness.prompt.learners import ClassSet
    from harness.prompt.tpt import tpt_predict, views_of

    cell, learner = cells["bob-tiny-clip", "tpt"]
    cell.hp = {**cell.hp, "views": 8, "tta_lr": 0.05}
    samples = cell.task.load("test").samples
    classes = ClassSet(cell.train_classes.names, cell.train_classes.templates)
    start = learner.prompt.ctx.detach().clone()

    def views(sample):
        return views_of(open_rgb(sample), sample.identity[0], 1, 8, cell.backbone.preprocess, True)

    def predict(sample):
        return tpt_predict(learner, cell.towers, views(sample), classes, cell.hp, cell.amp())

    alone = predict(samples[7])
    assert torch.equal(learner.prompt.ctx, start)
    predict(samples[0])
    after_other = predict(samples[7])
    assert torch.equal(alone, after_other)  # the second image's result does not depend on the first's
    with torch.no_grad():
        untuned = learner.logits_from_features(cell.towers.encode_image(views(samples[7])[:1]), classes)
    assert not torch.allclose(alone, untuned)  # tuning did change the prediction: a leaked prompt would show
    # without the reset, the first image's step would carry over
    opt = torch.optim.AdamW([learner.prompt.ctx], lr=0.05)
    with torch.no_grad():
        feats = cell.towers.encode_image(views(samples[0]))
    from harness.prompt.tpt import marginal_entropy

    marginal_entropy(learner.logits_from_features(feats, classes)).backward()
    opt.step()
    leaked = predict(samples[7])
    with torch.no_grad():
        learner.prompt.ctx.copy_(start)
    assert not torch.allclose(leaked, alone)


# -- 6. bad input: one line each -----------------------------------------------------------------------------
def test_bad_input_is_a_one_line_error(tmp_path, toy_root):
    def one_line(exc):
        assert "\n" not in str(exc.value)
        return str(exc.value)

    folder = write_dtd(tmp_path, reference_split())
    split_file = folder / "split_zhou_DescribableTextures.json"
    for bad, expected in (([["a.jpg", 0, "x"]], "expected a JSON object"), ({"train": [], "val": []}, "no 'test' key"),
                          ({"train": [["a.jpg", 0]], "val": [], "test": []}, r"train\[0\] is \[\"a.jpg\", 0\]; each entry must be \[path, label, classname\]"),
                          ({"train": [["a.jpg", "zero", "x"]], "val": [], "test": []}, "has label 'zero'")):
        split_file.write_text(json.dumps(bad))
        with pytest.raises(BobError, match=expected) as exc:
            expand(Grid("t", [("openclip:bob-tiny-clip", "random")], ["coop"], ["coop:dtd?shots=1"], [1], data_root=str(tmp_path)))
        assert str(split_file) in one_line(exc)
    write_dtd(tmp_path, reference_split())
    with pytest.raises(BobError, match=r"class 'class 2' \(label 2\) has 5 training image\(s\), fewer than shots=6") as exc:
        expand(Grid("t", [("openclip:bob-tiny-clip", "random")], ["coop"], ["coop:dtd?shots=6"], [1], data_root=str(tmp_path)))
    one_line(exc)
    with pytest.raises(BobError, match=r"unknown dataset 'dtdd' \(did you mean dtd\?\)") as exc:
        TASKS.get("coop:dtdd?shots=4")
    one_line(exc)
    with pytest.raises(BobError, match=r"write it as coop:dtd\?shots=4&protocol=base2new"):
        TASKS.get("coop:dtd?protocol=base2new&shots=4")
    reason = check_supported(RunSpec("timm:resnet18", "coop", "coop:toy_colours?shots=4", 1, "random"))
    assert reason and "needs both towers of a vision-language model" in reason and "\n" not in reason
    spec = RunSpec("timm:resnet18", "maple", "coop:toy_colours?shots=4", 1, "random", {"img_size": 32})
    record = run_cell(spec, data_paths=toy_paths(toy_root), device="cpu", log=lambda s: None)
    assert record["status"] == "skipped" and "needs both towers" in record["error"]["message"]
    assert "linear" in (check_supported(RunSpec("timm:resnet18", "linear", "coop:toy_colours?shots=4&protocol=base2new", 1)) or "")
    from tasks.prompt_learning.verify import check_coop_data

    check = check_coop_data("coop:dtd?shots=4", str(tmp_path))  # the reference split's images were never written
    assert check.status == "invalid" and check.counts["train"] == 39 and "20 image(s) of its val split" not in check.message()
    assert "39 image(s) of its train split are missing" in check.message()
    assert check_coop_data("coop:dtd?shots=4", str(tmp_path / "nowhere")).status == "missing"


def test_gaussian_aggregation_survives_a_resumed_fit(toy_root, tmp_path):
    """PromptSRC's aggregate is state in the learner's buffers: a fit interrupted after epoch 2 and
    resumed from its checkpoint ends with the same prompts as an uninterrupted one."""
    import torch

    from harness.prompt.engine import PromptCell

    backbone = BACKBONES.get("openclip:bob-tiny-clip").factory(weights="random", seed=0, img_size=32)
    spec = cell_for("promptsrc", "coop:toy_colours?shots=2", 1, toy_paths(toy_root))
    task = TASKS.get(spec.task).factory(overrides=toy_paths(toy_root), cell=spec)
    hp = METHODS.get("promptsrc").factory().resolve_hparams({"img_size": 32, "epochs": 3, "batch_size": 4, "depth_text": 2, "depth_vision": 2,
                                                            "gpa_std": 1.0})

    logs = []

    def train(folder, on_metrics=None):
        ctx = RunContext(device="cpu", seed=1, cell_id="gpa", feature_cache=FeatureCache(None), checkpoint_dir=folder, on_metrics=on_metrics,
                         log=logs.append)
        cell = PromptCell("promptsrc", backbone, task, hp, ctx)
        learner = cell.build_learner()
        report = cell.train(learner, {"t": 1})
        return {n: p.detach().clone() for n, p in learner.named_parameters()}, report

    straight, report = train(None)
    assert report["gpa"]["weights"][1] > 0 and len(report["gpa"]["weights"]) == 3

    def crash(metrics, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("preempted")

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "ckpt", crash)
    resumed, _ = train(tmp_path / "ckpt")
    assert any("at epoch 2/3" in line for line in logs)  # it did resume, after the second epoch
    assert straight.keys() == resumed.keys() and all(torch.allclose(straight[n], resumed[n], atol=1e-6) for n in straight)


def test_fgvc_aircraft_lists_and_imagenet_folders_are_read_as_released(tmp_path):
    from tasks.prompt_learning.datasets import DATASETS, read_dataset

    fgvc = tmp_path / "fgvc_aircraft"
    fgvc.mkdir()
    (fgvc / "variants.txt").write_text("707-320\nA300B4\nDC-3\n")
    for split, lines in {"train": ["0001 DC-3", "0002 707-320", "0003 DC-3"], "val": ["0004 A300B4"], "test": ["0005 707-320", "0006 A300B4"]}.items():
        (fgvc / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    data = read_dataset(DATASETS["fgvc_aircraft"], fgvc)
    assert [(i.path, i.label) for i in data.splits["train"]] == [("0001.jpg", 2), ("0002.jpg", 0), ("0003.jpg", 2)]
    assert data.class_names("test") == ["707-320", "A300B4", "DC-3"] and data.image_root == fgvc / "images"
    (fgvc / "images_variant_val.txt").write_text("0004 A380\n")
    with pytest.raises(BobError, match=r"images_variant_val.txt:1: variant 'A380' is not in variants.txt"):
        read_dataset(DATASETS["fgvc_aircraft"], fgvc)

    imagenet = tmp_path / "imagenet"
    (imagenet / "classnames.txt").parent.mkdir()
    (imagenet / "classnames.txt").write_text("n02 goldfish\nn01 tench fish\n")
    for sub, n in (("train", 5), ("val", 2)):
        for wnid in ("n02", "n01"):
            (imagenet / "images" / sub / wnid).mkdir(parents=True)
            for i in reversed(range(n)):
                (imagenet / "images" / sub / wnid / f"{wnid}_{i}.JPEG").write_bytes(b"")
    task = TASKS.get("coop:imagenet?shots=2").factory(data_root=str(tmp_path), cell=RunSpec("b", "coop", "coop:imagenet?shots=2", 3))
    assert task.class_text()[0] == ["tench fish", "goldfish"]  # labels in sorted folder order, names from classnames.txt
    record = task.split_provenance["fewshot"]
    assert record["counts"] == {"train": 4, "val": 4} and "not chosen" in record["val_from"]
    assert not set(record["train"]) & set(record["val"])  # ImageNet's val is its test: the few-shot val comes from unchosen training images
    assert [s.label for s in task.load("test").samples] == [0, 0, 1, 1] and str(task.load("test").samples[0].image).endswith("images/val/n01/n01_0.JPEG")
