"""``bob data verify shift`` for the DomainBed, VisDA-2017 and Sim10k -> Cityscapes tasks.

Why build the task: the readers already check everything a cell needs (layout, list lines, labels,
missing images, boxes), so verifying is building the task with the cell's own code and reporting
its split sizes; a problem shown here is exactly the error a cell would raise.
"""
from __future__ import annotations

from typing import Any, Callable

from harness.errors import BobError


def checker(locate: Callable[[str, str | None, dict | None], Any], build: Callable[..., Any], fix: str) -> Callable:
    """A ``check(task_id, data_root, override, open_images) -> TaskCheck`` over a module's ``locate`` and ``build``."""

    def check(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False):
        from tasks.suites import TaskCheck

        overrides = {task_id: override} if override else None
        chk = TaskCheck(task_id, None, fix=fix)
        try:
            where = locate(task_id, data_root, overrides)
        except BobError as exc:  # nothing there: missing
            chk.problems.append(str(exc))
            return chk
        chk.location = " + ".join(str(w) for w in where) if isinstance(where, tuple) else str(where)
        try:
            task = build(task_id, data_root, overrides)
        except BobError as exc:
            chk.problems.append(str(exc))
            return chk
        if hasattr(task, "split_data"):  # detection
            for split, data in task.split_data.items():
                chk.counts[f"{split}_images"] = len(data.gt["images"])
                chk.counts[f"{split}_boxes"] = sum(1 for a in data.gt["annotations"] if not a.get("iscrowd"))
            return chk
        for split in task.splits:
            samples = task.load(split).samples
            chk.counts[split] = len(samples)
            if open_images:
                from harness.data import open_rgb

                for s in samples[:: max(1, len(samples) // 200)]:
                    try:
                        open_rgb(s)
                    except BobError as exc:
                        chk.problems.append(str(exc))
                        break
        return chk

    return check
