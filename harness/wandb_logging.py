"""Weights & Biases logging: one wandb run per cell, and a summary run per published leaderboard.

Optional: without wandb installed bob warns once and carries on; a logging failure never costs a
result (the runner catches it). ``WANDB_MODE=offline`` works: runs are written under ./wandb/
and can be synced later with ``wandb sync``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def parse_target(target: str) -> tuple[str, str | None]:
    """``PROJECT`` or ``PROJECT/ENTITY`` (the order the issue's CLI uses)."""
    project, _, entity = target.partition("/")
    return project, entity or None


def _import_wandb():
    try:
        import wandb
    except ImportError:
        warnings.warn("--wandb given but wandb is not installed (pip install 'bob-harness[wandb]'); continuing without logging")
        return None
    return wandb


class CellLogger:
    """Logs one cell: spec as config, training curves per epoch, final metrics in the summary."""

    def __init__(self, wandb, target: str, sweep: str | None, spec) -> None:
        project, entity = parse_target(target)
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=sweep or "adhoc",
            job_type=spec.method,
            name=f"{spec.backbone} {spec.method} {spec.task} s{spec.seed}",
            tags=[spec.backbone, spec.task, spec.method, f"weights:{spec.weights}"],
            config={**spec.as_dict(), "cell_id": spec.id, "sweep": sweep},
            reinit="finish_previous",
        )

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def finish(self, record: dict[str, Any]) -> None:
        self.run.config.update({"hparams_resolved": record.get("hparams"), "backbone_meta": record.get("backbone_meta"),
                                "metric_specs": record.get("metric_specs") or {}}, allow_val_change=True)
        self.run.summary.update({**{f"final/{k}": v for k, v in (record.get("metrics") or {}).items()}, "status": record["status"],
                                 "wall_s": record.get("timing", {}).get("wall_s")})
        if record.get("error"):
            self.run.summary["error"] = record["error"]["message"]
        self.run.finish(exit_code=0 if record["status"] != "failed" else 1)


def cell_logger_factory(target: str | None, sweep: str | None):
    """A ``logger_factory`` for ``run_cell`` (None when no target or wandb is missing)."""
    if not target:
        return None
    wandb = _import_wandb()
    if wandb is None:
        return None
    return lambda spec: CellLogger(wandb, target, sweep, spec)


def log_leaderboard(target: str, name: str, overall, folder: Path, metrics: dict | None = None) -> None:
    """A summary run (job type ``leaderboard``) with the overall table and the plots."""
    wandb = _import_wandb()
    if wandb is None:
        return
    project, entity = parse_target(target)
    run = wandb.init(project=project, entity=entity, group=name, job_type="leaderboard", name=f"leaderboard {name}", reinit="finish_previous",
                     config={"leaderboard": name, "metrics": metrics or {}})
    columns = ["method", "row", "score", "mean_rank", "n_tasks", "tasks_total", "family", "pretrain_method", "params_m", "param_bucket"]
    table = wandb.Table(columns=columns, data=[[None if v != v else v for v in (r[c] for c in columns)] for _, r in overall.iterrows()])
    payload = {"leaderboard": table}
    for png in sorted(Path(folder).glob("*.png")):
        payload[f"plots/{png.stem}"] = wandb.Image(str(png))
    run.log(payload)
    run.finish()
