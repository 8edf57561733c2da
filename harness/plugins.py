"""Finds plugins: the built-in modules below plus any module in the ``bob.plugins`` entry-point group.

Why a fixed list instead of scanning packages: importing is the registration step, and the
list is the small static index that keeps ``bob list`` fast (plugin modules import torch only
inside their factories).
"""
from __future__ import annotations

import importlib
import warnings

BUILTIN_PLUGIN_MODULES = (
    "harness.methods.knn",
    "harness.methods.linear",
    "harness.methods.finetune",
    "harness.methods.adapt_methods",
    "harness.methods.icl",
    "harness.methods.zeroshot",
    "harness.methods.pretrained_head",
    "harness.methods.prompt_methods",
    "harness.methods.detector",
    "harness.methods.lm",
    "harness.methods.image_retrieval",
    "backbones.timm_backbones",
    "backbones.sequence",
    "backbones.openclip",
    "backbones.hf_owl",
    "backbones.hf_lm",
    "backbones.tiny_lm",
    "tasks.builtin",
    "tasks.own_data",
    "tasks.prompt_learning",
    "tasks.suites",
    "tasks.icl",
    "tasks.retrieval",
    "tasks.image_retrieval",
    "tasks.lvis",
    "tasks.detection_shapes",
    "tasks.bias",
    "tasks.bias_toy",
    "tasks.lmeval",
    "tasks.shift",
    "tasks.perplexity",
    "harness.compress.board",
)
ENTRY_POINT_GROUP = "bob.plugins"

_loaded = False


def load_plugins() -> None:
    """Import every plugin module once; a broken third-party plugin warns instead of breaking bob."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import os

    extra = [m.strip() for m in os.environ.get("BOB_PLUGINS", "").split(",") if m.strip()]
    for module in (*BUILTIN_PLUGIN_MODULES, *extra):  # BOB_PLUGINS=a.b,c.d: plugins without packaging
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a third-party plugin must not take the CLI down
            warnings.warn(f"bob plugin '{ep.name}' ({ep.value}) failed to load: {exc}")
