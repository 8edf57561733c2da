"""Effective robustness (Taori et al. 2020) and the leaderboard's robustness tab.

Effective robustness of a model = its OOD accuracy minus the OOD accuracy a *baseline testbed*
predicts from its ID accuracy, where the prediction is a straight line fitted in logit space:
``logit(ood) = a * logit(id) + b`` (least squares over the testbed), ``predicted = sigmoid(a *
logit(id) + b)``. The testbed is the leaderboard's own rows (every backbone x method x task cell
with ID and OOD accuracy) unless ``BOB_SHIFT_TESTBED`` names a CSV (``name,id_top1,ood_top1``
in %, an optional ``source`` column); the tab says which testbed was used and how many points.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

from harness.errors import BobError
from harness.sections import PublishContext, Section, esc, figure_html, register_section, table_html, table_markdown

EPS = 1e-4


def logit(acc_pct: float) -> float:
    """logit of an accuracy in %, clipped away from 0 and 100 (where the logit is infinite)."""
    p = min(max(float(acc_pct) / 100.0, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def fit_testbed(id_acc: Sequence[float], ood_acc: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line of logit(OOD) on logit(ID); needs two distinct ID accuracies."""
    xs, ys = [logit(v) for v in id_acc], [logit(v) for v in ood_acc]
    if len(xs) < 2 or max(xs) - min(xs) < 1e-12:
        raise BobError(f"effective robustness needs a testbed of at least two models with different ID accuracies (got {len(xs)})")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def predicted_ood(fit: tuple[float, float], id_acc: float) -> float:
    return 100.0 * sigmoid(fit[0] * logit(id_acc) + fit[1])


def effective_robustness(fit: tuple[float, float], id_acc: float, ood_acc: float) -> float:
    """OOD accuracy minus the testbed line's prediction at this ID accuracy (percentage points)."""
    return float(ood_acc) - predicted_ood(fit, id_acc)


def read_testbed(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """A testbed CSV: ``name,id_top1,ood_top1[,source]``; returns (rows, where it came from)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BobError(f"BOB_SHIFT_TESTBED={path}: no such file; give a CSV with columns name,id_top1,ood_top1[,source]")
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    if not rows or not {"name", "id_top1", "ood_top1"} <= set(rows[0]):
        raise BobError(f"{path}: expected the columns name,id_top1,ood_top1 (accuracies in %), got {', '.join(rows[0]) if rows else 'no rows'}")
    sources = sorted({r.get("source") or "" for r in rows} - {""})
    return [{"name": r["name"], "id_top1": float(r["id_top1"]), "ood_top1": float(r["ood_top1"])} for r in rows], \
        f"{path}" + (f" (sources: {'; '.join(sources)})" if sources else "")


def shift_points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (backbone, weights, method + the grid's hyper-parameters, task) with ID top-1 and mean OOD top-1 (mean over seeds)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        m = r.get("metrics") or {}
        if m.get("ood_top1") is None or m.get("top1") is None:
            continue
        given = {k: v for k, v in sorted(((r.get("spec") or {}).get("hparams") or {}).items()) if k not in ("img_size", "batch_size")}
        setting = " ".join(f"{k}={v}" for k, v in given.items())
        groups.setdefault((r.get("backbone"), r.get("weights"), r.get("method"), setting, r.get("task")), []).append(m)
    out = []
    for (backbone, weights, method, setting, task), ms in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        out.append({"backbone": backbone, "weights": weights, "method": f"{method} {setting}".strip(), "task": task, "seeds": len(ms),
                    "id_top1": sum(m["top1"] for m in ms) / len(ms), "ood_top1": sum(m["ood_top1"] for m in ms) / len(ms)})
    return out


def _scatter(points: list[dict], testbed: list[dict], fit: tuple[float, float] | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if testbed is not points:
        ax.scatter([logit(p["id_top1"]) for p in testbed], [logit(p["ood_top1"]) for p in testbed], c="#bbbbbb", s=18, label="testbed")
    for method in sorted({p["method"] for p in points}):
        sub = [p for p in points if p["method"] == method]
        ax.scatter([logit(p["id_top1"]) for p in sub], [logit(p["ood_top1"]) for p in sub], s=30, label=method[:40])
    xs = [logit(p["id_top1"]) for p in points + ([] if testbed is points else testbed)]
    lo, hi = min(xs) - 0.3, max(xs) + 0.3
    if fit is not None:
        ax.plot([lo, hi], [fit[0] * lo + fit[1], fit[0] * hi + fit[1]], "k--", lw=1, label="testbed fit (logit)")
    ax.plot([lo, hi], [lo, hi], color="#999999", lw=0.8, label="y = x")
    ticks = [t for t in (1, 5, 10, 20, 30, 50, 70, 80, 90, 95, 99)]
    for axis, setter in ((ax.xaxis, ax.set_xticks), (ax.yaxis, ax.set_yticks)):
        setter([logit(t) for t in ticks])
    ax.set_xticklabels([str(t) for t in ticks], fontsize=7)
    ax.set_yticklabels([str(t) for t in ticks], fontsize=7)
    ax.set_xlabel("ID top-1 (%, logit scale)")
    ax.set_ylabel("mean OOD top-1 (%, logit scale)")
    ax.legend(fontsize=7, loc="upper left")
    html = figure_html(fig, "OOD top-1 against ID top-1 on logit axes, with the testbed's linear fit")
    plt.close(fig)
    return html


def build(ctx: PublishContext) -> list[Section]:
    points = shift_points(ctx.records())
    if not points:
        return []
    given = os.environ.get("BOB_SHIFT_TESTBED")
    if given:
        testbed, source = read_testbed(given)
    else:
        testbed, source = points, f"this leaderboard's {len(points)} (backbone, method, task) cells"
    try:
        fit = fit_testbed([p["id_top1"] for p in testbed], [p["ood_top1"] for p in testbed])
    except BobError:
        fit = None
    rows = []
    for p in points:
        er = effective_robustness(fit, p["id_top1"], p["ood_top1"]) if fit else None
        rows.append({"backbone": p["backbone"], "method": p["method"], "task": p["task"], "id": f"{p['id_top1']:.1f}", "ood": f"{p['ood_top1']:.1f}",
                     "gap": f"{p['id_top1'] - p['ood_top1']:.1f}", "er": None if er is None else f"{er:+.1f}", "seeds": p["seeds"]})
    cols = [("backbone", "backbone"), ("method", "method"), ("task", "task"), ("id", "ID top-1"), ("ood", "mean OOD top-1"),
            ("gap", "ID − OOD"), ("er", "effective robustness"), ("seeds", "seeds")]
    fit_text = f"logit(OOD) = {fit[0]:.3f} · logit(ID) + {fit[1]:.3f}" if fit else "no fit (fewer than two distinct ID accuracies)"
    caption = (f"Effective robustness (Taori et al. 2020): mean OOD top-1 minus the testbed's logit-linear prediction from ID top-1. "
               f"Testbed: {source}; fit: {fit_text}.")
    html = f'<p class="robustness-caption">{esc(caption)}</p>' + _scatter(points, testbed, fit) + table_html(rows, cols)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["backbone", "method", "task", "id_top1", "ood_top1", "effective_robustness"])
    writer.writerows([r["backbone"], r["method"], r["task"], r["id"], r["ood"], r["er"] or ""] for r in rows)
    csv_text = buf.getvalue()
    return [Section("robustness", "Robustness: OOD against ID", html, f"_{caption}_\n\n" + table_markdown(rows, cols),
                    files={"robustness.csv": csv_text})]


def build_per_set(ctx: PublishContext) -> list[Section]:
    """One column per evaluation set (its declared top-1: masked for R/A), one row per cell (mean over seeds)."""
    sets: dict[str, str] = {}
    groups: dict[tuple, list[dict]] = {}
    for r in ctx.records():
        described = (r.get("protocol") or {}).get("eval_sets") or []
        if not described:
            continue
        for es in described:
            sets.setdefault(es["name"], es.get("title") or es["name"])
        groups.setdefault((r.get("backbone"), r.get("method"), r.get("task")), []).append(r.get("metrics") or {})
    if not groups:
        return []
    rows = []
    for (backbone, method, task), ms in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        row: dict[str, Any] = {"backbone": backbone, "method": method, "task": task}
        for key in ["top1", *[f"{n}/top1" for n in sets], "ood_top1"]:
            values = [m[key] for m in ms if m.get(key) is not None]
            row[key] = f"{sum(values) / len(values):.1f}" if values else None
        rows.append(row)
    cols = [("backbone", "backbone"), ("method", "method"), ("task", "task"), ("top1", "ID top-1"),
            *[(f"{n}/top1", title) for n, title in sets.items()], ("ood_top1", "mean OOD")]
    caption = "Top-1 (%) on every evaluation set, each cell trained once on its ID split (ImageNet-R/-A: 200-way masked; strict 1000-way in the records as <set>/top1_all)."
    return [Section("robustness", "Per-set top-1", f"<p>{esc(caption)}</p>" + table_html(rows, cols), f"_{caption}_\n\n" + table_markdown(rows, cols))]


register_section("shift-robustness", build, order=50)
register_section("shift-per-set", build_per_set, order=51)
