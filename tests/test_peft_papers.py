"""Issue 27: the PEFT literature's own methods (E²VPT, SCT, SVFit, AdapterBias, gated prompts, FacT,
Convpass, GPS). Each changes exactly what it declares and every declared parameter trains; the
identity-at-init ones start equal to the backbone; the merged ones serve a model equal to the
unmerged one; trainable counts match closed forms on ViT-B/16 (the papers' figures beside them);
SCT's and GPS's selections read the training split only and land in the record; every method
learns digits through ``bob sweep --publish``; bad input stops the sweep at expansion in one line."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from harness.adapt import RECIPES, apply_recipe, get_recipe, train_mode  # noqa: E402
from harness.adapt.training_split import TrainingSplit  # noqa: E402
from harness.errors import BobError  # noqa: E402
from harness.features import FeatureCache  # noqa: E402
from harness.types import RunContext  # noqa: E402

get_recipe("lora")  # loads the built-in recipes
LITERATURE = sorted(r for r in RECIPES if RECIPES[r].paper)
SMALL = {"svfit": {"r": 4}, "gps": {}, "sct": {"channels": 8}, "fact_tt": {"r": 4}, "fact_tk": {"r": 4}, "convpass": {},
         "adapter_bias": {}, "gated_prompt": {"prompts": 3}, "e2vpt": {"prompts": 4, "kv_prompts": 2}}
CLASSES = 4


def context() -> RunContext:
    return RunContext(device="cpu", seed=0, cell_id="t", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda *_: None)


class Images:
    """A small labelled image set (random pixels, balanced labels) standing in for a training split."""

    def __init__(self, n: int = 32, size: int = 32, seed: int = 0, labels=None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.arange(n) % CLASSES if labels is None else torch.as_tensor(labels)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def split(size: int, labels=None, **hp) -> TrainingSplit:
    images = Images(size=size, labels=labels)
    return TrainingSplit("train", CLASSES, lambda augment: images, {"batch_size": 16, "epochs": 1, "warmup_epochs": 0.0, "lr": 1e-2, "wd": 0.0,
                                                                     "augment": False, "optimizer": "adamw", **hp}, context(), None, None)


def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=3)


def resnet18():
    torch.manual_seed(0)  # as a pretrained ResNet looks: the last BN scale of each branch non-zero (see test_peft)
    return timm.create_model("resnet18", num_classes=0, zero_init_last=False)


def train_steps(model, size: int, steps: int = 4) -> dict[str, float]:
    """A few AdamW steps on random data; {declared parameter: max |grad| seen}."""
    torch.manual_seed(1)
    head = torch.nn.Linear(model.num_features, CLASSES)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    seen = {n: 0.0 for n, p in model.named_parameters() if p.requires_grad}
    train_mode(model, adapted=True)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(model(torch.randn(8, 3, size, size))), torch.randint(0, CLASSES, (8,)))
        opt.zero_grad()
        loss.backward()
        for n, p in model.named_parameters():
            if p.requires_grad and p.grad is not None:
                seen[n] = max(seen[n], float(p.grad.abs().max()))
        opt.step()
    return seen


def check_literature_recipe(make_model, recipe: str, hp: dict, size: int):
    frozen = make_model().eval()
    original = {k: v.clone() for k, v in frozen.state_dict().items()}
    model = copy.deepcopy(frozen)
    adaptation = apply_recipe(recipe, model, hp, data=split(size))
    trainable = set(adaptation.trainable)
    assert trainable and trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    probe = torch.randn(3, 3, size, size)
    if RECIPES[recipe].identity_at_init:  # the paper's init is the identity: the adapted model starts as the backbone, exactly
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(probe), frozen(probe), rtol=0, atol=0)
    grads = train_steps(model, size)
    assert all(g > 0 for g in grads.values()), f"{recipe}: no gradient on {[n for n, g in grads.items() if g == 0]}"
    changed, new = set(), set()
    for key, value in model.state_dict().items():
        if key in original:
            if not torch.equal(value, original[key]):
                changed.add(key)
        else:
            new.add(key)
    assert changed == {n for n in trainable if n in original}, f"{recipe}: undeclared parameters moved"  # only declared backbone parameters
    assert {n for n in trainable if n not in original} <= new
    model.eval()
    with torch.no_grad():
        before = model(probe)
    if adaptation.merge is not None:
        info = adaptation.merge(model)
        assert info["merged"] is True
        with torch.no_grad():
            torch.testing.assert_close(model(probe), before, rtol=1e-4, atol=1e-5)  # the served (merged) model = the trained one
        assert set(model.state_dict()) == set(original)  # served as the backbone's architecture: no extra parameter or buffer
    return adaptation


@pytest.mark.parametrize("recipe", LITERATURE)
def test_literature_recipe_on_a_tiny_vit(recipe):
    adaptation = check_literature_recipe(tiny_vit, recipe, SMALL[recipe], 32)
    assert adaptation.extra_params > 0
    merges = {"svfit", "fact_tt", "fact_tk", "sct", "gps"}
    assert (adaptation.merge is not None) == (recipe in merges)


def test_literature_recipes_train_under_bf16_autocast():
    """On a GPU the loop runs under bf16 autocast (amp: auto): every hook must accept bf16 activations next to fp32 parameters."""
    for recipe in LITERATURE:
        model = tiny_vit()
        apply_recipe(recipe, model, SMALL[recipe], data=split(32, amp="bf16"))
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(4, 3, 32, 32))
        out.float().sum().backward()
        assert torch.isfinite(out.float()).all()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad), recipe


@pytest.mark.parametrize("recipe,hp", [("svfit", {"r": 2}), ("gps", {"selection_loss": "ce"}), ("sct", {"channels": 0.125})])
def test_any_linear_or_conv_recipes_on_resnet18(recipe, hp):
    adaptation = check_literature_recipe(resnet18, recipe, hp, 64)
    if recipe == "sct":  # the last conv of each BasicBlock, a K x K map without bias (conv2 has none), K = width / 8
        assert all(n.endswith(".conv2.sct_map.weight") for n in adaptation.trainable) and len(adaptation.trainable) == 8
        assert [len(c) for c in adaptation.notes["selection"]["channels"].values()] == [8, 8, 16, 16, 32, 32, 64, 64]


def test_variants_static_adapter_bias_merges_and_e2vpt_prunes_what_it_says():
    static = check_literature_recipe(tiny_vit, "adapter_bias", {"token_dependent": False, "norms": False}, 32)
    assert static.merge is not None and all(n.endswith("fc2.adapterbias_vector") for n in static.trainable)
    hp = {"prompts": 4, "kv_prompts": 2, "prune": 0.5, "prune_pieces": 0.25, "pieces": 4}
    pruned = check_literature_recipe(tiny_vit, "e2vpt", hp, 32)
    notes = pruned.notes["pruning"]
    assert len(notes["tokens_kept"]) == 2 and len(notes["tokens_pruned"]) == 2 and notes["split"] == "train"
    assert all(len(v) == 1 for v in notes["segments_pruned"].values())  # a quarter of 4 segments per kept token
    d, blocks, heads, head_dim = 192, 3, 3, 64
    assert pruned.extra_params == blocks * (2 * 3 * d // 4) + blocks * heads * 2 * head_dim  # served: kept segments + K/V prompts
    scores = notes["token_scores"]
    assert max(scores[t] for t in notes["tokens_pruned"]) <= min(scores[t] for t in notes["tokens_kept"])  # the lowest go


FAMILY_CASES = [  # the new recipes on the other timm families they declare
    ("deit_tiny_distilled_patch16_224", dict(img_size=32, depth=2), ["e2vpt", "gated_prompt", "convpass", "fact_tt"]),  # two prefix tokens
    ("beit_base_patch16_224", dict(img_size=32, depth=2, embed_dim=96, num_heads=2), ["fact_tk", "convpass", "adapter_bias", "svfit"]),
    ("eva02_tiny_patch14_224", dict(img_size=28, depth=2), ["convpass", "adapter_bias"]),
    ("swin_tiny_patch4_window7_224", dict(img_size=56, depths=(1, 1), num_heads=(1, 2), embed_dim=32, window_size=7), ["adapter_bias", "sct"]),
    ("convnext_atto", dict(), ["adapter_bias", "sct"]),  # a 1x1-conv MLP
]


@pytest.mark.parametrize("arch,kwargs,recipes", FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_literature_recipes_on_other_families(arch, kwargs, recipes):
    from harness.adapt import architecture_supported

    size = kwargs.get("img_size", 64)

    def make():
        torch.manual_seed(0)
        return timm.create_model(arch, num_classes=0, **kwargs)

    for recipe in recipes:
        assert architecture_supported(RECIPES[recipe].requires, arch)
        check_literature_recipe(make, recipe, SMALL[recipe], size)


# -- closed forms on ViT-B/16 ------------------------------------------------------------------------------
D, L, HEADS, MLP = 768, 12, 12, 3072


@pytest.fixture(scope="module")
def vit_b16_meta():
    with torch.device("meta"):  # the structure without weights: counts need shapes only
        return timm.create_model("vit_base_patch16_224", num_classes=0)


def trainable_count(model, recipe, hp, data=None):
    m = copy.deepcopy(model)
    adaptation = apply_recipe(recipe, m, {**RECIPES[recipe].hparams, **hp}, data=data)
    return sum(p.numel() for p in m.parameters() if p.requires_grad), adaptation


def test_trainable_parameter_counts_match_the_closed_forms_on_vit_b16(vit_b16_meta):
    count = lambda recipe, **hp: trainable_count(vit_b16_meta, recipe, hp, data=split(224))[0]  # noqa: E731
    # E2VPT defaults: 10 visual prompts per block + 5 key-value prompts per head of every attention
    assert count("e2vpt") == L * 10 * D + L * HEADS * 5 * (D // HEADS) == 138_240
    # gated prompts: 5 shallow prompts, a gate for every block but the last, a temperature per block
    assert count("gated_prompt") == 5 * D + (L - 1) + L == 3_863
    # FacT-TT r=8: shared U, V (2 d r) + 12 r x r cores per block (q, k, v, proj, 4 fc1 and 4 fc2 slices)
    assert count("fact_tt") == 2 * D * 8 + L * 12 * 8 * 8 == 21_504
    # FacT-TK r=8: U, V + core C (r^3) + factor P (r x 144 slices); the paper reports FacT-TK8 at 0.014 M
    assert count("fact_tk") == 2 * D * 8 + 8 ** 3 + 8 * 144 == 13_952
    assert round(13_952 / 1e6, 3) == 0.014
    # Convpass dim 8: two bypasses per block, each down (d 8 + 8) + 3x3 conv (8 8 9 + 8) + up (8 d + d); paper: 0.33 M
    assert count("convpass") == L * 2 * ((D * 8 + 8) + (8 * 8 * 9 + 8) + (8 * D + D)) == 327_552
    assert round(327_552 / 1e6, 2) == 0.33
    # AdapterBias: per block v (d) + alpha (4d + 1), plus the norms its shifts flow into (12 norm1 + final, weight and bias)
    assert count("adapter_bias") == L * (D + MLP + 1) + (L + 1) * 2 * D == 66_060
    # SVFit r=all: every singular value of qkv, proj, fc1, fc2 (min(out, in) = d each)
    assert count("svfit") == L * 4 * D == 36_864
    assert count("svfit", r=8) == L * 4 * 8


@pytest.mark.slow
def test_selection_methods_closed_forms_on_vit_b16():
    with torch.device("meta"):  # selection needs values, any will do: build the skeleton, then fill it (faster than timm's init)
        vit_b = timm.create_model("vit_base_patch16_224", num_classes=0, img_size=32)
    vit_b.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in [*vit_b.parameters(), *vit_b.buffers()]:
            tensor.normal_(0.0, 0.02)
    data = split(32)
    # SCT K=96: one 96 x 96 map with bias per block; the paper reports 0.11 M
    sct, sct_adaptation = trainable_count(vit_b, "sct", {}, data)
    assert sct == L * (96 * 96 + 96) == 111_744 and round(sct / 1e6, 2) == 0.11
    assert all(len(v) == 96 for v in sct_adaptation.notes["selection"]["channels"].values())
    # GPS, one weight per output neuron of every linear / conv (patch embedding, qkv, proj, fc1, fc2) + their biases
    rows = D + L * (3 * D + D + MLP + D)
    gps, gps_adaptation = trainable_count(vit_b, "gps", {}, data)
    assert gps == rows + rows == 167_424
    assert gps_adaptation.notes["selection"]["weights"] == rows


# -- selection reads the training split only -------------------------------------------------------------
def poisoned_digits(name: str, which: tuple[str, ...]):
    """digits with the labels of the given splits replaced by a fixed random permutation of themselves."""
    import numpy as np

    from harness.data import ImageClassificationDataset, Sample
    from harness.registry import TASKS

    def factory(data_root=None, **_):
        task = TASKS.get("digits").factory()
        loaders = dict(task.loaders)
        for split_name in which:
            clean = loaders[split_name]

            def load(clean=clean, split_name=split_name):
                ds = clean()
                labels = np.random.RandomState(7).randint(0, 10, len(ds.samples))
                return ImageClassificationDataset([Sample(s.image, int(y), s.origin) for s, y in zip(ds.samples, labels)], ds.transform, ds.name)

            loaders[split_name] = load
        task.loaders = loaders
        return task

    if name not in TASKS:
        TASKS.add(name, factory, kind="classification", group="test", num_classes=10)
    return name


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sct", "gps"])
def test_selection_reads_the_training_split_only_and_is_in_the_record(tmp_path, method):
    from harness.runner import run_cell
    from harness.spec import RunSpec
    from harness.store import ResultStore

    hp = {"img_size": 32, "epochs": 1, "batch_size": 128, "lr": 1e-2, "wd": 0.0, **({"channels": 16} if method == "sct" else {})}
    selections = {}
    for task in ("digits", poisoned_digits("digits_poisoned_eval", ("val200", "test")), poisoned_digits("digits_poisoned_train", ("train800val200",))):
        record = run_cell(RunSpec("timm:test_vit", method, task, 0, "random", hp), ResultStore(tmp_path / method), log=lambda *_: None)
        assert record["status"] == "ok", record["error"]
        selection = record["adaptation"]["recipe_notes"]["selection"]
        assert selection["split"] == "train800val200" and selection["images"] == 1000  # the final fit's training split, nothing else
        selections[task] = selection["sha256"]
        if method == "gps":  # the full selection beside the record, its digest in it
            artifact = json.loads(Path(record["artifacts"]["gps_selection.json"]).read_text())
            assert artifact["sha256"] == selection["sha256"] and set(artifact["columns"]) == set(selection["per_layer"])
        else:
            assert all(len(c) == 16 for c in selection["channels"].values())
    assert selections["digits_poisoned_eval"] == selections["digits"]  # validation and test labels never reach the selection
    assert selections["digits_poisoned_train"] != selections["digits"]  # ...and the training labels do: the check can fail


# -- bad input at expansion ----------------------------------------------------------------------------------
def expand_one(method: str, hp: dict, backbone: str = "timm:vit_tiny_patch16_224"):
    from harness.grid import expand, parse_grid

    return expand(parse_grid({"backbones": [backbone], "methods": [method], "tasks": ["digits"], "weights": "random",
                              "hparams": {method: {"img_size": 32, **hp}}}))


@pytest.mark.parametrize("method,hp,message", [
    ("e2vpt", {"prompts": 0}, r"e2vpt: prompts=0 must be an integer 1\.\.1024 \(visual prompt tokens per block\)"),
    ("gated_prompt", {"prompts": 5000}, r"gated_prompt: prompts=5000 must be an integer 1\.\.1024"),
    ("fact_tt", {"r": 0}, r"fact_tt: r=0 must be an integer >= 1 \(the FacT rank\)"),
    ("e2vpt", {"prune": 1.0}, r"e2vpt: prune=1\.0 must be a number >= 0\.0 and < 1\.0"),
    ("convpass", {"search": {"conv_init": ["identity", "xavir"]}}, r"convpass: conv_init='xavir' is not one of identity, xavier \(did you mean xavier\?\)"),
    ("fact_tk", {"r": 500}, r"timm:vit_tiny_patch16_224 x fact_tk: fact_tk: rank r=500 is larger than the model's width d=192"),
    ("svfit", {"r": 300}, r"svfit: r=300 is larger than layer blocks\.0\.attn\.qkv .* use r <= 192 or r: all"),
    ("sct", {"channels": 1000}, r"sct: channels=1000 is larger than the model: layer blocks\.0\.mlp\.fc2 has 192 output channels; use channels <= 192"),
    ("gps", {"per_neuron": 1000}, r"gps: per_neuron=1000 is larger than the model: layer patch_embed\.proj .* has 768 weights per output neuron"),
    ("convpass", {"dim": 500}, r"convpass: dim=500 is larger than the model's width d=192"),
])
def test_out_of_range_values_and_budgets_are_one_line_errors_at_expansion(method, hp, message):
    with pytest.raises(BobError, match=message) as err:
        expand_one(method, hp)
    assert "\n" not in str(err.value)


def test_unsupported_architectures_are_skipped_at_expansion_with_the_reason():
    from harness.grid import expand, parse_grid

    exp = expand(parse_grid({"backbones": ["timm:resnet18", "timm:vit_tiny_patch16_224"], "methods": LITERATURE, "tasks": ["digits"], "weights": "random",
                             "hparams": {"sct": {"channels": 0.125}}}))  # K = 1/8 of each layer's width (ResNet blocks differ)
    skipped = {s.method: why for s, why in exp.skipped}
    assert {c.method for c in exp.cells if c.backbone == "timm:vit_tiny_patch16_224"} == set(LITERATURE)
    assert set(skipped) == {"e2vpt", "gated_prompt", "fact_tt", "fact_tk", "convpass", "adapter_bias"}  # SCT, SVFit, GPS take any linear/conv
    assert all("\n" not in why and "cannot adapt timm:resnet18" in why for why in skipped.values())
    assert "key-value prompts" in skipped["e2vpt"] and "patch-token grid" in skipped["convpass"] and "MLP" in skipped["adapter_bias"]


# -- every method learns, end to end -------------------------------------------------------------------------
@pytest.mark.slow
def test_every_literature_method_beats_chance_on_digits_through_bob_sweep_publish(tmp_path):
    from harness.store import ResultStore
    from tests.conftest import run_bob, write_grid

    # every searched key fixed: one fit per method (the in-cell search is tested in test_peft.py); E2VPT prunes, so it fits twice
    grid = write_grid(tmp_path / "lit.yaml", """name: lit
backbones: [timm:test_vit]
weights: random
methods: [e2vpt, gated_prompt, fact_tt, fact_tk, convpass, adapter_bias, sct, svfit, gps]
tasks: [digits]
hparams:
  all: {img_size: 32, epochs: 2, batch_size: 64}
  e2vpt: {prompts: 4, kv_prompts: 4, prune: 0.5, prune_pieces: 0.25, pieces: 4, lr: 0.5, wd: 0.0001}
  gated_prompt: {prompts: 4, lr: 0.1, gate_init: 5.0}
  fact_tt: {r: 4, scale: 10.0, lr: 0.01}
  fact_tk: {r: 4, scale: 10.0, lr: 0.01}
  convpass: {scale: 1.0, conv_init: identity, lr: 0.01}
  adapter_bias: {lr: 0.01, wd: 0.0001}
  sct: {channels: 16, lr: 0.01, wd: 0.0001}
  svfit: {lr: 0.01, wd: 0.0001}
  gps: {lr: 0.005}
""")
    res = run_bob("sweep", str(grid), "--results", "res", "--publish", "lit", env={"OMP_NUM_THREADS": "1"}, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    records = {r["method"]: r for r in ResultStore(tmp_path / "res" / "lit").records()}
    assert set(records) == set(LITERATURE)
    for method, record in records.items():
        assert record["status"] == "ok" and record["metrics"]["top1"] > 25, (method, record["metrics"])  # chance is 10 %
        adaptation = record["adaptation"]
        assert adaptation["merged"] == (method in {"svfit", "fact_tt", "fact_tk", "sct", "gps"})  # ...and the merged model was evaluated
        assert adaptation["extra_params_served"] == (0 if adaptation["merged"] else adaptation["extra_params"]) and adaptation["latency_ms"] > 0
    assert records["e2vpt"]["adaptation"]["recipe_notes"]["prompts_kept"] == 2
    assert "gps_selection.json" in records["gps"]["artifacts"]
    table = (tmp_path / "leaderboards" / "lit" / "methods.md").read_text()
    assert all(f"| {m} | " in table for m in LITERATURE) and "| backbone | adapter_bias | convpass | e2vpt |" in table
