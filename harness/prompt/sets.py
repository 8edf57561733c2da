"""What a prompt-learning cell evaluates: one or more evaluation sets, each with its own classes.

A few-shot cell evaluates the test split; a base-to-new cell evaluates the base classes and the
new ones (each within its own classes); a cross-dataset or domain-generalisation cell evaluates
the source's test split and every target. The model trains once; each set is scored against the
text of its own class names, so a learner that never saw a class still classifies among them.

A task built by the prompt-learning family carries ``prompt_sets``; any other classification task
with class names gets one set, its final test split (:func:`prompt_sets_of`). Metrics are named by
role (:func:`metric_name`) and summarised by :func:`summarise`: the harmonic mean of base and new
(HM = 2BN / (B + N)), or the mean over targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BobError

ROLES = ("test", "base", "new", "source", "target")


@dataclass(frozen=True)
class PromptSet:
    """One evaluation: the task split it reads, its class names (label order) and prompt templates,
    its role, and for each of its classes the training class it is (None: never trained on)."""

    name: str
    split: str
    class_names: list[str]
    templates: list[str]
    role: str = "test"
    train_class_of: tuple[int | None, ...] | None = None  # None: the training classes, in the same order
    label_mask: tuple[int, ...] | None = None  # predictions restricted to these of its classes (ImageNet-A/R's 200); labels stay in the full space
    notes: dict[str, Any] = field(default_factory=dict)

    def seen_in_training(self) -> bool:
        return self.train_class_of is None or all(c is not None for c in self.train_class_of)


def prompt_sets_of(task) -> list[PromptSet]:
    """The task's evaluation sets, or its final test split with its class names."""
    sets = getattr(task, "prompt_sets", None)
    if sets:
        return list(sets)
    if task.class_text is None:
        raise BobError(f"task {task.name} has no class names; prompt learning builds its classifier from them "
                       "(tasks/configs/zeroshot.yaml, or a task with named classes)")
    names, templates, _ = task.class_text()
    return [PromptSet("test", task.final_splits[1], list(names), list(templates), "test")]


def metric_name(es: PromptSet) -> str:
    """top1 for the test split; base_top1 / new_top1; source_top1; <target>_top1."""
    return {"test": "top1", "base": "base_top1", "new": "new_top1", "source": "source_top1"}.get(es.role, f"{es.name}_top1")


def masked_top1(logits, labels, mask: tuple[int, ...] | None) -> tuple[float, float | None]:
    """top-1 (%) with the prediction taken among ``mask``'s classes (the datasets' number for
    ImageNet-A / -R), and the strict all-class top-1 (None without a mask). Labels are in the
    set's full label space, so an image whose class is outside the mask counts as wrong."""
    import numpy as np

    logits, labels = np.asarray(logits), np.asarray(labels)
    if not len(labels):
        return float("nan"), (float("nan") if mask is not None else None)
    strict = float((logits.argmax(1) == labels).mean() * 100.0)
    if mask is None:
        return strict, None
    cols = np.asarray(mask)
    return float((cols[logits[:, cols].argmax(1)] == labels).mean() * 100.0), strict


def harmonic_mean(a: float, b: float) -> float:
    """HM = 2ab / (a + b); 0 when both are 0."""
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


def summarise(sets: list[PromptSet], metrics: dict[str, float]) -> tuple[dict[str, float], str]:
    """Add the protocol's summary metric and return (metrics, primary metric name)."""
    roles = {es.role for es in sets}
    out = dict(metrics)
    if {"base", "new"} <= roles:
        out["hm"] = harmonic_mean(out["base_top1"], out["new_top1"])
        return out, "hm"
    targets = [metric_name(es) for es in sets if es.role == "target"]
    if targets:
        out["target_mean_top1"] = sum(out[t] for t in targets) / len(targets)
        return out, "target_mean_top1"
    first = metric_name(sets[0])
    return out, first


def metric_specs(sets: list[PromptSet]) -> dict[str, dict[str, Any]]:
    """Declarations of every metric a cell of these sets reports (all accuracies in %, higher is better)."""
    spec = lambda label: {"direction": "higher", "unit": "%", "fmt": ".1f", "label": label}  # noqa: E731
    out = {}
    for es in sets:
        name = metric_name(es)
        if name != "top1":
            out[name] = spec({"base": "base-class accuracy (%)", "new": "new-class accuracy (%)", "source": "source test accuracy (%)"}.get(
                es.role, f"{es.name} accuracy (%)"))
        if es.label_mask is not None:
            out[f"{name}_all"] = spec(f"{es.name} accuracy over all {len(es.class_names)} classes (%, strict; {name} is within its {len(es.label_mask)})")
    roles = {es.role for es in sets}
    if {"base", "new"} <= roles:
        out["hm"] = spec("harmonic mean of base and new accuracy (%)")
    if "target" in roles:
        out["target_mean_top1"] = spec("mean accuracy over the target sets (%)")
    return out
