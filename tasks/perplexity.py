"""Perplexity as an LM task: rolling log-likelihood of whole documents (lm-eval's ``wikitext`` protocol).

- ``perplexity:<text file>``: a local UTF-8 file; documents are separated by blank lines.
- ``wikitext2``: WikiText-2 (raw, test split, one document per Wikipedia page) from the hub
  (``EleutherAI/wikitext_document_level``, as lm-eval reads it), or a local file through
  ``data_paths: {wikitext2: FILE}``.

Scored through ``LMScorer.rolling_loglikelihood`` (disjoint windows of the model's context, each
token predicted from as many preceding tokens as fit), so the numbers are lm-eval's: word and
byte perplexity, bits per byte, and token perplexity (tokenizer-dependent: comparable only within
one model, e.g. a model and its compressed twins — the GPTQ paper's table).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BobError
from harness.registry import TASKS, Entry
from harness.types import LM_PROBE

from .bias import LMResult, LMTask

METRICS = {"word_perplexity": {"direction": "lower", "fmt": ".2f", "label": "word perplexity"},
           "byte_perplexity": {"direction": "lower", "fmt": ".4f", "label": "byte perplexity"},
           "bits_per_byte": {"direction": "lower", "fmt": ".4f", "label": "bits per byte"},
           "token_perplexity": {"direction": "lower", "fmt": ".2f", "label": "token perplexity (this tokenizer)"}}
WIKITEXT_HUB = ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", "page")
WHY = "perplexity scores the model as it is (compressed or not): no in-context examples or training data"


def read_documents(path: Path) -> list[str]:
    if not path.is_file():
        raise BobError(f"perplexity text file {path} does not exist; give a UTF-8 text file (documents separated by blank lines)")
    text = path.read_text(encoding="utf-8")
    docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    if not docs:
        raise BobError(f"perplexity text file {path} is empty")
    return docs


def hub_documents() -> list[str]:
    """WikiText-2 test pages through ``datasets`` (needs the hub or its local cache)."""
    try:
        import datasets
    except ImportError:
        raise BobError("wikitext2 from the hub needs datasets: pip install 'bob-harness[lm]', or pass data_paths: {wikitext2: FILE}") from None
    repo, config, split, column = WIKITEXT_HUB
    try:
        rows = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:
        raise BobError(f"wikitext2: {repo} ({config}) could not be loaded ({str(exc).splitlines()[0][:160]}); "
                       "on a machine with internet run it once to fill the cache, or pass data_paths: {wikitext2: FILE}") from None
    return [r[column] for r in rows if r[column].strip()]


@dataclass
class PerplexityTask(LMTask):
    documents: list = field(default_factory=list)

    def evaluate(self, scorer, hp, ctx, fewshot=0) -> LMResult:
        limit = hp.get("limit")
        docs = self.documents[: int(limit)] if limit else self.documents
        lls = scorer.rolling_loglikelihood(docs, desc=f"{self.name} perplexity")
        total = sum(lls)
        words = sum(len(d.split()) for d in docs)
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        tokens = sum(len(scorer.encode(d)) for d in docs)
        metrics = {"word_perplexity": math.exp(-total / words), "byte_perplexity": math.exp(-total / n_bytes),
                   "bits_per_byte": -total / (n_bytes * math.log(2)), "token_perplexity": math.exp(-total / tokens),
                   "n_documents": len(docs), "n_tokens": tokens}
        protocol = {"scoring": "rolling log-likelihood (lm-eval loglikelihood_rolling), disjoint windows of the context",
                    "context_tokens": scorer.max_length, "documents": len(docs), "source": self.source}
        return LMResult(metrics, "word_perplexity", protocol)


def _task(name: str, docs: list[str], source: str) -> PerplexityTask:
    return PerplexityTask(name=name, kind=LM_PROBE, group="perplexity", num_classes=0, loaders={}, metric="word_perplexity", tune_splits=None,
                          final_splits=("", "test"), hflip_ok=False, source=source, documents=docs)


def task_meta() -> dict:
    return {"kind": LM_PROBE, "group": "perplexity", "metric": "word_perplexity", "metrics": METRICS, "methods": ["lm_zeroshot"],
            "methods_why": WHY}


def _resolve(full_name: str) -> Entry:
    path = Path(full_name.split(":", 1)[1]).expanduser()
    if not full_name.split(":", 1)[1]:
        raise BobError("task 'perplexity:' needs a text file: perplexity:<path>")

    def factory(data_root=None, overrides=None, **_):
        return _task(full_name, read_documents(path), str(path))

    return Entry(full_name, factory, {**task_meta(), "description": f"perplexity of {path}"})


def _wikitext2(data_root=None, overrides=None, **_):
    local = (overrides or {}).get("wikitext2")
    if local:
        return _task("wikitext2", read_documents(Path(local).expanduser()), local)
    return _task("wikitext2", hub_documents(), "hf:" + "/".join(WIKITEXT_HUB[:3]))


TASKS.add("wikitext2", _wikitext2, **task_meta(), description="WikiText-2 (raw) test perplexity, rolling log-likelihood per page")
TASKS.add_prefix("perplexity", _resolve, "perplexity of a local text file works as perplexity:<path>")
