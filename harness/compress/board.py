"""The compression tab of a published leaderboard (registered in ``harness.sections``).

- **Pairing table**: each compressed cell next to its dense twin (the same cell with
  ``compress: none``, found by the ``dense_twin_id`` in its record), the drop in the task's
  primary metric with its direction declared (positive drop = worse, for higher-, lower- and
  target-metrics alike), bits / sparsity (nominal and measured), size on disk, latency. A twin that
  was not run (or failed) is shown as missing, never as zero.
- **Pareto plots**: the primary metric against serialized size and against latency, per task and
  method, with the non-dominated points joined.
- **z-scores**: BoB's per-task z-score across backbones, computed within one compression level
  (dense, int8, int4, 2:4...) and across all levels.
"""
from __future__ import annotations

import math
from typing import Any

from ..sections import PublishContext, Section, esc, figure_html, register_section, table_html, table_markdown
from .config import compress_label, compress_level

COLUMNS = [("task", "task"), ("method", "method"), ("backbone", "backbone"), ("compression", "compression"), ("metric", "metric"),
           ("direction", "direction"), ("dense", "dense twin"), ("compressed", "compressed"), ("drop", "drop (+ = worse)"),
           ("bits", "bits nominal/measured"), ("sparsity", "sparsity nominal/measured"), ("size_mb", "size on disk (MB)"),
           ("dense_size_mb", "dense params (MB)"), ("latency_ms", "latency ms (median)"), ("dense_latency_ms", "dense latency ms"),
           ("twin", "dense twin id")]
Z_COLUMNS = [("task", "task"), ("method", "method"), ("backbone", "backbone"), ("compression", "compression"), ("level", "level"),
             ("value", "value"), ("z_within_level", "z within level"), ("z_across_levels", "z across levels")]


def drop(dense: float | None, compressed: float | None, direction: str, target: float | None = None) -> float | None:
    """How much worse the compressed value is (positive = worse), by the metric's declared direction."""
    if dense is None or compressed is None:
        return None
    if direction == "lower":
        return compressed - dense
    if direction == "target":
        return abs(compressed - (target or 0.0)) - abs(dense - (target or 0.0))
    return dense - compressed


def goodness(value: float, direction: str, target: float | None) -> float:
    return -value if direction == "lower" else (-abs(value - (target or 0.0)) if direction == "target" else value)


def _fmt(x, nd=3):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def pairing_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per compressed cell, with its dense twin's value (None when the twin is missing)."""
    by_id = {r["id"]: r for r in records}
    rows = []
    for r in records:
        comp = r.get("compression")
        cfg = (r.get("spec") or {}).get("compress")
        if not comp or not cfg:
            continue
        prim = r.get("primary_metric") or {}
        twin = by_id.get(comp.get("dense_twin_id"))
        dense_value = (twin.get("primary_metric") or {}).get("value") if twin else None
        direction = prim.get("direction") or ("higher" if prim.get("higher_is_better", True) else "lower")
        lat, dlat = comp.get("latency") or {}, comp.get("dense_latency") or {}
        rows.append({
            "task": r.get("task"), "method": r.get("method"), "backbone": r.get("backbone"), "seed": r.get("seed"),
            "compression": compress_label(cfg), "level": compress_level(cfg), "metric": prim.get("name"), "direction": direction,
            "dense": _fmt(dense_value), "compressed": _fmt(prim.get("value")),
            "drop": _fmt(drop(dense_value, prim.get("value"), direction, prim.get("target"))),
            "bits": f"{comp.get('nominal_bits')}/{comp.get('measured_bits')}",
            "sparsity": None if comp.get("nominal_sparsity") is None else f"{_fmt(comp.get('nominal_sparsity'))}/{_fmt(comp.get('measured_sparsity'))}",
            "size_mb": _fmt((comp.get("serialized_bytes") or 0) / 1e6) if comp.get("serialized_bytes") else None,
            "dense_size_mb": _fmt((comp.get("dense_parameter_bytes") or 0) / 1e6) if comp.get("dense_parameter_bytes") else None,
            "latency_ms": lat.get("median_ms"), "dense_latency_ms": dlat.get("median_ms"),
            "twin": comp.get("dense_twin_id") + ("" if twin else " (missing)"), "target": prim.get("target"),
        })
    return sorted(rows, key=lambda x: (str(x["task"]), str(x["method"]), str(x["backbone"]), x["compression"]))


def zscore_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BoB z-scores per (task, method): across backbones within each compression level, and across all."""
    import statistics

    items = []
    for r in records:
        prim = r.get("primary_metric") or {}
        if prim.get("value") is None:
            continue
        cfg = (r.get("spec") or {}).get("compress") or {}
        direction = prim.get("direction") or ("higher" if prim.get("higher_is_better", True) else "lower")
        items.append({"task": r.get("task"), "method": r.get("method"), "backbone": r.get("backbone"), "compression": compress_label(cfg),
                      "level": compress_level(cfg), "value": _fmt(prim["value"]), "good": goodness(float(prim["value"]), direction, prim.get("target"))})

    def z(group_key):
        groups: dict[tuple, list[dict]] = {}
        for it in items:
            groups.setdefault(group_key(it), []).append(it)
        out = {}
        for members in groups.values():
            vals = [m["good"] for m in members]
            mu, sd = statistics.fmean(vals), statistics.pstdev(vals)
            for m in members:
                out[id(m)] = round((m["good"] - mu) / sd, 3) if sd > 0 else 0.0
        return out

    within = z(lambda it: (it["task"], it["method"], it["level"]))
    across = z(lambda it: (it["task"], it["method"]))
    for it in items:
        it["z_within_level"], it["z_across_levels"] = within[id(it)], across[id(it)]
    return sorted(items, key=lambda x: (str(x["task"]), str(x["method"]), x["level"], -x["z_within_level"]))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (cost, goodness) not dominated by a cheaper-or-equal, better-or-equal other point; by cost."""
    front, best = [], -math.inf
    for cost, good in sorted(points, key=lambda p: (p[0], -p[1])):
        if good > best:
            front.append((cost, good))
            best = good
    return front


def pareto_figure(rows: list[dict[str, Any]], cost: str, dense_cost: str, xlabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], r["method"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, method) in zip(axes[0], panels):
        sub = [r for r in rows if (r["task"], r["method"]) == (task, method) and r["compressed"] is not None and r[cost] is not None]
        pts = [(r[cost], r["compressed"], r["compression"], r["direction"], r.get("target")) for r in sub]
        dense = {(r["backbone"], r[dense_cost], r["dense"]) for r in sub if r["dense"] is not None and r[dense_cost] is not None}
        pts += [(c, v, "dense", sub[0]["direction"], sub[0].get("target")) for _, c, v in dense]
        for c, v, label, _, _ in pts:
            ax.scatter([c], [v], s=18)
            ax.annotate(label, (c, v), fontsize=6)
        if pts:
            front = pareto_front([(c, goodness(v, d, t)) for c, v, _, d, t in pts])
            front_pts = [(c, v) for c, v, _, d, t in pts if (c, goodness(v, d, t)) in front]
            front_pts.sort()
            ax.plot([p[0] for p in front_pts], [p[1] for p in front_pts], "k--", lw=0.8)
        ax.set_title(f"{task} / {method}", fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(sub[0]["metric"] if sub else "", fontsize=8)
    fig.tight_layout()
    return fig


def build(ctx: PublishContext) -> list[Section]:
    records = ctx.records("ok")
    rows = pairing_rows(records)
    if not rows:
        return []
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS] + ["level", "seed", "target"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    html = table_html(rows, COLUMNS, caption="Each compressed cell beside its dense twin (drop: positive = worse, by the metric's direction)")
    zrows = zscore_rows([r for r in records if r.get("task") in {x["task"] for x in rows}])
    sections = [Section("compression", "Compressed vs dense twin", html,
                        table_markdown(rows, COLUMNS), files={"compression_pairs.csv": buf.getvalue()}),
                Section("compression", "z-scores within a compression level and across", table_html(zrows, Z_COLUMNS),
                        table_markdown(zrows, Z_COLUMNS))]
    try:
        import matplotlib.pyplot as plt

        for cost, dense_cost, label, key in (("size_mb", "dense_size_mb", "size (MB)", "size"), ("latency_ms", "dense_latency_ms", "latency (ms, median)", "latency")):
            fig = pareto_figure(rows, cost, dense_cost, label)
            sections.append(Section("compression", f"Accuracy vs {key} (Pareto front dashed)", figure_html(fig, f"metric vs {key}")))
            plt.close(fig)
    except ImportError:  # matplotlib is optional for the page
        pass
    return sections


register_section("compression", build, order=60)
__all__ = ["build", "pairing_rows", "zscore_rows", "pareto_front", "drop", "esc"]
