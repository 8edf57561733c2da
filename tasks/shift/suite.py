"""The ``shift`` suite: its groups are declared by the family's modules, then registered once.

Why a collector: the distribution-shift family is several modules (ImageNet's OOD sets here,
VisDA, DomainBed, Sim10k -> Cityscapes beside it), each owning its tasks and data checks, while a
suite is registered in one ``register_suite`` call. Each module calls :func:`declare_group` and
:func:`declare_checker` at import; ``tasks/shift/__init__.py`` imports them all and then calls
:func:`register_shift_suite`. Group order is fixed by ``GROUP_ORDER`` (not by import order), so
tables look the same however the modules load.
"""
from __future__ import annotations

from typing import Any, Callable

from harness.errors import BobError

SUITE = "shift"
GROUP_ORDER = ("imagenet", "synthetic_to_real", "domain_generalization", "ood_detection")
_GROUPS: dict[str, dict[str, Any]] = {}
_CHECKERS: dict[str, Callable] = {}
_NOTES: list[str] = []


def declare_group(name: str, *, title: str, tasks: list[str], metric: str | None = None) -> None:
    """A group of the ``shift`` suite (a group's value: mean over its tasks of ``metric``, by default
    the tasks' primary metric, ``ood_top1`` for the classification shifts)."""
    if name in _GROUPS:
        _GROUPS[name]["tasks"] += [t for t in tasks if t not in _GROUPS[name]["tasks"]]
        return
    _GROUPS[name] = {"name": name, "title": title, "tasks": list(tasks), **({"metric": metric} if metric else {})}


def declare_checker(task_id: str, check: Callable, prepare_notes: str = "") -> None:
    """``check(task_id, data_root, override, open_images) -> TaskCheck`` for ``bob data verify shift``."""
    _CHECKERS[task_id] = check
    if prepare_notes:
        _NOTES.append(prepare_notes.strip())


def _check_data(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False):
    if task_id not in _CHECKERS:
        raise BobError(f"task {task_id} of suite shift declares no data check; its module should call declare_checker")
    return _CHECKERS[task_id](task_id, data_root, override, open_images)


def register_shift_suite() -> None:
    from harness.suites import register_suite

    order = [g for g in GROUP_ORDER if g in _GROUPS] + [g for g in _GROUPS if g not in GROUP_ORDER]
    register_suite(SUITE, title="Distribution shift", groups=[_GROUPS[g] for g in order], rule="mean_of_group_means", group_columns=True,
                   caption="Distribution shift (per task its primary metric: mean OOD top-1 % for classification shifts; "
                           "group means, then their mean)",
                   check_data=_check_data, prepare_notes="\n\n".join(_NOTES) or "see README (Distribution shift)")
