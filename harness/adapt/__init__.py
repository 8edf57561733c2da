"""Adaptation recipes: what changes in a model, kept apart from how it trains (the ``peft`` idea).

A recipe takes the encoder (a fresh copy of the backbone's module) and the cell's
hyper-parameters, changes the encoder in place (inserts prompts, wraps layers with LoRA through
``peft``, adds adapters, unfreezes biases) and returns an :class:`Adaptation` naming exactly the
parameters that train. The one fine-tuning loop (``harness/methods/finetune.py``) does the rest,
so a new method is a recipe plus a registration (``harness/methods/adapt_methods.py``).

Recipes add parameters under *new* names and leave every original parameter name in place
(``peft`` moves a wrapped weight to ``<layer>.base_layer.weight``; :func:`base_name` maps it
back), so a state-dict diff can prove that nothing else changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BobError, did_you_mean


@dataclass
class Adaptation:
    """What a recipe did: the encoder parameters that train, and how many parameters it added."""

    recipe: str
    trainable: list[str]  # names in encoder.named_parameters()
    extra_params: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str
    apply: Callable[..., Adaptation]
    hparams: dict[str, Any]  # the recipe's own hyper-parameters and their defaults
    requires: dict[str, Any]  # static backbone metadata it needs (families / architectures), for skipping at expansion
    identity_at_init: bool
    description: str


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, *, hparams: dict[str, Any] | None = None, requires: dict[str, Any] | None = None,
                    identity_at_init: bool = False, description: str = "") -> Callable:
    def decorator(fn: Callable[..., Adaptation]) -> Callable[..., Adaptation]:
        RECIPES[name] = Recipe(name, fn, dict(hparams or {}), dict(requires or {}), identity_at_init, description)
        return fn

    return decorator


def architecture_supported(requires: dict[str, Any], architecture: str | None) -> bool:
    """Whether a recipe's declared ``requires`` admits a backbone architecture (static metadata only:
    decided at grid expansion, never by a crash inside the cell)."""
    prefixes = requires.get("architectures")
    return not prefixes or (architecture or "").startswith(tuple(prefixes))


def get_recipe(name: str) -> Recipe:
    _load_builtin_recipes()
    if name not in RECIPES:
        raise BobError(f"unknown adaptation recipe '{name}'{did_you_mean(name, RECIPES)}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def apply_recipe(name: str, encoder, hp: dict[str, Any]) -> Adaptation:
    """Apply recipe ``name`` to ``encoder`` in place and freeze every encoder parameter it does not train."""
    recipe = get_recipe(name)
    before = {n for n, _ in encoder.named_parameters()}
    n_before = sum(p.numel() for p in encoder.parameters())
    adaptation = recipe.apply(encoder, hp)
    trainable = set(adaptation.trainable)
    for pname, param in encoder.named_parameters():
        param.requires_grad_(pname in trainable)
    missing = trainable - {n for n, _ in encoder.named_parameters()}
    if missing:
        raise BobError(f"recipe {name} named parameters the model does not have: {sorted(missing)[:3]}")
    adaptation.extra_params = sum(p.numel() for p in encoder.parameters()) - n_before
    adaptation.notes.setdefault("new_parameter_names", len({n for n, _ in encoder.named_parameters()} - before))
    return adaptation


def base_name(name: str) -> str:
    """A parameter's name in the un-adapted model (``peft`` inserts ``base_layer.``)."""
    return name.replace(".base_layer.", ".")


def _load_builtin_recipes() -> None:
    from . import adapters, lora, selective, ssf, vpt  # noqa: F401 - importing registers them


def train_mode(model, adapted: bool) -> None:
    """``model.train()``, except that under an adaptation recipe batch-norm layers keep their running
    statistics (eval mode): the backbone stays what it was except for the declared parameters. Full
    fine-tuning (``adapted=False``) updates them as usual."""
    import torch.nn as nn

    model.train()
    if adapted:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
