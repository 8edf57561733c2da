"""The prompt-learning tables, computed from records (plain Python: the page, the Markdown and the
tests read the same numbers).

- **base-to-new**: per method x dataset the base accuracy B, the new accuracy N and their harmonic
  mean HM = 2BN / (B + N), each the mean over seeds; the average columns give both conventions,
  labelled: the HM of the averaged B and N (the papers' main table) and the mean of the
  per-dataset HMs;
- **few-shot curves**: accuracy against shots per dataset and averaged over datasets (per seed,
  then over seeds), mean and 95 % interval over seeds (the bootstrap interval every bob table uses);
- **cross-dataset**: source accuracy, each target's, and their mean;
- **domain generalisation**: the same shape for ImageNet -> V2 / Sketch / A / R (A and R within
  their 200 classes, the papers' number);
- **cost**: trainable parameters and wall time (whole cell; fit alone) per method.
"""
from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any, Iterable

PROTOCOLS = ("fewshot", "base2new", "cross", "dg")


def harmonic_mean(a: float, b: float) -> float:
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


def rows_of(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per ok record of a prompt-learning task (any method run on it)."""
    from harness.aggregate import backbone_label

    rows = []
    for r in records:
        meta = r.get("task_meta") or {}
        if r.get("status") != "ok" or meta.get("protocol") not in PROTOCOLS or not meta.get("dataset"):
            continue
        timing, adaptation = r.get("timing") or {}, r.get("adaptation") or {}
        rows.append({"backbone": backbone_label(r), "method": r.get("method"), "dataset": meta["dataset"], "protocol": meta["protocol"],
                     "shots": meta.get("shots"), "seed": r.get("seed"), "metrics": r.get("metrics") or {},
                     "trainable_params": (r.get("metrics") or {}).get("trainable_params", adaptation.get("trainable_params_with_head")),
                     "wall_s": timing.get("wall_s"), "fit_s": adaptation.get("fit_s", timing.get("fit_s"))})
    return rows


def _by(rows, *keys):
    out: dict[tuple, list] = defaultdict(list)
    for row in rows:
        out[tuple(row[k] for k in keys)].append(row)
    return out


def base2new_average(per_dataset: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Averages over datasets of (B, N): mean B, mean N, HM of those means, and the mean of per-dataset HMs."""
    bs = [b for b, _ in per_dataset.values()]
    ns = [n for _, n in per_dataset.values()]
    b, n = mean(bs), mean(ns)
    return {"base": b, "new": n, "hm_of_means": harmonic_mean(b, n), "mean_of_hms": mean(harmonic_mean(x, y) for x, y in zip(bs, ns))}


def base2new_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(datasets, one row per (backbone, method) with ``<dataset>`` -> (B, N, HM) and the averages
    over the datasets the row has (``n_datasets`` says how many))."""
    b2n = [r for r in rows if r["protocol"] == "base2new" and "base_top1" in r["metrics"] and "new_top1" in r["metrics"]]
    datasets = sorted({r["dataset"] for r in b2n}, key=_dataset_order)
    table = []
    for (backbone, method), group in sorted(_by(b2n, "backbone", "method").items()):
        per = {}
        for dataset, runs in _by(group, "dataset").items():
            b, n = mean(r["metrics"]["base_top1"] for r in runs), mean(r["metrics"]["new_top1"] for r in runs)
            per[dataset[0]] = (b, n)
        row = {"backbone": backbone, "method": method, "n_datasets": len(per), "seeds": len({r["seed"] for r in group}),
               **{d: (b, n, harmonic_mean(b, n)) for d, (b, n) in per.items()}}
        row["average"] = base2new_average(per)
        table.append(row)
    return datasets, table


def _dataset_order(name: str) -> tuple:
    from .datasets import DATASETS

    names = list(DATASETS)
    return (names.index(name) if name in names else len(names), name)


def shot_curves(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[int, dict[str, float]]]]:
    """(backbone, method) -> dataset (and "average") -> shots -> {mean, lo, hi, n} of top-1 over seeds.
    The average over datasets is taken per seed, over the datasets every seed of that shot count has."""
    from harness.scores import bootstrap_ci

    few = [r for r in rows if r["protocol"] == "fewshot" and r["shots"] and "top1" in r["metrics"]]
    out: dict[tuple[str, str], dict[str, dict[int, dict[str, float]]]] = {}

    def stat(values: list[float]) -> dict[str, float]:
        lo, hi = bootstrap_ci(values)
        return {"mean": mean(values), "lo": lo, "hi": hi, "n": len(values)}

    for key, group in _by(few, "backbone", "method").items():
        curves: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
        for (dataset, shots), runs in _by(group, "dataset", "shots").items():
            curves[dataset][shots] = stat([r["metrics"]["top1"] for r in runs])
        for (shots,), runs in _by(group, "shots").items():
            by_seed = _by(runs, "seed")
            common = set.intersection(*({r["dataset"] for r in rs} for rs in by_seed.values()))
            if common:
                per_seed = [mean(r["metrics"]["top1"] for r in rs if r["dataset"] in common) for rs in by_seed.values()]
                curves["average"][shots] = {**stat(per_seed), "datasets": len(common)}
        out[key] = dict(curves)
    return out


def _target_order(name: str) -> tuple:
    from .dg import TARGETS

    return (0, TARGETS.index(name), name) if name in TARGETS else (1, *_dataset_order(name))


def cross_table(rows: list[dict[str, Any]], protocol: str = "cross") -> tuple[list[str], list[dict[str, Any]]]:
    """(target names, one row per (backbone, method, source) with the source accuracy, each target's and their mean);
    ``protocol="dg"``: the domain-generalisation table."""
    cross = [r for r in rows if r["protocol"] == protocol and "target_mean_top1" in r["metrics"]]
    targets = sorted({k[:-5] for r in cross for k in r["metrics"] if k.endswith("_top1") and k not in ("source_top1", "target_mean_top1")},
                     key=_target_order)
    table = []
    for (backbone, method, source), group in sorted(_by(cross, "backbone", "method", "dataset").items()):
        row = {"backbone": backbone, "method": method, "source": source, "seeds": len(group),
               "source_top1": mean(r["metrics"]["source_top1"] for r in group),
               "target_mean_top1": mean(r["metrics"]["target_mean_top1"] for r in group)}
        for t in targets:
            values = [r["metrics"][f"{t}_top1"] for r in group if f"{t}_top1" in r["metrics"]]
            row[t] = mean(values) if values else None
        table.append(row)
    return targets, table


def cost_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backbone, method): trainable parameters and the mean wall time per cell (and of the fit)."""
    table = []
    for (backbone, method), group in sorted(_by(rows, "backbone", "method").items()):
        params = sorted({int(r["trainable_params"]) for r in group if r["trainable_params"] is not None})
        walls = [r["wall_s"] for r in group if r["wall_s"] is not None]
        fits = [r["fit_s"] for r in group if r["fit_s"] is not None]
        table.append({"backbone": backbone, "method": method, "cells": len(group),
                      "trainable_params": (f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}-{params[-1]:,}") if params else None,
                      "wall_s": round(mean(walls), 2) if walls else None, "fit_s": round(mean(fits), 2) if fits else None})
    return table
