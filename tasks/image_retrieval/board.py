"""The image-retrieval suite (its group in the BoB aggregation) and its leaderboard section.

The standard tables rank each task by its primary metric (revisited: mAP Medium; GLDv2: mAP@100
private; the others: mAP). The section below the "retrieval" tab's table shows every setup of every
task (Easy / Medium / Hard mAP and mP@k, mR@k, MRR, ...) with the descriptor each row used and the
query / database sizes, plus the class-level retrieval metrics of ``knn_retrieval`` cells.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from harness.sections import Section, register_section, table_html, table_markdown
from harness.suites import register_suite

from .catalog import REGISTERED

register_suite(
    "image_retrieval", title="Image retrieval", rule="mean_of_tasks",
    caption="Image retrieval (frozen descriptors ranked by cosine similarity): revisited Oxford/Paris mAP Medium (queries cropped), "
            "GLDv2 mAP@100 private, INSTRE / CUB-200 / iNat mAP (BoB's split), Copydays mAP (strong); %",
    groups=[{"name": "retrieval/landmarks", "title": "Landmarks", "tasks": [t for t, v in REGISTERED.items() if v[1] == "retrieval/landmarks"]},
            {"name": "retrieval/instance", "title": "Instances", "tasks": [t for t, v in REGISTERED.items() if v[1] == "retrieval/instance"]},
            {"name": "retrieval/class", "title": "Classes", "tasks": [t for t, v in REGISTERED.items() if v[1] == "retrieval/class"]},
            {"name": "retrieval/toy", "title": "Generated", "tasks": [t for t, v in REGISTERED.items() if v[1] == "retrieval/toy"]}],
)

RETRIEVAL_METHODS = ("image_retrieval", "knn_retrieval")


def setting_label(record: dict[str, Any]) -> str:
    """What produced a row's descriptors, in a few words."""
    protocol = record.get("protocol") or {}
    d = protocol.get("descriptor") or {}
    if record.get("method") == "knn_retrieval":
        return f"{protocol.get('queries_split', 'test')} vs {protocol.get('database_split', 'train')}, cached features"
    pooling = d.get("pooling", "head") + (f" p={d['gem_p']:g}" if d.get("pooling") == "gem" else "")
    scales = "/".join(f"{s:.3g}" for s in d.get("scales", [1.0]))
    parts = [pooling, f"scales {scales}", d.get("resize", "square")]
    whitening = protocol.get("whitening")
    parts.append(f"whitened on {whitening['source']}" if whitening else "no whitening")
    if protocol.get("query_crop") is not None and (protocol.get("task_protocol") or {}).get("queries", "").startswith("cropped"):
        parts.append("queries cropped" if protocol["query_crop"] else "queries NOT cropped (BoB)")
    return ", ".join(parts)


SETUP_ORDER = ("E", "M", "H", "private", "public")
FAMILY_ORDER = ("mAP", "mAP@100", "mP", "mR", "MRR", "R", "mAP@R")


def metric_order(name: str) -> tuple:
    """Columns setup by setup (Easy, Medium, Hard...), then mAP, mP@k, mR@k, MRR, by k."""
    base, _, setup = name.rpartition("_")
    if setup not in SETUP_ORDER:
        base, setup = name, ""
    family, _, k = base.partition("@") if base not in ("mAP@100", "mAP@R") else (base, "", "")
    return (SETUP_ORDER.index(setup) if setup else -1, FAMILY_ORDER.index(family) if family in FAMILY_ORDER else 99,
            int(k) if k.isdigit() else 0, name)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def build(ctx) -> list[Section]:
    groups: dict[tuple[str, str], dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    specs: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for record in ctx.records():
        if record.get("method") not in RETRIEVAL_METHODS:
            continue
        meta = record.get("backbone_meta") or {}
        row = record.get("backbone") + (" (random-init)" if meta.get("weights") in ("random-init", "random") else "")
        groups[(record["method"], record["task"])][(row, setting_label(record))].append(record)
        specs[(record["method"], record["task"])].update(record.get("metric_specs") or {})
    sections = []
    for (method, task), rows in sorted(groups.items()):
        metric_names = sorted((m for m in specs[(method, task)] if any(m in r.get("metrics", {}) for rs in rows.values() for r in rs)), key=metric_order)
        columns = [("backbone", "backbone"), ("setting", "descriptor")] + [(m, m) for m in metric_names] + [("queries", "queries"), ("database", "database"), ("seeds", "seeds")]
        table = []
        for (row, setting), records in rows.items():
            entry: dict[str, Any] = {"backbone": row, "setting": setting, "seeds": len(records)}
            for m in metric_names:
                value = _mean([r["metrics"].get(m) for r in records])
                entry[m] = None if value is None else format(value, (specs[(method, task)].get(m) or {}).get("fmt", ".1f"))
            protocol = records[0].get("protocol") or {}
            entry["queries"], entry["database"] = protocol.get("queries"), protocol.get("database")
            table.append(entry)
        primary = (rows and next(iter(rows.values()))[0].get("primary_metric") or {}).get("name")
        table.sort(key=lambda e: -float(e.get(primary) or "-inf") if e.get(primary) is not None else math.inf)
        title = f"{task}: every setup ({method})"
        caption = "mean over seeds; each setup as its reference evaluator defines it (METHODOLOGY.md)"
        sections.append(Section(tab="retrieval", title=title, html=table_html(table, columns, caption), markdown=table_markdown(table, columns)))
    return sections


register_section("image-retrieval-setups", build, order=50)
