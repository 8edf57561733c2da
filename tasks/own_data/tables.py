"""Label tables: ``csv:<file>`` / ``parquet:<file>`` with a ``path`` and a ``label`` column and an
optional ``split`` column (train / val / test), one row per image.

Paths are relative to the table's folder (so the table and its images move together and a
split's hash is the same on every machine). Labels are class names (sorted, as class folders
are) or integers (used as class indices, as in list files). Every problem is a one-line error
naming the row: a missing file, an empty label, an unknown split, a file listed twice.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from harness.errors import BobError

from .folders import POOL, UserData

SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def read_rows(path: Path, kind: str, columns: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """``(where, {role: value})`` per row; ``where`` is ``file:line`` (csv) or ``file row N`` (parquet)."""
    if not path.is_file():
        raise BobError(f"label table {path} does not exist; check the path after {kind}:")
    if kind == "csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = reader.fieldnames or []
                _check_columns(path, header, columns)
                rows = [(f"{path}:{reader.line_num}", {role: row.get(col) for role, col in columns.items()}) for row in reader]
        except UnicodeDecodeError as exc:
            raise BobError(f"{path}: not a UTF-8 text file (byte {exc.start}); a csv label table holds 'path,label[,split]' rows") from None
        except csv.Error as exc:
            raise BobError(f"{path}: not a readable csv file ({exc})") from None
        return rows
    import pyarrow.parquet as pq

    try:
        header = pq.read_schema(path).names
    except Exception as exc:
        raise BobError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    _check_columns(path, header, columns)
    data = pq.read_table(path, columns=[c for c in columns.values() if c in header]).to_pydict()
    n = len(next(iter(data.values()))) if data else 0
    return [(f"{path} row {i + 1}", {role: data[col][i] if col in data else None for role, col in columns.items()}) for i in range(n)]


def _check_columns(path: Path, header: list[str], columns: dict[str, str]) -> None:
    for role in ("path", "label"):
        if columns[role] not in header:
            raise BobError(f"{path}: no column {columns[role]!r} (columns: {', '.join(header) or 'none'}); "
                           f"name it {role!r} or map it with ?{role}=<column>")


def read_table(path: Path, kind: str, name: str, options: dict[str, str]) -> UserData:
    """The table at ``path`` as the splits it declares (``{"all": ...}`` without a split column)."""
    from harness.data import Sample, path_inside

    columns = {"path": options.pop("path", "path"), "label": options.pop("label", "label"), "split": "split"}
    rows = read_rows(path, kind, columns)
    if not rows:
        raise BobError(f"task {name}: label table {path} has no rows")
    root = path.absolute().parent
    has_split = any(values["split"] not in (None, "") for _, values in rows)
    raw_labels, seen, parsed = [], {}, []
    for where, values in rows:
        rel, label, split = values["path"], values["label"], values["split"]
        if rel is None or str(rel).strip() == "":
            raise BobError(f"{where}: empty path; every row names an image file relative to {root}")
        rel = str(rel).strip()
        if label is None or str(label).strip() == "":
            raise BobError(f"{where}: image {rel} has no label; fill in the {columns['label']!r} column")
        if has_split:
            split = SPLIT_VALUES.get(str(split or "").strip().lower())
            if split is None:
                raise BobError(f"{where}: split {values['split']!r} is not train, val or test; fill in every row's split (or drop the column for bob to split)")
        else:
            split = POOL
        image = path_inside(root, rel, where)
        if not image.is_file():
            raise BobError(f"{where}: image {rel} does not exist (looked for {image}); fix the path (relative to {root}) or remove the row")
        key = image.relative_to(root).as_posix()
        if key in seen:
            raise BobError(f"{where}: image {rel} is already listed at {seen[key]}; a file may appear once (in one split)")
        seen[key] = where
        raw_labels.append(label)
        parsed.append((image, label, split, where))
    names, index = _label_index(raw_labels)
    splits: dict[str, list] = {}
    for image, label, split, where in parsed:
        splits.setdefault(split, []).append(Sample(image, index(label, where), where))
    num_classes = len(names) if names else 1 + max(s.label for samples in splits.values() for s in samples)
    source = f"the {columns['label']!r} column of {path}"
    layout = f"{kind} label table" + (f" with a split column ({', '.join(sorted(splits))})" if has_split else " without a split column (bob splits it)")
    return UserData(root, layout, splits, names, num_classes, label_source=source)


def _label_index(labels: list) -> tuple[list[str] | None, Any]:
    """Integer labels are class indices; anything else is a class name (sorted, like class folders)."""
    def as_int(value):
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        text = str(value).strip()
        return int(text) if text.lstrip("-").isdigit() else None

    ints = [as_int(v) for v in labels]
    if all(i is not None for i in ints):
        def integer(value, where):
            i = as_int(value)
            if i < 0:
                raise BobError(f"{where}: label {i} is negative; integer labels are class indices from 0")
            return i

        return None, integer
    names = sorted({str(v).strip() for v in labels})
    lookup = {n: i for i, n in enumerate(names)}
    return names, lambda value, where: lookup[str(value).strip()]
