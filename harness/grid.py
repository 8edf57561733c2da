"""Grid files: a YAML description of a sweep, validated strictly and expanded into cells.

```yaml
name: quickstart
backbones: [timm:resnet18.a1_in1k, {name: timm:vit_tiny_patch16_224.augreg_in21k, weights: random}]
weights: auto                 # default for all backbones: pretrained | random | auto | a file path
compress: [none, {method: rtn, bits: 8}]   # optional: compressed backbones (harness/compress), none = dense
methods: [knn, linear, finetune]
tasks: [digits, shapes/location]
seeds: [0, 1]
hparams:                      # per method ("all" applies to every method); a list is swept
  all: {img_size: 32}
  finetune: {epochs: 8, lr: [1e-3, 3e-4]}
  linear: {search: {C: [0.01, 0.1, 1, 10]}}   # tuned inside the cell on val200
exclude:                      # rules: every key given must match (shell-style patterns allowed)
  - {method: finetune, backbone: "timm:vit_*"}
```
Every problem is reported as one line naming the file and key.
"""
from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BobError, did_you_mean
from .spec import RunSpec

GRID_KEYS = ("name", "backbones", "weights", "methods", "tasks", "seeds", "hparams", "exclude", "include", "data_root", "data_paths", "max_cells", "deterministic", "compress",
             "gpus_per_cell", "nodes_per_cell")
DEFAULT_MAX_CELLS = 100_000  # a grid above this is refused before expansion; raise it with max_cells: or --max-cells
MAX_GRID_VALUES = 100_000  # values in a grid file once YAML aliases are expanded (a billion-laughs file stops here)
MAX_GRID_BYTES = 1_000_000
RULE_KEYS = ("backbone", "method", "task", "seed", "weights", "compress")  # compress matches its label (dense, rtn-w8, wanda-2:4...)
ALL_METHODS = "all"


@dataclass
class Grid:
    name: str
    backbones: list[tuple[str, str]]  # (name, weights)
    methods: list[str]
    tasks: list[str]
    seeds: list[int]
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    data_root: str | None = None
    data_paths: dict[str, str] = field(default_factory=dict)
    source: str = "<grid>"
    max_cells: int = DEFAULT_MAX_CELLS
    deterministic: bool = False  # every cell in deterministic mode (harness.determinism); part of each cell's id
    compress: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # canonical entries; {} = dense
    gpus_per_cell: int = 1  # processes of one cell (GPUs on CUDA, gloo processes on CPU); world size = this x nodes_per_cell
    nodes_per_cell: int = 1


@dataclass
class Expansion:
    cells: list[RunSpec]
    skipped: list[tuple[RunSpec, str]]  # unsupported combinations, with the reason
    excluded: int = 0


def _fail(source: str, message: str) -> BobError:
    return BobError(f"{source}: {message}")


def _str_list(source: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _fail(source, f"'{key}' must be a list of names, got {type(value).__name__} {value!r}")
    if not value:
        raise _fail(source, f"'{key}' is an empty list; list at least one")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _fail(source, f"'{key}' must hold names (strings), got {item!r}")
    return list(value)


def parse_grid(data: Any, source: str = "<grid>") -> Grid:
    """Validate a loaded YAML mapping and turn it into a Grid (no registry lookups yet)."""
    if not isinstance(data, dict):
        raise _fail(source, f"a grid must be a mapping with keys {', '.join(GRID_KEYS)}; got {type(data).__name__}")
    for key in data:
        if key not in GRID_KEYS:
            raise _fail(source, f"unknown key '{key}'{did_you_mean(str(key), GRID_KEYS)}; allowed: {', '.join(GRID_KEYS)}")
    for key in ("backbones", "methods", "tasks"):
        if key not in data:
            raise _fail(source, f"missing required key '{key}'")
    name = data.get("name") or (Path(source).stem if source != "<grid>" else "adhoc")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise _fail(source, f"'name' must be a simple name (letters, digits, - _ .), got {name!r}")
    default_weights = data.get("weights", "pretrained")
    if not isinstance(default_weights, str):
        raise _fail(source, f"'weights' must be pretrained, random, auto or a file path, got {default_weights!r}")

    raw_backbones = data["backbones"]
    if isinstance(raw_backbones, (str, dict)):
        raw_backbones = [raw_backbones]
    if not isinstance(raw_backbones, list) or not raw_backbones:
        raise _fail(source, "'backbones' must be a non-empty list of names or {name, weights} mappings")
    backbones = []
    for item in raw_backbones:
        if isinstance(item, str) and item.strip():
            backbones.append((item, default_weights))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            unknown = set(item) - {"name", "weights"}
            if unknown:
                raise _fail(source, f"backbone entry {item!r} has unknown key(s) {sorted(unknown)}; use name and weights")
            weights = item.get("weights", default_weights)
            for w in weights if isinstance(weights, list) else [weights]:
                backbones.append((item["name"], str(w)))
        else:
            raise _fail(source, f"'backbones' entries must be names or {{name, weights}} mappings, got {item!r}")

    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise _fail(source, f"'seeds' must be a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool):
            raise _fail(source, f"'seeds' must hold integers, got {s!r} ({type(s).__name__})")

    from .values import coerce_numbers

    size = expanded_size(data)
    if size > MAX_GRID_VALUES:
        raise _fail(source, f"the grid expands to {size:,} values (YAML aliases?); a grid file may hold at most {MAX_GRID_VALUES:,}")
    max_cells = data.get("max_cells", DEFAULT_MAX_CELLS)
    if not isinstance(max_cells, int) or isinstance(max_cells, bool) or max_cells < 1:
        raise _fail(source, f"'max_cells' must be a positive integer, got {max_cells!r}")
    for key in ("gpus_per_cell", "nodes_per_cell"):
        value = data.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(source, f"'{key}' must be a positive integer, got {value!r}")
    hparams = coerce_numbers(data.get("hparams") or {})
    if not isinstance(hparams, dict):
        raise _fail(source, f"'hparams' must map method names to {{hyper-parameter: value or list}}, got {hparams!r}")
    for method, values in hparams.items():
        if not isinstance(values, dict):
            raise _fail(source, f"hparams.{method} must be a mapping of hyper-parameter -> value or list, got {values!r}")
        for key, value in values.items():
            if isinstance(value, list) and not value:
                raise _fail(source, f"hparams.{method}.{key} is an empty list; give a value or a non-empty list")

    rules = {}
    for key in ("exclude", "include"):
        raw = data.get(key) or []
        if not isinstance(raw, list):
            raise _fail(source, f"'{key}' must be a list of rules like {{method: finetune, backbone: 'timm:vit_*'}}")
        for rule in raw:
            if not isinstance(rule, dict) or not rule:
                raise _fail(source, f"{key} rule {rule!r} must be a non-empty mapping of {', '.join(RULE_KEYS)}")
            for rk in rule:
                if rk not in RULE_KEYS:
                    raise _fail(source, f"{key} rule has unknown key '{rk}'{did_you_mean(str(rk), RULE_KEYS)}; allowed: {', '.join(RULE_KEYS)}")
        rules[key] = raw
    data_root = data.get("data_root")
    data_paths = data.get("data_paths") or {}
    if not isinstance(data_paths, dict) or not all(isinstance(v, str) for v in data_paths.values()):
        raise _fail(source, "'data_paths' must map task names to a folder or an hf:<dataset> source")
    deterministic = data.get("deterministic", False)
    if not isinstance(deterministic, bool):
        raise _fail(source, f"'deterministic' must be true or false, got {deterministic!r}")
    from .compress.config import parse_compress

    raw_compress = data.get("compress", ["none"])
    raw_compress = raw_compress if isinstance(raw_compress, list) else [raw_compress]
    if not raw_compress:
        raise _fail(source, "'compress' is an empty list; give none and/or entries like {method: rtn, bits: 8}")
    compress: list[dict[str, Any]] = []
    for i, entry in enumerate(raw_compress):
        parsed = parse_compress(entry, f"{source}: compress[{i}]")
        if parsed not in compress:
            compress.append(parsed)
    return Grid(
        name=name,
        backbones=backbones,
        methods=_str_list(source, "methods", data["methods"]),
        tasks=_str_list(source, "tasks", data["tasks"]),
        seeds=list(seeds),
        hparams=hparams,
        exclude=rules["exclude"],
        include=rules["include"],
        data_root=str(data_root) if data_root else None,
        data_paths=dict(data_paths),
        source=source,
        max_cells=max_cells,
        deterministic=deterministic,
        compress=compress,
        gpus_per_cell=data.get("gpus_per_cell", 1),
        nodes_per_cell=data.get("nodes_per_cell", 1),
    )


def expanded_size(value, _memo: dict | None = None) -> int:
    """How many values ``value`` holds with YAML aliases expanded, computed without expanding them
    (an alias is the same Python object, so each distinct container is sized once)."""
    memo = {} if _memo is None else _memo
    if isinstance(value, (list, tuple, dict)):
        key = id(value)
        if key not in memo:
            memo[key] = 0  # a self-referencing alias counts once
            items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
            memo[key] = 1 + sum(expanded_size(v, memo) for v in items)
        return memo[key]
    return 1


def load_grid(path: str | Path) -> Grid:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BobError(f"grid file {path} does not exist")
    raw = path.read_bytes()
    if len(raw) > MAX_GRID_BYTES:
        raise BobError(f"{path}: {len(raw):,} bytes is too large for a grid file (at most {MAX_GRID_BYTES:,}); is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BobError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a grid is a YAML text file, see grids/quickstart.yaml") from None
    if "\x00" in text:
        raise BobError(f"{path}: contains NUL bytes; a grid is a YAML text file, see grids/quickstart.yaml")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise BobError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_grid(data, str(path))


def expand_task_names(names: list[str]) -> list[str]:
    """A suite (``vtab1k``) or group (``vtab1k/natural``) name stands for all its tasks."""
    from .registry import TASKS

    out: list[str] = []
    registered = set(TASKS.names())
    for name in names:
        members = [] if name in registered else [e.name for e in TASKS.entries() if name in (e.meta.get("suite"), e.meta.get("group"))]
        out.extend(m for m in (members or [name]) if m not in out)
    return out


def _matches(rule: dict[str, Any], spec: RunSpec) -> bool:
    from .compress.config import compress_label

    values = {**spec.as_dict(), "compress": compress_label(spec.compress)}
    for key, pattern in rule.items():
        patterns = pattern if isinstance(pattern, list) else [pattern]
        if not any(fnmatch.fnmatchcase(str(values[key]), str(p)) for p in patterns):
            return False
    return True


def _hparam_points(grid: Grid, method: str) -> list[dict[str, Any]]:
    merged = {**grid.hparams.get(ALL_METHODS, {}), **grid.hparams.get(method, {})}
    swept = {k: v for k, v in merged.items() if isinstance(v, list)}
    fixed = {k: v for k, v in merged.items() if not isinstance(v, list)}
    keys = sorted(swept)
    return [{**fixed, **dict(zip(keys, combo))} for combo in itertools.product(*(swept[k] for k in keys))] if keys else [fixed]


def _first_point(grid: Grid, method: str) -> dict[str, Any]:
    merged = {**grid.hparams.get(ALL_METHODS, {}), **grid.hparams.get(method, {})}
    return {k: (v[0] if isinstance(v, list) else v) for k, v in merged.items()}


def count_cells(grid: Grid, n_tasks: int | None = None) -> int:
    """Cells before exclusion: backbones x tasks x seeds x the product of each method's swept lists."""
    import math

    n_tasks = len(grid.tasks) if n_tasks is None else n_tasks
    per_method = 0
    for method in grid.methods:
        merged = {**grid.hparams.get(ALL_METHODS, {}), **grid.hparams.get(method, {})}
        per_method += math.prod(len(v) for v in merged.values() if isinstance(v, list))
    return len(grid.backbones) * n_tasks * len(grid.seeds) * per_method * len(grid.compress)


def expand(grid: Grid, validate: bool = True) -> Expansion:
    """All cells of the grid, in a stable order. Unsupported method/task pairs are reported, not dropped.

    With ``validate`` every name is looked up first (unknown -> one-line error with close
    matches) and every method's hyper-parameters are checked.
    """
    from .registry import BACKBONES, METHODS, TASKS
    from .runner import check_supported

    tasks = expand_task_names(grid.tasks)
    if validate:
        for name, _ in grid.backbones:
            BACKBONES.get(name)
        for name in tasks:
            TASKS.get(name)
        for method in grid.methods:  # keys first, on one representative point: nothing is enumerated yet
            METHODS.get(method).factory().resolve_hparams(_first_point(grid, method))
        for method in grid.hparams:
            if method != ALL_METHODS and method not in grid.methods:
                raise BobError(f"{grid.source}: hparams given for '{method}', which is not in methods{did_you_mean(method, grid.methods)}")
    total = count_cells(grid, len(tasks))
    if total > grid.max_cells:
        raise BobError(f"{grid.source}: the grid has {total:,} cells, more than max_cells={grid.max_cells:,}; "
                       f"narrow the hparams lists, or raise the limit (max_cells: in the grid, or --max-cells)")
    if validate:
        for method in grid.methods:
            cls = METHODS.get(method).factory
            for point in _hparam_points(grid, method):
                cls().resolve_hparams(point)
    cells, skipped, excluded = [], [], 0
    identities: dict[tuple[str, int], dict[str, Any]] = {}
    checked: set[tuple[str, str, int]] = set()
    for (backbone, weights), compress, method, task, seed in itertools.product(grid.backbones, grid.compress, grid.methods, tasks, grid.seeds):
        if validate and compress and (backbone, weights, id(compress)) not in checked:  # a method on a backbone it cannot handle, a 2:4 width...
            from .compress.checks import check_backbone

            check_backbone(compress, backbone, weights, f"{grid.source}: compress")
            checked.add((backbone, weights, id(compress)))
        for hp in _hparam_points(grid, method):
            spec = RunSpec(backbone=backbone, method=method, task=task, seed=seed, weights=weights, hparams=hp, deterministic=grid.deterministic, compress=compress)
            if any(_matches(r, spec) for r in grid.exclude) and not any(_matches(r, spec) for r in grid.include):
                excluded += 1
                continue
            reason = check_supported(spec) if validate else None
            if reason:
                skipped.append((spec, reason))
            else:
                if validate and hasattr(METHODS.get(method).factory, "validate_cell"):  # budgets against the backbone (a rank above a layer's...)
                    METHODS.get(method).factory().validate_cell(spec)
                cells.append(_with_data_identity(spec, grid, identities))
    seen, unique = set(), []
    for spec in cells:
        if spec.id not in seen:
            seen.add(spec.id)
            unique.append(spec)
    return Expansion(unique, skipped, excluded)


def _with_data_identity(spec: RunSpec, grid: Grid, memo: dict[tuple[str, int], dict[str, Any]]) -> RunSpec:
    """The cell with the identity of the data its task draws for it (``RunSpec.data``): a task whose
    metadata has ``data_identity(task, seed, data_root, data_paths) -> dict`` (few-shot subsets) is
    asked once per (task, seed); every other cell is returned unchanged."""
    import dataclasses
    import os

    from .registry import TASKS

    hook = TASKS.get(spec.task).meta.get("data_identity")
    if hook is None:
        return spec
    key = (spec.task, int(spec.seed))
    if key not in memo:
        memo[key] = dict(hook(spec.task, int(spec.seed), grid.data_root or os.environ.get("BOB_DATA"), dict(grid.data_paths)))
    return dataclasses.replace(spec, data=memo[key])
