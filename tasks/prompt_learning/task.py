"""Task ids of the prompt-learning protocols and the tasks they build.

``coop:<dataset>?shots=K[&protocol=base2new|cross]``:

- few-shot (default): K shots per class for training, min(K, 4) for the few-shot val, the whole
  test split for the number;
- ``base2new``: labels sorted, the first ceil(n / 2) are base (CoOp's ``subsample_classes``);
  the few-shot subset is drawn over all classes first (as the reference does) and then only
  base images train; evaluated within base and within new, each relabelled from 0;
- ``cross``: train on the source's few-shot subset; evaluate the source's test split and every
  other dataset of its family (the eleven, or the generated pair);
- ``dg`` (ImageNet only): train on K-shot ImageNet; evaluate ImageNet, -V2, -Sketch, -A, -R
  (``dg.py``; issue 21's readers and masks).

``fewshot:<any classification task>?shots=K``: the same rule over that task's training split
(val: its validation split, else carved from the unchosen training images).

Each id has one spelling (options in this order); the cell's seed draws the subset. The task
records the chosen images and the hash of their list; ``identity`` computes, at grid expansion,
what goes into the cell id, and the task refuses to run when the data no longer matches it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from harness.errors import BobError, did_you_mean
from harness.prompt.sets import PromptSet
from harness.types import CLASSIFICATION, Task

from .datasets import COOP_DATASETS, DATASETS, TOY_DATASETS, Item, SplitData, dataset_folder, dataset_spec, read_dataset
from .fewshot import RULE, VAL_SHOTS_MAX, FewShotDraw, draw_fewshot, ids_hash

PROTOCOLS = ("fewshot", "base2new", "cross", "dg")
SHOTS = (1, 2, 4, 8, 16)
BASE2NEW_RULE = "labels sorted; the first ceil(n/2) are base, the rest new (CoOp's subsample_classes); each evaluated within its own classes, relabelled from 0"


@dataclass
class PromptTask(Task):
    """A classification task whose cell trains on a few-shot subset and evaluates ``prompt_sets``."""

    prompt_sets: list[PromptSet] = field(default_factory=list)
    protocol: str = "fewshot"
    shots: int | None = None
    dataset: str = ""
    method_defaults: dict[str, Any] = field(default_factory=dict)  # per-dataset settings of the reference methods (Tip-Adapter's search range...)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "protocol": self.protocol, "shots": self.shots, "dataset": self.dataset,
                "prompt_sets": [{"name": e.name, "split": e.split, "role": e.role, "classes": len(e.class_names)} for e in self.prompt_sets]}


# -- ids ----------------------------------------------------------------------------------------------
def parse_options(name: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise BobError(f"task {name}: options {query!r} are not key=value pairs joined by '&' (e.g. ?shots=16&protocol=base2new)") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise BobError(f"task {name}: unknown option {key!r}{did_you_mean(key, allowed)}; it takes {', '.join('?' + a + '=' for a in allowed)}")
        if key in options:
            raise BobError(f"task {name}: option {key!r} is given twice")
        options[key] = value
    return options


def parse_shots(name: str, options: dict[str, str]) -> int:
    if "shots" not in options:
        raise BobError(f"task {name}: give the number of shots per class, e.g. {name.partition('?')[0]}?shots=16")
    try:
        k = int(options["shots"])
    except ValueError:
        raise BobError(f"task {name}: shots={options['shots']!r} is not an integer (1, 2, 4, 8, 16 in the papers)") from None
    if k < 1:
        raise BobError(f"task {name}: shots={k} must be at least 1")
    return k


def coop_task_id(dataset: str, shots: int, protocol: str = "fewshot") -> str:
    return f"coop:{dataset}?shots={shots}" + ("" if protocol == "fewshot" else f"&protocol={protocol}")


def parse_coop_id(name: str) -> tuple[str, int, str]:
    """``coop:<dataset>?shots=K[&protocol=...]`` -> (dataset, K, protocol); one spelling per task."""
    rest = name.partition(":")[2]
    dataset, _, query = rest.partition("?")
    if not dataset:
        raise BobError(f"task '{name}' names no dataset; e.g. coop:dtd?shots=16 (datasets: {', '.join(DATASETS)})")
    dataset_spec(dataset, f"task {name}: ")
    options = parse_options(name, query, ("shots", "protocol"))
    k = parse_shots(name, options)
    protocol = options.get("protocol", "fewshot")
    if protocol not in PROTOCOLS:
        raise BobError(f"task {name}: protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}{did_you_mean(protocol, PROTOCOLS)}")
    if protocol == "dg" and dataset != "imagenet":
        raise BobError(f"task {name}: protocol=dg trains on ImageNet and evaluates its shifted sets; write coop:imagenet?shots={k}&protocol=dg")
    canonical = coop_task_id(dataset, k, protocol)
    if name != canonical:
        raise BobError(f"task {name}: write it as {canonical} (one spelling per task, so one task has one cell id)")
    return dataset, k, protocol


def cross_targets(source: str) -> list[str]:
    family = TOY_DATASETS if source in TOY_DATASETS else COOP_DATASETS
    return [d for d in family if d != source]


# -- building ----------------------------------------------------------------------------------------
def _load(dataset: str, data_root: str | None, overrides: dict | None) -> SplitData:
    spec = dataset_spec(dataset)
    return read_dataset(spec, dataset_folder(spec, data_root, (overrides or {}).get(f"coop:{dataset}")))


def _draw(data: SplitData, k: int, seed: int, where: str) -> FewShotDraw:
    train = data.splits["train"]
    val = None if data.carved_val else [i.label for i in data.splits["val"]]
    return draw_fewshot([i.label for i in train], val, k, seed, where, data.class_names("train"))


def _chosen(data: SplitData, draw: FewShotDraw) -> tuple[list[Item], list[Item]]:
    train = [data.splits["train"][i] for i in draw.train]
    pool = data.splits["train"] if draw.val_from == "train" else data.splits["val"]
    return train, [pool[i] for i in draw.val]


def _identity(draw_items: tuple[list[Item], list[Item]], sources: list[str]) -> dict[str, str]:
    train, val = draw_items
    keys = [f"train:{i.path}" for i in train] + [f"val:{i.path}" for i in val]
    return {"fewshot_ids": ids_hash(keys, [i.label for i in train + val]),
            "splits_sha256": hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]}


def coop_identity(name: str, seed: int, data_root: str | None, data_paths: dict | None) -> dict[str, str]:
    """What the cell id holds: the hash of the chosen images and of every split source the cell reads."""
    dataset, k, protocol = parse_coop_id(name)
    if protocol == "dg":
        from .dg import dg_identity

        return dg_identity(name, k, seed, data_root, data_paths)
    data = _load(dataset, data_root, data_paths)
    chosen = _chosen(data, _draw(data, k, seed, f"task {name}"))
    sources = [data.source_sha256] + ([_load(t, data_root, data_paths).source_sha256 for t in cross_targets(dataset)] if protocol == "cross" else [])
    return _identity(chosen, sources)


def _samples(data: SplitData, items: list[Item], relabel: dict[int, int] | None, where: str):
    from harness.data import Sample, path_inside

    out = []
    for i, item in enumerate(items):
        label = item.label if relabel is None else relabel[item.label]
        out.append(Sample(path_inside(data.image_root, item.path, f"{data.source}"), label, f"{where}[{i}]"))
    return out


def _fewshot_record(data: SplitData, draw: FewShotDraw, chosen: tuple[list[Item], list[Item]], identity: dict[str, str]) -> dict[str, Any]:
    train, val = chosen
    return {"k": draw.k, "seed": draw.seed, "rule": RULE, "val_shots": min(draw.k, VAL_SHOTS_MAX),
            "val_from": "the data's val split" if draw.val_from == "val" else "the training images not chosen (the data has no val split)",
            "counts": {"train": len(train), "val": len(val)}, "train": [i.path for i in train], "val": [i.path for i in val],
            "sha256": {"train": ids_hash([i.path for i in train], [i.label for i in train]), "val": ids_hash([i.path for i in val], [i.label for i in val])},
            "cell_id_part": identity}


def build_coop_task(name: str, data_root: str | None = None, overrides: dict | None = None, cell=None) -> PromptTask:
    """The task ``name`` for the cell ``cell`` (its seed draws the subset; its ``data`` must match)."""
    from harness.data import ImageClassificationDataset

    dataset, k, protocol = parse_coop_id(name)
    spec = dataset_spec(dataset)
    if protocol == "dg":
        from .dg import build_dg_task

        return build_dg_task(name, k, data_root, overrides, cell, spec)
    seed = int(cell.seed) if cell is not None else 0
    data = _load(dataset, data_root, overrides)
    draw = _draw(data, k, seed, f"task {name}")
    chosen = _chosen(data, draw)
    targets = {t: _load(t, data_root, overrides) for t in cross_targets(dataset)} if protocol == "cross" else {}
    identity = _identity(chosen, [data.source_sha256] + [t.source_sha256 for t in targets.values()])
    if cell is not None and cell.data and cell.data != identity:
        raise BobError(f"task {name}: the data changed since the grid was expanded (cell {cell.id} names few-shot ids {cell.data.get('fewshot_ids')}, "
                       f"the files now give {identity['fewshot_ids']}; split sources {identity['splits_sha256']}); expand the grid again "
                       f"(`bob sweep` does) so the cell id names the images it trains on")
    train_names, test_names = data.class_names("train"), data.class_names("test")
    template = [spec.template]
    train_items, val_items = chosen
    test_items = data.splits["test"]
    loaders: dict[str, list] = {}
    prompt_sets: list[PromptSet] = []
    record: dict[str, Any] = {"layout": spec.reader if spec.reader != "generated" else "split_zhou (generated)", "source": data.source,
                              "source_sha256": data.source_sha256, "protocol": protocol, **data.notes}
    if protocol == "base2new":
        labels = sorted({i.label for i in train_items})
        m = math.ceil(len(labels) / 2)
        base, new = labels[:m], labels[m:]
        to_base, to_new = {y: j for j, y in enumerate(base)}, {y: j for j, y in enumerate(new)}
        loaders["train"] = _samples(data, [i for i in train_items if i.label in to_base], to_base, f"{name}:train")
        loaders["val"] = _samples(data, [i for i in val_items if i.label in to_base], to_base, f"{name}:val")
        loaders["test_base"] = _samples(data, [i for i in test_items if i.label in to_base], to_base, f"{name}:test_base")
        loaders["test_new"] = _samples(data, [i for i in test_items if i.label in to_new], to_new, f"{name}:test_new")
        class_names = [train_names[y] for y in base]
        prompt_sets = [PromptSet("base", "test_base", [test_names[y] for y in base], template, "base"),
                     PromptSet("new", "test_new", [test_names[y] for y in new], template, "new", train_class_of=tuple(None for _ in new))]
        record["base2new"] = {"rule": BASE2NEW_RULE, "base_labels": base, "new_labels": new}
        final = ("train", "test_base")
    else:
        loaders["train"] = _samples(data, train_items, None, f"{name}:train")
        loaders["val"] = _samples(data, val_items, None, f"{name}:val")
        loaders["test"] = _samples(data, test_items, None, f"{name}:test")
        class_names = train_names
        prompt_sets = [PromptSet("test" if protocol == "fewshot" else dataset, "test", test_names, template, "test" if protocol == "fewshot" else "source")]
        for target, tdata in targets.items():
            tspec = dataset_spec(target)
            loaders[f"test_{target}"] = _samples(tdata, tdata.splits["test"], None, f"{name}:test_{target}")
            prompt_sets.append(PromptSet(target, f"test_{target}", tdata.class_names("test"), [tspec.template], "target",
                                     train_class_of=tuple(None for _ in range(tdata.num_classes))))
        final = ("train", "test")
        if targets:
            record["targets"] = {t: {"source": d.source, "source_sha256": d.source_sha256, "test": len(d.splits["test"])} for t, d in targets.items()}
    record["fewshot"] = _fewshot_record(data, draw, chosen, identity)
    record["counts"] = {k2: len(v) for k2, v in loaders.items()}
    return PromptTask(
        name=name, kind=CLASSIFICATION, group=f"prompt-learning/{protocol}", num_classes=len(class_names),
        loaders={k2: (lambda v=v, k2=k2: ImageClassificationDataset(v, name=f"{name}:{k2}")) for k2, v in loaders.items()},
        tune_splits=("train", "val"), final_splits=final, hflip_ok=True, source=data.source,
        class_text=lambda: (class_names, template, f"{data.source} (train split's class names)"),
        split_provenance=record, prompt_sets=prompt_sets, protocol=protocol, shots=k, dataset=dataset,
        method_defaults={"tip_search_scale": list(spec.tip_search_scale), "tip_init_alpha": spec.tip_init_alpha, "tpt_augmix": spec.tpt_augmix},
    )


# -- any classification task, few-shot -------------------------------------------------------------------
def parse_fewshot_id(name: str) -> tuple[str, int]:
    """``fewshot:<task>?shots=K`` -> (task, K); the last ``?`` starts the options (the inner id may have its own)."""
    rest = name.partition(":")[2]
    inner, sep, query = rest.rpartition("?")
    if not sep or not inner:
        raise BobError(f"task {name}: write fewshot:<task>?shots=K, e.g. fewshot:vtab1k/dtd?shots=4")
    return inner, parse_shots(name, parse_options(name, query, ("shots",)))


def _inner(inner: str, data_root, overrides):
    from harness.registry import TASKS

    entry = TASKS.get(inner)
    if entry.meta.get("kind") not in (None, CLASSIFICATION):
        raise BobError(f"task fewshot:{inner}: {inner} is a {entry.meta.get('kind')} task; few-shot subsets are drawn for classification tasks")
    if entry.meta.get("data_identity"):
        raise BobError(f"task fewshot:{inner}: {inner} already draws a few-shot subset; name it directly")
    base = entry.factory(data_root=data_root, overrides=overrides or {})
    train_split = base.tune_splits[0] if base.tune_splits else base.final_splits[0]
    val_split = base.tune_splits[1] if base.tune_splits else None
    return base, train_split, val_split


def _generic_draw(name: str, base, train_split: str, val_split: str | None, k: int, seed: int):
    train = base.load(train_split)
    val = base.load(val_split) if val_split else None
    names = base.class_text()[0] if base.class_text else None
    draw = draw_fewshot(train.labels, val.labels if val is not None else None, k, seed, f"task {name}", names)
    pool = train if draw.val_from == "train" else val
    return train, pool, draw


def _generic_identity(base, train, pool, draw, test_split: str) -> tuple[dict[str, str], dict[str, Any]]:
    keys = [f"train:{train.samples[i].identity[0]}" for i in draw.train] + [f"val:{pool.samples[i].identity[0]}" for i in draw.val]
    labels = [train.samples[i].label for i in draw.train] + [pool.samples[i].label for i in draw.val]
    test = base.load(test_split)
    source = ids_hash([k for k, _ in train.identity()] + [f"test:{k}" for k, _ in test.identity()], train.labels + test.labels)
    return {"fewshot_ids": ids_hash(keys, labels), "splits_sha256": source}, {"keys": keys}


def fewshot_identity(name: str, seed: int, data_root: str | None, data_paths: dict | None) -> dict[str, str]:
    inner, k = parse_fewshot_id(name)
    base, train_split, val_split = _inner(inner, data_root, data_paths)
    train, pool, draw = _generic_draw(name, base, train_split, val_split, k, seed)
    return _generic_identity(base, train, pool, draw, base.final_splits[1])[0]


def build_fewshot_task(name: str, data_root: str | None = None, overrides: dict | None = None, cell=None) -> Task:
    from harness.data import ImageClassificationDataset

    inner, k = parse_fewshot_id(name)
    seed = int(cell.seed) if cell is not None else 0
    base, train_split, val_split = _inner(inner, data_root, overrides)
    train, pool, draw = _generic_draw(name, base, train_split, val_split, k, seed)
    identity, extra = _generic_identity(base, train, pool, draw, base.final_splits[1])
    if cell is not None and cell.data and cell.data != identity:
        raise BobError(f"task {name}: the data changed since the grid was expanded (cell {cell.id} names few-shot ids {cell.data.get('fewshot_ids')}, "
                       f"the data now gives {identity['fewshot_ids']}); expand the grid again so the cell id names the images it trains on")
    samples = {"train": [train.samples[i] for i in draw.train], "val": [pool.samples[i] for i in draw.val],
               "test": base.load(base.final_splits[1]).samples}
    record = {"layout": f"few-shot subset of {inner}", "base_task": inner, "base_splits": {"train": train_split, "val": val_split or f"carved from {train_split}",
                                                                                          "test": base.final_splits[1]},
              "fewshot": {"k": k, "seed": seed, "rule": RULE, "val_shots": min(k, VAL_SHOTS_MAX), "val_from": draw.val_from,
                          "counts": {"train": len(draw.train), "val": len(draw.val)}, "ids": extra["keys"], "cell_id_part": identity}}
    return PromptTask(
        name=name, kind=CLASSIFICATION, group=f"few-shot/{base.group}", num_classes=base.num_classes,
        loaders={s: (lambda v=v, s=s: ImageClassificationDataset(v, name=f"{name}:{s}")) for s, v in samples.items()},
        metric=base.metric, tune_splits=("train", "val"), final_splits=("train", "test"), hflip_ok=base.hflip_ok, source=base.source,
        class_text=base.class_text, split_provenance=record, protocol="fewshot", shots=k, dataset=inner,
    )
