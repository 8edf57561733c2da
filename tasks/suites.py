"""Standard transfer suites (VTAB-1k, FGVC) from declarative configs in ``tasks/configs/*.yaml``.

Each task's data comes from one of three sources, all ending in one dataset class:
1. list files (VTAB-1k / NOAH layout): ``<root>/vtab-1k/<folder>/{train800,...}.txt``;
2. VPT's FGVC json (``{train,val,test}.json``: image path -> class id);
3. Hugging Face ``datasets`` (``hf:<hub id or local folder>?image=..&label=..&<split>=<hf split>``).

``check_task_data`` is the single place that validates a task's data; ``bob data verify``
prints its findings and ``run`` refuses with the same message.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from harness.errors import BobError
from harness.registry import TASKS
from harness.suites import register_suite
from harness.types import Task

CONFIG_DIR = Path(__file__).parent / "configs"
SUITES = ("vtab1k", "fgvc")


@functools.lru_cache(maxsize=None)
def suite_config(suite: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((CONFIG_DIR / f"{suite}.yaml").read_text())


def task_config(task_id: str) -> tuple[dict, dict]:
    suite, _, name = task_id.partition("/")
    cfg = suite_config(suite)
    for t in cfg["tasks"]:
        if t["name"] == name:
            return cfg, t
    raise KeyError(task_id)


@dataclass
class TaskCheck:
    """What ``verify`` found for one task."""

    task: str
    location: str | None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fix: str = ""

    @property
    def status(self) -> str:
        if self.location is None:
            return "missing"
        return "ready" if not self.problems else "invalid"

    def message(self) -> str:
        """One line: the first problem and the fix (what ``run`` raises)."""
        first = self.problems[0] if self.problems else "no data found"
        more = f" (+{len(self.problems) - 1} more problems; `bob data verify` lists them)" if len(self.problems) > 1 else ""
        return f"task {self.task}: {first}{more}; {self.fix}"


# -- locating data --------------------------------------------------------------------------
def candidate_folders(task_id: str, data_root: str | None) -> list[Path]:
    cfg, t = task_config(task_id)
    if not data_root:
        return []
    root = Path(data_root).expanduser()
    folders = t["folder"] if isinstance(t["folder"], list) else [t["folder"]]
    bases = [root / d for d in cfg.get("data_dirs", [])] + [root]
    return [base / f"{folder}{suffix}" for base in bases for folder in folders for suffix in cfg.get("folder_suffixes", [""])]


def locate(task_id: str, data_root: str | None, override: str | None) -> str | None:
    if override:
        return override
    for folder in candidate_folders(task_id, data_root):
        if folder.is_dir():
            return str(folder)
    return None


# -- reading one source ----------------------------------------------------------------------
def read_vpt_json(json_file: Path, image_dir: Path, class_map: dict | None) -> tuple[list, dict]:
    """VPT's ``{relative path: class id}``. Class ids are mapped to 0..C-1 by sorting the training
    split's ids (VPT maps each split on its own, which silently shifts labels when a split lacks
    a class; here an id unseen in training is an error instead)."""
    from harness.data import Sample, path_inside

    from .jsonfile import read_json

    anno = read_json(json_file, f"annotation file {json_file} does not exist")
    if not isinstance(anno, dict):
        raise BobError(f"{json_file}: expected an object mapping image path -> class id, got {type(anno).__name__}")
    if class_map is None:
        class_map = {cid: i for i, cid in enumerate(sorted(set(anno.values()), key=lambda v: (str(type(v)), v)))}
    samples = []
    for rel, cid in anno.items():
        if cid not in class_map:
            raise BobError(f"{json_file}: class id {cid!r} of {rel} does not occur in train.json; fix the annotations")
        samples.append(Sample(path_inside(image_dir, str(rel), f"{json_file}:{rel}"), class_map[cid], f"{json_file}:{rel}"))
    return samples, class_map


def parse_hf_source(source: str) -> tuple[str, dict[str, str]]:
    """``hf:org/name?image=img&label=fine_label&test=validation`` -> (path, options)."""
    parts = urlsplit(source[3:])
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    return path, dict(parse_qsl(parts.query))


@functools.lru_cache(maxsize=8)
def _load_hf_split(path: str, split: str):
    try:
        import datasets
    except ImportError:
        raise BobError("reading a Hugging Face dataset needs the `datasets` package: pip install 'bob-harness[hf]'") from None
    local = Path(path).expanduser()
    files = sorted(local.glob(f"{split}.parquet")) + sorted(local.glob(f"{split}-*.parquet")) if local.is_dir() else []
    if files:
        return datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)
    try:
        return datasets.load_dataset(path, split=split)
    except Exception as exc:
        raise BobError(f"Hugging Face dataset {path!r} split {split!r} could not be loaded: {str(exc).splitlines()[0]}") from None


@functools.lru_cache(maxsize=8)
def hf_split_names(path: str) -> tuple[str, ...]:
    local = Path(path).expanduser()
    if local.is_dir():
        return tuple(sorted({f.name.split(".")[0].split("-")[0] for f in local.glob("*.parquet")}))
    try:
        import datasets

        return tuple(datasets.get_dataset_split_names(path))
    except Exception as exc:
        raise BobError(f"Hugging Face dataset {path!r}: cannot list its splits ({str(exc).splitlines()[0]})") from None


def read_hf_split(source: str, split: str) -> list:
    from harness.data import Sample

    path, opts = parse_hf_source(source)
    hf_split = opts.get(split, split)
    ds = _load_hf_split(path, hf_split)
    image_col, label_col = opts.get("image", "image"), opts.get("label", "label")
    for col in (image_col, label_col):
        if col not in ds.column_names:
            raise BobError(f"Hugging Face dataset {path!r} has no column {col!r} (columns: {', '.join(ds.column_names)}); map it with ?image=...&label=...")
    labels = ds[label_col]
    samples = []
    for i, label in enumerate(labels):
        samples.append(Sample(functools.partial(_hf_image, ds, i, image_col), int(label), f"hf:{path}:{hf_split}#{i}"))
    return samples


def _hf_image(ds, index: int, column: str):
    return ds[index][column]


# -- checking ---------------------------------------------------------------------------------
def read_all_splits(task_id: str, location: str) -> dict[str, list]:
    """Samples per split from whichever source ``location`` is (raises BobError on format errors)."""
    from harness.data import read_list_file

    cfg, t = task_config(task_id)
    splits = list(cfg["splits"])
    if location.startswith("hf:"):
        path, opts = parse_hf_source(location)
        available = hf_split_names(path)
        unions = cfg.get("union", {})
        # a union split (train800val200) missing from the mirror is assembled from its parts later
        return {s: read_hf_split(location, s) for s in splits if not (s in unions and opts.get(s, s) not in available)}
    folder = Path(location)
    if cfg["layout"] == "list_files":
        return {s: read_list_file(folder / f"{s}.txt", folder) for s in splits}
    image_dir = folder / t.get("image_dir", ".")
    out, class_map = {}, None
    for s in splits:
        out[s], class_map = read_vpt_json(folder / f"{s}.json", image_dir, class_map)
    return out


def check_task_data(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False) -> tuple[TaskCheck, dict[str, list]]:
    cfg, t = task_config(task_id)
    location = locate(task_id, data_root, override)
    check = TaskCheck(task_id, location)
    expected = [str(p) for p in candidate_folders(task_id, data_root)[:2]]
    if location is None:
        where = f"looked in {', '.join(expected)}" if expected else "no data root given"
        check.problems.append(f"data not found ({where})")
        check.fix = f"pass --data-root DIR (or set BOB_DATA) to the folder holding {cfg['data_dirs'][0]}/<task folders>, or map the task with --data-path {task_id}=PATH; `bob data prepare {cfg['suite']}` explains how to get it"
        return check, {}
    if not location.startswith("hf:") and not Path(location).is_dir():
        check.problems.append(f"data folder {location} does not exist")
        check.fix = "fix the path given for this task"
        return check, {}
    try:
        samples = read_all_splits(task_id, location)
    except BobError as exc:
        check.problems.append(str(exc))
        check.fix = "repair the file named above (or re-extract the dataset)"
        return check, {}
    classes = t["classes"]
    for split, items in samples.items():
        check.counts[split] = len(items)
        want = cfg["splits"].get(split)
        if want is not None and len(items) != want:
            check.problems.append(f"split {split} has {len(items)} samples, expected {want}")
        if not items:
            check.problems.append(f"split {split} is empty")
        bad = [s for s in items if not 0 <= s.label < classes]
        if bad:
            check.problems.append(f"{bad[0].origin}: label {bad[0].label} is out of range 0..{classes - 1} ({len(bad)} such samples in {split})")
        if not location.startswith("hf:"):
            missing = [s for s in items if not Path(s.image).is_file()]
            if missing:
                check.problems.append(f"{missing[0].origin}: image {missing[0].image} does not exist ({len(missing)} missing in {split})")
    for union, parts in cfg.get("union", {}).items():
        if cfg["layout"] == "list_files" and union in samples and all(p in samples for p in parts):
            if sorted(s.identity for s in samples[union]) != sorted(s.identity for p in parts for s in samples[p]):
                check.problems.append(f"{union} is not exactly {' + '.join(parts)}")
    if open_images and not check.problems:
        from harness.data import open_rgb

        for split, items in samples.items():
            for s in items:
                try:
                    open_rgb(s)
                except BobError as exc:
                    check.problems.append(str(exc))
                    break
    if check.problems:
        check.fix = "re-create the listed files from the original dataset (see `bob data prepare " + cfg["suite"] + "`)"
    return check, samples


# -- registration -------------------------------------------------------------------------------
from .class_names import class_text_for, has_class_names  # noqa: E402 - light (yaml only, read on first use)


def make_suite_task(task_id: str, data_root: str | None = None, overrides: dict | None = None) -> Task:
    from harness.data import ImageClassificationDataset

    cfg, t = task_config(task_id)
    check, samples = check_task_data(task_id, data_root, (overrides or {}).get(task_id))
    if check.problems:
        raise BobError(check.message())
    for union, parts in cfg.get("union", {}).items():
        if union not in samples:
            samples[union] = [s for p in parts for s in samples[p]]
    return Task(
        name=task_id,
        kind=cfg["kind"],
        group=f"{cfg['suite']}/{t['group']}",
        num_classes=t["classes"],
        loaders={k: (lambda v=v, k=k: ImageClassificationDataset(v, name=f"{task_id}:{k}")) for k, v in samples.items()},
        metric=cfg["metric"],
        tune_splits=tuple(cfg["protocol"]["tune"]),
        final_splits=tuple(cfg["protocol"]["final"]),
        union_splits={k: tuple(v) for k, v in cfg.get("union", {}).items()},
        hflip_ok=cfg.get("hflip_ok", True),
        source=check.location or "",
        class_text=class_text_for(task_id, check.location if cfg["layout"] == "vpt_json" and not str(check.location).startswith("hf:") else None, t["classes"]),
    )


def suite_task_ids(suite: str) -> list[str]:
    return [f"{suite}/{t['name']}" for t in suite_config(suite)["tasks"]]


PREPARE_NOTES = {
    "vtab1k": """VTAB-1k (19 tasks, the layout of NOAH and the PEFT papers that followed):
  <root>/vtab-1k/<folder>/images/...   and   train800.txt val200.txt train800val200.txt test.txt
  each line: 'relative/image/path label' (label from 0). Folders: caltech101 cifar dtd oxford_flowers102
  oxford_iiit_pet svhn sun397 patch_camelyon eurosat resisc45 diabetic_retinopathy clevr_count clevr_dist
  dmlab kitti dsprites_loc dsprites_ori smallnorb_azi smallnorb_ele ('-jpg' suffixes are accepted).
How to get it: the NOAH repository (ZhangYuanhan-AI/NOAH, data/vtab-source) links a packed vtab-1k
archive and the script that builds it from TensorFlow Datasets; unpack it under <root>/vtab-1k/.
A Hugging Face mirror works too, read directly (--data-path vtab1k/<task>=hf:<id>?image=<col>&label=<col>)
or written into this layout: bob data prepare vtab1k --root <root> --from-hf 'hf:<org>/<name>-{task}?image=<col>'.
Then: bob data verify vtab1k --root <root>""",
    "fgvc": """FGVC (VPT's preparation, KMnP/vpt): per dataset a folder with the images and train.json,
val.json, test.json ({"relative/image/path": class_id, ...}); VPT split the official train set into
train/val. Folders and image sub-folders: CUB_200_2011 (images/), nabirds (images/), OxfordFlower (.),
Stanford-dogs (Images/), Stanford-cars (.), under <root>/fgvc/ or <root>/.
How to get it: download each dataset from its official page and the split json files linked from
VPT's README (the official sources need a browser or a licence click-through), or write the layout
from a Hugging Face mirror: bob data prepare fgvc --root <root> --from-hf 'hf:<org>/<name>-{task}?image=<col>'.
Then: bob data verify fgvc --root <root>""",
}




def _check_hook(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False) -> TaskCheck:
    return check_task_data(task_id, data_root, override, open_images=open_images)[0]


def _prepare_hook(suite: str):
    def prepare(root: Path, source: str, tasks: list[str] | None, log) -> list[Path]:
        from .prepare import prepare_suite_from_hf

        return prepare_suite_from_hf(suite, root, source, tasks, log=log)

    return prepare


SUITE_TABLES = {  # how the tables present each suite (the rules are those of the papers)
    "vtab1k": {"title": "VTAB-1k", "rule": "mean_of_group_means", "plain_mean": True, "group_columns": True,
               "caption": "VTAB-1k (top-1 %, test; Natural / Specialized / Structured means, then the mean of the three)"},
    "fgvc": {"title": "FGVC", "rule": "mean_of_tasks", "caption": "FGVC (top-1 %, test)"},
}
GROUP_TITLES = {"fgvc": "FGVC"}


def _register(suite: str) -> None:
    cfg = suite_config(suite)
    for t in cfg["tasks"]:
        task_id = f"{suite}/{t['name']}"
        TASKS.add(
            task_id,
            functools.partial(make_suite_task, task_id),
            kind=cfg["kind"],
            group=f"{suite}/{t['group']}",
            suite=suite,
            num_classes=t["classes"],
            metric=cfg["metric"],
            description=f"{cfg['description'].split(':')[0]} {t['name']} ({t['group']})",
            class_names=has_class_names(task_id),
            train_size=cfg["splits"].get(cfg["protocol"]["tune"][0]),  # declared counts (VTAB-1k: 800); lets knn check k at expansion
        )
    groups = [{"name": g, "title": GROUP_TITLES.get(g, g.capitalize()), "tasks": [f"{suite}/{t['name']}" for t in cfg["tasks"] if t["group"] == g]}
              for g in cfg["group_order"]]
    register_suite(suite, groups=groups, check_data=_check_hook, prepare=_prepare_hook(suite), prepare_notes=PREPARE_NOTES[suite],
                   **SUITE_TABLES[suite])


for _suite in SUITES:
    _register(_suite)
