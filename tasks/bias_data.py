"""Readers for the bias and sentiment data in their released formats; every problem is one line
naming the file, the row and the fix.

- CrowS-Pairs: ``crows_pairs_anonymized.csv`` (columns sent_more, sent_less, stereo_antistereo, bias_type).
- BBQ: the ``data/<Category>.jsonl`` files (context, question, ans0-2, label, context_condition,
  question_polarity, category, answer_info, additional_metadata.stereotyped_groups).
- StereoSet: ``dev.json`` (``data.intrasentence`` / ``data.intersentence``; each example has a
  context, a target, a bias_type and three sentences with gold_label stereotype / anti-stereotype /
  unrelated; intrasentence contexts hold ``BLANK``).
- Czarnowska et al. (2021) sentiment fairness tests: TSV with label, category, group, text.
- Sentiment sets: SST-5 as jsonl / csv / tsv (text + label 0-4 or label names) or the original PTB
  trees (``(3 (2 It) ...)``), SemEval-2018 V-oc files (text + label -3..3; the released tsv's
  "Tweet" / "Intensity Class" columns), or any 3-class file (negative, neutral, positive).
  Five-point labels map to three: 0-1 negative, 2 neutral, 3-4 positive; valence: < 0 negative,
  0 neutral, > 0 positive.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BobError

SENTIMENT_CLASSES = ("negative", "neutral", "positive")
_FIVE = {"very negative": 0, "negative": 1, "neutral": 2, "positive": 3, "very positive": 4}


def _exists(path: Path, what: str, fix: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BobError(f"{what} file {path} does not exist; {fix}")
    return path


def _table(path: Path, required: tuple[str, ...], what: str, delimiter: str | None = None) -> list[dict]:
    """Rows of a CSV/TSV file as dicts; a missing required column is a one-line error."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    delimiter = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") or "\t" in first else ",")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise BobError(f"{path}: {what} file is missing the required column(s) {', '.join(missing)} "
                           f"(its header: {', '.join(h for h in header if h) or 'empty'}); the file needs {', '.join(required)}")
        return [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]


# -- CrowS-Pairs -----------------------------------------------------------------------------------
@dataclass
class CrowsPair:
    sent_more: str
    sent_less: str
    direction: str
    bias_type: str


def read_crows_pairs(path: Path) -> list[CrowsPair]:
    path = _exists(path, "CrowS-Pairs", "download crows_pairs_anonymized.csv from github.com/nyu-mll/crows-pairs (data/)")
    rows = _table(path, ("sent_more", "sent_less", "stereo_antistereo", "bias_type"), "CrowS-Pairs")
    pairs = []
    for i, r in enumerate(rows, start=2):
        if not r["sent_more"].strip() or not r["sent_less"].strip():
            raise BobError(f"{path}:{i}: empty sent_more or sent_less; every row needs both sentences")
        if r["stereo_antistereo"] not in ("stereo", "antistereo"):
            raise BobError(f"{path}:{i}: stereo_antistereo is {r['stereo_antistereo']!r}, expected stereo or antistereo")
        pairs.append(CrowsPair(r["sent_more"], r["sent_less"], r["stereo_antistereo"], r["bias_type"]))
    if not pairs:
        raise BobError(f"{path}: no pairs in the file")
    return pairs


# -- BBQ -------------------------------------------------------------------------------------------
UNKNOWN_ANSWERS = ("unknown", "cannot be determined", "can't be determined", "not answerable", "not known", "not enough info",
                   "not enough information", "cannot answer", "can't answer", "undetermined")
BBQ_KEYS = ("context", "question", "ans0", "ans1", "ans2", "label", "context_condition", "question_polarity", "category", "answer_info")


@dataclass
class BBQItem:
    context: str
    question: str
    answers: list[str]
    label: int
    ambiguous: bool
    category: str
    unknown_index: int
    biased: list[int]


def _groups(info: list) -> set[str]:
    """An answer's group labels, split the way the released metadata writes them (``F-Black``, ``lowSES``)."""
    out = set()
    for part in info:
        for piece in re.split(r"[-_]", str(part)):
            piece = piece.strip().lower()
            if piece:
                out.add(piece)
        out.add(str(part).strip().lower())
    out |= {"f" for g in list(out) if g in ("woman", "girl")} | {"m" for g in list(out) if g in ("man", "boy")}
    return out


def bbq_item(doc: dict, origin: str) -> BBQItem:
    missing = [k for k in BBQ_KEYS if k not in doc]
    if missing:
        raise BobError(f"{origin}: BBQ example is missing {', '.join(missing)}; use the jsonl files of github.com/nyu-mll/BBQ (data/)")
    answers = [str(doc[f"ans{i}"]) for i in range(3)]
    info = doc["answer_info"]
    groups = [_groups(info.get(f"ans{i}", [])) for i in range(3)]
    unknown = [i for i in range(3) if "unknown" in groups[i] or answers[i].strip().lower().rstrip(".") in UNKNOWN_ANSWERS]
    if len(unknown) != 1:
        raise BobError(f"{origin}: expected exactly one 'unknown' answer among ans0-ans2 (answer_info marks it 'unknown'), found {len(unknown)}")
    stereotyped = {str(g).strip().lower() for g in (doc.get("additional_metadata") or {}).get("stereotyped_groups", [])}
    polarity = doc["question_polarity"]
    if polarity not in ("neg", "nonneg"):
        raise BobError(f"{origin}: question_polarity is {polarity!r}, expected neg or nonneg")
    biased = []
    for i in range(3):
        if i == unknown[0]:
            continue
        in_stereotyped = bool(groups[i] & stereotyped)
        if (polarity == "neg" and in_stereotyped) or (polarity == "nonneg" and not in_stereotyped):
            biased.append(i)
    label = int(doc["label"])
    if label not in (0, 1, 2):
        raise BobError(f"{origin}: label is {doc['label']!r}, expected 0, 1 or 2")
    return BBQItem(str(doc["context"]), str(doc["question"]), answers, label, str(doc["context_condition"]).startswith("amb"),
                   str(doc["category"]), unknown[0], biased)


def read_jsonl(path: Path) -> list[tuple[dict, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append((json.loads(line), f"{path}:{n}"))
            except json.JSONDecodeError as exc:
                raise BobError(f"{path}:{n}: not valid JSON ({exc.msg}); each line of a jsonl file is one JSON object") from None
    return out


def read_bbq(path: Path) -> list[BBQItem]:
    """One jsonl file, or a folder of them (BBQ's data/ folder: one file per category)."""
    path = Path(path).expanduser()
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [_exists(path, "BBQ", "download the jsonl files from github.com/nyu-mll/BBQ (data/)")]
    if not files:
        raise BobError(f"{path}: no .jsonl files in the folder; put BBQ's data/<Category>.jsonl files there")
    items = [bbq_item(doc, origin) for file in files for doc, origin in read_jsonl(file)]
    if not items:
        raise BobError(f"{path}: no BBQ examples")
    return items


# -- StereoSet -------------------------------------------------------------------------------------
GOLD_LABELS = ("stereotype", "anti-stereotype", "unrelated")


def read_stereoset(path: Path) -> tuple[list[dict], dict[str, dict]]:
    """(examples, sentences): examples carry kind, bias_type, target, context and the ids of their three
    sentences; sentences maps id -> {text, context, kind}. Intrasentence sentences are scored alone,
    intersentence ones given their context."""
    from .jsonfile import read_json

    path = _exists(path, "StereoSet", "download dev.json from github.com/moinnadeem/StereoSet (data/)")
    doc = read_json(path, f"StereoSet file {path} does not exist")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not any(k in data for k in ("intrasentence", "intersentence")):
        raise BobError(f"{path}: not a StereoSet file (expected {{\"data\": {{\"intrasentence\": [...], \"intersentence\": [...]}}}})")
    examples, sentences = [], {}
    for kind in ("intrasentence", "intersentence"):
        for n, ex in enumerate(data.get(kind, [])):
            origin = f"{path}: data.{kind}[{n}]"
            for key in ("id", "target", "bias_type", "context", "sentences"):
                if key not in ex:
                    raise BobError(f"{origin} has no '{key}'; StereoSet examples need id, target, bias_type, context, sentences")
            ids = {}
            for s in ex["sentences"]:
                label = s.get("gold_label")
                if label not in GOLD_LABELS:
                    raise BobError(f"{origin}: sentence {s.get('id')} has gold_label {label!r}, expected one of {', '.join(GOLD_LABELS)}")
                ids[label] = s["id"]
                sentences[s["id"]] = {"text": s["sentence"], "context": ex["context"] if kind == "intersentence" else "", "kind": kind}
            if len(ids) != 3:
                raise BobError(f"{origin}: needs one stereotype, one anti-stereotype and one unrelated sentence, has {sorted(ids)}")
            examples.append({"kind": kind, "bias_type": ex["bias_type"], "target": ex["target"], "ids": ids, "id": ex["id"]})
    if not examples:
        raise BobError(f"{path}: no StereoSet examples")
    return examples, sentences


# -- sentiment -------------------------------------------------------------------------------------
@dataclass
class LabelledText:
    text: str
    label: int  # index into SENTIMENT_CLASSES
    attribute: str = ""
    group: str = ""


def parse_label(value: str, origin: str, scale: str | None) -> int:
    """A label in one of the scales: ``three`` (negative/neutral/positive or 0-2), ``five`` (SST-5's 0-4 or
    its names) or ``valence`` (SemEval-2018 V-oc's -3..3: below 0 negative, 0 neutral, above 0 positive)."""
    v = str(value).strip().lower()
    if v in SENTIMENT_CLASSES and scale != "five":
        return SENTIMENT_CLASSES.index(v)
    if v in _FIVE:
        return _five_to_three(_FIVE[v])
    try:
        number = int(float(v.split(":")[0]))  # SemEval writes "-2: moderately negative emotional state can be inferred"
    except ValueError:
        raise BobError(f"{origin}: label {value!r} is not a sentiment label (negative/neutral/positive, 0-2, SST-5's 0-4 or SemEval's -3..3)") from None
    if scale == "valence":
        return 0 if number < 0 else (1 if number == 0 else 2)
    if scale == "five":
        if not 0 <= number <= 4:
            raise BobError(f"{origin}: label {number} is outside SST-5's 0-4")
        return _five_to_three(number)
    if not 0 <= number <= 2:
        raise BobError(f"{origin}: label {number} is outside 0-2 (negative, neutral, positive)")
    return number


def label_scale(labels: set[str]) -> str:
    """Which scale a file's labels are on: negative numbers -> valence, a 3 or 4 -> SST-5's five points."""
    numbers = set()
    for v in labels:
        try:
            numbers.add(int(float(v.split(":")[0])))
        except ValueError:
            continue
    if any(n < 0 for n in numbers):
        return "valence"
    if numbers & {3, 4} or labels & {"very negative", "very positive"}:
        return "five"
    return "three"


def _five_to_three(label: int) -> int:
    return 0 if label <= 1 else (1 if label == 2 else 2)


_LEAF = re.compile(r"\(\d+ ([^()]+)\)")


def read_sentiment(path: Path) -> list[LabelledText]:
    """A sentiment split; SST-5 labels are mapped to three classes."""
    path = _exists(path, "sentiment", "give the split files as <tsv>?train=FILE&val=FILE[&test=FILE]")
    suffix = path.suffix.lower()
    if suffix == ".txt" and path.read_text(encoding="utf-8")[:1] == "(":  # PTB trees of SST
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                m = re.match(r"\((\d)", line.strip())
                if not m:
                    raise BobError(f"{path}:{n}: not a PTB tree line (expected '(<label> ...')")
                out.append(LabelledText(" ".join(_LEAF.findall(line)), _five_to_three(int(m.group(1)))))
        return out
    if suffix in (".jsonl", ".json"):
        rows = [(doc, origin) for doc, origin in read_jsonl(path)]
    else:
        aliases = {"Tweet": "text", "sentence": "text", "Intensity Class": "label"}  # SemEval-2018 V-oc's released tsv
        rows = [({aliases.get(k, k): v for k, v in r.items()}, f"{path}:{i}") for i, r in enumerate(_table(path, (), "sentiment"), start=2)]
    scale = label_scale({str(doc.get("label", "")).strip().lower() for doc, _ in rows})
    out = []
    for doc, origin in rows:
        if "text" not in doc or "label" not in doc:
            missing = [k for k in ("text", "label") if k not in doc]
            raise BobError(f"{origin}: sentiment example is missing {', '.join(missing)}; each needs text and label")
        out.append(LabelledText(str(doc["text"]), parse_label(doc["label"], origin, scale)))
    if not out:
        raise BobError(f"{path}: no examples")
    return out


def read_fairness_tsv(path: Path) -> list[LabelledText]:
    """Czarnowska et al. (2021) sentiment fairness tests: label, category (the sensitive attribute), group, text."""
    path = _exists(path, "sentiment fairness", "give the TSV of templated sentences (columns label, category, group, text)")
    out = []
    for i, r in enumerate(_table(path, ("label", "category", "group", "text"), "sentiment fairness", delimiter="\t"), start=2):
        out.append(LabelledText(r["text"], parse_label(r["label"], f"{path}:{i}", "three"), r["category"], r["group"]))
    if not out:
        raise BobError(f"{path}: no sentences")
    return out
