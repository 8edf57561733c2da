"""DomainBed's datasets as leave-one-domain-out tasks (Gulrajani & Lopez-Paz, 2021).

Layout, as DomainBed's ``download.py`` leaves it: ``<root>/<dataset>/<domain>/<class>/<image>``
(``PACS``, ``VLCS``, ``office_home``, ``terra_incognita``, ``domain_net``). Each domain is read
as torchvision's ImageFolder reads it (class folders sorted, files in sorted ``os.walk`` order, the
same extensions), domains in sorted order, so every image gets the label and the position
DomainBed's loader gives it.

Splits follow DomainBed's ``train.py`` exactly: every domain ``i`` is split by
``misc.split_dataset(env, int(len(env) * 0.2), misc.seed_hash(trial_seed, i))`` into an *out*
part (the 20 % holdout, first after a NumPy ``RandomState`` shuffle of the indices) and an *in*
part (the rest). The cell's seed is the trial seed. Why not ``harness.splits.carve``: DomainBed's
holdout is not stratified, and matching its rule bit for bit keeps numbers comparable with its
tables; the record still carries ``harness.splits``' hashes of every split.

Task ``shift/domainbed/<dataset>/<test domain>`` trains once on the *in* parts of the other
domains and scores, with that one model, the training domains' *out* parts (``top1``: DomainBed's
training-domain validation accuracy, the ID number) and the test domain's *in* part as the
evaluation set ``test_domain`` (``test_domain/top1``: DomainBed's ``env<i>_in_acc``, the reported
OOD number, also ``ood_top1``; ``harness.eval_sets``). Model selection:

- **training-domain validation** (the default, DomainBed's ``IIDAccuracySelectionMethod``):
  hyper-parameters are chosen on the *out* parts of the training domains; the test domain is never
  read before the final evaluation;
- **oracle** (``.../oracle``, ``OracleSelectionMethod``): chosen on the test domain's *out* part.
  It is a separate task (its own cell and row), labelled as the oracle everywhere it appears.

Neither refits on train + val: DomainBed's selected model is the one trained on the *in* parts
(``final_splits = (train, val)``), and the test domain is scored only by that final model.
This module stays import-light (``bob list`` imports it).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BobError
from harness.registry import TASKS, Entry
from harness.suites import register_suite
from harness.types import CLASSIFICATION, Task

# id -> (DomainBed's folder, domain folders as its download script writes them, classes)
DATASETS = {
    "pacs": ("PACS", ("art_painting", "cartoon", "photo", "sketch"), 7),
    "vlcs": ("VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"), 5),
    "office_home": ("office_home", ("Art", "Clipart", "Product", "Real World"), 65),
    "terra_incognita": ("terra_incognita", ("location_100", "location_38", "location_43", "location_46"), 10),
    "domain_net": ("domain_net", ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), 345),
}
PREFIX = "shift/domainbed/"  # registered task ids: shift/domainbed/<dataset>/<domain>[/oracle]
TOY = "toy"  # the generated three-domain set (tasks/shift/toy_sets.py)
TOY_DOMAINS = ("cartoon", "photo", "sketch")
HOLDOUT = 0.2  # DomainBed's --holdout_fraction default
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's ImageFolder
SELECTIONS = {
    "training": "training-domain validation",
    "oracle": "oracle (test-domain validation)",
}
SPLIT_RULE = ("DomainBed train.py: per domain i, misc.split_dataset(env, int(len(env) * holdout), misc.seed_hash(trial_seed, i)); "
              "out = the first int(n * holdout) indices of np.random.RandomState(seed).shuffle(range(n)), in = the rest; "
              "trial_seed = the cell's seed; domains sorted by folder name, images in torchvision ImageFolder order")


def slug(domain: str) -> str:
    """A domain's name in a task id (``Real World`` -> ``real_world``)."""
    return domain.strip().lower().replace(" ", "_").replace("-", "_")


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class DomainSet:
    """A DomainBed dataset on disk: domains (sorted), classes (sorted, shared), per domain its files."""

    root: Path
    domains: list[str]
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)

    def key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _image_folder(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """torchvision's ImageFolder on ``folder``: classes sorted; per class ``sorted(os.walk)``, sorted file names."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    files = []
    for label, cls in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(folder / cls, followlinks=True)):
            for name in sorted(names):
                if name.lower().endswith(IMG_EXTENSIONS):
                    files.append((Path(dirpath) / name, label))
    return classes, files


def read_domains(root: Path | str, where: str = "") -> DomainSet:
    """The dataset at ``root`` as DomainBed's ``MultipleEnvironmentImageFolder`` reads it, checked:
    at least two domains, every domain with the same classes and at least one image."""
    root = Path(root).expanduser()
    where = where or str(root)
    if not root.is_dir():
        raise BobError(f"{where}: DomainBed dataset folder {root} does not exist; lay it out as <dataset>/<domain>/<class>/<image> "
                       "(DomainBed's download.py does) and point --data-root at the folder holding it")
    domains = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if len(domains) < 2:
        found = f"one ({domains[0]})" if domains else "none"
        raise BobError(f"{root}: a DomainBed dataset needs at least two domain folders to leave one out, found {found}; "
                       f"lay it out as {root}/<domain>/<class>/<image> with one sub-folder per domain")
    data = DomainSet(root, domains, [])
    for domain in domains:
        classes, files = _image_folder(root / domain)
        if not classes or not files:
            raise BobError(f"{root / domain}: domain {domain!r} holds no class folders with images ({', '.join(IMG_EXTENSIONS)}); "
                           f"expected {root / domain}/<class>/<image>")
        if data.classes and classes != data.classes:
            missing = sorted(set(data.classes) ^ set(classes))
            raise BobError(f"{root / domain}: domain {domain!r} has other classes than {domains[0]!r} (differ: {', '.join(missing[:3])}); "
                           "every domain needs the same class folders (DomainBed labels each domain by its sorted class folders)")
        data.classes = classes
        data.files[domain] = files
    return data


def find_domain(data: DomainSet, wanted: str, where: str) -> str:
    for domain in data.domains:
        if domain == wanted or slug(domain) == slug(wanted):
            return domain
    raise BobError(f"{where}: {data.root} has no domain {wanted!r}; its domains are {', '.join(data.domains)}")


# -- DomainBed's split -----------------------------------------------------------------------------
def seed_hash(*args: Any) -> int:
    """DomainBed's ``misc.seed_hash``: an integer seed from the repr of the arguments."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2 ** 31)


def holdout_split(n: int, holdout: float, trial_seed: int, env_index: int) -> tuple[list[int], list[int]]:
    """(out, in) indices of a domain of ``n`` images: DomainBed's ``split_dataset`` with its seed."""
    import numpy as np

    keys = list(range(n))
    np.random.RandomState(seed_hash(int(trial_seed), int(env_index))).shuffle(keys)
    k = int(n * holdout)
    return keys[:k], keys[k:]


def leave_one_out(data: DomainSet, test_domain: str, trial_seed: int, holdout: float = HOLDOUT) -> dict[str, list[tuple[Path, int]]]:
    """``train`` / ``val`` = the in / out parts of the training domains (in domain order); ``test`` /
    ``test_out`` = the in / out parts of the test domain; plus ``<domain>_in`` / ``<domain>_out`` per domain."""
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": [], "test_out": []}
    for i, domain in enumerate(data.domains):
        files = data.files[domain]
        out_idx, in_idx = holdout_split(len(files), holdout, trial_seed, i)
        part_in, part_out = [files[j] for j in in_idx], [files[j] for j in out_idx]
        splits[f"{slug(domain)}_in"], splits[f"{slug(domain)}_out"] = part_in, part_out
        if domain == test_domain:
            splits["test"], splits["test_out"] = part_in, part_out
        else:
            splits["train"] += part_in
            splits["val"] += part_out
    return splits


def split_record(data: DomainSet, splits: dict[str, list[tuple[Path, int]]], test_domain: str, trial_seed: int, holdout: float) -> dict[str, Any]:
    """The record's split provenance: the rule, the seeds, counts and hashes (harness.splits' hash rule)."""
    from harness.splits import HASH_RULE, split_hash

    keyed = {name: ([data.key(p) for p, _ in files], [label for _, label in files]) for name, files in splits.items()}
    return {
        "layout": "domainbed: <dataset>/<domain>/<class>/<image>",
        "root": str(data.root),
        "domains": list(data.domains),
        "test_domain": test_domain,
        "training_domains": [d for d in data.domains if d != test_domain],
        "classes": list(data.classes),
        "rule": SPLIT_RULE,
        "holdout": holdout,
        "trial_seed": int(trial_seed),
        "env_seeds": {d: seed_hash(int(trial_seed), i) for i, d in enumerate(data.domains)},
        "counts": {name: len(keys) for name, (keys, _) in keyed.items()},
        "sha256": {name: split_hash(keys, labels) for name, (keys, labels) in keyed.items()},
        "hash_rule": HASH_RULE,
    }


# -- the task --------------------------------------------------------------------------------------
@dataclass
class DomainBedTask(Task):
    """A leave-one-domain-out task; ``selection`` says which split chose the hyper-parameters."""

    selection: str = "training"
    test_domain: str = ""

    def meta(self) -> dict[str, Any]:
        prov = self.split_provenance or {}
        chosen_on = ("val: the 20 % out parts of the training domains " + ", ".join(prov.get("training_domains", []))
                     if self.selection == "training" else f"test_out: the 20 % out part of the test domain {self.test_domain}")
        return {**super().meta(), "test_domain": self.test_domain,
                "model_selection": {"method": self.selection, "label": SELECTIONS[self.selection], "selected_on": chosen_on,
                                    "oracle": self.selection == "oracle",
                                    "score": "top-1 over the selection split's images pooled (DomainBed averages the per-domain out "
                                             "accuracies; the two agree when the training domains' out parts are the same size)",
                                    "reported_on": f"test_domain/top1 (= ood_top1): the 80 % in part of the test domain {self.test_domain}; "
                                                   "top1: the training domains' out parts (training-domain validation accuracy)"}}


def parse_local_id(name: str) -> tuple[Path, str, str, float]:
    """``domainbed:<folder>?test=<domain>[&select=oracle][&holdout=0.2]`` -> (folder, domain, selection, holdout)."""
    from urllib.parse import parse_qsl

    spec = name.partition(":")[2]
    location, _, query = spec.partition("?")
    fix = "write domainbed:<dataset folder>?test=<domain>[&select=oracle][&holdout=0.2]"
    if not location:
        raise BobError(f"task {name}: no dataset folder; {fix}")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError:
        raise BobError(f"task {name}: options {query!r} are not key=value pairs; {fix}") from None
    unknown = sorted(set(options) - {"test", "select", "holdout"})
    if unknown:
        raise BobError(f"task {name}: unknown option {unknown[0]!r}; {fix}")
    if not options.get("test"):
        raise BobError(f"task {name}: which domain is left out? {fix}")
    selection = options.get("select", "training")
    if selection not in SELECTIONS:
        raise BobError(f"task {name}: select={selection!r} is not one of {', '.join(SELECTIONS)}; {fix}")
    try:
        holdout = float(options.get("holdout", HOLDOUT))
    except ValueError:
        raise BobError(f"task {name}: holdout={options['holdout']!r} is not a number; {fix}") from None
    if not 0.0 < holdout < 1.0:
        raise BobError(f"task {name}: holdout={holdout} must lie between 0 and 1 (DomainBed uses 0.2)")
    return Path(location).expanduser(), options["test"], selection, holdout


def _location(name: str, data_root: str | None, overrides: dict | None) -> tuple[Path, str, str, float]:
    """Where task ``name``'s dataset lives, its test domain, selection and holdout."""
    if name.startswith("domainbed:"):
        return parse_local_id(name)
    dataset, domain, *rest = name[len(PREFIX):].split("/")
    selection = "oracle" if rest == ["oracle"] else "training"
    overrides = overrides or {}
    override = overrides.get(name) or overrides.get(f"{PREFIX}{dataset}")
    if override:
        return Path(override).expanduser(), domain, selection, HOLDOUT
    if dataset == TOY:
        from .toy_sets import ensure_domainbed_toy

        return ensure_domainbed_toy(), domain, selection, HOLDOUT
    root = data_root or os.environ.get("BOB_DATA")
    if not root:
        raise BobError(f"task {name}: no data root; pass --data-root (or BOB_DATA) holding {DATASETS[dataset][0]}/<domain>/<class>/<image>, "
                       f"or --data-path {PREFIX}{dataset}=<folder>")
    return Path(root).expanduser() / DATASETS[dataset][0], domain, selection, HOLDOUT


def build_task(name: str, data_root: str | None = None, overrides: dict | None = None, cell=None) -> DomainBedTask:
    """The task for the cell ``cell`` (its seed is DomainBed's trial seed; 0 without a cell)."""
    from harness.data import ImageClassificationDataset, Sample
    from harness.eval_sets import EvalSet

    folder, wanted, selection, holdout = _location(name, data_root, overrides)
    data = read_domains(folder, f"task {name}")
    test_domain = find_domain(data, wanted, f"task {name}")
    trial_seed = int(cell.seed) if cell is not None else 0
    files = leave_one_out(data, test_domain, trial_seed, holdout)
    record = split_record(data, files, test_domain, trial_seed, holdout)
    if cell is not None and cell.data and cell.data.get("sha256") != _identity_of(record)["sha256"]:
        raise BobError(f"task {name}: the files under {folder} changed since the grid was expanded (split hashes differ); "
                       "expand the grid again (rerun the sweep) so the cell ids name the data they read")
    for split in ("train", "val", "test", "test_out"):
        if not files[split]:
            raise BobError(f"task {name}: the {split} split is empty ({folder} has too few images per domain for a "
                           f"{holdout:g} holdout); add images to its domains")
    names = [c.replace("_", " ") for c in data.classes]
    tune = ("train", "val") if selection == "training" else ("train", "test_out")
    held_out = EvalSet("test_domain", "test", role="ood", title=f"held-out domain ({test_domain}, in split)", group="domain_generalization",
                       notes={"domain": test_domain})
    return DomainBedTask(
        name=name, kind=CLASSIFICATION, group=_group(name, selection), num_classes=len(data.classes),
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset([Sample(p, y, f"{name}:{k}") for p, y in v], name=f"{name}:{k}"))
                 for k, v in files.items()},
        tune_splits=tune, final_splits=("train", "val"), union_splits={}, source=str(folder), eval_sets=[held_out],
        class_text=lambda: (names, ["a photo of a {c}."], f"class folders of {folder}"),
        split_provenance=record, selection=selection, test_domain=test_domain,
    )


def _identity_of(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("train", "val", "test", "test_out")
    return {"split": "domainbed-holdout", "trial_seed": record["trial_seed"], "holdout": record["holdout"],
            "sha256": {k: record["sha256"][k] for k in keep}}


def data_identity(name: str, seed: int, data_root: str | None, data_paths: dict | None) -> dict[str, Any]:
    """What the cell id holds: the trial seed and the hashes of the splits it reads (read at grid expansion)."""
    from types import SimpleNamespace

    task = build_task(name, data_root, data_paths, SimpleNamespace(seed=int(seed), data={}))
    return _identity_of(task.split_provenance)


def _group(name: str, selection: str) -> str:
    dataset = name[len(PREFIX):].split("/")[0] if name.startswith(PREFIX) else "local"
    return f"domainbed{'-oracle' if selection == 'oracle' else ''}/{dataset}"


# -- registration ----------------------------------------------------------------------------------
def _factory(name: str):
    def factory(data_root=None, overrides=None, cell=None, **_):
        return build_task(name, data_root, overrides, cell)

    return factory


def _meta(name: str, dataset: str, domain: str, selection: str) -> dict[str, Any]:
    what = "oracle selection: hyper-parameters chosen on the test domain's out split" if selection == "oracle" else \
        "training-domain validation"
    classes = {TOY: 4, **{k: v[2] for k, v in DATASETS.items()}}.get(dataset)
    return {"kind": CLASSIFICATION, "group": _group(name, selection), "metric": "top1", **({"num_classes": classes} if classes else {}), "data_identity": data_identity, "class_names": True,
            "selection": selection, "dataset": dataset, "test_domain": domain, "suite": "domainbed_oracle" if selection == "oracle" else "shift",
            "description": f"DomainBed {dataset}, leave out {domain} ({what})"}


def task_ids(dataset: str, selection: str = "training") -> list[str]:
    domains = TOY_DOMAINS if dataset == TOY else DATASETS[dataset][1]
    return [f"{PREFIX}{dataset}/{slug(d)}" + ("/oracle" if selection == "oracle" else "") for d in domains]


def _register() -> None:
    titles = {"pacs": "PACS", "vlcs": "VLCS", "office_home": "OfficeHome", "terra_incognita": "TerraIncognita", "domain_net": "DomainNet",
              TOY: "generated (3 domains)"}
    for dataset in [*DATASETS, TOY]:
        domains = TOY_DOMAINS if dataset == TOY else DATASETS[dataset][1]
        for selection in SELECTIONS:
            for domain, task in zip(domains, task_ids(dataset, selection)):
                TASKS.add(task, _factory(task), **_meta(task, dataset, domain, selection))
    for selection, suffix in (("training", ""), ("oracle", "_oracle")):
        label = SELECTIONS[selection]
        register_suite(f"domainbed{suffix}", title=f"DomainBed ({label})", rule="mean_of_group_means", group_columns=True,
                       caption=f"Leave-one-domain-out top-1 (%) on the held-out domain's in split; model selection: {label}"
                               + (" — an upper bound that reads the test domain, not a DG result" if selection == "oracle" else ""),
                       groups=[{"name": d, "title": titles[d], "tasks": task_ids(d, selection)} for d in DATASETS])
        register_suite(f"domainbed_toy{suffix}", title=f"DomainBed-layout generated set ({label})", rule="mean_of_tasks",
                       caption=f"The generated three-domain set, leave-one-domain-out top-1 (%); model selection: {label}",
                       groups=[{"name": TOY, "title": titles[TOY], "tasks": task_ids(TOY, selection)}])


def _resolve_local(name: str) -> Entry:
    folder, domain, selection, _ = parse_local_id(name)  # a malformed id fails at grid expansion
    return Entry(name, _factory(name), {**_meta(name, str(folder), domain, selection), "group": _group(name, selection)})


PREPARE_NOTES = """DomainBed (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet), as DomainBed's domainbed/scripts/download.py lays them out:
  <root>/PACS/{art_painting,cartoon,photo,sketch}/<class>/<image>     <root>/VLCS/{Caltech101,LabelMe,SUN09,VOC2007}/<class>/<image>
  <root>/office_home/{Art,Clipart,Product,Real World}/<class>/<image> <root>/terra_incognita/{location_100,...}/<class>/<image>
  <root>/domain_net/{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>
Any other set in that layout: domainbed:<folder>?test=<domain>."""


def _locate(name: str, data_root: str | None, overrides: dict | None) -> Path:
    folder = _location(name, data_root, overrides)[0]
    if not folder.is_dir():
        raise BobError(f"task {name}: {folder} does not exist")
    return folder


def _declare_shift() -> None:
    from .datacheck import checker
    from .suite import declare_checker, declare_group

    members = [t for d in DATASETS for t in task_ids(d)] + task_ids(TOY)
    declare_group("domain_generalization", title="Domain generalization", tasks=members)
    check = checker(_locate, lambda name, root, overrides: build_task(name, root, overrides),
                    "lay the dataset out as <dataset>/<domain>/<class>/<image> (`bob data prepare shift` shows where)")
    for i, task in enumerate(members):
        declare_checker(task, check, PREPARE_NOTES if i == 0 else "")


_register()
_declare_shift()
TASKS.add_prefix("domainbed", _resolve_local, "domainbed:<dataset folder>?test=<domain>[&select=oracle][&holdout=0.2] "
                 "runs leave-one-domain-out on a local set in DomainBed's layout (<domain>/<class>/<image>)")
