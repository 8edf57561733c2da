"""bob's engine. The public API is small and import-light:

>>> from harness import RunSpec, run_cell, BACKBONES, METHODS, TASKS
"""
from .errors import BobError
from .registry import BACKBONES, METHODS, TASKS, register_backbone, register_method, register_task
from .spec import RunSpec

__all__ = ["BobError", "RunSpec", "BACKBONES", "METHODS", "TASKS", "register_backbone", "register_method", "register_task", "run_cell"]


def run_cell(*args, **kwargs):
    """See :func:`harness.runner.run_cell` (imported lazily)."""
    from .runner import run_cell as _run_cell

    return _run_cell(*args, **kwargs)
