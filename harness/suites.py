"""Suite declarations: suite -> groups -> tasks, how a table summarises them, and data hooks.

A task plugin declares its suites with :func:`register_suite`; the engine builds every table
(VTAB-1k, FGVC, ICL, bias, detection...) from these declarations and never imports a plugin.

Rules:
- a *group's* value for a row is the mean over the group's tasks of the group's metric (the
  tasks' primary metric by default, or a named sub-metric such as ``APr``: ``metric: APr``);
- the *suite's* value is ``mean_of_tasks`` or ``mean_of_group_means`` (VTAB-1k, as in the VTAB
  and PEFT papers); ``plain_mean: true`` adds the plain mean over tasks as a second, labelled
  column (the V-PETL tables report both);
- values of different metrics are never averaged: where a group or suite mixes metrics, its
  value is the mean z-score of its tasks (labelled "mean z").

Data hooks (all optional) let the CLI reach a plugin's data code through the registry:
``check_data(task_id, data_root, override, open_images) -> check`` (an object with ``status``,
``counts``, ``problems``, ``fix``, ``location``, ``message()``), ``prepare(root, source, tasks,
log)`` and ``prepare_notes`` (text).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import BobError
from .registry import SUITES

SUITE_RULES = ("mean_of_tasks", "mean_of_group_means")


@dataclass(frozen=True)
class GroupSpec:
    name: str
    title: str
    tasks: tuple[str, ...]
    metric: str | None = None  # None: the tasks' primary metric


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    title: str
    groups: tuple[GroupSpec, ...]
    rule: str = "mean_of_tasks"
    caption: str = ""
    plain_mean: bool = False
    group_columns: bool | None = None  # None: shown when the table holds more than one group
    hooks: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for g in self.groups for t in g.tasks))  # a task may sit in several groups (one per metric)

    def group_of(self, task: str) -> GroupSpec | None:
        return next((g for g in self.groups if task in g.tasks), None)

    def rule_text(self) -> str:
        parts = [f"{g.title}: mean over its {len(g.tasks)} task(s)" + (f" of {g.metric}" if g.metric else "") for g in self.groups]
        overall = "the mean of the group means" if self.rule == "mean_of_group_means" else "the mean over its tasks"
        text = f"{self.title}: " + "; ".join(parts) + f"; the suite value is {overall}"
        return text + (" (the plain mean over all tasks is shown beside it)" if self.plain_mean else "") + "."


def register_suite(name: str, *, title: str, groups: list[dict[str, Any]], rule: str = "mean_of_tasks", caption: str = "",
                   plain_mean: bool = False, group_columns: bool | None = None, **hooks: Any) -> SuiteSpec:
    """Declare a suite (called by task plugins at import). ``groups``: ``[{name, title, tasks, metric?}]``."""
    if rule not in SUITE_RULES:
        raise BobError(f"suite '{name}': rule {rule!r} is not one of {', '.join(SUITE_RULES)}")
    known_hooks = {"check_data", "prepare", "prepare_notes", "prefetch"}
    for key in hooks:
        if key not in known_hooks:
            raise BobError(f"suite '{name}': unknown hook '{key}'; known: {', '.join(sorted(known_hooks))}")
    specs = []
    for g in groups:
        if not g.get("tasks"):
            raise BobError(f"suite '{name}': group {g.get('name')!r} lists no tasks")
        specs.append(GroupSpec(g["name"], g.get("title") or g["name"].capitalize(), tuple(g["tasks"]), g.get("metric")))
    spec = SuiteSpec(name, title, tuple(specs), rule, caption, plain_mean, group_columns, dict(hooks))
    SUITES.add(name, _returns(spec), title=title, tasks=spec.tasks, spec=spec)
    return spec


def _returns(spec: SuiteSpec) -> Callable[[], SuiteSpec]:
    def factory() -> SuiteSpec:
        return spec

    factory.__module__ = spec.name  # registry's duplicate message names the suite
    return factory


def suite(name: str) -> SuiteSpec:
    """The declaration of suite ``name`` (unknown -> one-line error with close matches)."""
    return SUITES.get(name).meta["spec"]


def all_suites() -> list[SuiteSpec]:
    return [e.meta["spec"] for e in SUITES.entries()]


def suite_of_task(task: str) -> SuiteSpec | None:
    """The first declared suite that lists ``task`` (None for tasks of no suite)."""
    for spec in all_suites():
        if task in spec.tasks:
            return spec
    return None


def suites_with_hook(hook: str) -> list[str]:
    return [s.name for s in all_suites() if hook in s.hooks]


def hook(suite_name: str, name: str) -> Any:
    """A suite's data hook; a suite without it is a one-line error naming the suites that have it."""
    spec = suite(suite_name)
    if name not in spec.hooks:
        have = suites_with_hook(name)
        raise BobError(f"suite '{suite_name}' has no '{name}' hook; suites with one: {', '.join(have) or 'none'}")
    return spec.hooks[name]
