"""Prompt-learning recipes: a method is a learner, its defaults, and how the cell uses it.

``kind`` says which path of the engine runs it: ``trained`` (fit() the learner with its loss),
``zero`` (nothing trains), ``tip`` (the training-free cache + alpha/beta search on the few-shot
val), ``tip_f`` (the cache's keys trained with fit(), then the search), ``tpt`` (per-test-image
tuning; optionally CoOp-trained first with fit()).

Defaults are the references' ViT-B/16 settings for base-to-new (their configs and scripts);
``"auto"`` values are resolved per cell from the protocol and the shots (:func:`resolve_auto`)
and recorded: CoOp's epochs by shots (50 / 100 / 100 / 200 / 200), MaPLe's and PromptSRC's
cross-dataset settings (depth 3, ...), PromptSRC's few-shot schedule (50 epochs, GPA N(30, 30)).
Optimisation runs on bob's loop: SGD (momentum 0.9) or AdamW, per-step linear warmup then cosine;
the references warm up at a constant 1e-5 for one epoch then decay per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BobError

KINDS = ("trained", "zero", "tip", "tip_f", "tpt")
SELECT = ("last", "val")
OPTIM = {"optimizer": "sgd", "wd": 5e-4, "warmup_epochs": 1.0, "amp": "auto", "compile": False, "grad_clip": None,
         "augment": True, "crop_min": 0.08, "select": "last", "tokenizer": None}


@dataclass(frozen=True)
class PromptRecipe:
    name: str
    kind: str
    learner: str  # class name in harness.prompt.learners
    defaults: dict[str, Any]
    description: str
    prompts_vision: bool = False
    auto: dict[str, Callable[[str, int | None], Any]] = field(default_factory=dict)  # key -> (protocol, shots) -> value


PROMPT_RECIPES: dict[str, PromptRecipe] = {}


def register_prompt_recipe(recipe: PromptRecipe) -> PromptRecipe:
    if recipe.kind not in KINDS:
        raise BobError(f"prompt recipe {recipe.name}: kind {recipe.kind!r} is not one of {', '.join(KINDS)}")
    PROMPT_RECIPES[recipe.name] = recipe
    return recipe


def coop_epochs(protocol: str, shots: int | None) -> int:
    """CoOp's schedule: 50 epochs at 1 shot, 100 at 2 and 4, 200 at 8 and 16 (and for full data)."""
    if shots is None:
        return 200
    return 50 if shots <= 1 else 100 if shots <= 4 else 200


def by_protocol(values: dict[str, Any], default: Any) -> Callable[[str, int | None], Any]:
    return lambda protocol, shots: values.get(protocol, default)


def resolve_auto(recipe: PromptRecipe, hp: dict[str, Any], protocol: str, shots: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``hp`` with every ``"auto"`` value resolved; and the resolved values (for the record)."""
    out, resolved = dict(hp), {}
    for key, rule in recipe.auto.items():
        if out.get(key) == "auto":
            out[key] = resolved[key] = rule(protocol, shots)
    if recipe.name == "promptsrc" and out.get("gpa_mean") == "auto":
        out["gpa_mean"] = resolved["gpa_mean"] = round(0.75 * int(out["epochs"]), 4)
    return out, resolved


for _recipe in (
    PromptRecipe("zsclip", "zero", "ZeroShot", {"batch_size": 64, "tokenizer": None},
                 "zero-shot CLIP with the dataset's hand-made prompt, on every protocol's evaluation sets (the family's baseline)"),
    PromptRecipe("coop", "trained", "CoOp", {**OPTIM, "lr": 0.002, "epochs": "auto", "batch_size": 32, "n_ctx": 16, "ctx_init": "", "csc": False,
                                             "class_token_position": "end"},
                 "CoOp: learned context vectors in the text tower (n_ctx, init text, unified or class-specific, class-token position)",
                 auto={"epochs": coop_epochs}),
    PromptRecipe("cocoop", "trained", "CoCoOp", {**OPTIM, "lr": 0.002, "epochs": 10, "batch_size": 1, "n_ctx": 4, "ctx_init": "a photo of a"},
                 "CoCoOp: CoOp's context shifted per image by a meta-net (E -> E/16 -> text width)"),
    PromptRecipe("kgcoop", "trained", "KgCoOp", {**OPTIM, "lr": 0.002, "epochs": 100, "batch_size": 128, "n_ctx": 4, "ctx_init": "a photo of a",
                                                 "kg_weight": 8.0},
                 "KgCoOp: CoOp + kg_weight x (1 - cosine) to the hand-prompt text features"),
    PromptRecipe("maple", "trained", "MaPLe", {**OPTIM, "lr": 0.0035, "epochs": "auto", "batch_size": 4, "n_ctx": 2, "ctx_init": "a photo of a",
                                               "depth": "auto"},
                 "MaPLe: deep text prompts coupled to the image tower by linear maps (depth, n_ctx)", prompts_vision=True,
                 auto={"epochs": by_protocol({"cross": 2}, 5), "depth": by_protocol({"cross": 3}, 9)}),
    PromptRecipe("promptsrc", "trained", "PromptSRC", {**OPTIM, "lr": 0.0025, "epochs": "auto", "batch_size": 4, "n_ctx_text": 4, "n_ctx_vision": 4,
                                                       "ctx_init": "a photo of a", "depth_text": "auto", "depth_vision": "auto", "text_weight": 25.0,
                                                       "image_weight": 10.0, "gpa": True, "gpa_mean": "auto", "gpa_std": "auto"},
                 "PromptSRC: independent deep prompts in both towers, self-regularised (L1 text / image, KL logits), Gaussian prompt aggregation",
                 prompts_vision=True,
                 auto={"epochs": by_protocol({"fewshot": 50}, 20), "depth_text": by_protocol({"cross": 3}, 9),
                       "depth_vision": by_protocol({"cross": 3}, 9), "gpa_std": by_protocol({"fewshot": 30.0, "cross": 10.0}, 1.0)}),
    PromptRecipe("tpt", "tpt", "CoOp", {**OPTIM, "lr": 0.002, "epochs": 0, "batch_size": 32, "n_ctx": 4, "ctx_init": "a photo of a", "views": 64,
                                        "selection": 0.1, "tta_steps": 1, "tta_lr": 5e-3, "augmix": "auto"},
                 "TPT: per test image, one AdamW step on the prompt to minimise the marginal entropy of its confident augmented views, "
                 "then the prompt is reset (epochs > 0: CoOp-train the prompt first)"),
    PromptRecipe("tip_adapter", "tip", "", {"batch_size": 64, "augment_epochs": 10, "init_alpha": "auto", "init_beta": 1.0, "beta_max": "auto", "alpha_max": "auto",
                                            "beta_steps": 200, "alpha_steps": 20, "crop_min": 0.5, "tokenizer": None},
                 "Tip-Adapter: training-free cache of the few-shot features; alpha/beta searched on the few-shot val"),
    PromptRecipe("tip_adapter_f", "tip_f", "TipAdapterF", {**OPTIM, "optimizer": "adamw", "adam_eps": 1e-4, "wd": 0.01, "lr": 0.001, "epochs": 20,
                                                           "warmup_epochs": 0.0, "batch_size": 256, "augment_epochs": 10, "init_alpha": "auto",
                                                           "init_beta": 1.0, "beta_max": "auto", "alpha_max": "auto", "beta_steps": 200, "alpha_steps": 20, "crop_min": 0.5},
                 "Tip-Adapter-F: the cache's keys fine-tuned (last epoch, or best few-shot val), then alpha/beta searched on the few-shot val"),
    PromptRecipe("clip_adapter", "trained", "CLIPAdapter", {**OPTIM, "lr": 0.002, "epochs": "auto", "batch_size": 32, "ratio": 0.2, "reduction": 4},
                 "CLIP-Adapter: residual bottleneck (E -> E/4 -> E) on the image feature, ratio r; hand-prompt text (CoOp's schedule)",
                 auto={"epochs": coop_epochs}),
):
    register_prompt_recipe(_recipe)
