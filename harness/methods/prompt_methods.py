"""Prompt-learning methods on vision-language backbones: one registration per recipe of
``harness/prompt/recipes.py`` (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC, TPT, Tip-Adapter(-F),
CLIP-Adapter and the zero-shot baseline). Each cell runs ``harness.prompt.engine.run_prompt_cell``:
the learner on the frozen open_clip towers, trained on the one loop, evaluated on every set of
the task (few-shot test, base / new, cross-dataset targets).
"""
from __future__ import annotations

from ..prompt.recipes import PROMPT_RECIPES, SELECT
from ..registry import register_method
from ..types import CLASSIFICATION
from .base import Method, MethodResult
from .finetune import AMP_MODES, OPTIMIZERS, check_choices

CHOICES = {"optimizer": OPTIMIZERS, "amp": AMP_MODES, "select": SELECT, "class_token_position": ("end", "middle", "front")}


class PromptMethod(Method):
    kinds = (CLASSIFICATION,)
    frozen_backbone = True  # the towers never change; the learner is new parameters beside them
    search_space = {}  # the references' settings; pass search: {...} to tune on the few-shot val
    backbone_requires = {"capabilities": ["text"], "why": "prompt learning needs both towers of a vision-language model (an openclip:... backbone)"}

    def resolve_hparams(self, given):
        resolved = super().resolve_hparams(given)
        check_choices(self.name, given, {k: v for k, v in CHOICES.items() if k in self.defaults})
        return resolved

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from ..prompt.engine import run_prompt_cell

        return run_prompt_cell(self.name, backbone, task, hparams, ctx)


for _name, _recipe in PROMPT_RECIPES.items():
    register_method(type(f"Prompt_{_name}", (PromptMethod,), {"name": _name, "defaults": dict(_recipe.defaults), "description": _recipe.description}))
