"""Calibration data: images from the task's training split, or windows of a declared text file.

Never a test split: the image split is the task's tuning-train split (else its final training
split) and a split named like the task's evaluation split is refused. What was drawn is recorded
(source, split, count, length, seed) with a hash of the exact samples, which keys the compressed
model's cache, so other calibration data is another compressed model.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Callable

from ..errors import BobError
from ..spec import canonical_json


def image_calibration(task, preprocess, cal: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], Any]]:
    """(record, loader) for ``cal['samples']`` training images drawn with ``cal['seed']``; the loader
    returns one float tensor (n, 3, H, W) through the backbone's eval transform."""
    split = cal.get("split") or (task.tune_splits[0] if task.tune_splits else task.final_splits[0])
    if split == task.final_splits[1] or "test" in split.lower():
        raise BobError(f"calibration split {split!r} of task {task.name} is an evaluation split; calibration reads training data only")
    samples = list(task.load(split))
    rng = random.Random(cal["seed"])
    chosen = sorted(rng.sample(range(len(samples)), min(cal["samples"], len(samples))))
    ident = [samples[i].identity if hasattr(samples[i], "identity") else _identity(samples[i], split, i) for i in chosen]
    digest = hashlib.sha256(canonical_json({"ids": [list(map(str, x)) if isinstance(x, tuple) else str(x) for x in ident],
                                            "preprocess": preprocess.as_dict()}).encode()).hexdigest()
    record = {"source": f"task {task.name} split {split}", "split": split, "samples": len(chosen), "seed": cal["seed"], "sha256": digest}

    def load():
        import torch

        from ..data import Sample, open_rgb

        transform = preprocess.eval_transform()
        return torch.stack([transform(open_rgb(samples[i] if isinstance(samples[i], Sample) else Sample(samples[i][0], int(samples[i][1])))) for i in chosen])

    return record, load


def text_calibration(tokenizer, cal: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], Any]]:
    """``samples`` random windows of ``seq_len`` tokens of the text file (GPTQ's calibration recipe)."""
    path = cal["text"]
    digest = hashlib.sha256(canonical_json({k: cal.get(k) for k in ("text_sha256", "samples", "seq_len", "seed")}).encode()).hexdigest()
    record = {"source": f"text file {path}", "text_sha256": cal.get("text_sha256"), "samples": cal["samples"], "seq_len": cal["seq_len"],
              "seed": cal["seed"], "sha256": digest}

    def load():
        import torch

        with open(path, encoding="utf-8") as f:
            ids = tokenizer(f.read(), add_special_tokens=False)["input_ids"]
        if len(ids) <= cal["seq_len"]:
            raise BobError(f"calibration.text {path} has {len(ids)} tokens, fewer than seq_len={cal['seq_len']}; give a longer file or a shorter seq_len")
        rng = random.Random(cal["seed"])
        starts = [rng.randrange(0, len(ids) - cal["seq_len"]) for _ in range(cal["samples"])]
        return torch.tensor([ids[s : s + cal["seq_len"]] for s in starts], dtype=torch.long)

    return record, load


def _identity(sample, split: str, index: int):
    """A generated (image, label) pair: its split position, label and pixel digest."""
    image = sample[0]
    pixels = hashlib.sha256(image.tobytes()).hexdigest()[:16] if hasattr(image, "tobytes") else str(image)
    return (f"{split}[{index}]:{pixels}", int(sample[1]))
