"""The eleven datasets of the CoOp protocol, read from their released folders.

Layout (CoOp's DATASETS.md, ``<root>`` = ``--data-root`` / ``BOB_DATA``)::

    <root>/caltech-101/101_ObjectCategories/...      + split_zhou_Caltech101.json
    <root>/oxford_pets/images/...                    + split_zhou_OxfordPets.json
    <root>/stanford_cars/cars_train/... cars_test/...+ split_zhou_StanfordCars.json   (paths relative to the folder)
    <root>/oxford_flowers/jpg/...                    + split_zhou_OxfordFlowers.json
    <root>/food-101/images/...                       + split_zhou_Food101.json
    <root>/fgvc_aircraft/images/... variants.txt images_variant_{train,val,test}.txt
    <root>/sun397/SUN397/...                         + split_zhou_SUN397.json
    <root>/dtd/images/...                            + split_zhou_DescribableTextures.json
    <root>/eurosat/2750/...                          + split_zhou_EuroSAT.json
    <root>/ucf101/UCF-101-midframes/...              + split_zhou_UCF101.json
    <root>/imagenet/images/{train,val}/<wnid>/...    + classnames.txt ("<wnid> <class name>" lines)

A split file is ``{"train"|"val"|"test": [[relative path, label, class name], ...]}``; class names
come from it (``_`` read as a space, as the reference's prompt learners do). FGVC-Aircraft is read
from its official lists (label = line of the variant in ``variants.txt``). ImageNet has no split
file: train and val (its test) are its folders, classes in sorted folder order, names from
``classnames.txt``; files are listed in sorted order (the reference lists them in the order the
file system returns, which differs between machines and so draws different few-shot images).

Every reader returns :class:`SplitData`: the items of each split in file order (the few-shot rule
depends on that order) and the SHA-256 of what defined them (the split file's bytes, or the
ImageNet listing), so a changed file is a changed cell.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BobError, did_you_mean

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the protocol: where it lies, how it is read, its hand-made prompt (CoOp's
    ``CUSTOM_TEMPLATES``) and the per-dataset settings of the reference methods."""

    name: str
    title: str
    folder: str
    image_dir: str
    split_file: str | None  # None: read otherwise (``reader``)
    template: str
    reader: str = "split_zhou"  # split_zhou | fgvc_txt | imagenet | generated
    tip_search_scale: tuple[float, float] = (7.0, 3.0)  # Tip-Adapter's (beta, alpha) search ranges (its configs/<dataset>.yaml)
    tip_init_alpha: float = 1.0
    tpt_augmix: bool = True  # TPT: AugMix views for fine-grained sets, plain random crops for the ImageNet family


DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (
    DatasetSpec("imagenet", "ImageNet", "imagenet", "images", None, "a photo of a {c}.", "imagenet", (7, 3), 1.17, False),
    DatasetSpec("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "a photo of a {c}.",
                tip_search_scale=(12, 5), tip_init_alpha=3),
    DatasetSpec("oxford_pets", "OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json", "a photo of a {c}, a type of pet.",
                tip_search_scale=(7, 3), tip_init_alpha=1.17),
    DatasetSpec("stanford_cars", "StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json", "a photo of a {c}.",
                tip_search_scale=(20, 10), tip_init_alpha=3),
    DatasetSpec("oxford_flowers", "Flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "a photo of a {c}, a type of flower.",
                tip_search_scale=(50, 50), tip_init_alpha=10),
    DatasetSpec("food101", "Food101", "food-101", "images", "split_zhou_Food101.json", "a photo of {c}, a type of food.",
                tip_search_scale=(10, 10), tip_init_alpha=1.17),
    DatasetSpec("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", None, "a photo of a {c}, a type of aircraft.", "fgvc_txt",
                (30, 30), 5),
    DatasetSpec("sun397", "SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", "a photo of a {c}.", tip_search_scale=(12, 10), tip_init_alpha=1.17),
    DatasetSpec("dtd", "DTD", "dtd", "images", "split_zhou_DescribableTextures.json", "{c} texture.", tip_search_scale=(13, 13), tip_init_alpha=2),
    DatasetSpec("eurosat", "EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", "a centered satellite photo of {c}.",
                tip_search_scale=(12, 10), tip_init_alpha=2),
    DatasetSpec("ucf101", "UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "a photo of a person doing {c}.",
                tip_search_scale=(7, 3), tip_init_alpha=3),
    # generated (tasks/prompt_learning/generate.py): written in the split_zhou layout and read by the same reader
    DatasetSpec("toy_colours", "ToyColours", "toy_colours", "images", "split_zhou_ToyColours.json", "a photo of a {c} thing.", "generated"),
    DatasetSpec("toy_textures", "ToyTextures", "toy_textures", "images", "split_zhou_ToyTextures.json", "{c} texture.", "generated"),
)}
COOP_DATASETS = [n for n, d in DATASETS.items() if d.reader != "generated"]  # the eleven, in the papers' column order
TOY_DATASETS = [n for n, d in DATASETS.items() if d.reader == "generated"]


@dataclass(frozen=True)
class Item:
    """One image: its path relative to the image folder, its label and the class name its split gives."""

    path: str
    label: int
    classname: str


@dataclass
class SplitData:
    """A dataset read from disk: items per split in file order, the image folder and the SHA-256 of
    what defined the splits (``source``: the split file(s) or the listing)."""

    dataset: str
    image_root: Path
    splits: dict[str, list[Item]]
    source: str
    source_sha256: str
    carved_val: bool = False  # no val split came with the data (ImageNet): the few-shot val is drawn from train
    notes: dict[str, Any] = field(default_factory=dict)

    def class_names(self, split: str) -> list[str]:
        """Names in label order as ``split`` gives them (``_`` read as a space); labels it lacks are
        taken from the other splits, train first."""
        names: dict[int, str] = {}
        for s in (split, *[x for x in SPLITS if x != split]):
            for item in self.splits.get(s, []):
                names.setdefault(item.label, item.classname)
        n = 1 + max(names) if names else 0
        missing = [i for i in range(n) if i not in names]
        if missing:
            raise BobError(f"{self.source}: label {missing[0]} has no image in any split; labels must run 0..{n - 1}")
        return [names[i].replace("_", " ") for i in range(n)]

    @property
    def num_classes(self) -> int:
        return 1 + max(item.label for items in self.splits.values() for item in items)


def unknown_dataset(name: str, where: str = "") -> BobError:
    known = list(DATASETS)
    return BobError(f"{where}unknown dataset '{name}'{did_you_mean(name, known)}; the prompt-learning datasets are {', '.join(known)}")


def dataset_spec(name: str, where: str = "") -> DatasetSpec:
    if name not in DATASETS:
        raise unknown_dataset(name, where)
    return DATASETS[name]


def dataset_folder(spec: DatasetSpec, data_root: str | None, override: str | None = None) -> Path:
    """Where ``spec`` lies: an explicit override, the generated folder, or ``<data root>/<folder>``."""
    if override:
        return Path(override).expanduser()
    if spec.reader == "generated":
        from .generate import ensure_toy_dataset

        return ensure_toy_dataset(spec.name)
    if not data_root:
        raise BobError(f"dataset {spec.name} is read from <data root>/{spec.folder}; give --data-root (or BOB_DATA, or data_root: in the grid)")
    return Path(data_root).expanduser() / spec.folder


def read_dataset(spec: DatasetSpec, folder: Path) -> SplitData:
    """Read ``spec`` from ``folder`` (cached per file contents: a grid expands many cells per dataset)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BobError(f"dataset {spec.name}: folder {folder} does not exist; lay it out as CoOp's DATASETS.md describes "
                       f"(<data root>/{spec.folder}/{spec.image_dir or '.'}/ and its split file)")
    if spec.reader in ("split_zhou", "generated"):
        path = folder / spec.split_file
        return _read_split_zhou_cached(spec.name, str(path), _stamp(path), str(folder / spec.image_dir))
    if spec.reader == "fgvc_txt":
        files = [folder / "variants.txt"] + [folder / f"images_variant_{s}.txt" for s in SPLITS]
        return _read_fgvc_cached(str(folder), tuple(_stamp(f) for f in files))
    if spec.reader == "imagenet":
        return _read_imagenet_cached(str(folder), _stamp(folder / "classnames.txt"))
    raise AssertionError(spec.reader)


def _stamp(path: Path) -> tuple:
    """Cache key part that changes when the file does (size and modification time)."""
    try:
        st = path.stat()
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return (None, None)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- split_zhou json ------------------------------------------------------------------------------
def parse_split_zhou(data: Any, source: str) -> dict[str, list[Item]]:
    """Check the shape of a split file and return its items; any deviation is a one-line error
    naming the file, the key and the entry."""
    shape = 'a JSON object {"train": [[path, label, classname], ...], "val": [...], "test": [...]}'
    if not isinstance(data, dict):
        raise BobError(f"split file {source}: expected {shape}, got a JSON {type(data).__name__}")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise BobError(f"split file {source}: no '{missing[0]}' key (keys: {', '.join(map(str, data)) or 'none'}); expected {shape}")
    out: dict[str, list[Item]] = {}
    for split in SPLITS:
        entries = data[split]
        if not isinstance(entries, list):
            raise BobError(f"split file {source}: '{split}' must be a list of [path, label, classname], got a {type(entries).__name__}")
        items = []
        for i, entry in enumerate(entries):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise BobError(f"split file {source}: {split}[{i}] is {json.dumps(entry)[:80]}; each entry must be [path, label, classname]")
            path, label, classname = entry
            if not isinstance(path, str) or not path:
                raise BobError(f"split file {source}: {split}[{i}] has path {path!r}; give the image path relative to the image folder")
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise BobError(f"split file {source}: {split}[{i}] has label {label!r}; labels are integers from 0")
            if not isinstance(classname, str) or not classname:
                raise BobError(f"split file {source}: {split}[{i}] has class name {classname!r}; give the class name as a string")
            if path.startswith("/") or ".." in Path(path).parts:
                raise BobError(f"split file {source}: {split}[{i}] path {path!r} leaves the image folder; list paths relative to it")
            items.append(Item(path, label, classname))
        out[split] = items
    if not out["train"]:
        raise BobError(f"split file {source}: 'train' is empty; a few-shot subset is drawn from it")
    return out


@functools.lru_cache(maxsize=64)
def _read_split_zhou_cached(name: str, path: str, stamp: tuple, image_root: str) -> SplitData:
    file = Path(path)
    if not file.is_file():
        raise BobError(f"dataset {name}: split file {file} does not exist; download it from CoOp's DATASETS.md into {file.parent}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BobError(f"split file {file}: not valid JSON ({str(exc).splitlines()[0]}); download it again") from None
    return SplitData(name, Path(image_root), parse_split_zhou(data, str(file)), str(file), _sha256_file(file))


# -- FGVC-Aircraft: the official lists ------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _read_fgvc_cached(folder: str, stamps: tuple) -> SplitData:
    root = Path(folder)
    variants_file = root / "variants.txt"
    if not variants_file.is_file():
        raise BobError(f"dataset fgvc_aircraft: {variants_file} does not exist; unpack fgvc-aircraft-2013b's data/ folder into {root}")
    classnames = [line.strip() for line in variants_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    label_of = {c: i for i, c in enumerate(classnames)}
    h = hashlib.sha256(variants_file.read_bytes())
    splits = {}
    for split in SPLITS:
        file = root / f"images_variant_{split}.txt"
        if not file.is_file():
            raise BobError(f"dataset fgvc_aircraft: {file} does not exist; it is one of the official lists (images_variant_{{train,val,test}}.txt)")
        raw = file.read_bytes()
        h.update(raw)
        items = []
        for lineno, line in enumerate(raw.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            image, _, variant = line.strip().partition(" ")
            if variant not in label_of:
                raise BobError(f"{file}:{lineno}: variant {variant!r} is not in variants.txt{did_you_mean(variant, classnames)}")
            items.append(Item(f"{image}.jpg", label_of[variant], variant))
        splits[split] = items
    return SplitData("fgvc_aircraft", root / "images", splits, f"{variants_file} + images_variant_{{train,val,test}}.txt", h.hexdigest())


# -- ImageNet: folders + classnames.txt ----------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _read_imagenet_cached(folder: str, stamp: tuple) -> SplitData:
    root = Path(folder)
    names_file = root / "classnames.txt"
    if not names_file.is_file():
        raise BobError(f"dataset imagenet: {names_file} does not exist; CoOp's DATASETS.md links it ('<wnid> <class name>' per line)")
    names = {}
    for line in names_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            wnid, _, cname = line.strip().partition(" ")
            names[wnid] = cname
    h = hashlib.sha256(names_file.read_bytes())
    splits = {}
    for split, sub in (("train", "train"), ("test", "val")):
        base = root / "images" / sub
        if not base.is_dir():
            raise BobError(f"dataset imagenet: {base} does not exist; put the train and val images under {root / 'images'}/{{train,val}}/<wnid>/")
        folders = sorted(p.name for p in base.iterdir() if p.is_dir())
        items = []
        for label, wnid in enumerate(folders):
            if wnid not in names:
                raise BobError(f"dataset imagenet: class folder {wnid} has no line in {names_file}")
            files = sorted(f.name for f in (base / wnid).iterdir() if not f.name.startswith("."))
            items += [Item(f"{sub}/{wnid}/{f}", label, names[wnid]) for f in files]
            h.update(("\n".join(f"{sub}/{wnid}/{f}" for f in files) + "\n").encode())
        splits[split] = items
    splits["val"] = []
    return SplitData("imagenet", root / "images", splits, f"{names_file} + the listing of {root / 'images'}", h.hexdigest(), carved_val=True,
                     notes={"listing": "sorted file names (the reference lists in file-system order)"})
