"""timm's fine-tuning recipe, through timm: named presets and the components that apply them.

A preset is a set of published hyper-parameter values (``preset: bob_ft`` in a grid); any key the
user gives overrides the preset's, and the resolved values are the record's ``hparams`` (the whole
preset, written out). The components are timm's own, not re-implementations:
``timm.data.create_transform`` (RandAugment, random erasing, the eval ``crop_pct``),
``timm.data.Mixup`` + ``SoftTargetCrossEntropy``, layer-wise lr decay through
``timm.optim.create_optimizer_v2``, ``drop_path_rate`` at ``timm.create_model`` and
``timm.utils.ModelEmaV3`` (in ``fit()``).
"""
from __future__ import annotations

from typing import Any

from ..errors import BobError, did_you_mean

RAND_M9 = "rand-m9-mstd0.5-inc1"
PRESETS: dict[str, dict[str, Any]] = {
    # Battle of the Backbones' ImageNet fine-tuning: timm's train.py with these values
    "bob_ft": {"epochs": 100, "optimizer": "adamw", "lr": 1e-3, "wd": 0.05, "layer_decay": 0.75, "schedule": "cosine", "warmup_epochs": 5,
               "batch_size": 128, "auto_augment": RAND_M9, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "reprob": 0.25,
               "drop_path": 0.1, "augment": True},
    # DeiT (Touvron et al. 2021), Table 9: lr 5e-4 x batch/512 at batch 1024, EMA 0.99996
    "deit": {"epochs": 300, "optimizer": "adamw", "lr": 1e-3, "wd": 0.05, "layer_decay": None, "schedule": "cosine", "warmup_epochs": 5,
             "batch_size": 1024, "auto_augment": RAND_M9, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "reprob": 0.25,
             "drop_path": 0.1, "model_ema": True, "model_ema_decay": 0.99996, "augment": True},
    # MAE fine-tuning of ViT-B (He et al. 2022, Table 9): blr 5e-4 x batch/256 at batch 1024, layer decay 0.65
    "mae_ft": {"epochs": 100, "optimizer": "adamw", "lr": 2e-3, "wd": 0.05, "layer_decay": 0.65, "schedule": "cosine", "warmup_epochs": 5,
               "batch_size": 1024, "auto_augment": RAND_M9, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "reprob": 0.25,
               "drop_path": 0.1, "augment": True},
}

# the knobs a preset sets, with what they are when no preset is chosen (the VTAB-1k protocol: off)
RECIPE_DEFAULTS: dict[str, Any] = {"preset": None, "layer_decay": None, "auto_augment": None, "mixup": 0.0, "cutmix": 0.0, "reprob": 0.0,
                                   "drop_path": 0.0, "model_ema": False, "model_ema_decay": 0.9998, "crop_pct": None}


def apply_preset(method: str, given: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` with the preset's values under what the user gave; an unknown preset is one line."""
    name = given.get("preset")
    if name is None:
        return resolved
    if isinstance(name, list):  # a swept preset: each value is checked, the cell resolves its own
        for n in name:
            apply_preset(method, {**given, "preset": n}, dict(resolved))
        return resolved
    if name not in PRESETS:
        raise BobError(f"method '{method}': preset={name!r} is not one of {', '.join(PRESETS)}{did_you_mean(str(name), PRESETS)}")
    out = dict(resolved)
    for key, value in PRESETS[name].items():
        if key not in given:
            out[key] = value
    return out


def active(hp: dict[str, Any]) -> bool:
    """Whether the cell uses any of timm's recipe components (else the plain fine-tuning path runs)."""
    return bool(hp.get("preset") or hp.get("auto_augment") or hp.get("reprob") or hp.get("mixup") or hp.get("cutmix")
                or hp.get("layer_decay") or hp.get("drop_path") or hp.get("crop_pct"))


def describe_augmentation(hp: dict[str, Any], hflip: bool) -> str:
    """The record's ``preprocess.train_augmentation`` for a cell on timm's recipe path: what
    ``train_transform`` and the mixup loss apply, in one line."""
    parts = ["random-resized-crop" + ("+hflip" if hflip else "")]
    if hp.get("auto_augment"):
        parts.append(f"auto_augment {hp['auto_augment']}")
    if hp.get("reprob"):
        parts.append(f"random erasing p={hp['reprob']}")
    if hp.get("mixup") or hp.get("cutmix"):
        parts.append(f"mixup {hp.get('mixup') or 0} / cutmix {hp.get('cutmix') or 0}")
    return "timm create_transform: " + ", ".join(parts)


def train_transform(preprocess, hp: dict[str, Any], hflip: bool):
    """timm's training transform: random-resized crop, flip, RandAugment, random erasing."""
    from timm.data import create_transform

    return create_transform(input_size=preprocess.img_size, is_training=True, auto_augment=hp.get("auto_augment"),
                            re_prob=float(hp.get("reprob") or 0.0), re_mode="pixel", re_count=1, hflip=0.5 if hflip else 0.0,
                            interpolation=preprocess.interpolation, mean=preprocess.mean, std=preprocess.std)


def eval_transform(preprocess, hp: dict[str, Any]):
    """timm's eval transform (resize to img_size / crop_pct, centre crop) when ``crop_pct`` is set; else the protocol's."""
    if not hp.get("crop_pct"):
        return preprocess.eval_transform()
    from timm.data import create_transform

    return create_transform(input_size=preprocess.img_size, is_training=False, crop_pct=float(hp["crop_pct"]),
                            interpolation=preprocess.interpolation, mean=preprocess.mean, std=preprocess.std)


def with_drop_path(backbone, encoder, rate: float):
    """The encoder rebuilt by ``timm.create_model(..., drop_path_rate=rate)`` with the same weights (stochastic
    depth is a constructor argument in timm: the schedule over blocks is set at creation)."""
    if not rate:
        return encoder
    if not str(backbone.name).startswith("timm:"):
        raise BobError(f"drop_path={rate}: stochastic depth is set at timm.create_model; {backbone.name} is not a timm backbone (use drop_path: 0)")
    import timm

    name = backbone.name.split(":", 1)[1]
    kwargs: dict[str, Any] = {"num_classes": 0, "drop_path_rate": float(rate)}
    if getattr(getattr(encoder, "patch_embed", None), "img_size", None) is not None:
        kwargs["img_size"] = tuple(encoder.patch_embed.img_size)
    try:
        rebuilt = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError:
        kwargs.pop("img_size", None)
        rebuilt = timm.create_model(name, pretrained=False, **kwargs)
    rebuilt.load_state_dict(encoder.state_dict())
    return rebuilt


def optimizer(encoder, head, trainable: list, hp: dict[str, Any]):
    """``timm.optim.create_optimizer_v2`` over the trainable parameters; with ``layer_decay`` the encoder's
    groups come from timm's ``param_groups_layer_decay`` (each with its ``lr_scale``, which fit() applies)
    and the head, the top layer, keeps the full lr. Norms and biases have no weight decay, as in timm."""
    from timm.optim import create_optimizer_v2
    from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

    wd, name = float(hp["wd"]), str(hp.get("optimizer", "adamw")).lower()
    if hp.get("layer_decay"):
        if not hasattr(encoder, "group_matcher"):
            raise BobError(f"layer_decay={hp['layer_decay']}: the encoder ({type(encoder).__name__}) has no timm group_matcher; use layer_decay: null")
        skip = encoder.no_weight_decay() if hasattr(encoder, "no_weight_decay") else ()
        groups = param_groups_layer_decay(encoder, weight_decay=wd, no_weight_decay_list=skip, layer_decay=float(hp["layer_decay"]))
        groups += [{**g, "lr_scale": 1.0} for g in param_groups_weight_decay(head, weight_decay=wd)]
        wanted = {id(p) for p in trainable}
        groups = [{**g, "params": [p for p in g["params"] if id(p) in wanted]} for g in groups]
        groups = [g for g in groups if g["params"]]
    else:
        groups = param_groups_weight_decay(_Params(trainable), weight_decay=wd)
    return create_optimizer_v2(groups, opt=name, lr=float(hp["lr"]), weight_decay=wd, **({"momentum": 0.9} if name == "sgd" else {}))


class _Params:
    """named_parameters() over a list (timm's grouping helpers take a module)."""

    def __init__(self, params):
        self.params = params

    def named_parameters(self):
        return ((f"p{i}", p) for i, p in enumerate(self.params))


class MixupLoss:
    """``timm.data.Mixup`` on each batch, then ``SoftTargetCrossEntropy`` (label smoothing inside Mixup's
    targets). A batch of odd size (a last share) is not mixed: Mixup pairs images with the flipped batch."""

    def __init__(self, hp: dict[str, Any], num_classes: int):
        import torch
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        self.mixup = Mixup(mixup_alpha=float(hp.get("mixup") or 0.0), cutmix_alpha=float(hp.get("cutmix") or 0.0),
                           label_smoothing=float(hp.get("label_smoothing") or 0.0), num_classes=num_classes)
        self.soft = SoftTargetCrossEntropy()
        self.plain = torch.nn.CrossEntropyLoss(label_smoothing=float(hp.get("label_smoothing") or 0.0))
        self.mixed_batches = 0

    def __call__(self, forward, images, labels):
        if len(labels) % 2:
            return self.plain(forward(images), labels)
        images, targets = self.mixup(images, labels)
        self.mixed_batches += 1
        return self.soft(forward(images), targets)
