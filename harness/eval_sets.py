"""One training, many evaluations: a task's shifted evaluation sets, scored in the cell that trained.

Why here and not in each method: the distribution-shift family (ImageNet -> V2 / Sketch / R / A,
VisDA synthetic -> real, DomainBed's held-out domain) trains once on the ID / source split and
reads every shifted set with the *same* fitted model. A task declares its sets
(``Task.eval_sets``: a list of :class:`EvalSet`); a method calls :func:`add_eval_sets` at the
point where it scores its final split, with a ``scores_of(split) -> (scores, labels)`` over the
model it just fitted, and :func:`finish_eval_sets` once at the end. Frozen methods read each
set's features through the feature cache (one extraction per split, ever); nothing is trained
per set, and a rerun of a finished cell trains nothing (the store skips it).

Metrics are flat (``<set>/top1``, ``<set>/top5``, ``<set>/top1_all`` for a masked set's strict
all-class accuracy, ``<set>/n_eval``) plus the summaries ``ood_top1`` (mean over the ``ood``
sets' ``top1``) and ``id_ood_gap`` (ID top-1 minus ``ood_top1``). Every one is declared
(``MethodResult.metric_specs``) and the record's ``protocol["eval_sets"]`` says which split,
which class mask (and where it came from) each number is on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import BobError

ROLES = ("ood", "id")  # ood: a shifted set (enters ood_top1); id: an extra ID metric (ImageNet-ReaL on val)


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set of a task.

    ``split``: the task split (a key of ``Task.loaders``) holding its images; labels are in the
    task's label space (0..num_classes-1). ``class_mask``: the classes scored (ImageNet-R/-A's 200
    of ImageNet's 1000): ``top1`` is then the argmax among them (the Hendrycks / BoB protocol) and
    ``top1_all`` the strict argmax over every class. ``label_sets``: multi-label ground truth (ReaL:
    the set of correct labels per image, in the split's sample order; an empty set excludes the
    image), read when the set is scored.
    """

    name: str
    split: str
    role: str = "ood"
    title: str = ""
    class_mask: tuple[int, ...] | None = None
    mask_source: str = ""
    label_sets: Callable[[], list[tuple[int, ...]]] | None = None
    labels_source: str = ""
    group: str = ""  # the suite group the set belongs to (tables), e.g. "imagenet"
    notes: dict[str, Any] = field(default_factory=dict)
    # a protocol's own numbers from the same scores (VisDA's mean per-class accuracy): (scores, labels) -> {metric: value}
    extra_metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    extra_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # their declarations, by metric name

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BobError(f"evaluation set {self.name!r}: role {self.role!r} is not one of {', '.join(ROLES)}")
        if "/" in self.name or not self.name:
            raise BobError(f"evaluation set {self.name!r}: a name is a non-empty word without '/' (it prefixes the metric names)")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "split": self.split, "role": self.role, "title": self.title or self.name}
        if self.class_mask is not None:
            out.update(classes_scored=len(self.class_mask), mask_source=self.mask_source)
        if self.label_sets is not None:
            out["labels_source"] = self.labels_source
        if self.group:
            out["group"] = self.group
        return out


ScoresOf = Callable[[str], "tuple[np.ndarray, np.ndarray]"]


def eval_sets_of(task) -> list[EvalSet]:
    return list(getattr(task, "eval_sets", None) or [])


def wants_sets(task, eval_split: str) -> bool:
    """True where the method is scoring the task's final (reported) split and the task has sets:
    candidates of the hyper-parameter search never read a shifted set."""
    return bool(eval_sets_of(task)) and eval_split == task.final_splits[1]


def _topk(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties -> the lower class index
    return float((order == labels[:, None]).any(axis=1).mean() * 100.0) if len(labels) else float("nan")


def set_metrics(es: EvalSet, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of one set from its (N, C) scores and labels (task label space)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(np.int64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise BobError(f"evaluation set {es.name}: scores of shape {scores.shape} do not match {len(labels)} labels")
    p = es.name
    out: dict[str, float] = {}
    if es.label_sets is not None:  # ReaL: a prediction is right when it is one of the image's labels
        sets = es.label_sets()
        if len(sets) != len(labels):
            raise BobError(f"evaluation set {es.name}: {len(sets)} label sets ({es.labels_source}) for {len(labels)} images of split {es.split}")
        keep = np.array([len(s) > 0 for s in sets], dtype=bool)
        pred = np.argsort(-scores, axis=1, kind="stable")[:, 0]
        hits = [int(pred[i]) in sets[i] for i in range(len(sets)) if keep[i]]
        out[f"{p}/top1"] = float(np.mean(hits) * 100.0) if hits else float("nan")
        out[f"{p}/n_eval"] = int(keep.sum())
        return out
    if es.class_mask is not None:
        mask = np.asarray(es.class_mask, dtype=np.int64)
        position = {int(c): i for i, c in enumerate(mask)}
        outside = [int(y) for y in labels if int(y) not in position]
        if outside:
            raise BobError(f"evaluation set {es.name}: label {outside[0]} is not among its {len(mask)} classes ({es.mask_source}); fix the set's folders or its mask")
        local = np.array([position[int(y)] for y in labels], dtype=np.int64)
        out[f"{p}/top1"] = _topk(scores[:, mask], local, 1)
        if len(mask) >= 5:
            out[f"{p}/top5"] = _topk(scores[:, mask], local, 5)
        out[f"{p}/top1_all"] = _topk(scores, labels, 1)
    else:
        out[f"{p}/top1"] = _topk(scores, labels, 1)
        if scores.shape[1] >= 5:
            out[f"{p}/top5"] = _topk(scores, labels, 5)
    out[f"{p}/n_eval"] = int(len(labels))
    if es.extra_metrics is not None:
        out.update({f"{p}/{k}": v for k, v in es.extra_metrics(scores, labels).items()})
    return out


def score_sets(task, scores_of: ScoresOf) -> dict[str, float]:
    """Every set's metrics; ``scores_of`` is called once per distinct split (ReaL shares val's)."""
    out: dict[str, float] = {}
    memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for es in eval_sets_of(task):
        if es.split not in memo:
            memo[es.split] = scores_of(es.split)
        out.update(set_metrics(es, *memo[es.split]))
    return out


def add_eval_sets(task, eval_split: str, metrics: dict[str, float], scores_of: ScoresOf) -> dict[str, float]:
    """Call where a method scores ``eval_split`` with its fitted model: on the final split of a task
    with sets, every set is scored too (in place, and returned)."""
    if wants_sets(task, eval_split):
        metrics.update(score_sets(task, scores_of))
    return metrics


def summary_metrics(task, metrics: dict[str, float]) -> dict[str, float]:
    """``ood_top1`` (mean of the ood sets' top1) and ``id_ood_gap`` (ID top1 - ood_top1)."""
    ood = [metrics.get(f"{es.name}/top1") for es in eval_sets_of(task) if es.role == "ood"]
    ood = [v for v in ood if v is not None and not np.isnan(v)]
    out: dict[str, float] = {}
    if ood:
        out["ood_top1"] = float(np.mean(ood))
        if metrics.get("top1") is not None:
            out["id_ood_gap"] = float(metrics["top1"]) - out["ood_top1"]
    return out


def metric_specs(task) -> dict[str, dict[str, Any]]:
    """Declarations of every metric the sets produce (accuracies in %, higher is better; the gap lower)."""
    def acc(label: str) -> dict[str, Any]:
        return {"direction": "higher", "unit": "%", "fmt": ".1f", "label": label}

    specs: dict[str, dict[str, Any]] = {}
    for es in eval_sets_of(task):
        title = es.title or es.name
        if es.class_mask is not None:
            specs[f"{es.name}/top1"] = acc(f"{title} top-1 (%), {len(es.class_mask)}-way masked")
            specs[f"{es.name}/top5"] = acc(f"{title} top-5 (%), {len(es.class_mask)}-way masked")
            specs[f"{es.name}/top1_all"] = acc(f"{title} top-1 (%), strict {task.num_classes}-way")
        elif es.label_sets is not None:
            specs[f"{es.name}/top1"] = acc(f"{title} top-1 (%), multi-label ({es.labels_source or 'label sets'})")
        else:
            specs[f"{es.name}/top1"] = acc(f"{title} top-1 (%)")
            specs[f"{es.name}/top5"] = acc(f"{title} top-5 (%)")
        specs[f"{es.name}/n_eval"] = {"direction": "higher", "fmt": ".0f", "label": f"{title} images scored"}
        specs.update({f"{es.name}/{k}": dict(v) for k, v in es.extra_specs.items()})
    specs["ood_top1"] = acc("mean OOD top-1 (%) over the shifted sets")
    specs["id_ood_gap"] = {"direction": "lower", "unit": "pts", "fmt": ".1f", "label": "ID top-1 minus mean OOD top-1 (points)"}
    return specs


def finish_eval_sets(task, metrics: dict[str, float], protocol: dict[str, Any], default_primary: str = "top1") -> tuple[str, dict[str, Any]]:
    """After the method's protocol ran: add the summaries, describe the sets in ``protocol`` and
    return (primary metric, metric declarations). Tasks without sets: (``default_primary``, {})."""
    sets = eval_sets_of(task)
    if not sets:
        return default_primary, {}
    metrics.update(summary_metrics(task, metrics))
    protocol["eval_sets"] = [es.describe() for es in sets]
    protocol["eval_sets_note"] = ("trained once on " + str(task.final_splits[0]) + "; every set scored with the same fitted model, "
                                  "nothing selected on a shifted set")
    specs = {k: v for k, v in metric_specs(task).items() if k in metrics}
    primary = "ood_top1" if "ood_top1" in metrics else default_primary
    return primary, specs


def model_scores(model, dataset, batch_size: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of a torch classifier over a dataset that yields (image tensor, label)."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    outs, labels = [], []
    with torch.inference_mode():
        for images, y in DataLoader(dataset, batch_size=max(int(batch_size), 1), shuffle=False):
            outs.append(model(images.to(device)).float().cpu().numpy())
            labels.append(np.asarray(y))
    if not outs:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return np.concatenate(outs), np.concatenate(labels)
