"""timm's fine-tuning recipe through timm (issue 22, acceptance 4): presets resolved whole and
overridable, layer-decay groups' learning rates, RandAugment / random erasing in the transform,
mixup active, EMA weights evaluated, and a tiny ViT trained with ``bob_ft`` above chance."""
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.errors import BobError
from harness.methods import timm_recipe
from harness.registry import BACKBONES, METHODS
from harness.store import ResultStore

from .conftest import write_grid
from .fixtures import make_list_file_dataset


def test_preset_is_resolved_whole_and_overridable_key_by_key():
    method = METHODS.get("finetune").factory()
    hp = method.resolve_hparams({"preset": "bob_ft", "lr": 5e-4})
    assert hp["lr"] == 5e-4  # the user's value wins
    expected = {"epochs": 100, "wd": 0.05, "layer_decay": 0.75, "warmup_epochs": 5, "batch_size": 128, "auto_augment": "rand-m9-mstd0.5-inc1",
                "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "reprob": 0.25, "drop_path": 0.1, "optimizer": "adamw", "schedule": "cosine"}
    assert {k: hp[k] for k in expected} == expected
    assert method.resolve_hparams({})["mixup"] == 0.0 and method.resolve_hparams({})["layer_decay"] is None  # no preset: the plain protocol
    assert METHODS.get("lora").factory().resolve_hparams({"preset": "mae_ft"})["layer_decay"] == 0.65
    with pytest.raises(BobError, match=r"preset='bob_fx' is not one of bob_ft, deit, mae_ft.*bob_ft"):
        method.resolve_hparams({"preset": "bob_fx"})


def test_unknown_preset_or_key_fails_the_sweep_before_any_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path / "g.yaml", "name: p\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [finetune]\ntasks: [digits]\n"
                      "hparams: {finetune: {preset: deit_b}}\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert out.exit_code != 0 and "preset='deit_b' is not one of bob_ft, deit, mae_ft" in out.output and len(out.output.strip().splitlines()) == 1
    grid.write_text(grid.read_text().replace("preset: deit_b", "preset: deit, mixupp: 0.5"))
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert out.exit_code != 0 and "no hyper-parameter 'mixupp'" in out.output
    assert not list((tmp_path / "res").glob("*/*.json")) or all(p.name.startswith(".") for p in (tmp_path / "res").glob("*/*.json"))


def _tiny_vit():
    backbone = BACKBONES.get("timm:vit_tiny_patch16_224.augreg_in21k").factory(weights="random", seed=0, img_size=32)
    return backbone, backbone.model


def test_layer_decay_groups_and_their_learning_rates_in_fit():
    from harness.features import FeatureCache
    from harness.methods.finetune import fit
    from harness.types import RunContext

    backbone, encoder = _tiny_vit()
    head = torch.nn.Linear(backbone.feature_dim, 3)
    model = torch.nn.Sequential(encoder, head)
    trainable = list(model.parameters())
    opt = timm_recipe.optimizer(encoder, head, trainable, {"wd": 0.05, "lr": 1e-3, "layer_decay": 0.75, "optimizer": "adamw"})
    assert type(opt).__name__ == "AdamW"
    scale_of = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    depth = len(encoder.blocks)
    # timm's grouping: embeddings below block 0, each block one step up, the last block (with the final norm) at the top
    assert scale_of[id(encoder.patch_embed.proj.weight)] == pytest.approx(0.75 ** depth) == scale_of[id(encoder.cls_token)]
    assert scale_of[id(encoder.blocks[0].attn.qkv.weight)] == pytest.approx(0.75 ** (depth - 1))
    assert scale_of[id(encoder.blocks[1].attn.qkv.weight)] == pytest.approx(0.75 ** (depth - 2))
    assert scale_of[id(encoder.blocks[-1].mlp.fc2.weight)] == pytest.approx(1.0)
    assert scale_of[id(head.weight)] == 1.0 and len(scale_of) == len(trainable)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(encoder.cls_token) in no_decay and id(head.bias) in no_decay and id(head.weight) not in no_decay
    # fit() applies each group's scale to the scheduled lr
    ctx = RunContext(device="cpu", seed=0, cell_id="c", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda m: None)
    data = [(torch.randn(3, 32, 32), i % 3) for i in range(4)]
    fit(model, trainable, opt, lambda e, g: torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=g),
        lambda b, f: (torch.nn.functional.cross_entropy(f(b[0]), b[1]), len(b[1])),
        {"epochs": 1, "warmup_epochs": 0, "lr": 1e-3, "amp": "off"}, ctx, None, 1, desc="t", set_train_mode=model.train)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])


def test_train_transform_holds_randaugment_m9_and_random_erasing():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing

    backbone, _ = _tiny_vit()
    hp = METHODS.get("finetune").factory().resolve_hparams({"preset": "bob_ft"})
    steps = timm_recipe.train_transform(backbone.preprocess, hp, hflip=True).transforms
    rand = [t for t in steps if isinstance(t, RandAugment)]
    erase = [t for t in steps if isinstance(t, RandomErasing)]
    assert len(rand) == 1 and rand[0].num_layers == 2 and {op.magnitude for op in rand[0].ops} == {9}
    assert len(erase) == 1 and erase[0].probability == 0.25 and erase[0].mode == "pixel"
    assert timm_recipe.eval_transform(backbone.preprocess, {**hp, "crop_pct": 0.875}).transforms[0].size == 36  # 32 / 0.875, then a centre crop


def test_ema_weights_are_the_ones_evaluated():
    """timm's ModelEmaV3 copies the weights at the first update; with decay 1.0 it never moves after
    that, so a 3-step fit with EMA ends holding the 1-step weights, not its own last ones."""
    from harness.features import FeatureCache
    from harness.methods.finetune import fit
    from harness.types import RunContext

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = [(torch.randn(4), i % 2) for i in range(8)]
    ctx = RunContext(device="cpu", seed=0, cell_id="c", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda m: None)

    def run(epochs, **hp):
        model.load_state_dict(initial)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        fit(model, list(model.parameters()), opt, lambda e, g: torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=g),
            lambda b, f: (torch.nn.functional.cross_entropy(f(b[0]), b[1]), len(b[1])),
            {"epochs": epochs, "warmup_epochs": 0, "lr": 0.5, "amp": "off", **hp}, ctx, None, 1, desc="t", set_train_mode=model.train)
        return model.weight.detach().clone()

    one_step, three_steps = run(1), run(3)
    with_ema = run(3, model_ema=True, model_ema_decay=1.0)
    assert torch.equal(with_ema, one_step) and not torch.equal(with_ema, three_steps)


@pytest.mark.slow
def test_bob_ft_trains_a_tiny_vit_above_chance_with_mixup_active(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_list_file_dataset(tmp_path / "data", {"train800": 16, "val200": 2, "test": 8})
    grid = write_grid(tmp_path / "g.yaml", f"name: pre\nbackbones: [timm:vit_tiny_patch16_224.augreg_in21k]\nweights: random\nmethods: [finetune]\n"
                      f"tasks: ['folder:{root}']\nhparams:\n  finetune: {{preset: bob_ft, img_size: 32, epochs: 8, batch_size: 16, warmup_epochs: 1}}\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res"])
    assert out.exit_code == 0, out.output
    (record,) = ResultStore(tmp_path / "res" / "pre").records()
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["top1"] > 100 / 3 + 15, record["metrics"]
    assert record["hparams"]["layer_decay"] == 0.75 and record["hparams"]["epochs"] == 8 and record["hparams"]["reprob"] == 0.25
    assert record["adaptation"]["preset"]["name"] == "bob_ft" and record["adaptation"]["mixup"]["mixed_batches"] > 0
    assert "RandAugment" in record["adaptation"]["train_transform"] and "RandomErasing(p=0.25" in record["adaptation"]["train_transform"]
    aug = record["preprocess"]["train_augmentation"]  # the record's summary names timm's transform, not only the crop
    assert aug.startswith("timm create_transform: random-resized-crop") and "auto_augment rand-m9" in aug and "random erasing p=0.25" in aug
    assert "mixup 0.8 / cutmix 1.0" in aug
