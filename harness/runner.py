"""run_cell: one RunSpec in, one RunRecord out. Never raises for a problem inside the cell.

Three hops from a number to its origin: the record's ``spec`` names the backbone / method /
task, ``METHODS.get(method).run`` computed ``metrics``, and ``protocol`` says which splits
chose the hyper-parameters and which split the number is on.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import random
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import BobError, RecordWriteError
from .metrics import resolve_specs
from .registry import BACKBONES, METHODS, TASKS
from .spec import RunSpec
from .store import RECORD_SCHEMA, ResultStore


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_supported(spec: RunSpec) -> str | None:
    """Why this cell cannot run (method does not support the task's kind), or None. Imports no torch."""
    method_meta = METHODS.get(spec.method).meta
    task_meta = TASKS.get(spec.task).meta
    kind = task_meta.get("kind")
    if kind and kind not in method_meta.get("kinds", ()):
        return f"method {spec.method} does not support {kind} tasks (it supports {', '.join(method_meta.get('kinds', ()))})"
    sources = method_meta.get("backbone_sources") or []
    backbone_source = BACKBONES.get(spec.backbone).meta.get("source")
    if sources and backbone_source not in sources:
        return f"method {spec.method} runs only {'/'.join(sources)} backbones, not {backbone_source} ones"
    accepted = task_meta.get("methods")  # a task may name the methods that make sense for it (bias probes)
    if accepted and spec.method not in accepted:
        why = task_meta.get("methods_why") or f"it accepts {', '.join(accepted)}"
        return f"task {spec.task} does not run method {spec.method}: {why}"
    if not sources and backbone_source in ("baseline", "scratch"):
        return f"method {spec.method} needs an image backbone; {spec.backbone} is a sequence model"
    requires = method_meta.get("backbone_requires") or {}
    if not sources and not requires.get("capabilities"):  # the vision methods: an image tower
        requires = {**requires, "capabilities": ["image"], "capability_why": "it needs an image tower"}
    missing = [c for c in requires.get("capabilities", ()) if c not in (BACKBONES.get(spec.backbone).meta.get("capabilities") or ["image"])]
    if missing:
        why = requires.get("capability_why") or requires.get("why") or f"it needs a {'/'.join(missing)} tower"
        return f"method {spec.method} cannot run on {spec.backbone}: {why}"
    if requires.get("architectures"):
        from .adapt import architecture_supported

        if not architecture_supported(requires, BACKBONES.get(spec.backbone).meta.get("architecture")):
            return (f"method {spec.method} cannot adapt {spec.backbone}: {requires.get('why', 'unsupported architecture')} "
                    f"(supported: {', '.join(requires['architectures'])}*)")
    return None


def classify_exception(exc: Exception) -> tuple[str, str]:
    """(type, one-line message). submitit raises UncompletedJobError into the cell when the SLURM
    time limit's warning signal arrives and no requeue is left: that is a time-out, not a bug."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__name__ == "UncompletedJobError" and "timed-out" in first:
        return "SlurmTimeout", f"stopped by the SLURM time limit ({first}); give more --time or --timeout-requeues"
    return type(exc).__name__, f"{type(exc).__name__}: {first}"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_cell(
    spec: RunSpec,
    store: ResultStore | None = None,
    *,
    data_root: str | None = None,
    data_paths: dict[str, str] | None = None,
    feature_cache=None,
    checkpoint_dir: Path | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
    logger_factory: Callable[[RunSpec], Any] | None = None,
    extra: dict[str, Any] | None = None,
    write_record: bool = True,
    shard_devices: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one cell and write its record (atomically) when ``store`` is given (``write_record=False``:
    rank 0 of a distributed cell, whose launcher writes the record once every rank finished)."""
    from .determinism import deterministic_mode, reproducibility
    from .environment import default_device, environment
    from .features import FeatureCache
    from .fingerprint import RULE as FINGERPRINT_RULE
    from .fingerprint import data_fingerprint
    from .types import RunContext

    started, t0 = now_iso(), time.perf_counter()
    record = _skeleton(spec, store, started, extra)
    logger = None
    settings = contextlib.ExitStack()  # deterministic mode for this cell only (restored in finally)
    try:
        device = device or default_device()
        settings.enter_context(deterministic_mode(spec.deterministic))
        record["environment"] = environment(device)
        reason = check_supported(spec)
        if reason:
            record["status"] = "skipped"
            record["error"] = {"type": "Unsupported", "message": reason, "traceback": None}
            return _finish(record, store, t0, write_record)
        method = METHODS.get(spec.method).factory()
        hparams = method.resolve_hparams(spec.hparams)
        task_entry = TASKS.get(spec.task)
        per_cell = {"cell": spec} if task_entry.meta.get("data_identity") else {}  # tasks that draw data per cell (few-shot) get the seed and identity
        task = task_entry.factory(data_root=data_root, overrides=data_paths or {}, **per_cell)
        record["task_meta"] = task.meta()
        backbone = BACKBONES.get(spec.backbone).factory(weights=spec.weights, seed=spec.seed, img_size=hparams.get("img_size"))
        if spec.compress:  # between weight resolution and the method: the backbone builds its compressed twin
            from .compress.backbone import compress_backbone

            compress_backbone(backbone, spec, task)
        record["hparams"] = hparams
        if getattr(backbone, "preprocess", None) is not None:  # image backbones
            if getattr(task, "eval_preprocess", "backbone") == "model":  # the suite declares the model's own eval transform
                import dataclasses

                backbone.preprocess = dataclasses.replace(backbone.preprocess, crop_pct=float(
                    backbone.meta.get("crop_pct") or (0.875 if backbone.meta.get("source") == "timm" else 1.0)))  # CLIP: shorter side, centre crop
            hparams["img_size"] = backbone.preprocess.img_size
            record["preprocess"] = {
                **backbone.preprocess.as_dict(),
                "train_augmentation": _train_augmentation(method, hparams, task.hflip_ok),
            }
        else:
            hparams.pop("img_size", None)
            if "batch_size" not in method.defaults:
                hparams.pop("batch_size", None)
        record["reproducibility"] = {
            **reproducibility(device, spec.seed, spec.deterministic, hparams, random_sources=getattr(method, "random_sources", None)),
            "data_root": data_root, "data_paths": dict(data_paths or {}), "data": data_fingerprint(task), "data_rule": FINGERPRINT_RULE}
        seed_everything(spec.seed)
        if logger_factory is not None:
            logger = logger_factory(spec)
        ctx = RunContext(
            device=device,
            seed=spec.seed,
            cell_id=spec.id,
            feature_cache=feature_cache if feature_cache is not None else FeatureCache(None),
            checkpoint_dir=checkpoint_dir,
            log=log,
            on_metrics=getattr(logger, "log_metrics", None),
            shard_devices=tuple(shard_devices),
        )
        hits0, misses0 = ctx.feature_cache.hits, ctx.feature_cache.misses
        result = method.run(backbone, task, hparams, ctx)
        record["feature_cache"] = {"hits": ctx.feature_cache.hits - hits0, "misses": ctx.feature_cache.misses - misses0, "backbone_built": backbone.built}
        specs = resolve_specs(result.metrics, result.metric_specs, TASKS.get(spec.task).meta.get("metrics"), getattr(method, "metrics", None),
                              primary=result.primary_metric, primary_higher_is_better=getattr(method, "higher_is_better", True))
        primary_spec = specs[result.primary_metric]
        record.update(
            status="ok",
            metrics=result.metrics,
            metric_specs={name: s.as_dict() for name, s in specs.items()},
            primary_metric={"name": result.primary_metric, "value": result.metrics.get(result.primary_metric),
                            "higher_is_better": primary_spec.higher_is_better, "direction": primary_spec.direction, "target": primary_spec.target},
            protocol=result.protocol,
            curves=result.curves,
        )
        if result.adaptation:
            record["adaptation"] = result.adaptation
        if result.preprocess:  # the method ran its own eval transform (pretrained_head: the model's pretrained config)
            record["preprocess"] = result.preprocess
        if ctx.distributed or _world_size() > 1:  # how the cell was spread: world size, per-device batch, accumulation
            record["distributed"] = {"world_size": _world_size(), **ctx.distributed}
        if result.artifacts and store is not None:  # beside the record, written before it: a record never names a missing file
            record["artifacts"] = {name: str(store.write_artifact(spec.id, name, value)) for name, value in result.artifacts.items()}
        record["timing"].update({f"{k}_s": round(v, 3) for k, v in ctx.timings.items()})
        record["backbone_meta"] = _public_meta(backbone)
        if spec.compress:
            from .compress.backbone import compression_record

            record["compression"] = compression_record(backbone, spec)
        if checkpoint_dir is not None and _rank() == 0:  # finished: the resume points are no longer needed (rank 0 removes them)
            for ckpt in Path(checkpoint_dir).glob(f"{spec.id}-*.pt"):
                ckpt.unlink(missing_ok=True)
    except BobError as exc:
        record["error"] = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
    except Exception as exc:  # a bug or a library failure: keep everything needed to debug it
        kind, message = classify_exception(exc)
        record["error"] = {"type": kind, "message": message, "traceback": traceback.format_exc()}
    finally:
        settings.close()
        if logger is not None:
            try:
                logger.finish(record)
            except Exception as exc:  # logging must never cost a result
                log(f"warning: logger failed for {spec.id}: {exc}")
    if record["status"] == "failed" and not record["backbone_meta"]:
        record["backbone_meta"] = dict(BACKBONES.get(spec.backbone).meta) if spec.backbone in BACKBONES else {}
    return _finish(record, store, t0, write_record)


def _train_augmentation(method, hparams: dict, hflip: bool) -> str:
    """What the cell's training transform does (timm's recipe path says its RandAugment / erasing / mixup)."""
    if not hparams.get("augment"):
        return "none"
    from .methods import timm_recipe

    if not getattr(method, "frozen_backbone", True) and timm_recipe.active(hparams):
        return timm_recipe.describe_augmentation(hparams, hflip)
    return "random-resized-crop" + ("+hflip" if hflip else "")


def _world_size() -> int:
    from .distributed import world

    return world().size


def _rank() -> int:
    from .distributed import world

    return world().rank


def _skeleton(spec: RunSpec, store: ResultStore | None, started: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "id": spec.id,
        "sweep": store.sweep if store else None,
        "status": "failed",
        "spec": spec.as_dict(),
        **{k: v for k, v in spec.as_dict().items() if k != "hparams"},
        "hparams": None,
        "metrics": {},
        "primary_metric": None,
        "backbone_meta": {},
        "task_meta": {},
        "preprocess": None,
        "protocol": {},
        "curves": {},
        "timing": {},
        "environment": {},
        "error": None,
        "started": started,
        **(extra or {}),
    }
    return record


def failed_record(spec: RunSpec, store: ResultStore | None, kind: str, message: str, trace: str | None) -> dict[str, Any]:
    """The record of a cell that died outside ``run_cell`` (a distributed rank killed or crashed)."""
    record = _skeleton(spec, store, now_iso(), None)
    record["error"] = {"type": kind, "message": message, "traceback": trace}
    record["backbone_meta"] = dict(BACKBONES.get(spec.backbone).meta) if spec.backbone in BACKBONES else {}
    record["timing"]["wall_s"] = None
    record["created"] = now_iso()
    return record


def _public_meta(backbone) -> dict[str, Any]:
    """The backbone's metadata for the record (measured params/GFLOPs included once built)."""
    return {k: v for k, v in backbone.meta.items() if not k.startswith("_")} | {"name": backbone.name, "feature_dim": getattr(backbone, "feature_dim", None)}


def _finish(record: dict[str, Any], store: ResultStore | None, t0: float, write: bool = True) -> dict[str, Any]:
    record["timing"]["wall_s"] = round(time.perf_counter() - t0, 3)
    record["created"] = now_iso()
    return store_record(record, store) if write else record


def store_record(record: dict[str, Any], store: ResultStore | None) -> dict[str, Any]:
    """The record into the store, atomically (nothing when ``store`` is None)."""
    if store is not None:
        record["path"] = str(store.path_for(record["id"]))
        try:
            store.write(record)
        except OSError as exc:  # the atomic writer removed its temp file: the store holds no trace of this cell
            raise RecordWriteError(f"record of cell {record['id']} could not be written to {store.folder} ({exc.strerror or exc}); "
                                   "the cell stays pending: free space (or fix permissions) and rerun the sweep") from None
    return record
