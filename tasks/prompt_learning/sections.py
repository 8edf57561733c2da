"""The prompt-learning tab of a published leaderboard (``harness.sections``): the base-to-new table
(B / N / HM per dataset and both averages), the accuracy-vs-shots curves with seed intervals, the
cross-dataset and domain-generalisation tables, and the trainable parameters and wall time per method. Numbers come from
``tables.py``; this module only lays them out (matplotlib imported when a board is published)."""
from __future__ import annotations

from harness.sections import PublishContext, Section, esc, figure_html, register_section, table_html, table_markdown

TAB = "prompt learning"
_DG_TITLES = {"imagenet_v2_mf": "-V2", "imagenet_sketch": "-Sketch", "imagenet_a": "-A", "imagenet_r": "-R"}


def _f(value, fmt: str = ".1f"):
    return None if value is None else format(value, fmt)


def build(ctx: PublishContext) -> list[Section]:
    from .tables import base2new_table, cost_table, cross_table, rows_of, shot_curves

    rows = rows_of(ctx.records())
    if not rows:
        return []
    sections = []
    datasets, b2n = base2new_table(rows)
    if b2n:
        cols = [("backbone", "backbone"), ("method", "method")]
        for d in datasets:
            cols += [(f"{d}:B", f"{d} B"), (f"{d}:N", f"{d} N"), (f"{d}:HM", f"{d} HM")]
        cols += [("avg:B", "average B"), ("avg:N", "average N"), ("avg:HM", "HM of average B, N"), ("avg:mHM", "mean of per-dataset HM"),
                 ("n", "datasets")]
        table = []
        for r in b2n:
            row = {"backbone": r["backbone"], "method": r["method"], "n": r["n_datasets"]}
            for d in datasets:
                if d in r:
                    row.update({f"{d}:B": _f(r[d][0]), f"{d}:N": _f(r[d][1]), f"{d}:HM": _f(r[d][2])})
            a = r["average"]
            row.update({"avg:B": _f(a["base"]), "avg:N": _f(a["new"]), "avg:HM": _f(a["hm_of_means"]), "avg:mHM": _f(a["mean_of_hms"])})
            table.append(row)
        caption = ("Base-to-new generalisation (top-1 %, mean over seeds): B = base classes, N = new classes (never trained on), "
                   "HM = 2BN/(B+N). 'HM of average B, N' is the papers' convention; 'mean of per-dataset HM' averages each dataset's HM.")
        csv = "backbone,method,dataset,base,new,hm\n" + "".join(
            f"{r['backbone']},{r['method']},{d},{r[d][0]:.4f},{r[d][1]:.4f},{r[d][2]:.4f}\n" for r in b2n for d in datasets if d in r)
        sections.append(Section(TAB, "Base-to-new", f"<p>{esc(caption)}</p>" + table_html(table, cols), f"_{caption}_\n\n" + table_markdown(table, cols),
                                files={"prompt_base2new.csv": csv}, order=10))
    curves = shot_curves(rows)
    if curves:
        sections.append(_curves_section(curves))
    targets, cross = cross_table(rows)
    if cross:
        cols = [("backbone", "backbone"), ("method", "method"), ("source", "source"), ("source_top1", "source top-1")] + \
               [(t, t) for t in targets] + [("target_mean_top1", "target mean"), ("seeds", "seeds")]
        table = [{**r, **{k: _f(r[k]) for k in ["source_top1", "target_mean_top1", *targets]}} for r in cross]
        caption = "Cross-dataset transfer (top-1 %, mean over seeds): trained on the source's few-shot split, evaluated on each target's test split."
        sections.append(Section(TAB, "Cross-dataset", f"<p>{esc(caption)}</p>" + table_html(table, cols), f"_{caption}_\n\n" + table_markdown(table, cols), order=30))
    targets, dg = cross_table(rows, "dg")
    if dg:
        cols = [("backbone", "backbone"), ("method", "method"), ("source_top1", "ImageNet")] + \
               [(t, _DG_TITLES.get(t, t)) for t in targets] + [("target_mean_top1", "target average"), ("seeds", "seeds")]
        table = [{**r, **{k: _f(r[k]) for k in ["source_top1", "target_mean_top1", *targets]}} for r in dg]
        caption = ("Domain generalisation (top-1 %, mean over seeds): trained on few-shot ImageNet, evaluated on ImageNet's val and its shifted sets; "
                   "ImageNet-A and -R within their 200 classes (timm's index files), as the papers report them.")
        sections.append(Section(TAB, "Domain generalisation", f"<p>{esc(caption)}</p>" + table_html(table, cols), f"_{caption}_\n\n" + table_markdown(table, cols), order=35))
    cost = cost_table(rows)
    cols = [("backbone", "backbone"), ("method", "method"), ("trainable_params", "trainable parameters"), ("wall_s", "wall time per cell (s)"),
            ("fit_s", "fit time per cell (s)"), ("cells", "cells")]
    caption = "What each method costs: parameters it trains (the towers stay frozen) and the mean time of its cells on the machine that ran them."
    sections.append(Section(TAB, "Trainable parameters and wall time", f"<p>{esc(caption)}</p>" + table_html(cost, cols),
                            f"_{caption}_\n\n" + table_markdown(cost, cols), order=40))
    return sections


def _curves_section(curves) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({d for per in curves.values() for d in per}, key=lambda d: (d != "average", d))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False, constrained_layout=True)
    lines = sorted(curves)
    colours = plt.cm.tab20.colors
    style = {key: (colours[(2 * i) % 20 + (2 * i) // 20 % 2], "osD^v<>p*hX"[i % 11]) for i, key in enumerate(lines)}
    all_shots = sorted({k for per in curves.values() for points in per.values() for k in points})
    csv = ["backbone,method,dataset,shots,mean,ci_low,ci_high,seeds"]
    summary = []
    for ax, panel in zip(axes[0], panels):
        for (backbone, method), per in sorted(curves.items()):
            points = per.get(panel)
            if not points:
                continue
            shots = sorted(points)
            means = [points[k]["mean"] for k in shots]
            colour, marker = style[backbone, method]
            ax.plot(shots, means, marker=marker, color=colour, label=f"{method} ({backbone})" if len({b for b, _ in curves}) > 1 else method)
            lo = [points[k]["lo"] for k in shots]
            hi = [points[k]["hi"] for k in shots]
            if all(v == v for v in lo + hi):  # intervals need two seeds
                ax.fill_between(shots, lo, hi, alpha=0.12, color=colour, linewidth=0)
            for k in shots:
                p = points[k]
                csv.append(f"{backbone},{method},{panel},{k},{p['mean']:.4f},{p['lo']:.4f},{p['hi']:.4f},{p['n']}")
            if panel == "average":
                summary.append({"backbone": backbone, "method": method,
                                **{f"k{k}": f"{points[k]['mean']:.1f}" + (f" [{points[k]['lo']:.1f}, {points[k]['hi']:.1f}]" if points[k]["lo"] == points[k]["lo"] else "")
                                   for k in shots}})
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_shots, [str(k) for k in all_shots])
        ax.minorticks_off()
        ax.set_title(panel if panel != "average" else "average over datasets", fontsize=9)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 (%)")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    html = figure_html(fig, "accuracy against shots per class, mean and 95% interval over seeds")
    plt.close(fig)
    cols = [("backbone", "backbone"), ("method", "method")] + [(f"k{k}", f"{k}-shot") for k in all_shots]
    caption = "Few-shot accuracy (top-1 %, test) against shots per class: mean over seeds with its 95% bootstrap interval; the average is over the datasets every seed has."
    return Section(TAB, "Accuracy against shots", f"<p>{esc(caption)}</p>" + html + table_html(summary, cols),
                   f"_{caption}_\n\nAverage over datasets:\n\n" + table_markdown(summary, cols) + "\n[prompt_shots.csv](prompt_shots.csv)\n",
                   files={"prompt_shots.csv": "\n".join(csv) + "\n"}, order=20)


register_section("prompt-learning", build, order=50)
