"""``bob data verify folder:<root>`` (and ``csv:`` / ``parquet:``): what bob will do with the data.

It prints the layout detected, how bob splits it, the classes, images per class and split,
unreadable files, class imbalance, images that occur in two splits (same bytes, by SHA-256: a
leak that inflates test numbers) and the exact task id to put in a grid. It builds the splits
with the same code as ``run``, so what it shows is what a cell gets; a layout ``run`` would
refuse is the same one-line error here.
"""
from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from pathlib import Path

from .task import canonical_task_id, make_splits, read_user_data

SHOWN = 5  # examples listed per finding
MAX_CLASS_ROWS = 60
UNIONS = ("trainval", "train800val200")


def verify_report(name: str, open_images: bool = True) -> tuple[str, bool]:
    """(report text, ready): ready is False when a file cannot be decoded."""
    data, options = read_user_data(name)
    splits, record = make_splits(name, data, options)
    parts = {s: v for s, v in splits.items() if s not in UNIONS}
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    lines = [f"task:    {name}", f"layout:  {data.layout} in {data.root}", f"splits:  {_how_split(record)}",
             f"classes: {data.num_classes} ({'from ' + data.label_source if data.class_names else 'integer labels'}): {_preview(names)}", ""]
    lines += _class_table(parts, names)
    unreadable, duplicates = _scan_files(data, parts, open_images)
    lines.append("")
    if open_images:
        lines.append(f"unreadable files: {len(unreadable) or 'none'}")
        lines += [f"  {path}: {why}" for path, why in unreadable[:SHOWN]]
    else:
        lines.append("unreadable files: not checked (--no-open-images)")
    if data.ignored:
        lines.append(f"ignored (not images): {len(data.ignored)} files, e.g. {', '.join(str(p) for p in data.ignored[:3])}")
    lines.append(_imbalance(parts, names))
    lines.append(f"duplicates across splits (same content, sha256): {len(duplicates) or 'none'}")
    for group in duplicates[:SHOWN]:
        lines.append("  " + " = ".join(f"{key} ({split})" for split, key in group))
    if duplicates:
        lines.append("  warning: an image in two splits leaks test (or val) data into training; remove one copy of each")
    lines.append("split hashes: " + ", ".join(f"{s} {h}" for s, h in record["sha256"].items()) + f" ({record['hash_rule'].split(';')[0]})")
    task_id = canonical_task_id(name, record)
    lines += ["", f"task id: {task_id}"]
    if record.get("carved"):
        lines.append(f"  (another split: append ?{'&'.join(f'{k}=<fraction>' for k in sorted(record['carved'], reverse=True))}&seed=<int> to the path; each is its own task id)")
    ready = not unreadable
    lines.append("ready" if ready else f"not ready: {len(unreadable)} unreadable file(s); re-create or remove them")
    return "\n".join(lines), ready


def _how_split(record: dict) -> str:
    carved = record.get("carved") or {}
    if not carved:
        return "used as given (" + ", ".join(record["given"]) + ")"
    pieces = [f"{split} = {c['fraction']:g} of {'all images' if c['from'] == 'all' else c['from']}" for split, c in carved.items()]
    return f"bob carves {', '.join(pieces)}, per class, seed {record['seed']}; tune on train -> val, refit on trainval, report test"


def _preview(names: list[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def _class_table(parts: dict[str, list], names: list[str]) -> list[str]:
    counts = {s: [0] * len(names) for s in parts}
    for split, samples in parts.items():
        for sample in samples:
            counts[split][sample.label] += 1
    columns = list(parts)
    width = max([5, *(len(n) for n in names)])
    head = "class".ljust(width) + "".join(f"  {c:>8}" for c in [*columns, "total"])
    rows = [head]
    order = range(len(names)) if len(names) <= MAX_CLASS_ROWS else []
    for i in order:
        values = [counts[s][i] for s in columns]
        rows.append(names[i].ljust(width) + "".join(f"  {v:>8}" for v in [*values, sum(values)]))
    if not order:
        rows.append(f"({len(names)} classes: per-class rows omitted)".ljust(width))
    totals = [len(parts[s]) for s in columns]
    rows.append("total".ljust(width) + "".join(f"  {v:>8}" for v in [*totals, sum(totals)]))
    missing = [(names[i], s) for s in columns for i in range(len(names)) if counts[s][i] == 0]
    if missing:
        rows.append(f"classes absent from a split: {len(missing)}, e.g. " + ", ".join(f"{c!r} in {s}" for c, s in missing[:SHOWN]))
    return rows


def _imbalance(parts: dict[str, list], names: list[str]) -> str:
    totals = [0] * len(names)
    for samples in parts.values():
        for sample in samples:
            totals[sample.label] += 1
    present = [(t, names[i]) for i, t in enumerate(totals) if t]
    if not present:
        return "class imbalance: no images"
    (hi, hi_name), (lo, lo_name) = max(present), min(present)
    if hi == lo:
        return f"class imbalance: none (every class has {hi} images)"
    ratio = hi / lo
    note = "balanced" if ratio <= 1.5 else ("imbalanced: accuracy favours the large classes; mean_per_class_recall is in every record" if ratio > 3 else "mildly imbalanced")
    return f"class imbalance: largest {hi_name!r} {hi} images, smallest {lo_name!r} {lo} ({ratio:.2f}x, {note})"


def _scan_files(data, parts: dict[str, list], open_images: bool) -> tuple[list[tuple[Path, str]], list[list[tuple[str, str]]]]:
    """Read every file once: its SHA-256 (duplicates across splits) and, if asked, decode it."""
    from harness.progress import progress

    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    unreadable = []
    everything = [(split, s) for split, samples in parts.items() for s in samples]
    for split, sample in progress(everything, desc="verify images", total=len(everything)):
        path = Path(sample.image)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            unreadable.append((path, exc.strerror or str(exc)))
            continue
        by_hash[hashlib.sha256(blob).hexdigest()].append((split, data.key(sample)))
        if open_images:
            why = _decode_problem(blob)
            if why:
                unreadable.append((path, why))
    duplicates = [sorted(group) for group in by_hash.values() if len({split for split, _ in group}) > 1]
    return unreadable, sorted(duplicates)


def _decode_problem(blob: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            im.convert("RGB")
    except Exception as exc:  # PIL raises many kinds for a bad file; any of them means "cannot be used"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'cannot decode'}"
    return None
