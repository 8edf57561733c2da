"""Your own dataset as a task: ``folder:<path>``, ``csv:<file>``, ``parquet:<file>``.

* ``folders.py`` reads a folder (one class-folder tree, train/ + test/ [+ val/] class folders, or
  VTAB-style list files) into the splits it came with;
* ``tables.py`` reads a label table (``path,label[,split]``, paths relative to the table);
* ``task.py`` makes the missing splits (``harness.splits``: seeded, stratified, recorded) and the
  task with the VTAB-1k protocol (tune on train -> val, refit on trainval, report test);
* ``verify.py`` is ``bob data verify <task id>``: what bob will do with the data.

Split options ride in the task id (``folder:/data/x?val=0.1&test=0.2&seed=1``), so a different
split is a different task and never shares a cell id. This module stays import-light: ``bob
list`` imports it.
"""
from __future__ import annotations

from harness.registry import TASKS, Entry
from harness.types import CLASSIFICATION

HELP = {
    "folder": "folder:<path>[?val=0.2&test=0.2&seed=0] reads a local image dataset: one class-folder tree (bob splits it), "
              "train/ + test/ (bob carves val), train/ + val/ + test/, or list files",
    "csv": "csv:<file>[?path=<col>&label=<col>&val=..&test=..&seed=..] reads a label table (path,label[,split]; paths relative to the file)",
    "parquet": "parquet:<file>[?path=<col>&label=<col>&val=..&test=..&seed=..] reads a label table (path,label[,split]; paths relative to the file)",
}


def _verify(name: str, open_images: bool = True) -> tuple[str, bool]:
    from .verify import verify_report

    return verify_report(name, open_images)


def _factory(name: str):
    def factory(data_root=None, **_):
        from .task import build_task

        return build_task(name)

    return factory


def _resolver(prefix: str):
    def resolve(name: str) -> Entry:
        from harness.splits import parse_rule

        from .task import parse_task_id

        parse_rule(parse_task_id(name)[2], f"task {name}")  # a malformed id fails at grid expansion, not in the cell
        return Entry(name, _factory(name), {"kind": CLASSIFICATION, "group": f"own-data/{prefix}", "verify": _verify})

    return resolve


for _prefix, _help in HELP.items():
    TASKS.add_prefix(_prefix, _resolver(_prefix), _help)
