"""``bob prefetch``: fill the caches on a machine with internet (a cluster's login node) so that
compute nodes without internet find every weight and dataset the grid needs."""
from __future__ import annotations

from typing import Any

from .errors import BobError
from .grid import Grid, expand_task_names


def prefetch_grid(grid: Grid) -> list[dict[str, Any]]:
    from .registry import BACKBONES, TASKS

    rows = []
    for name, weights in dict.fromkeys(grid.backbones):
        if weights == "random":
            continue
        entry = BACKBONES.get(name)
        try:
            backbone = entry.factory(weights="pretrained" if weights == "auto" else weights)
            backbone.model  # builds: downloads into the Hugging Face / torch hub cache if needed
            if getattr(backbone, "text_encoder", None) is not None:
                backbone.text_encoder()  # a Hugging Face tokenizer (SigLIP...) is fetched into the cache too
            if hasattr(type(backbone), "tokenizer"):
                backbone.tokenizer  # a language model's tokenizer files
            rows.append({"item": name, "kind": "weights", "status": "cached", "detail": backbone.meta.get("weights_file") or "hub cache"})
        except BobError as exc:
            rows.append({"item": name, "kind": "weights", "status": "missing", "detail": str(exc)[:160]})
    from .suites import suite_of_task

    for task in expand_task_names(grid.tasks):
        override = grid.data_paths.get(task)
        suite = suite_of_task(task)
        prefetch = suite.hooks.get("prefetch") or suite.hooks.get("check_data") if suite else None
        prefetch = prefetch or TASKS.get(task).meta.get("prefetch")  # a task source without a suite (lmeval:) may fill its own cache
        if prefetch is None:
            rows.append({"item": task, "kind": "data", "status": "cached", "detail": "built in / generated" if not override else override})
            continue
        try:  # a suite's prefetch hook fills its cache; its data check is the fallback for data that must be placed by hand
            check = prefetch(task, grid.data_root, override, False)
            ok = not check.problems
            rows.append({"item": task, "kind": "data", "status": "cached" if ok else "missing",
                         "detail": (check.location or "-") if ok else check.message()[:160]})
        except BobError as exc:
            rows.append({"item": task, "kind": "data", "status": "missing", "detail": str(exc)[:160]})
    return rows
