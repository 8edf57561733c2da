"""Issue 10: parameter-efficient adaptation. Recipes change exactly what they declare, every
declared parameter trains, identity-at-init recipes start equal to the backbone, trainable counts
match the closed forms on ViT-B/16, search happens on val200 before test is ever read, and
unsupported pairs are skipped at expansion."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from harness.adapt import RECIPES, apply_recipe, base_name, get_recipe, train_mode  # noqa: E402
from harness.errors import BobError  # noqa: E402

get_recipe("lora")  # loads the built-in recipes
BUILTIN = sorted(r for r in RECIPES if not r.startswith("peft:") and not RECIPES[r].paper)  # the papers' own methods: test_peft_papers.py
SMALL_HP = {"r": 4, "k": 1, "bottleneck": 4, "prompts": 3, "prompt_dropout": 0.0}


def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=3)


def train_steps(model, steps: int = 4, size: int = 32, lr: float = 1e-2):
    """A few AdamW steps on random data; returns {param name: max |grad| seen}."""
    torch.manual_seed(1)
    head = torch.nn.Linear(model.num_features, 5)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    seen = {n: 0.0 for n, p in model.named_parameters() if p.requires_grad}
    train_mode(model, adapted=True)  # as the training loop does: batch-norm statistics stay frozen
    for _ in range(steps):
        x, y = torch.randn(8, 3, size, size), torch.randint(0, 5, (8,))
        loss = torch.nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad()
        loss.backward()
        for n, p in model.named_parameters():
            if p.requires_grad and p.grad is not None:
                seen[n] = max(seen[n], float(p.grad.abs().max()))
        opt.step()
    return seen


def check_recipe(make_model, recipe: str, hp: dict, size: int):
    frozen = make_model().eval()
    original = {k: v.clone() for k, v in frozen.state_dict().items()}
    model = copy.deepcopy(frozen)
    adaptation = apply_recipe(recipe, model, hp)
    trainable = set(adaptation.trainable)
    assert trainable and trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    x = torch.randn(2, 3, size, size)
    if RECIPES[recipe].identity_at_init:  # (c) the adapted model starts equal to the backbone
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), frozen(x), rtol=0, atol=1e-6)
    grads = train_steps(model, size=size)
    assert all(g > 0 for g in grads.values()), f"no gradient: {[n for n, g in grads.items() if g == 0]}"  # (b)
    after = model.state_dict()
    changed, new = set(), set()
    for key, value in after.items():
        name = base_name(key)
        if name in original:
            if not torch.equal(value, original[name]):
                changed.add(name)
        else:
            new.add(key)
    intended = {base_name(n) for n in trainable if base_name(n) in original}
    assert changed == intended  # (a) exactly the intended backbone parameters moved, the rest bit-identical
    assert {n for n in trainable if base_name(n) not in original} <= new
    return adaptation


@pytest.mark.parametrize("recipe", BUILTIN)
def test_recipe_changes_exactly_what_it_declares_on_a_tiny_vit(recipe):
    adaptation = check_recipe(tiny_vit, recipe, SMALL_HP, 32)
    if recipe in ("lora", "adapter", "adaptformer", "vpt_shallow", "vpt_deep", "ssf"):
        assert adaptation.extra_params > 0
    else:
        assert adaptation.extra_params == 0


def test_dora_and_peft_tuners_follow_the_same_rules():
    from harness.registry import METHODS

    check_recipe(tiny_vit, "lora", {**SMALL_HP, "dora": True}, 32)
    METHODS.get("peft:ia3")  # resolving the method registers its recipe
    adaptation = check_recipe(tiny_vit, "peft:ia3", {"targets": "all-linear", "config": {}}, 32)
    assert adaptation.recipe == "peft:ia3" and all(".ia3_l." in n for n in adaptation.trainable)


@pytest.mark.parametrize("arch,recipe", [("resnet18", "bitfit"), ("resnet18", "partial"), ("resnet18", "ssf"), ("resnet18", "lora"),
                                         ("convnext_atto", "ssf"), ("convnext_atto", "bitfit"), ("convnext_atto", "lora")])
def test_recipes_on_cnns(arch, recipe):
    def make():
        torch.manual_seed(0)
        # random-init timm ResNets zero the last BN scale of each residual branch; with frozen weights
        # (BitFit) that branch could never train, so build it as a pretrained ResNet looks: scales non-zero
        return timm.create_model(arch, num_classes=0, **({"zero_init_last": False} if arch.startswith("resnet") else {}))

    adaptation = check_recipe(make, recipe, {"r": 2, "k": 1}, 64)
    if recipe == "lora":
        assert adaptation.notes["targets"] > 0


# -- closed forms on ViT-B/16 ---------------------------------------------------------------------------
D, BLOCKS, MLP, QKV = 768, 12, 3072, 3 * 768


@pytest.fixture(scope="module")
def vit_b16():
    return timm.create_model("vit_base_patch16_224", num_classes=0)


def trainable_count(model, recipe, hp):
    m = copy.deepcopy(model)
    apply_recipe(recipe, m, hp)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


@pytest.mark.slow
def test_trainable_parameter_counts_match_the_closed_forms_on_vit_b16(vit_b16):
    per_block_bias = D + QKV + D + D + MLP + D  # norm1, qkv, proj, norm2, fc1, fc2
    # LoRA r=8 on the fused qkv: 12 x (768 x 8 + 8 x 2304)
    assert trainable_count(vit_b16, "lora", {"r": 8, "targets": "qkv"}) == BLOCKS * (D * 8 + 8 * QKV) == 294_912
    # LoRA on the attention (qkv and the output projection): 12 x (8(768 + 2304) + 8(768 + 768))
    assert trainable_count(vit_b16, "lora", {"r": 8, "targets": "attn"}) == BLOCKS * (8 * (D + QKV) + 8 * (D + D))
    # VPT-deep p=10: 12 x 10 x 768; VPT-shallow: 10 x 768
    assert trainable_count(vit_b16, "vpt_deep", {"prompts": 10}) == BLOCKS * 10 * D == 92_160
    assert trainable_count(vit_b16, "vpt_shallow", {"prompts": 10}) == 10 * D == 7_680
    # BitFit: every bias = 12 blocks x (norm1 + qkv + proj + norm2 + fc1 + fc2) + patch embedding + final norm
    assert trainable_count(vit_b16, "bitfit", {}) == BLOCKS * per_block_bias + D + D == 102_912
    # LN tuning: (2 norms per block x 12 + final norm) x (weight + bias)
    assert trainable_count(vit_b16, "ln_tune", {}) == (2 * BLOCKS + 1) * 2 * D == 38_400
    # Adapter / AdaptFormer, bottleneck 8: 12 x (768 x 8 + 8 + 8 x 768 + 768)
    for recipe in ("adapter", "adaptformer"):
        assert trainable_count(vit_b16, recipe, {"bottleneck": 8}) == BLOCKS * (D * 8 + 8 + 8 * D + D) == 156_768
    # SSF: a scale and a shift per output channel of every linear and norm op of every block
    assert trainable_count(vit_b16, "ssf", {}) == BLOCKS * 2 * per_block_bias == 202_752
    # partial k=1: one whole block + the final norm
    block = (D * QKV + QKV) + (D * D + D) + 4 * D + (D * MLP + MLP) + (MLP * D + D)
    assert trainable_count(vit_b16, "partial", {"k": 1}) == block + 2 * D == 7_089_408


# -- the protocol: search on val200, test read once, after the search --------------------------------------
@pytest.mark.slow
def test_search_on_val200_and_test_is_never_read_before_the_refit():
    from harness.features import FeatureCache
    from harness.registry import BACKBONES, METHODS, TASKS
    from harness.types import RunContext

    task = TASKS.get("digits").factory()
    reads = []
    original = task.load
    task.load = lambda split: (reads.append(split), original(split))[1]
    method = METHODS.get("lora").factory()
    hp = method.resolve_hparams({"img_size": 32, "epochs": 1, "r": 4, "search": {"lr": [1e-2, 1e-3]}})
    backbone = BACKBONES.get("timm:vit_tiny_patch16_224").factory(weights="random", seed=0, img_size=32)
    ctx = RunContext(device="cpu", seed=0, cell_id="t", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda *_: None)
    result = method.run(backbone, task, hp, ctx)
    assert reads.count("test") == 1 and reads[-1] == "test" and reads[-2] == "train800val200"
    assert set(reads[:-2]) == {"train800", "val200"}  # every candidate: fit on train800, scored on val200
    assert result.protocol["selected_on"] == "val200" and result.protocol["tuned_on"] == "train800"
    assert [c["lr"] for c in result.protocol["candidates"]] == [1e-2, 1e-3] and all("val200_top1" in c for c in result.protocol["candidates"])
    assert result.protocol["reported_on"] == "test" and result.protocol["final_train_split"] == "train800val200"
    assert result.adaptation["trainable_params"] == 12 * (192 * 4 + 4 * 576)  # LoRA r=4 on the 12 fused qkv layers of ViT-Ti
    assert result.adaptation["trainable_params_with_head"] == result.adaptation["trainable_params"] + 192 * 10 + 10
    assert result.adaptation["peak_memory_mb"] > 0 and result.adaptation["train_images_per_s"] > 0 and result.adaptation["latency_vs_frozen"] > 0


# -- expansion and bad input ------------------------------------------------------------------------------
def test_unsupported_pairs_are_skipped_at_expansion_with_the_reason(tmp_path):
    from harness.grid import expand, parse_grid

    grid = parse_grid({"backbones": ["timm:resnet18", "timm:vit_tiny_patch16_224", "timm:beit_base_patch16_224"],
                       "methods": ["vpt_deep", "adapter", "bitfit"], "tasks": ["digits"], "weights": "random"})
    exp = expand(grid)
    runnable = {(c.backbone, c.method) for c in exp.cells}
    skipped = {(s.backbone, s.method): why for s, why in exp.skipped}
    assert ("timm:resnet18", "bitfit") in runnable and ("timm:vit_tiny_patch16_224", "vpt_deep") in runnable
    assert ("timm:beit_base_patch16_224", "adapter") in runnable
    assert "prompt tokens" in skipped[("timm:resnet18", "vpt_deep")] and "transformer" in skipped[("timm:resnet18", "adapter")]
    assert ("timm:beit_base_patch16_224", "vpt_deep") in skipped  # BEiT's relative position bias is sized for the patches


def test_unknown_peft_tuner_and_too_large_rank_are_one_line_errors(tmp_path):
    from harness.registry import METHODS
    from harness.runner import run_cell
    from harness.spec import RunSpec
    from harness.store import ResultStore

    with pytest.raises(BobError, match=r"peft has no layer tuner 'lorra' \(did you mean") as err:
        METHODS.get("peft:lorra")
    assert "\n" not in str(err.value)
    assert METHODS.get("peft:ia3").meta["kinds"] == ["classification"]
    with pytest.raises(BobError, match=r"targets='qkvv' is not one of auto, qkv, attn, all-linear, conv \(did you mean qkv\?\)"):
        METHODS.get("lora").factory().resolve_hparams({"targets": "qkvv"})  # refused at expansion, not in every cell
    record = run_cell(RunSpec("timm:vit_tiny_patch16_224", "lora", "digits", 0, "random", {"img_size": 32, "r": 1000, "epochs": 1, "lr": 1e-3}),
                      ResultStore(tmp_path / "s"))
    assert record["status"] == "failed" and "\n" not in record["error"]["message"]
    assert "rank r=1000 is larger than layer blocks.0.attn.qkv" in record["error"]["message"] and "use r <= 192" in record["error"]["message"]
    bad = run_cell(RunSpec("timm:vit_tiny_patch16_224", "peft:ia3", "digits", 0, "random", {"img_size": 32, "epochs": 1, "lr": 1e-3, "config": {"target_modulez": ["qkv"]}}),
                   ResultStore(tmp_path / "s"))
    assert bad["status"] == "failed" and "unknown config key 'target_modulez'" in bad["error"]["message"] and "did you mean" in bad["error"]["message"]


# -- every ViT family, every recipe that applies ---------------------------------------------------------------
FAMILIES = {  # tiny configs of each timm ViT family the registry knows (no weights)
    "deit_tiny_patch16_224": dict(img_size=32, depth=2),
    "deit_tiny_distilled_patch16_224": dict(img_size=32, depth=2),
    "deit3_small_patch16_224": dict(img_size=32, depth=2),
    "beit_base_patch16_224": dict(img_size=32, depth=2, embed_dim=96, num_heads=2),
    "flexivit_small": dict(img_size=32, depth=2),
    "eva02_tiny_patch14_224": dict(img_size=28, depth=2),
}


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_recipes_on_every_vit_family(arch):
    from harness.adapt import architecture_supported

    kwargs = FAMILIES[arch]
    size = kwargs["img_size"]

    def make():
        torch.manual_seed(0)
        return timm.create_model(arch, num_classes=0, **kwargs)

    ran = []
    for recipe in BUILTIN:
        if not architecture_supported(RECIPES[recipe].requires, arch):
            continue  # skipped at expansion (e.g. VPT on BEiT / EVA), tested above
        check_recipe(make, recipe, SMALL_HP, size)
        ran.append(recipe)
    assert {"lora", "bitfit", "ssf", "partial", "ln_tune", "adapter", "adaptformer"} <= set(ran)
    assert ("vpt_deep" in ran) == arch.startswith(("deit", "flexivit"))


def test_method_view_has_the_vpt_columns_on_vtab_records(tmp_path):
    import json

    from harness.aggregate import method_view_markdown, records_frame
    from harness.store import ResultStore
    from tests.conftest import REPO

    store = ResultStore(tmp_path / "v")
    for line in (REPO / "tests" / "golden" / "vtab.records.jsonl").read_text().splitlines():
        record = json.loads(line)
        record["metrics"]["trainable_pct"] = 0.0
        record["metrics"]["trainable_pct_with_head"] = 0.5
        store.write(record)
    md = method_view_markdown(records_frame([store]))
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header == ("| method | VTAB-1k Natural | VTAB-1k Specialized | VTAB-1k Structured | VTAB-1k mean of group means | VTAB-1k mean of 19 tasks "
                      "| % trainable | % trainable (with head) |")
    resnet = md.split("`timm:resnet50.a1_in1k`")[1].split("####")[0]
    linear = next(line for line in resnet.splitlines() if line.startswith("| linear"))
    cells = [c.strip() for c in linear.split("|")[2:-1]]
    groups = [float(c) for c in cells[:3]]
    assert float(cells[3]) == pytest.approx(sum(groups) / 3, abs=0.051) and cells[5:] == ["0.00", "0.50"]
    convnext = md.split("`timm:convnext_tiny.fb_in1k`")[1].split("####")[0]  # lacks kitti: Structured and the means are missing
    assert [c.strip() for c in next(line for line in convnext.splitlines() if line.startswith("| linear")).split("|")[2:-1]][2:5] == ["—", "—", "—"]


@pytest.mark.slow
def test_every_method_beats_chance_on_digits_and_the_table_shows_trainable_params(tmp_path):
    from tests.conftest import run_bob, write_grid

    methods = ["finetune", "partial", "bitfit", "ln_tune", "lora", "adapter", "adaptformer", "vpt_shallow", "vpt_deep", "ssf", "linear"]
    # lr and wd fixed: one fit per method (the in-cell search is tested elsewhere; here every recipe must learn)
    hp = "\n".join(f"  {m}: {{epochs: 3, batch_size: 64, wd: 1.0e-4, lr: {0.01 if m.startswith('vpt') else 0.001 if m in ('finetune', 'partial') else 0.005}}}"
                   for m in methods if m != "linear")
    grid = write_grid(tmp_path / "p.yaml", f"name: pe\nbackbones: [timm:vit_tiny_patch16_224]\nweights: random\nmethods: [{', '.join(methods)}]\n"
                                           f"tasks: [digits]\nhparams:\n  all: {{img_size: 32}}\n{hp}\n")
    res = run_bob("sweep", str(grid), "--results", "res", "--publish", "pe", timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from harness.store import ResultStore

    records = {r["method"]: r for r in ResultStore(tmp_path / "res" / "pe").records()}
    assert set(records) == set(methods)
    for method, record in records.items():
        assert record["status"] == "ok" and record["metrics"]["top1"] > 40, (method, record["metrics"])  # chance is 10%
        assert record["adaptation"]["trainable_params_with_head"] > 0 and "peak_memory_mb" in record["adaptation"]
    table = (tmp_path / "leaderboards" / "pe" / "methods.md").read_text()
    assert "| method | digits | % trainable | % trainable (with head) |" in table
    assert "| finetune | " in table and "| 100.00 | " in table
