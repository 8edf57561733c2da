"""LoRA and the other layer tuners of Hugging Face ``peft``, injected into timm models.

``peft.inject_adapter_in_model`` wraps the chosen layers in place (no wrapper model), and its own
initialisation is kept: LoRA's A is Kaiming-uniform and B is zero, so the adapted model starts
exactly equal to the backbone and both factors train (unlike the V-PETL benchmark's LoRA, whose
random branch perturbs the start and whose zero branch never trains). DoRA is ``dora: true``.

``targets`` picks the layers: ``qkv`` (timm's fused attention input projection: the LoRA papers'
setting for ViTs), ``attn`` (every linear layer of the attention: qkv or q/k/v, and the output
projection), ``all-linear`` (every linear layer inside the blocks), ``conv`` (every conv inside the
blocks, for CNNs), ``auto`` (qkv where the model has it, else all-linear, else conv).
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import BobError, did_you_mean
from . import Adaptation, register_recipe
from .blocks import block_list, route_fused_qkv_through_module

TARGETS = ("auto", "qkv", "attn", "all-linear", "conv")
# peft tuners that adapt layers of any torch model (prompt-learning tuners need a transformers LM)
PROMPT_LEARNING = {"PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "ADAPTION_PROMPT", "CPT", "CARTRIDGE", "TRAINABLE_TOKENS"}


def target_modules(encoder, targets: str) -> list[str]:
    """Full names of the layers ``targets`` selects (inside the blocks; never the head)."""
    import torch.nn as nn

    if targets not in TARGETS:
        raise BobError(f"targets={targets!r} is not one of {', '.join(TARGETS)}{did_you_mean(str(targets), TARGETS)}")
    prefixes = tuple(name + "." for name, _ in block_list(encoder))
    inside = [(n, m) for n, m in encoder.named_modules() if n.startswith(prefixes)]
    linear = [(n, m) for n, m in inside if isinstance(m, nn.Linear)]
    # nn.MultiheadAttention (open_clip's own towers) holds the fused q/k/v input projection as a raw
    # parameter, not an nn.Linear; peft's LoRA wraps the module itself (its in_proj, the qkv analogue)
    mha = [n for n, m in inside if isinstance(m, nn.MultiheadAttention)]
    picks = {
        "qkv": [n for n, _ in linear if n.endswith(".qkv")] or mha,
        "attn": [n for n, _ in linear if re.search(r"\.attn\.(qkv|q|k|v|q_proj|k_proj|v_proj|proj)$", n)],
        "all-linear": [n for n, _ in linear],
        "conv": [n for n, m in inside if isinstance(m, nn.Conv2d) and m.groups == 1],  # depthwise convs have no useful low-rank update
    }
    if targets == "auto":
        for choice in ("qkv", "all-linear", "conv"):
            if picks[choice]:
                return picks[choice]
        return []
    return picks[targets]


def check_rank(encoder, names: list[str], r: int, tuner: str) -> None:
    """A rank above the smaller side of a layer makes no low-rank update: refuse it in one line."""
    import torch.nn as nn

    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise BobError(f"{tuner}: rank r={r!r} must be a positive integer")
    modules = dict(encoder.named_modules())
    for name in names:
        m = modules[name]
        if isinstance(m, nn.Linear):
            limit = min(m.in_features, m.out_features)
        elif isinstance(m, nn.Conv2d):
            limit = min(m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1], m.out_channels)
        else:
            continue
        if r > limit:
            raise BobError(f"{tuner}: rank r={r} is larger than layer {name} ({type(m).__name__} {tuple(m.weight.shape)}, max rank {limit}); use r <= {limit}")


def peft_layer_tuners() -> dict[str, type]:
    """peft's layer tuners by lower-case name (``lora``, ``ia3``, ``loha``, ``lokr``, ``oft``, ``vera``...)."""
    try:
        import peft
    except ImportError:
        raise BobError("PEFT methods need Hugging Face peft: pip install 'peft>=0.13' (a core dependency of bob)") from None
    return {str(k.value if hasattr(k, "value") else k).lower(): cfg for k, cfg in peft.PEFT_TYPE_TO_CONFIG_MAPPING.items()
            if str(k.value if hasattr(k, "value") else k).upper() not in PROMPT_LEARNING}


def inject_peft(encoder, tuner: str, config: dict[str, Any], names: list[str]) -> Adaptation:
    """Inject peft tuner ``tuner`` with ``config`` (its own keys) into the layers ``names``."""
    import peft

    tuners = peft_layer_tuners()
    if tuner not in tuners:
        raise BobError(f"unknown peft tuner '{tuner}'{did_you_mean(tuner, tuners)}; layer tuners of peft {peft.__version__}: {', '.join(sorted(tuners))}")
    if not names:
        raise BobError(f"peft:{tuner}: no layer of this model matches the targets; try targets: all-linear or conv")
    cls = tuners[tuner]
    kwargs = {"target_modules": names, **config}
    if tuner == "ia3" and "feedforward_modules" not in kwargs:  # IA3 scales the input of feed-forward layers, the output of others
        kwargs["feedforward_modules"] = [n for n in names if re.search(r"(fc2|mlp\.fc2|pwconv2)$", n)]
    try:
        peft_config = cls(**kwargs)
    except TypeError as exc:
        import inspect

        accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "peft_type", "task_type")]
        bad = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        raise BobError(f"peft:{tuner}: unknown config key '{bad}'{did_you_mean(bad, accepted)}; {cls.__name__} accepts {', '.join(accepted[:25])}") from None
    except ValueError as exc:
        raise BobError(f"peft:{tuner}: {str(exc).splitlines()[0]}") from None
    route_fused_qkv_through_module(encoder, names)
    try:
        peft.inject_adapter_in_model(peft_config, encoder)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise BobError(f"peft:{tuner} cannot adapt this model: {str(exc).splitlines()[0]}") from None
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad and "base_layer" not in n and f".{_adapter_marker(n)}" in n]
    return Adaptation(f"peft:{tuner}", trainable, notes={"peft_version": peft.__version__, "targets": len(names), "config": {k: v for k, v in kwargs.items() if k != "target_modules"}})


def _adapter_marker(name: str) -> str:
    """peft names adapter weights ``<layer>.<tuner prefix>...default``: the tuner part of the name."""
    parts = name.split(".")
    return next((p for p in parts if "_" in p and p.split("_")[0] in {"lora", "ia3", "hada", "lokr", "oft", "vera", "boft", "fourierft", "hra", "ln", "c3a", "randlora", "road", "shira", "miss", "delora", "gralora", "osf", "lily", "adamss", "beft", "deft", "glora", "hira", "psoft", "pvera", "peanut", "poly", "shadow", "supertuning", "tinylora", "frod"}), parts[-1])


@register_recipe("lora", hparams={"r": 8, "alpha": 8, "dropout": 0.0, "targets": "auto", "dora": False},
                 identity_at_init=True, description="LoRA through peft (rank r, alpha, dropout; targets qkv|attn|all-linear|conv|auto; dora)")
def lora(encoder, hp) -> Adaptation:
    names = target_modules(encoder, hp.get("targets", "auto"))
    if not names:
        raise BobError(f"lora: no layer of this model matches targets={hp.get('targets')!r}; try all-linear or conv")
    r = hp.get("r", 8)
    check_rank(encoder, names, r, "lora")
    config = {"r": r, "lora_alpha": hp.get("alpha", r), "lora_dropout": float(hp.get("dropout", 0.0)), "use_dora": bool(hp.get("dora", False))}
    adaptation = inject_peft(encoder, "lora", config, names)
    adaptation.recipe = "lora"
    return adaptation


def peft_tuner_recipe(tuner: str):
    """The recipe for ``peft:<tuner>``: ``targets`` as for LoRA, ``config`` = the tuner's own config keys."""

    def apply(encoder, hp) -> Adaptation:
        names = target_modules(encoder, hp.get("targets", "auto"))
        config = dict(hp.get("config") or {})
        if "r" in config:
            check_rank(encoder, names, config["r"], f"peft:{tuner}")
        return inject_peft(encoder, tuner, config, names)

    return apply
