"""``bob data prepare SUITE --root DIR --from-hf SOURCE``: write a suite from a Hugging Face mirror
into the on-disk layout the papers' code uses (NOAH list files for VTAB-1k, VPT json for FGVC).

``SOURCE`` is an ``hf:`` source with ``{task}`` standing for the task's short name, e.g.
``hf:someone/vtab1k-{task}?image=img&label=label`` (a hub id) or ``hf:/data/mirror/{task}`` (a
local folder of ``<split>.parquet`` files). Files are written to a temporary folder and renamed
into place, so an interrupted preparation never leaves a half-written task behind.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from harness.errors import BobError

from .suites import read_hf_split, suite_task_ids, task_config


def _target_folder(task_id: str, root: Path) -> Path:
    cfg, t = task_config(task_id)
    folder = t["folder"][0] if isinstance(t["folder"], list) else t["folder"]
    return root / cfg["data_dirs"][0] / folder


def prepare_task_from_hf(task_id: str, root: Path, source_template: str, log: Callable[[str], None] = print) -> Path:
    cfg, t = task_config(task_id)
    source = source_template.replace("{task}", t["name"])
    target = _target_folder(task_id, Path(root))
    if target.exists():
        log(f"{task_id}: {target} exists; left as it is")
        return target
    tmp = target.with_name(f".{target.name}.preparing")
    shutil.rmtree(tmp, ignore_errors=True)
    union = cfg.get("union", {})
    splits = [s for s in cfg["splits"] if s not in union]
    written: dict[str, list[tuple[str, int]]] = {}
    image_root = tmp / (t.get("image_dir", ".") if cfg["layout"] == "vpt_json" else "images")
    for split in splits:
        rows = []
        for i, sample in enumerate(read_hf_split(source, split)):
            rel = f"{split}/{i:06d}.png"
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            sample.image().convert("RGB").save(image_root / rel)
            rows.append((rel, sample.label))
        written[split] = rows
    if cfg["layout"] == "list_files":
        for split, rows in written.items():
            (tmp / f"{split}.txt").write_text("".join(f"images/{rel} {label}\n" for rel, label in rows))
        for name, parts in union.items():
            (tmp / f"{name}.txt").write_text("".join((tmp / f"{p}.txt").read_text() for p in parts))
    else:  # VPT json: {relative image path: class id}
        for split, rows in written.items():
            (tmp / f"{split}.json").write_text(json.dumps({rel: label for rel, label in rows}))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    log(f"{task_id}: wrote {sum(map(len, written.values()))} images to {target}")
    return target


def prepare_suite_from_hf(suite: str, root: Path, source_template: str, tasks: list[str] | None = None, log: Callable[[str], None] = print) -> list[Path]:
    if "{task}" not in source_template or not source_template.startswith("hf:"):
        raise BobError(f"--from-hf {source_template!r}: give an hf: source with {{task}} for the task name, e.g. hf:org/{suite}-{{task}}?image=img")
    ids = suite_task_ids(suite)
    chosen = ids if not tasks else [f"{suite}/{t}" if "/" not in t else t for t in tasks]
    unknown = [t for t in chosen if t not in ids]
    if unknown:
        raise BobError(f"unknown {suite} task(s) {', '.join(unknown)}; `bob list tasks --suite {suite}` shows them")
    return [prepare_task_from_hf(t, Path(root), source_template, log) for t in chosen]
