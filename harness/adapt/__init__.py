"""Adaptation recipes: what changes in a model, kept apart from how it trains (the ``peft`` idea).

A recipe takes the encoder (a fresh copy of the backbone's module) and the cell's
hyper-parameters, changes the encoder in place (inserts prompts, wraps layers with LoRA through
``peft``, adds adapters, unfreezes biases) and returns an :class:`Adaptation` naming exactly the
parameters that train. The one fine-tuning loop (``harness/methods/finetune.py``) does the rest,
so a new method is a recipe plus a registration (``harness/methods/adapt_methods.py``).

Recipes add parameters under *new* names and leave every original parameter name in place
(``peft`` moves a wrapped weight to ``<layer>.base_layer.weight``; :func:`base_name` maps it
back), so a state-dict diff can prove that nothing else changed.

Three optional capabilities serve the PEFT papers' own methods (``e2vpt``, ``sct``, ``gps``...):
a recipe that chooses what to train from data (``needs_data``) receives the cell's *training
split* only (:class:`~harness.adapt.training_split.TrainingSplit`); a recipe whose update folds
into the pretrained weights returns ``Adaptation.merge``, which the training loop's caller runs
after training so that the merged model is what is evaluated and timed; and ``check_hparams`` /
``check`` refuse a value outside its range, or a budget larger than the model, at grid
expansion (``check`` runs on the backbone's skeleton, built on the meta device).
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
    # (encoder) -> report entries: folds the trained update into the pretrained weights and removes
    # the recipe's forward hooks (the model then serves with no extra parameters or compute)
    merge: Callable[[Any], dict[str, Any]] | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)  # file name -> JSON value written beside the record (large selections)


@dataclass(frozen=True)
class Recipe:
    name: str
    apply: Callable[..., Adaptation]
    hparams: dict[str, Any]  # the recipe's own hyper-parameters and their defaults
    requires: dict[str, Any]  # static backbone metadata it needs (families / architectures), for skipping at expansion
    identity_at_init: bool
    description: str
    needs_data: bool = False  # apply(encoder, hp, data): selects on the cell's training split (never val or test)
    check: Callable[..., None] | None = None  # (encoder skeleton, hp) -> raises BobError; run at grid expansion
    check_hparams: Callable[[dict[str, Any]], None] | None = None  # (hp) -> raises BobError; no model needed
    paper: str = ""  # the publication the recipe reproduces (PEFT literature methods); "" for library recipes


RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, *, hparams: dict[str, Any] | None = None, requires: dict[str, Any] | None = None,
                    identity_at_init: bool = False, description: str = "", needs_data: bool = False,
                    check: Callable[..., None] | None = None, check_hparams: Callable[[dict[str, Any]], None] | None = None,
                    paper: str = "") -> Callable:
    def decorator(fn: Callable[..., Adaptation]) -> Callable[..., Adaptation]:
        RECIPES[name] = Recipe(name, fn, dict(hparams or {}), dict(requires or {}), identity_at_init, description,
                               needs_data, check, check_hparams, paper)
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


def apply_recipe(name: str, encoder, hp: dict[str, Any], data=None) -> Adaptation:
    """Apply recipe ``name`` to ``encoder`` in place and freeze every encoder parameter it does not train.

    ``data`` (a :class:`~harness.adapt.training_split.TrainingSplit`) reaches only recipes that
    declare ``needs_data``; every other recipe keeps its ``apply(encoder, hp)`` signature."""
    recipe = get_recipe(name)
    if recipe.check_hparams is not None:
        recipe.check_hparams(hp)
    before = {n for n, _ in encoder.named_parameters()}
    n_before = sum(p.numel() for p in encoder.parameters())
    if recipe.needs_data:
        if data is None:
            raise BobError(f"recipe {name} selects what to train on the training split; call apply_recipe(..., data=TrainingSplit(...))")
        adaptation = recipe.apply(encoder, hp, data)
    else:
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
    from . import adapter_bias, convpass, e2vpt, fact, gated_prompt, gps, sct, svfit  # noqa: F401 - the PEFT papers' own methods


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
