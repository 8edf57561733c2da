"""Parameter-efficient methods: each is the fine-tuning loop (``finetune.py``) + one recipe
(``harness/adapt/``). Adding a method is adding a line to ``PEFT_METHODS``.

Defaults follow the PEFT literature's VTAB-1k setting (AdamW, warmup + cosine, no augmentation);
``lr`` x ``wd`` is searched on train800 -> val200 and the best refitted on train800val200 (the
record's ``protocol`` lists every candidate's val200 score; test is read once, by the refit).

The PEFT papers' own methods (``LITERATURE_METHODS``: E²VPT, SCT, SVFit, AdapterBias, gated
prompts, FacT, Convpass, GPS) carry their papers' optimiser, defaults and search space. Their
hyper-parameter ranges are checked by ``resolve_hparams`` and their budgets against the model
(a rank above a layer's, more salient channels than a layer has...) by ``validate_cell``, on the
backbone's skeleton built on the meta device: both at grid expansion, before any cell runs.
"""
from __future__ import annotations

import functools
from typing import Any

from ..adapt import RECIPES, get_recipe
from ..errors import BobError
from ..registry import BACKBONES, METHODS, Entry, register_method
from .base import MethodResult, grid_points
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


# The PEFT papers' own methods: recipe, the paper's optimiser / defaults, its search space (tuned on
# train800 -> val200 unless fixed), and a description. Where a paper publishes no grid for vision, the
# note says what bob searches instead.
LITERATURE_METHODS: dict[str, dict[str, Any]] = {
    "e2vpt": {"recipe": "e2vpt", "defaults": {"optimizer": "sgd", "lr": 0.5, "wd": 1e-4},
              "search": {"lr": [50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05], "wd": [0.01, 0.001, 0.0001, 0.0]},
              "description": "E2VPT: deep visual prompts + key-value prompts in attention (prompts, kv_prompts; prune-and-rewind with prune, prune_pieces)"},
    "gated_prompt": {"recipe": "gated_prompt", "defaults": {"optimizer": "sgd", "lr": 0.1, "wd": 0.0}, "search": {"gate_init": [5.0, 10.0]},
                     "description": "gated prompt tuning for SSL ViTs: shallow prompts, a learnable gate per block, learnable attention temperatures"},
    "fact_tt": {"recipe": "fact_tt", "defaults": {"lr": 1e-3, "wd": 1e-4}, "search": {"scale": [0.01, 0.1, 1.0, 10.0, 100.0]},
                "description": "FacT-TT: tensor-train factor tuning of the ViT weight slices (r, scale; merged after training)"},
    "fact_tk": {"recipe": "fact_tk", "defaults": {"lr": 1e-3, "wd": 1e-4}, "search": {"scale": [0.01, 0.1, 1.0, 10.0, 100.0]},
                "description": "FacT-TK: Tucker factor tuning of the ViT weight slices (r, scale; merged after training)"},
    "convpass": {"recipe": "convpass", "defaults": {"lr": 1e-3, "wd": 1e-4},
                 "search": {"scale": [0.01, 0.1, 1.0, 10.0, 100.0], "conv_init": ["identity", "xavier"]},
                 "description": "Convpass: 3x3 convolutional bypasses beside each attention and MLP (dim, scale, conv_init)"},
    "adapter_bias": {"recipe": "adapter_bias", "defaults": {"lr": 1e-3, "wd": 1e-4}, "search": PEFT_SEARCH,
                     "description": "AdapterBias: a token-dependent shift alpha(h) * v of every MLP output (+ norms; static shift merged)"},
    "sct": {"recipe": "sct", "defaults": {"lr": 1e-2, "wd": 1e-2, "label_smoothing": 0.1}, "search": {"lr": [1e-2, 3e-3], "wd": [1e-2, 1e-4]},
            "description": "SCT: a K x K map on each block's K most salient channels, chosen on the training split (channels; merged after training)"},
    "svfit": {"recipe": "svfit", "defaults": {"lr": 5e-3, "wd": 1e-4}, "search": PEFT_SEARCH,
              "description": "SVFit: the top-r singular values of every weight in the blocks train (r: all | int | energy share; merged after training)"},
    "gps": {"recipe": "gps", "defaults": {"lr": 2e-3, "wd": 0.0}, "search": {"lr": [1e-2, 2e-3, 5e-4]},
            "description": "GPS: per neuron the top-|gradient| weights on the training split, then sparse tuning (per_neuron; merged after training)"},
}


class AdaptMethod(FineTune):
    """A recipe on the fine-tuning loop (subclasses set ``name`` and ``recipe``)."""

    frozen_backbone = False
    search_space = PEFT_SEARCH

    def resolve_hparams(self, given):
        """As fine-tuning's, plus the recipe's own range checks on every point the cell will run."""
        resolved = super().resolve_hparams(given)
        recipe = RECIPES.get(self.recipe or "")
        if recipe is not None and recipe.check_hparams is not None:
            for point in grid_points(resolved.get("search") or {}):
                recipe.check_hparams({**resolved, **point})
        return resolved

    def validate_cell(self, spec) -> None:
        """Budgets against the model (ranks, channels, weights per neuron, prompt segments): the recipe's
        ``check`` on the backbone's skeleton, built without weights on the meta device. Called at
        expansion, so a budget larger than the model stops the sweep before any cell runs."""
        recipe = RECIPES.get(self.recipe or "")
        if recipe is None or recipe.check is None:
            return
        hp = self.resolve_hparams(spec.hparams)
        _check_on_skeleton(self.name, self.recipe, spec.backbone, _canonical(hp))

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        result = super().run(backbone, task, hparams, ctx)
        artifacts = result.adaptation.pop("artifacts", None)  # a large selection goes beside the record, not into it
        if artifacts:
            result.artifacts.update(artifacts)
        return result


def _canonical(hp: dict[str, Any]) -> str:
    from ..spec import canonical_json

    return canonical_json(hp)


@functools.lru_cache(maxsize=256)
def _check_on_skeleton(method: str, recipe_name: str, backbone: str, hp_json: str) -> None:
    import json

    hp = json.loads(hp_json)
    skeleton = _skeleton(backbone, hp.get("img_size"))
    if skeleton is None:
        return  # a backbone bob cannot build without weights: the cell checks the same when it runs
    recipe = RECIPES[recipe_name]
    for point in grid_points(hp.get("search") or {}):
        try:
            recipe.check(skeleton, {**hp, **point})
        except BobError as exc:
            raise BobError(f"{backbone} x {method}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _skeleton(backbone: str, img_size):
    """The backbone's module without weights (meta device), or None where it cannot be built that way."""
    try:
        import torch

        built = BACKBONES.get(backbone).factory(weights="random", seed=0, img_size=img_size)
        with torch.device("meta"):
            return built.build()
    except Exception:  # noqa: BLE001 - not every backbone source builds offline without weights; the cell's own check then applies
        return None


def _method_class(name: str, recipe_name: str, lr: float, description: str, extra: dict[str, Any] | None = None,
                  search: dict[str, list] | None = None) -> type:
    recipe = RECIPES.get(recipe_name) if recipe_name.startswith("peft:") else get_recipe(recipe_name)
    recipe_hparams = recipe.hparams if recipe else {}
    requires = dict(recipe.requires) if recipe else {}
    attrs = {
        "name": name, "recipe": recipe_name, "description": description, "backbone_requires": requires,
        "defaults": {**FineTune.defaults, "lr": lr, "wd": 1e-4, **recipe_hparams, **(extra or {})},
    }
    if search is not None:
        attrs["search_space"] = {k: list(v) for k, v in search.items()}
    if recipe is not None and recipe.paper:
        attrs["paper"] = recipe.paper
    return type(f"Adapt_{name}", (AdaptMethod,), attrs)


for _name, (_recipe, _lr, _desc) in PEFT_METHODS.items():
    register_method(_method_class(_name, _recipe, _lr, _desc))
for _name, _spec in LITERATURE_METHODS.items():
    _defaults = dict(_spec["defaults"])
    register_method(_method_class(_name, _spec["recipe"], _defaults.pop("lr"), _spec["description"], _defaults, _spec["search"]))


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
