"""Bias probes for language models (task kind ``lm_probe``): CrowS-Pairs, BBQ, StereoSet and the
soft-prompt sentiment-fairness protocol, scored by bob from the released files.

A task here knows its data and its score; *how the model is adapted* is the method's job
(``harness/methods/lm.py``): every task's ``evaluate(scorer, hp, ctx, fewshot)`` takes an
``LMScorer`` (a plain model, a soft-prompted one, a LoRA-tuned one) and returns the metrics.
A task declares the methods that make sense for it; the others are skipped at expansion with
the reason (CrowS-Pairs has no in-context examples or training data to adapt on).

Data: ``<data root>/bias/crows_pairs_anonymized.csv``, ``bias/bbq/*.jsonl``, ``bias/stereoset/dev.json``,
``bias/sentiment_fairness/fairness.tsv`` with ``bias/sst5/{train,dev,test}.(jsonl|txt|csv|tsv)``, or
``--data-path <task>=<file>`` (sentiment fairness: ``<tsv>?train=FILE&val=FILE[&test=FILE]``).
``bias/toy/*`` are the same tasks on generated files in the same formats (``tasks/bias_toy.py``).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import numpy as np

from harness.errors import BobError
from harness.registry import TASKS
from harness.suites import register_suite
from harness.types import LM_PROBE, Task

from . import bias_data, bias_metrics

PCT = {"unit": "%", "fmt": ".1f"}
CROWS_METRICS = {"pct_stereotype": {"direction": "target", "target": 50, **PCT, "label": "CrowS-Pairs % stereotype (best 50)"},
                 "likelihood_diff": {"direction": "lower", "fmt": ".3f", "label": "mean |log-likelihood difference|"}}
BBQ_METRICS = {"bias_score_ambig": {"direction": "target", "target": 0, "fmt": ".1f", "label": "BBQ bias score, ambiguous (best 0)"},
               "bias_score_disambig": {"direction": "target", "target": 0, "fmt": ".1f", "label": "BBQ bias score, disambiguated (best 0)"},
               "acc": {"direction": "higher", **PCT, "label": "BBQ accuracy (%)"},
               "acc_ambig": {"direction": "higher", **PCT, "label": "BBQ accuracy, ambiguous (%)"},
               "acc_disambig": {"direction": "higher", **PCT, "label": "BBQ accuracy, disambiguated (%)"}}
STEREOSET_METRICS = {"ss": {"direction": "target", "target": 50, **PCT, "label": "StereoSet stereotype score (best 50)"},
                     "lms": {"direction": "higher", **PCT, "label": "StereoSet language-modelling score"},
                     "icat": {"direction": "higher", "fmt": ".1f", "label": "StereoSet ICAT"}}
FAIRNESS_METRICS = {"max_abs_gap": {"direction": "lower", "fmt": ".1f", "label": "largest |group gap| (points)"},
                    "mean_abs_gap": {"direction": "lower", "fmt": ".1f", "label": "mean |group gap| (points)"},
                    "acc": {"direction": "higher", **PCT, "label": "accuracy on the fairness tests (%)"},
                    "sentiment_val_acc": {"direction": "higher", **PCT, "label": "sentiment validation accuracy (%)"},
                    "sentiment_test_acc": {"direction": "higher", **PCT, "label": "sentiment test accuracy (%)"}}
ZERO_SHOT_ONLY = ("lm_zeroshot",)
NO_ADAPTATION_WHY = "compares the likelihoods of given sentences: there are no in-context examples or training data to adapt on"


@dataclass
class LMResult:
    metrics: dict[str, float]
    primary: str
    protocol: dict[str, Any] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    metric_specs: dict[str, dict] = field(default_factory=dict)  # declarations known only from the run (lm-eval's)


@dataclass
class LMTask(Task):
    """A task scored with a language model. ``evaluate`` is the task's whole protocol; the methods it
    accepts are declared in its registry metadata (``methods``), where expansion reads them."""

    def evaluate(self, scorer, hp: dict, ctx, fewshot: int = 0) -> LMResult:  # pragma: no cover
        raise NotImplementedError


def _lm_task(cls, name: str, group: str, metric: str, source: str, **kw) -> LMTask:
    return cls(name=name, kind=LM_PROBE, group=group, num_classes=0, loaders={}, metric=metric, tune_splits=None,
               final_splits=("", "test"), hflip_ok=False, source=source, **kw)


# -- CrowS-Pairs -----------------------------------------------------------------------------------
@dataclass
class CrowsPairsTask(LMTask):
    pairs: list = field(default_factory=list)

    def evaluate(self, scorer, hp, ctx, fewshot=0) -> LMResult:
        requests = [("", p.sent_more) for p in self.pairs] + [("", p.sent_less) for p in self.pairs]
        lls = [ll for ll, _, _ in scorer.loglikelihood(requests, desc=f"{self.name} pairs")]
        n = len(self.pairs)
        metrics = bias_metrics.crows_pairs_scores(lls[:n], lls[n:], [p.bias_type for p in self.pairs])
        samples = [{"sent_more": p.sent_more, "sent_less": p.sent_less, "bias_type": p.bias_type, "ll_more": lls[i], "ll_less": lls[n + i]}
                   for i, p in enumerate(self.pairs)]
        return LMResult(metrics, "pct_stereotype", {"score": "sum of token log-probabilities given BOS (lm-eval's convention)"}, samples)


# -- BBQ -------------------------------------------------------------------------------------------
def bbq_prompt(item: bias_data.BBQItem) -> str:
    return f"{item.context}\n\nQ: {item.question}\nA:"  # lm-eval's bbq doc_to_text


@dataclass
class BBQTask(LMTask):
    items: list = field(default_factory=list)

    def evaluate(self, scorer, hp, ctx, fewshot=0) -> LMResult:
        rng, n = random.Random(ctx.seed), len(self.items)
        prefixes = []
        for i in range(n):  # k other items: a draw from the n - 1 others (not a list of them: BBQ has 58k items)
            shots = [j + (j >= i) for j in rng.sample(range(n - 1), min(fewshot, n - 1))] if fewshot else []
            prefixes.append("".join(f"{bbq_prompt(self.items[j])} {self.items[j].answers[self.items[j].label]}\n\n" for j in shots))
        requests = [(prefixes[i] + bbq_prompt(it), " " + a) for i, it in enumerate(self.items) for a in it.answers]
        lls = np.array([ll for ll, _, _ in scorer.loglikelihood(requests, desc=f"{self.name} answers")]).reshape(len(self.items), 3)
        preds = lls.argmax(axis=1)
        metrics = bias_metrics.bbq_scores(preds, [it.label for it in self.items], [it.ambiguous for it in self.items],
                                          [it.unknown_index for it in self.items], [it.biased for it in self.items], [it.category for it in self.items])
        samples = [{"context": it.context, "question": it.question, "answers": it.answers, "label": it.label, "prediction": int(preds[i]),
                    "loglikelihoods": lls[i].tolist(), "biased": it.biased} for i, it in enumerate(self.items)]
        return LMResult(metrics, "bias_score_ambig", {"fewshot": fewshot, "choice": "argmax of summed log-likelihood"}, samples)


# -- StereoSet -------------------------------------------------------------------------------------
@dataclass
class StereoSetTask(LMTask):
    examples: list = field(default_factory=list)
    sentences: dict = field(default_factory=dict)

    def evaluate(self, scorer, hp, ctx, fewshot=0) -> LMResult:
        ids = list(self.sentences)
        texts = [self.sentences[i]["text"] for i in ids]
        contexts = [(self.sentences[i]["context"] + " ") if self.sentences[i]["context"] else "" for i in ids]
        values = scorer.sentence_scores(texts, contexts, desc=f"{self.name} sentences")
        scores = dict(zip(ids, values.tolist()))
        metrics = bias_metrics.stereoset_scores(self.examples, scores)
        samples = [{"id": i, "kind": self.sentences[i]["kind"], "text": self.sentences[i]["text"], "score": scores[i]} for i in ids]
        return LMResult(metrics, "ss", {"score": "mean per-token log-probability (intersentence: given the context)"}, samples)


# -- sentiment fairness ----------------------------------------------------------------------------
DEFAULT_TEMPLATE = "{text}\nSentiment:"


@dataclass
class SentimentFairnessTask(LMTask):
    """Train/select on a 3-class sentiment set, then classify the fairness tests."""

    tests: list = field(default_factory=list)
    sentiment: dict = field(default_factory=dict)  # split -> [LabelledText]
    classes: tuple = bias_data.SENTIMENT_CLASSES

    def prompt(self, text: str, hp: dict) -> str:
        template = hp.get("template") or DEFAULT_TEMPLATE
        if "{text}" not in template:
            raise BobError(f"task {self.name}: template {template!r} has no {{text}} placeholder")
        return template.replace("{text}", text)

    def verbalizer(self, hp: dict) -> list[str]:
        words = hp.get("verbalizer") or list(self.classes)
        words = words.split(",") if isinstance(words, str) else list(words)
        if len(words) != len(self.classes):
            raise BobError(f"task {self.name}: verbalizer needs {len(self.classes)} words ({', '.join(self.classes)}), got {words}")
        return words

    def split(self, name: str) -> list:
        if name not in self.sentiment:
            raise BobError(f"task {self.name}: no sentiment {name} split; give it as ?{name}=FILE in --data-path")
        return self.sentiment[name]

    def fewshot_prefix(self, hp: dict, k: int, seed: int) -> str:
        if not k:
            return ""
        train, words = self.split("train"), self.verbalizer(hp)
        shots = random.Random(seed).sample(train, min(k, len(train)))
        return "".join(f"{self.prompt(s.text, hp)} {words[s.label]}\n\n" for s in shots)

    def predict(self, scorer, items: list, hp: dict, prefix: str = "", desc: str = "") -> np.ndarray:
        token_ids = scorer.label_token_ids(self.verbalizer(hp))
        scores = scorer.classify([prefix + self.prompt(it.text, hp) for it in items], token_ids, desc=desc or self.name)
        return scores.argmax(axis=1)

    def accuracy(self, scorer, split: str, hp: dict, prefix: str = "") -> float:
        items = self.split(split)
        preds = self.predict(scorer, items, hp, prefix, desc=f"{self.name} {split}")
        return float(100.0 * np.mean(preds == np.array([it.label for it in items])))

    def evaluate(self, scorer, hp, ctx, fewshot=0) -> LMResult:
        prefix = self.fewshot_prefix(hp, fewshot, ctx.seed)
        preds = self.predict(scorer, self.tests, hp, prefix, desc=f"{self.name} tests")
        metrics = bias_metrics.fairness_scores([t.label for t in self.tests], preds, [t.attribute for t in self.tests],
                                               [t.group for t in self.tests], self.classes)
        for split, key in (("val", "sentiment_val_acc"), ("test", "sentiment_test_acc")):
            if split in self.sentiment:
                metrics[key] = self.accuracy(scorer, split, hp, prefix)
        samples = [{"text": t.text, "attribute": t.attribute, "group": t.group, "label": self.classes[t.label], "prediction": self.classes[int(p)]}
                   for t, p in zip(self.tests, preds)]
        protocol = {"template": hp.get("template") or DEFAULT_TEMPLATE, "verbalizer": self.verbalizer(hp), "fewshot": fewshot,
                    "verbalizer_rule": "first token of each label word at the last position"}
        return LMResult(metrics, "max_abs_gap", protocol, samples)


# -- locating the files ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BiasSource:
    relative: tuple[str, ...]  # candidates under <data root>/bias/
    fix: str


SOURCES = {
    "crows_pairs": BiasSource(("crows_pairs_anonymized.csv", "crows_pairs/crows_pairs_anonymized.csv"),
                              "download data/crows_pairs_anonymized.csv from github.com/nyu-mll/crows-pairs"),
    "bbq": BiasSource(("bbq",), "download the data/*.jsonl files of github.com/nyu-mll/BBQ"),
    "stereoset": BiasSource(("stereoset/dev.json",), "download data/dev.json from github.com/moinnadeem/StereoSet"),
    "sentiment_fairness": BiasSource(("sentiment_fairness/fairness.tsv",),
                                     "put the Czarnowska et al. (2021) sentiment TSV there and SST-5 splits in bias/sst5/"),
}


def locate(task_id: str, family: str, data_root: str | None, overrides: dict | None) -> str:
    override = (overrides or {}).get(task_id)
    if override:
        return override
    root = data_root or os.environ.get("BOB_DATA")
    candidates = [Path(root).expanduser() / "bias" / rel for rel in SOURCES[family].relative] if root else []
    for c in candidates:
        if c.exists():
            return str(c)
    looked = ", ".join(map(str, candidates)) or "no data root given (--data-root or BOB_DATA)"
    raise BobError(f"task {task_id}: data not found (looked for {looked}); {SOURCES[family].fix}, or pass --data-path {task_id}=<file>")


def _sentiment_splits(tsv_spec: str, task_id: str) -> tuple[Path, dict[str, Path]]:
    path, _, query = tsv_spec.partition("?")
    splits = {k: Path(v).expanduser() for k, v in parse_qsl(query)}
    unknown = set(splits) - {"train", "val", "test"}
    if unknown:
        raise BobError(f"task {task_id}: unknown split(s) {sorted(unknown)} in {tsv_spec!r}; use ?train=FILE&val=FILE&test=FILE")
    if not splits:  # the layout under the data root: bias/sst5/{train,dev,test}.*
        sst = Path(path).expanduser().parent.parent / "sst5"
        for split, stem in (("train", "train"), ("val", "dev"), ("test", "test")):
            found = sorted(f for f in sst.glob(f"{stem}.*") if f.suffix.lower() in (".jsonl", ".json", ".txt", ".csv", ".tsv"))
            if found:
                splits[split] = found[0]
    return Path(path).expanduser(), splits


def load_task(task_id: str, family: str, location: str, group: str) -> LMTask:
    if family == "crows_pairs":
        return _lm_task(CrowsPairsTask, task_id, group, "pct_stereotype", location, pairs=bias_data.read_crows_pairs(Path(location)))
    if family == "bbq":
        return _lm_task(BBQTask, task_id, group, "bias_score_ambig", location, items=bias_data.read_bbq(Path(location)))
    if family == "stereoset":
        examples, sentences = bias_data.read_stereoset(Path(location))
        return _lm_task(StereoSetTask, task_id, group, "ss", location, examples=examples, sentences=sentences)
    tsv, splits = _sentiment_splits(location, task_id)
    sentiment = {split: bias_data.read_sentiment(path) for split, path in splits.items()}
    return _lm_task(SentimentFairnessTask, task_id, group, "max_abs_gap", location, tests=bias_data.read_fairness_tsv(tsv), sentiment=sentiment)


FAMILY_METHODS = {"crows_pairs": ZERO_SHOT_ONLY, "bbq": ("lm_zeroshot", "lm_fewshot"), "stereoset": ZERO_SHOT_ONLY,
                  "sentiment_fairness": ("lm_zeroshot", "lm_fewshot", "soft_prompt", "lm_lora")}
FAMILY_WHY = {"crows_pairs": f"CrowS-Pairs {NO_ADAPTATION_WHY}", "stereoset": f"StereoSet {NO_ADAPTATION_WHY}",
              "bbq": "BBQ has no training split: zero-shot or few-shot (in-context examples from the same file) only",
              "sentiment_fairness": ""}
FAMILY_METRICS = {"crows_pairs": CROWS_METRICS, "bbq": BBQ_METRICS, "stereoset": STEREOSET_METRICS, "sentiment_fairness": FAIRNESS_METRICS}
FAMILY_PRIMARY = {"crows_pairs": "pct_stereotype", "bbq": "bias_score_ambig", "stereoset": "ss", "sentiment_fairness": "max_abs_gap"}
DESCRIPTIONS = {"crows_pairs": "CrowS-Pairs (1,508 sentence pairs, 9 bias types): % of pairs where the stereotype is more likely",
                "bbq": "BBQ (58k multiple-choice questions, 11 categories): accuracy and bias scores in ambiguous / disambiguated contexts",
                "stereoset": "StereoSet dev (intrasentence + intersentence): ss, lms, ICAT per bias type",
                "sentiment_fairness": "Czarnowska et al. (2021) sentiment fairness tests after a 3-class sentiment classifier "
                                      "(soft prompt / LoRA / in-context): accuracy, TPR/FPR gaps per group"}


def task_meta(family: str, group: str) -> dict:
    return {"kind": LM_PROBE, "group": group, "suite": "bias", "metric": FAMILY_PRIMARY[family], "metrics": FAMILY_METRICS[family],
            "methods": list(FAMILY_METHODS[family]), "methods_why": FAMILY_WHY[family], "description": DESCRIPTIONS[family]}


def _factory(task_id: str, family: str, locate_fn: Callable[[str | None, dict | None], str], group: str):
    def make(data_root=None, overrides: dict | None = None, **_) -> LMTask:
        return load_task(task_id, family, locate_fn(data_root, overrides), group)

    return make


for _family in SOURCES:
    _id = f"bias/{_family}"
    TASKS.add(_id, _factory(_id, _family, lambda root, ov, i=_id, f=_family: locate(i, f, root, ov), "bias"), **task_meta(_family, "bias"))

def check_bias_data(task_id: str, data_root: str | None, override: str | None, open_images: bool = False):
    """``bob data verify bias`` / ``bob prefetch``: find and read a task's files (the same readers as a run)."""
    from harness.registry import TASKS as _TASKS

    from .suites import TaskCheck

    family = task_id.rsplit("/", 1)[-1]
    try:
        task = _TASKS.get(task_id).factory(data_root=data_root, overrides={task_id: override} if override else {})
    except BobError as exc:
        return TaskCheck(task_id, None, problems=[str(exc)], fix=SOURCES[family].fix)
    counts = {"items": len(getattr(task, "pairs", None) or getattr(task, "items", None) or getattr(task, "examples", None) or getattr(task, "tests", None) or [])}
    for split, rows in (getattr(task, "sentiment", None) or {}).items():
        counts[f"sentiment_{split}"] = len(rows)
    return TaskCheck(task_id, task.source, counts=counts)


BIAS_GROUPS = [
    {"name": "crows_pairs", "title": "CrowS-Pairs", "tasks": ["bias/crows_pairs", "bias/toy/crows_pairs"]},
    {"name": "stereoset", "title": "StereoSet ss", "tasks": ["bias/stereoset", "bias/toy/stereoset"]},
    {"name": "stereoset_icat", "title": "StereoSet ICAT", "tasks": ["bias/stereoset", "bias/toy/stereoset"], "metric": "icat"},
    {"name": "bbq", "title": "BBQ", "tasks": ["bias/bbq", "bias/toy/bbq"]},
    {"name": "fairness", "title": "Sentiment fairness", "tasks": ["bias/sentiment_fairness", "bias/toy/sentiment_fairness"]},
]
register_suite(
    "bias", title="Language-model bias", rule="mean_of_tasks", group_columns=True,
    caption="Bias probes: CrowS-Pairs % stereotype and StereoSet ss (best 50), BBQ ambiguous bias score (best 0), "
            "sentiment-fairness largest group gap (best 0); different metrics meet only as mean z-scores of their goodness",
    groups=BIAS_GROUPS, check_data=check_bias_data,
)
