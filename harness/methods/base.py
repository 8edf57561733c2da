"""The Method interface and the in-cell hyper-parameter search of the VTAB-1k protocol.

A method declares the task kinds it supports (unsupported combinations are skipped at grid
expansion, with the reason), its defaults, and the keys it tunes on the validation split.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BobError, did_you_mean

COMMON_HPARAMS = {"img_size": None, "batch_size": 64}


@dataclass
class MethodResult:
    metrics: dict[str, float]
    primary_metric: str
    protocol: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list] = field(default_factory=dict)
    adaptation: dict[str, Any] = field(default_factory=dict)  # trainable/extra params, peak memory, throughput, latency
    artifacts: dict[str, Any] = field(default_factory=dict)  # file name -> JSON value, written beside the record (e.g. detections)
    metric_specs: dict[str, Any] = field(default_factory=dict)  # declarations known only after the run (lm-eval's higher_is_better)
    preprocess: dict[str, Any] | None = None  # the eval transform the method used instead of the backbone's (pretrained_head)


class Method:
    """Subclass, set the class attributes, implement ``run``; register with ``@register_method``."""

    name: str = ""
    kinds: tuple[str, ...] = ()
    frozen_backbone: bool = True
    model_parallel: bool = False  # True: a cell with several GPUs runs in one process with the model spread over them (inference)
    defaults: dict[str, Any] = {}
    search_space: dict[str, list] = {}  # tuned on the tune split unless the user fixes the key
    description: str = ""

    def known_hparams(self) -> dict[str, Any]:
        return {**COMMON_HPARAMS, **self.defaults, "search": None}

    def resolve_hparams(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults + given values; an unknown key is a one-line error with close matches."""
        known = self.known_hparams()
        for key in given:
            if key not in known:
                raise BobError(
                    f"method '{self.name}' has no hyper-parameter '{key}'{did_you_mean(key, known)}; "
                    f"known: {', '.join(sorted(known))}"
                )
        resolved = {**COMMON_HPARAMS, **self.defaults, **{k: v for k, v in given.items() if k != "search"}}
        resolved["search"] = self.search_grid(given)
        return resolved

    def search_grid(self, given: dict[str, Any]) -> dict[str, list]:
        """Keys tuned inside the cell: ``search`` given explicitly, else the default search space
        minus the keys the user fixed."""
        if "search" in given and given["search"] is not None:
            search = given["search"]
            if not isinstance(search, dict) or not all(isinstance(v, list) and v for v in search.values()):
                raise BobError(f"method '{self.name}': 'search' must map hyper-parameter names to non-empty lists, got {search!r}")
            for key in search:
                if key not in self.defaults:
                    raise BobError(f"method '{self.name}' cannot search '{key}'{did_you_mean(key, self.defaults)}")
            return {k: list(v) for k, v in search.items()}
        return {k: list(v) for k, v in self.search_space.items() if k not in given}

    def run(self, backbone, task, hparams: dict[str, Any], ctx) -> MethodResult:  # pragma: no cover
        raise NotImplementedError


def grid_points(search: dict[str, list]) -> list[dict[str, Any]]:
    if not search:
        return [{}]
    keys = sorted(search)
    return [dict(zip(keys, values)) for values in itertools.product(*(search[k] for k in keys))]


def tune_then_refit(
    task,
    hparams: dict[str, Any],
    fit_and_score: Callable[[str, str, dict[str, Any]], tuple[float, dict[str, float]]],
    progress_desc: str,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The VTAB-1k protocol: pick hyper-parameters on tune (train800 -> val200), refit the best
    on the final train split (train800val200), report on test.

    ``fit_and_score(train_split, eval_split, hp) -> (primary, metrics)``. Ties go to the earlier
    grid point (grid order is sorted and deterministic).
    """
    from ..progress import progress

    search = hparams.get("search") or {}
    points = grid_points(search)
    protocol: dict[str, Any] = {"search_space": search, "candidates": []}
    chosen: dict[str, Any] = {}
    if search:
        if not task.tune_splits:
            raise BobError(f"task {task.name} has no validation split to tune {sorted(search)} on; fix them with --set")
        tr, va = task.tune_splits
        best = None
        for point in progress(points, desc=f"{progress_desc} search", total=len(points)):
            score, _ = fit_and_score(tr, va, {**hparams, **point})
            protocol["candidates"].append({**point, f"{va}_{task.metric}": score})
            if best is None or score > best[0]:
                best = (score, point)
        chosen = best[1]
        protocol.update({"selected_on": va, "tuned_on": tr, "selected": chosen})
    else:
        protocol.update({"selected_on": None, "selected": {}, "note": "hyper-parameters fixed, no search"})
    tr, te = task.final_splits
    _, metrics = fit_and_score(tr, te, {**hparams, **chosen})
    protocol.update({"final_train_split": tr, "reported_on": te})
    return metrics, protocol
