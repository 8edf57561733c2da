"""``lmeval:<task or group>``: any lm-eval task, run by ``lm_eval.simple_evaluate`` with a bob backbone
as the model, so its numbers land in bob records, sweeps and tables.

The model is :class:`BobLM`, an ``lm_eval.api.model.LM`` on bob's ``LMScorer``: the same tokenisation
and log-likelihood code as bob's own bias scorers (so ``lmeval:crows_pairs_english`` and
``bias/crows_pairs`` agree on one model and one file), the soft prompt or LoRA of an adapted model
included. Every metric and its stderr goes into the record (``pct_stereotype``,
``pct_stereotype_stderr``; a group's subtasks as ``<subtask>/<metric>``), and lm-eval's per-sample
log (``log_samples``) is written beside the record.

Offline: ``lmeval:<task>?data=FILE`` (or ``--data-path lmeval:<task>=FILE``) replaces the task's hub
dataset by a local csv / json / jsonl / parquet file: bob writes a task YAML that ``include:``s the
original and sets ``dataset_path`` + ``dataset_kwargs.data_files`` (lm-eval's own mechanism), so
the task's prompts, filters and metrics are lm-eval's, unchanged.
"""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from harness.errors import BobError, did_you_mean
from harness.registry import TASKS, Entry
from harness.types import LM_PROBE

from .bias import LMResult, LMTask

# lm-eval says only higher/lower; these metrics are best at a value (lm-eval's own scale: fractions)
TARGETS = {"pct_stereotype": 0.5, "amb_bias_score": 0.0, "disamb_bias_score": 0.0}
PRIMARY_PREFERENCE = ("pct_stereotype", "amb_bias_score", "acc_norm", "acc", "exact_match", "f1")
DATA_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".tsv": "csv"}


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise BobError("lmeval: tasks need lm-eval: pip install 'bob-harness[lm]' (or pip install 'lm-eval[hf]')") from None
    import lm_eval.tasks

    return lm_eval


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None = None):
    """lm-eval's task index: all of lm-eval's tasks (seconds to build: once per process), or only bob's local
    task YAML in ``include_path`` (it ``include:``s the original by path, so lm-eval's index is not needed)."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=False) if include_path else TaskManager()


def parse(name: str) -> tuple[str, dict[str, str]]:
    spec = name.split(":", 1)[1]
    task, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"data", "split"}
    if unknown:
        raise BobError(f"task {name}: unknown option(s) {', '.join(sorted(unknown))}; use lmeval:<task>?data=FILE[&split=test]")
    if not task:
        raise BobError("task 'lmeval:' needs an lm-eval task name, e.g. lmeval:crows_pairs_english (`lm-eval ls tasks` lists them)")
    return task, options


def validate(task: str) -> None:
    tm = task_manager()
    if task not in tm.all_tasks:
        raise BobError(f"unknown lm-eval task '{task}'{did_you_mean(task, tm.all_tasks)}; `lm-eval ls tasks` lists the {len(tm.all_tasks)} known ones")


def local_task_yaml(task: str, data_file: Path, split: str | None) -> tuple[str, str]:
    """A task YAML in a fresh folder that includes ``task``'s own YAML with the dataset replaced: (folder, task name)."""
    import yaml

    tm = task_manager()
    kind, yaml_path = _index_entry(tm, task)
    if kind != "task" or not str(yaml_path or "").endswith(".yaml"):
        raise BobError(f"lmeval:{task} is a {kind} of tasks: give a local data file per task (lmeval:<task>?data=FILE), "
                       f"e.g. lmeval:{next((t for t in tm.all_subtasks if t.startswith(task)), task + '_<sub>')}")
    data_file = Path(data_file).expanduser().resolve()
    if not data_file.is_file():
        raise BobError(f"lmeval:{task}: data file {data_file} does not exist")
    fmt = DATA_FORMATS.get(data_file.suffix.lower())
    if fmt is None:
        raise BobError(f"lmeval:{task}: data file {data_file} must be one of {', '.join(DATA_FORMATS)}")
    original = yaml.safe_load(_strip_functions(Path(yaml_path).read_text())) or {}
    split = split or original.get("test_split") or original.get("validation_split") or "test"
    local_name = f"bob_local__{task}"
    config = {"include": str(yaml_path), "task": local_name, "tag": [], "dataset_path": fmt, "dataset_name": None,
              "dataset_kwargs": {"data_files": {split: str(data_file)}, **({"delimiter": "\t"} if data_file.suffix.lower() == ".tsv" else {})},
              "test_split": split}
    for key in ("training_split", "validation_split", "fewshot_split"):
        if original.get(key) and original.get(key) != split:
            config[key] = None if key != "fewshot_split" else split  # the local file is the only split
    folder = Path(tempfile.mkdtemp(prefix="bob-lmeval-"))
    (folder / f"{local_name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return str(folder), local_name


def _index_entry(tm, task: str) -> tuple[str, str | None]:
    """(task | group | tag, its YAML) from lm-eval's index (a dict in older releases, an Entry in newer ones)."""
    info = tm.task_index.get(task)
    if isinstance(info, dict):
        return str(info.get("type", "group")), info.get("yaml_path")
    kind = getattr(getattr(info, "kind", None), "name", "group").lower()
    return kind, (str(info.yaml_path) if getattr(info, "yaml_path", None) else None)


def _strip_functions(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "!function" not in line)


@functools.lru_cache(maxsize=1)
def bob_lm_class():
    """``BobLM``, built on first use (importing lm_eval costs seconds)."""
    from lm_eval.api.model import LM

    class BobLM(LM):
        """lm-eval's model interface on a bob ``LMScorer``."""

        def __init__(self, scorer):
            super().__init__()
            self.scorer = scorer

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return [(ll, greedy) for ll, greedy, _ in self.scorer.loglikelihood([r.args for r in requests], desc="lm-eval log-likelihood")]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return self.scorer.rolling_loglikelihood([r.args[0] for r in requests])

        def generate_until(self, requests, disable_tqdm: bool = False):
            out = []
            for r in requests:
                context, kwargs = r.args
                until = kwargs.get("until") or [self.scorer.tokenizer.eos_token or "\n\n"]
                until = [until] if isinstance(until, str) else list(until)
                out.append(self.scorer.generate([context], until, int(kwargs.get("max_gen_toks", 64)))[0])
            return out

    return BobLM


def flatten_results(results: dict, task: str) -> tuple[dict[str, float], dict[str, dict], str]:
    """(metrics, declarations, primary) from simple_evaluate's output."""
    per_task = results.get("results", {})
    hib = results.get("higher_is_better", {})
    metrics: dict[str, float] = {}
    specs: dict[str, dict] = {}
    single = len(per_task) == 1
    for name, values in per_task.items():
        prefix = "" if single or name == task else f"{name}/"
        for key, value in values.items():
            if key == "alias" or not isinstance(value, (int, float)) or value == "N/A":
                continue
            metric, _, filt = key.partition(",")
            label = metric + (f"[{filt}]" if filt and filt != "none" else "")
            metrics[prefix + label] = float(value)
            base = metric.removesuffix("_stderr")
            if metric.endswith("_stderr"):
                continue
            target = next((t for m, t in TARGETS.items() if base == m or base.startswith(m + "_")), None)
            if target is not None:
                specs[prefix + label] = {"direction": "target", "target": target, "fmt": ".3f"}
            elif base in hib.get(name, {}):
                specs[prefix + label] = {"direction": "higher" if hib[name][base] else "lower", "fmt": ".3f"}
    if not metrics:
        raise BobError(f"lm-eval returned no metrics for {task}")
    names = [m for m in metrics if not m.endswith("_stderr")]
    primary = next((m for pref in PRIMARY_PREFERENCE for m in names if m == pref or m.endswith("/" + pref)), names[0])
    return metrics, specs, primary


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class LMEvalTask(LMTask):
    """One lm-eval task (or group). ``evaluate`` runs simple_evaluate on the scorer."""

    def __init__(self, name: str, lm_task: str, include_path: str | None, limit: float | None = None):
        super().__init__(name=name, kind=LM_PROBE, group="lmeval", num_classes=0, loaders={}, metric="", tune_splits=None,
                         final_splits=("", "test"), hflip_ok=False, source=f"lm-eval {lm_task}")
        self.lm_task, self.include_path = lm_task, include_path

    def evaluate(self, scorer, hp, ctx, fewshot=0) -> LMResult:
        import logging

        from lm_eval import simple_evaluate

        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        model = bob_lm_class()(scorer)
        results = simple_evaluate(model=model, tasks=[self.lm_task], num_fewshot=fewshot, limit=hp.get("limit"), log_samples=True,
                                  task_manager=task_manager(self.include_path), bootstrap_iters=int(hp.get("bootstrap_iters") or 1000),
                                  random_seed=ctx.seed, numpy_random_seed=ctx.seed, torch_random_seed=ctx.seed, fewshot_random_seed=ctx.seed)
        metrics, specs, primary = flatten_results(results, self.lm_task)
        import lm_eval

        protocol = {"lm_eval_version": lm_eval.__version__, "lm_eval_task": self.lm_task, "num_fewshot": fewshot, "limit": hp.get("limit"),
                    "configs": _json_safe(results.get("configs", {})), "versions": _json_safe(results.get("versions", {}))}
        samples = _json_safe(results.get("samples", {}))
        return LMResult(metrics, primary, protocol, samples, metric_specs=specs)


def _resolve(name: str) -> Entry:
    task, options = parse(name)

    def factory(data_root=None, overrides: dict | None = None, **_) -> LMEvalTask:
        validate(task)
        data = options.get("data") or (overrides or {}).get(name) or (overrides or {}).get(f"lmeval:{task}")
        include, run_task = (local_task_yaml(task, Path(data), options.get("split")) if data else (None, task))
        return LMEvalTask(name, run_task, include)

    def prefetch(task_id, data_root, override, open_images=False):
        """Download the task's dataset into the Hugging Face datasets cache (a login node with internet)."""
        from .suites import TaskCheck

        try:
            made = factory(data_root, {task_id: override} if override else {})
            task_manager(made.include_path).load_task_or_group([made.lm_task])
        except Exception as exc:  # a dataset that cannot be fetched: reported, the other items go on
            return TaskCheck(task_id, None, problems=[str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__],
                             fix=f"run `bob prefetch` where huggingface.co is reachable, or give a local file: lmeval:{task}?data=FILE")
        return TaskCheck(task_id, f"lm-eval {made.lm_task}", counts={})

    factory.__module__ = __name__
    return Entry(name, factory, {"kind": LM_PROBE, "group": "lmeval", "methods": ["lm_zeroshot", "lm_fewshot"], "prefetch": prefetch,
                                 "methods_why": "lm-eval tasks are evaluated zero- or few-shot (num_fewshot)",
                                 "description": f"lm-eval task {task}"})


TASKS.add_prefix("lmeval", _resolve, "any lm-eval task works as lmeval:<task>[?data=<local file>]")
