"""The user's data (``folders.py`` / ``tables.py``) made into a task with the VTAB-1k protocol.

Whatever splits the data lacks, bob makes (``harness.splits``): from one pool it carves test and
val; from train + test it carves val out of train; train + val + test are used as given. Methods
then tune on train -> val, refit the chosen setting on trainval (= train + val) and report test
once, so every method that selects hyper-parameters runs without ``--set``.

The task id carries the split parameters (``folder:/data/x?val=0.1&test=0.2&seed=1``; absent
keys take the defaults), so two different splits never share a cell id; the record's
``task_meta.split_provenance`` holds the rule, the fractions, the seed, the counts and the hash
of each split's file list.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from harness.errors import BobError
from harness.splits import SplitRule, carve, parse_rule, provenance, split_query
from harness.types import CLASSIFICATION, Task

from .folders import POOL, UserData, read_folder

VTAB_SPLITS = {"train800", "val200", "train800val200"}
PREFIX_OPTIONS = {"folder": (), "csv": ("path", "label"), "parquet": ("path", "label")}
GROUP = "own-data"


def parse_task_id(name: str) -> tuple[str, Path, dict[str, str]]:
    """``<prefix>:<location>[?key=value&...]`` -> (prefix, location, options)."""
    prefix, _, spec = name.partition(":")
    location, _, query = spec.partition("?")
    if not location:
        raise BobError(f"task '{prefix}:' needs a path, e.g. {prefix}:/data/my_dataset" + (".csv" if prefix != "folder" else ""))
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise BobError(f"task {name}: options {query!r} are not key=value pairs joined by '&' (e.g. ?val=0.1&seed=1)") from None
        for key, value in pairs:
            if key in options:
                raise BobError(f"task {name}: option {key!r} is given twice")
            options[key] = value
    known = {"val", "test", "seed", *PREFIX_OPTIONS[prefix]}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BobError(f"task {name}: unknown option {unknown[0]!r}; {prefix}: takes {', '.join('?' + k + '=' for k in sorted(known))}")
    return prefix, Path(location).expanduser(), options


def read_user_data(name: str) -> tuple[UserData, dict[str, str]]:
    """The data a task id points at and the options left for the split rule."""
    prefix, location, options = parse_task_id(name)
    if prefix == "folder":
        return read_folder(location, name), options
    from .tables import read_table

    return read_table(location, prefix, name, options), options


def make_splits(name: str, data: UserData, options: dict[str, str]) -> tuple[dict[str, list], dict]:
    """The task's splits (bob's carved ones included) and their provenance block."""
    rule, _ = parse_rule(options, f"task {name}")
    given = set(data.splits)
    named = {n: i for i, n in enumerate(data.class_names or [])}
    if given & VTAB_SPLITS:
        _refuse(name, options, ("val", "test", "seed"), "it has VTAB-style list files (train800/val200)")
        return dict(data.splits), _provenance(data, data.splits, sorted(given))
    if given == {POOL}:
        todo, source = rule, POOL
    elif given == {"train", "test"}:
        _refuse(name, options, ("test",), "it has its own test split")
        todo, source = rule.only(["val"]), "train"
    elif given == {"train", "val", "test"}:
        _refuse(name, options, ("val", "test", "seed"), "it has its own train, val and test splits")
        todo, source = None, None
    else:
        raise BobError(f"task {name}: {data.root} has splits {', '.join(sorted(given))}; bob needs train + test (val optional) or no splits at all")
    _check_every_class_present(name, data, "train" if source != POOL else POOL, named)
    splits = {k: v for k, v in data.splits.items() if k != source}
    carved = {}
    if todo is not None:
        pool = data.splits[source]
        keys = [data.key(s) for s in pool]
        where = f"{data.root}" + (f" ({source} split)" if source != POOL else "")
        dealt = carve(keys, [s.label for s in pool], todo, rest="train", class_names=data.class_names, source=where)
        for split, idx in dealt.items():
            splits[split] = [pool[i] for i in idx]
        carved = {split: {"from": source, "fraction": todo.fractions[split]} for split in todo.fractions}
    splits = {s: splits[s] for s in ("train", "val", "test")}
    splits["trainval"] = splits["train"] + splits["val"]
    return splits, _provenance(data, splits, [s for s in ("train", "val", "test") if s in given] or [POOL], carved, rule)


def _refuse(name: str, options: dict[str, str], keys: tuple[str, ...], why: str) -> None:
    """An option that would change nothing is an error (two ids would name one split)."""
    for key in keys:
        if key in options:
            raise BobError(f"task {name}: option {key}={options[key]} does nothing because {why}; drop it from the task id")


def _check_every_class_present(name: str, data: UserData, split: str, named: dict[str, int]) -> None:
    if not named:
        return
    counts = [0] * len(named)
    for s in data.splits[split]:
        counts[s.label] += 1
    empty = [n for n, i in named.items() if counts[i] == 0]
    if empty:
        what = "no images" if split == POOL else "no training images"
        raise BobError(f"task {name}: class {empty[0]!r} has {what}" + (f" (and {len(empty) - 1} more classes)" if len(empty) > 1 else "")
                       + "; add images to it or remove the class")


def _provenance(data: UserData, splits: dict[str, list], given: list[str], carved: dict | None = None, rule: SplitRule | None = None) -> dict:
    parts = {s: ([data.key(x) for x in v], [x.label for x in v]) for s, v in splits.items() if s not in ("trainval", "train800val200")}
    block = provenance(data.layout, parts, given, carved, rule, data.num_classes)
    block.update(root=str(data.root), classes=data.class_names, class_source=data.label_source)
    if "trainval" in splits:
        block["unions"] = {"trainval": ["train", "val"]}
    return block


def build_task(name: str) -> Task:
    """The task ``name`` (``folder:`` / ``csv:`` / ``parquet:``) names, splits made and recorded."""
    from harness.data import ImageClassificationDataset

    data, options = read_user_data(name)
    splits, record = make_splits(name, data, options)
    if "trainval" in splits:
        tune, final, unions = ("train", "val"), ("trainval", "test"), {"trainval": ("train", "val")}
    else:  # VTAB-style list files, as the suites use them
        tune = ("train800", "val200") if {"train800", "val200"} <= set(splits) else None
        final = ("train800val200" if "train800val200" in splits else "train", "test")
        unions = {"train800val200": ("train800", "val200")} if tune else {}
        if final[0] not in splits or "test" not in splits:
            raise BobError(f"task {name}: {data.root} needs a training split ({final[0]}) and a test split; found {', '.join(sorted(splits))}")
    names = [c.replace("_", " ") for c in data.class_names] if data.class_names else None
    return Task(
        name=name,
        kind=CLASSIFICATION,
        group=f"{GROUP}/{name.partition(':')[0]}",
        num_classes=data.num_classes,
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v, name=f"{name}:{k}")) for k, v in splits.items()},
        tune_splits=tune,
        final_splits=final,
        union_splits=unions,
        source=str(data.root),
        class_text=(lambda: (names, ["a photo of a {c}."], data.label_source)) if names else None,
        split_provenance=record,
    )


def canonical_task_id(name: str, record: dict) -> str:
    """The task id to put in a grid: the location as given, the column options, then the split
    options that differ from the defaults (in a fixed order; none when bob made no split)."""
    prefix, _, options = parse_task_id(name)
    carved = record.get("carved") or {}
    rule = SplitRule({k: v["fraction"] for k, v in carved.items()}, record.get("seed", 0))
    parts = [f"{k}={options[k]}" for k in PREFIX_OPTIONS[prefix] if k in options]
    parts += [p for p in split_query(rule).split("&") if p]
    return name.partition("?")[0] + ("?" + "&".join(parts) if parts else "")
