"""``bob publish``: the leaderboard folder (Markdown and CSV) from one or more sweeps."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from .aggregate import aggregate_markdown, csv_long, records_frame
from .store import ResultStore, atomic_write_text


def backbone_meta_table(df: pd.DataFrame) -> str:
    ok = df[df["status"] == "ok"].drop_duplicates("backbone_label")
    lines = ["| backbone | family | pre-training | data | weights | params (M) | GFLOPs | input px |", "|---|---|---|---|---|---:|---:|---:|"]
    for r in ok.sort_values("backbone_label").itertuples():
        gflops = "—" if pd.isna(r.gflops) else f"{r.gflops:.3f}"
        params = "—" if pd.isna(r.params_m) else f"{r.params_m:.2f}"
        lines.append(f"| `{r.backbone_label}` | {r.family} | {r.pretrain_method} | {r.pretrain_data} | {r.weights_resolved} | {params} | {gflops} | {r.img_size} |")
    return "\n".join(lines) + "\n"


def publish(stores: list[ResultStore], name: str, out_root: Path | str = "leaderboards") -> Path:
    df = records_frame(stores)
    out = Path(out_root) / name
    out.mkdir(parents=True, exist_ok=True)
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    random_init = sorted(df.loc[df["weights_resolved"] == "random-init", "backbone"].dropna().unique()) if not df.empty else []
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shas = sorted(df["git_sha"].dropna().unique()) if not df.empty else []
    md = [
        f"# Leaderboard: {name}",
        "",
        f"Sweeps: {', '.join(s.sweep for s in stores)} · cells: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f" · generated {stamp} · bob git {', '.join(s[:10] for s in shas) or 'unknown'}",
        "",
        "Metric: top-1 accuracy (%) on each task's test split, mean ± std over seeds. "
        "`—` = no finished cell (never counted as zero); the row mean is shown only when every task is present.",
        "",
    ]
    if random_init:
        md += [f"**Random-init weights** (no pre-training; labelled `(random-init)` below): {', '.join(f'`{b}`' for b in random_init)}.", ""]
    md += [aggregate_markdown(df), "## Backbones", "", backbone_meta_table(df)]
    failed = df[df["status"] == "failed"] if not df.empty else df
    if len(failed):
        md += ["## Failed cells", "", *[f"- `{r.backbone_label}` {r.method} {r.task} seed {r.seed}: {r.error}" for r in failed.itertuples()], ""]
    atomic_write_text(out / "leaderboard.md", "\n".join(md))
    atomic_write_text(out / "leaderboard.csv", csv_long(df))
    return out
