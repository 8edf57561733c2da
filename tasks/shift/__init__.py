"""Distribution shift: train on the ID / source split, evaluate every shifted set in the same cell.

Modules (each registers its tasks, declares its ``shift`` suite group and its data check):
* ``imagenet.py``: ImageNet-1k (train/val wnid folders) -> ImageNetV2 (3 variants), ImageNet-Sketch,
  ImageNet-R, ImageNet-A, plus ImageNet-ReaL as an extra ID metric;
* ``domainbed.py``, ``visda.py``, ``sim10k.py``: DomainBed, VisDA-2017, Sim10k -> Cityscapes.

The mechanism is ``harness.eval_sets`` (``Task.eval_sets``); the suite is assembled in ``suite.py``.
This package stays import-light: ``bob list`` imports it.
"""
from __future__ import annotations

import importlib

from .suite import register_shift_suite

MODULES = ("imagenet", "domainbed", "visda", "sim10k", "robustness")  # the family's modules, in import order (task modules declare their group)

for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
register_shift_suite()
