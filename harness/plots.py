"""Figures drawn from records alone (no model is run again)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


def icl_curves(records: Iterable[dict[str, Any]]) -> dict[str, list[dict]]:
    """``{panel title: [record, ...]}`` for ok records that carry an ICL error curve."""
    panels: dict[str, list[dict]] = {}
    for r in records:
        if r.get("status") == "ok" and (r.get("curves") or {}).get("icl_error"):
            hp = r.get("hparams") or {}
            title = f"{r['task']} (d={hp.get('d')}" + (f", ood={hp['ood']}" if hp.get("ood", "none") != "none" else "") + ")"
            panels.setdefault(title, []).append(r)
    return panels


def plot_icl(records: Iterable[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per (task, d, ood): normalised squared error vs in-context examples, every model
    with its 95% band, like the figures of Garg et al. Seeds of one model are averaged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for title, recs in sorted(icl_curves(records).items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        by_model: dict[str, list[dict]] = {}
        for r in recs:
            by_model.setdefault(r["backbone"], []).append(r)
        for model, rs in sorted(by_model.items()):
            curves = [r["curves"]["icl_error"] for r in rs]
            n = min(len(c) for c in curves)
            ks = [p["k"] for p in curves[0][:n]]
            mean = np.mean([[p["mean"] for p in c[:n]] for c in curves], axis=0)
            lo = np.mean([[p["ci_low"] for p in c[:n]] for c in curves], axis=0)
            hi = np.mean([[p["ci_high"] for p in c[:n]] for c in curves], axis=0)
            line, = ax.plot(ks, mean, marker="o", ms=3, label=model.replace("baseline:", "").replace("scratch:", "") + (f" ({len(rs)} seeds)" if len(rs) > 1 else ""))
            ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
        d = recs[0]["hparams"].get("d")
        if d:
            ax.axvline(d, color="grey", ls=":", lw=1)
        ax.set(title=title, xlabel="in-context examples", ylabel="squared error / d", ylim=(-0.05, 1.6))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = "icl_" + "".join(c if c.isalnum() else "_" for c in title).strip("_") + ".png"
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(out_dir / name)
    return written
