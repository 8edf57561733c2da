"""Parameter-efficient methods: each is the fine-tuning loop (``finetune.py``) + one recipe
(``harness/adapt/``). Adding a method is adding a line to ``PEFT_METHODS``.

Defaults follow the PEFT literature's VTAB-1k setting (AdamW, warmup + cosine, no augmentation);
``lr`` x ``wd`` is searched on train800 -> val200 and the best refitted on train800val200 (the
record's ``protocol`` lists every candidate's val200 score; test is read once, by the refit).
"""
from __future__ import annotations

from typing import Any

from ..adapt import RECIPES, get_recipe
from ..errors import BobError
from ..registry import METHODS, Entry, register_method
from .finetune import FineTune

PEFT_SEARCH = {"lr": [1e-2, 1e-3], "wd": [1e-4, 1e-2]}
PEFT_METHODS = {  # method name -> (recipe, learning rate default, description)
    "partial": ("partial", 1e-3, "partial fine-tuning: last k blocks + final norm + head"),
    "bitfit": ("bitfit", 5e-3, "BitFit: every bias + head"),
    "ln_tune": ("ln_tune", 5e-3, "LayerNorm (norm affine) tuning + head"),
    "lora": ("lora", 5e-3, "LoRA via peft on qkv (targets qkv|attn|all-linear|conv|auto; rank r, alpha, dropout, dora)"),
    "adapter": ("adapter", 5e-3, "bottleneck adapter after each MLP (Houlsby/Pfeiffer placement)"),
    "adaptformer": ("adaptformer", 5e-3, "AdaptFormer: scaled bottleneck parallel to each MLP"),
    "vpt_shallow": ("vpt_shallow", 1e-2, "VPT-shallow: p prompt tokens before the first block"),
    "vpt_deep": ("vpt_deep", 1e-2, "VPT-deep: p new prompt tokens at every block"),
    "ssf": ("ssf", 5e-3, "SSF: scale and shift after every linear / norm op"),
}


class AdaptMethod(FineTune):
    """A recipe on the fine-tuning loop (subclasses set ``name`` and ``recipe``)."""

    frozen_backbone = False
    search_space = PEFT_SEARCH


def _method_class(name: str, recipe_name: str, lr: float, description: str, extra: dict[str, Any] | None = None) -> type:
    recipe = RECIPES.get(recipe_name) if recipe_name.startswith("peft:") else get_recipe(recipe_name)
    recipe_hparams = recipe.hparams if recipe else {}
    requires = dict(recipe.requires) if recipe else {}
    attrs = {
        "name": name, "recipe": recipe_name, "description": description, "backbone_requires": requires,
        "defaults": {**FineTune.defaults, "lr": lr, "wd": 1e-4, **recipe_hparams, **(extra or {})},
    }
    return type(f"Adapt_{name}", (AdaptMethod,), attrs)


for _name, (_recipe, _lr, _desc) in PEFT_METHODS.items():
    register_method(_method_class(_name, _recipe, _lr, _desc))


def _resolve_peft(full_name: str) -> Entry:
    """``peft:<tuner>``: any peft layer tuner (IA3, LoHa, LoKr, OFT, VeRA...), its config keys under ``config``."""
    from ..adapt import RECIPES as recipes
    from ..adapt import Recipe
    from ..adapt.lora import peft_layer_tuners, peft_tuner_recipe
    from ..errors import did_you_mean

    tuner = full_name.split(":", 1)[1].lower()
    tuners = peft_layer_tuners()
    if tuner not in tuners:
        raise BobError(f"unknown method '{full_name}': peft has no layer tuner '{tuner}'{did_you_mean(tuner, tuners)}; "
                       f"layer tuners: {', '.join(sorted(tuners))}")
    recipes.setdefault(full_name, Recipe(full_name, peft_tuner_recipe(tuner), {"targets": "auto", "config": {}}, {}, False,
                                         f"peft {tuner} ({tuners[tuner].__name__})"))
    cls = _method_class(full_name, full_name, 5e-3, f"peft {tuner} tuner ({tuners[tuner].__name__}); its config keys under `config`")
    register_method(cls)
    return METHODS.get(full_name)


METHODS.add_prefix("peft", _resolve_peft, "any Hugging Face peft layer tuner works as peft:<type> (ia3, loha, lokr, oft, vera...)")
