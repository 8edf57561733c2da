"""The ``bob`` command line: a thin shell over the public API (lm-eval style).

Heavy libraries are imported inside commands, so ``bob --help`` and ``bob list`` stay fast.
A ``BobError`` is printed as one line (``error: ...``) with exit status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import BobError
from .values import parse_value

def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    head = "  ".join(c.upper().ljust(widths[c]) for c in columns)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([head, *body])


class BobGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BobError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=BobGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bob-harness", prog_name="bob")
def main():
    """bob, the backbone battle harness: backbones x methods x tasks -> records -> leaderboards.

    \b
    Quick start:
      bob list backbones --family vit
      bob run --backbone timm:resnet18.a1_in1k --method linear --task digits --weights auto
      bob sweep grids/quickstart.yaml && bob publish quickstart --name quickstart
    """


# -- list -------------------------------------------------------------------------------------
def _or_dash(value):
    """Unknown until built (a language model's size, a tower the meta device cannot trace): '-'."""
    return "-" if value is None else value


@main.command("list")
@click.argument("what", type=click.Choice(["backbones", "methods", "tasks", "suites"]))
@click.option("--family", help="backbones: cnn, vit, swin, convnext, hiera ...")
@click.option("--pretrain", help="backbones: supervised, self-supervised, vision-language ...")
@click.option("--source", help="backbones: timm, openclip, hf (language models), hf-owl, scratch, baseline")
@click.option("--data", "pretrain_data", help="backbones: pre-training data (substring: LAION-2B, ImageNet-21k ...)")
@click.option("--kind", help="tasks/methods: classification, retrieval, image_retrieval, detection, icl_regression, lm_probe")
@click.option("--group", help="tasks: e.g. builtin, vtab1k/natural")
@click.option("--suite", help="tasks: vtab1k, fgvc, retrieval, detection, icl")
def list_cmd(what, family, pretrain, source, pretrain_data, kind, group, suite):
    """List registered backbones, methods or tasks (filterable)."""
    from .registry import BACKBONES, METHODS, TASKS

    def has(value, wanted):
        return wanted is None or (value is not None and wanted.lower() in str(value).lower())

    if what == "backbones":
        rows = [
            {"name": e.name, "family": e.meta.get("family"), "pretraining": e.meta.get("pretrain_method"), "data": _or_dash(e.meta.get("pretrain_data")),
             "params_m": _or_dash(e.meta.get("params_m")), "gflops": _or_dash(e.meta.get("gflops"))}
            for e in BACKBONES.entries()
            if (family is None or (e.meta.get("family") or "").lower() == family.lower()) and has(e.meta.get("pretrain_method"), pretrain)
            and (source is None or (e.meta.get("source") or "").lower() == source.lower()) and has(e.meta.get("pretrain_data"), pretrain_data)
        ]
        click.echo(format_table(rows, ["name", "family", "pretraining", "data", "params_m", "gflops"]))
        for p in BACKBONES.prefixes():
            if source is None or p.prefix == source:
                click.echo(f"\nalso: {p.help}")
    elif what == "methods":
        rows = [
            {"name": e.name, "kinds": ",".join(e.meta.get("kinds", [])), "frozen": "yes" if e.meta.get("frozen_backbone") else "no",
             "defaults": ", ".join(f"{k}={v}" for k, v in e.meta.get("defaults", {}).items()), "description": e.meta.get("description", "")}
            for e in METHODS.entries()
            if kind is None or kind in e.meta.get("kinds", [])
        ]
        click.echo(format_table(rows, ["name", "kinds", "frozen", "description", "defaults"]))
    elif what == "suites":
        from .suites import all_suites

        rows = [{"name": s.name, "title": s.title, "groups": ", ".join(f"{g.name} ({len(g.tasks)})" for g in s.groups), "rule": s.rule,
                 "data hooks": ", ".join(sorted(k for k in s.hooks if k != "prepare_notes")) or "-"} for s in all_suites()]
        click.echo(format_table(rows, ["name", "title", "groups", "rule", "data hooks"]))
    else:
        rows = [
            {"name": e.name, "kind": e.meta.get("kind"), "group": e.meta.get("group"), "classes": e.meta.get("num_classes", ""), "description": e.meta.get("description", "")}
            for e in TASKS.entries()
            if (kind is None or e.meta.get("kind") == kind) and has(e.meta.get("group"), group) and (suite is None or e.meta.get("suite") == suite)
        ]
        click.echo(format_table(rows, ["name", "kind", "group", "classes", "description"]))
        for p in TASKS.prefixes():
            click.echo(f"\nalso: {p.help}")
    if not rows:
        click.echo("(nothing matches these filters)", err=True)


# -- run --------------------------------------------------------------------------------------
def _parse_data_paths(pairs) -> dict[str, str]:
    out = {}
    for pair in pairs:
        task, sep, path = pair.partition("=")
        if not sep or not task or not path:
            raise BobError(f"--data-path {pair!r}: expected TASK=PATH, e.g. --data-path vtab1k/cifar100=/data/vtab-1k/cifar")
        out[task] = path
    return out


def _parse_sets(pairs):
    hparams = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BobError(f"--set {pair!r}: expected key=value, e.g. --set lr=1e-3")
        target = hparams
        parts = key.split(".")  # --set search.lr=[0.1,0.01]
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = parse_value(value)
    return hparams


@main.command()
@click.option("--backbone", "-b", required=True, help="e.g. timm:resnet50.a1_in1k (see `bob list backbones`)")
@click.option("--method", "-m", required=True, help="knn | linear | finetune ...")
@click.option("--task", "-t", required=True, help="e.g. digits, shapes/location, folder:/data/x")
@click.option("--weights", "-w", default="pretrained", show_default=True, help="pretrained | random | auto | PATH to .safetensors/.pth")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="hyper-parameter, repeatable (search.lr=[0.1,0.01] for an in-cell search)")
@click.option("--out", type=click.Path(file_okay=False), default="results/runs", show_default=True, help="result folder for the record")
@click.option("--data-root", envvar="BOB_DATA", help="root of on-disk datasets (env BOB_DATA)")
@click.option("--data-path", "data_paths", multiple=True, metavar="TASK=PATH", help="per-task data location (folder or hf:<dataset>), repeatable")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="feature cache (default $BOB_CACHE/features or ~/.cache/bob/features)")
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
@click.option("--wandb", "wandb_target", metavar="PROJECT[/ENTITY]", help="log the cell to Weights & Biases (WANDB_MODE=offline works)")
@click.option("--deterministic", is_flag=True, help="deterministic algorithms, 1 intra-op thread, seeded workers (part of the cell id)")
def run(backbone, method, task, weights, seed, sets, out, data_root, data_paths, cache_dir, device, wandb_target, deterministic):
    """Run one cell and print its metrics and where the record went."""
    from .executors.local import default_cache_dir
    from .features import FeatureCache
    from .grid import Grid, expand
    from .runner import run_cell
    from .spec import RunSpec
    from .store import ResultStore

    spec = RunSpec(backbone=backbone, method=method, task=task, seed=seed, weights=weights, hparams=_parse_sets(sets), deterministic=deterministic)
    expansion = expand(Grid("run", [(backbone, weights)], [method], [task], [seed], {method: spec.hparams}, data_root=data_root,
                            data_paths=_parse_data_paths(data_paths)))  # validates names and hparams
    if expansion.cells and expansion.cells[0].data:  # the identity of data the task draws per cell (few-shot ids)
        spec = RunSpec(**{**spec.as_dict(), "data": expansion.cells[0].data})
    from .wandb_logging import cell_logger_factory

    store = ResultStore(out)
    record = run_cell(spec, store, data_root=data_root, data_paths=_parse_data_paths(data_paths), feature_cache=FeatureCache(Path(cache_dir) if cache_dir else default_cache_dir()), device=device,
                      checkpoint_dir=store.folder / ".checkpoints", logger_factory=cell_logger_factory(wandb_target, store.sweep))
    _print_record(record)
    if record["status"] != "ok":
        sys.exit(1)


def _print_record(record):
    status = record["status"]
    if status == "ok":
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record["metrics"].items())
        weights = record["backbone_meta"].get("weights")
        click.echo(f"{status}: {metrics} ({weights} weights, {record['timing']['wall_s']:.1f} s)")
        if record["protocol"].get("selected_on"):
            click.echo(f"hyper-parameters chosen on {record['protocol']['selected_on']}: {record['protocol']['selected']}")
    else:
        click.echo(f"{status}: {record['error']['message']}", err=True)
    click.echo(f"record: {record.get('path')}")


# -- sweep ------------------------------------------------------------------------------------
def _parse_kv(pairs, flag) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BobError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} constraint=a100")
        out[key.lstrip("-")] = value
    return out


@main.command()
@click.argument("grid_file", type=click.Path())
@click.option("--results", "results_root", default="results", show_default=True, type=click.Path(file_okay=False), help="result store root")
@click.option("--dry-run", is_flag=True, help="print what would run, run nothing")
@click.option("--retry-failed", is_flag=True, help="also rerun cells whose record says failed")
@click.option("--retry-fallbacks", is_flag=True, help="also rerun `weights: auto` cells that ran random-init (e.g. after `bob prefetch`)")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="local: worker processes")
@click.option("--gpus", help="local: comma-separated GPU ids; worker k sees only gpus[k % n] (CUDA_VISIBLE_DEVICES)")
@click.option("--partition", help="slurm: partition")
@click.option("--time", "time_limit", default="60", show_default=True, help="slurm: time limit per array task (90, 1:30:00)")
@click.option("--cpus-per-task", type=int, default=1, show_default=True, help="slurm")
@click.option("--gpus-per-task", type=int, help="slurm")
@click.option("--mem", help="slurm: e.g. 16G")
@click.option("--array-parallelism", type=int, default=256, show_default=True, help="slurm: array tasks running at once")
@click.option("--account", help="slurm")
@click.option("--qos", help="slurm")
@click.option("--sbatch", "sbatch_opts", multiple=True, metavar="KEY=VALUE", help="slurm: extra sbatch option, repeatable")
@click.option("--chunk-size", type=int, default=4, show_default=True, help="slurm: cells per array task")
@click.option("--timeout-requeues", type=int, default=3, show_default=True, help="slurm: requeues after hitting the time limit")
@click.option("--wait/--no-wait", default=True, show_default=True, help="slurm: wait for the array and record dead tasks' cells")
@click.option("--follow", is_flag=True, help="slurm: live progress bar while waiting")
@click.option("--data-root", envvar="BOB_DATA", help="root of on-disk datasets (env BOB_DATA)")
@click.option("--data-path", "data_paths", multiple=True, metavar="TASK=PATH", help="per-task data location (folder or hf:<dataset>), repeatable")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="feature cache folder")
@click.option("--device", help="cpu, cuda ... (default: cuda if available)")
@click.option("--publish", "publish_name", help="after the sweep, write leaderboards/NAME/")
@click.option("--max-cells", type=int, help="refuse grids with more cells than this (default: the grid's max_cells, else 100000)")
@click.option("--wandb", "wandb_target", metavar="PROJECT[/ENTITY]", help="one wandb run per cell (group = sweep); with --publish also a summary run")
@click.option("--deterministic", is_flag=True, help="run every cell in deterministic mode (as the grid key deterministic: true; part of each cell id)")
@click.option("--gpus-per-cell", "--procs-per-cell", "gpus_per_cell", type=int,
              help="processes per cell under torch.distributed (one per GPU on CUDA; gloo processes on CPU); default: the grid's gpus_per_cell, else 1")
@click.option("--nodes-per-cell", type=int, help="nodes per cell (slurm); default: the grid's nodes_per_cell, else 1")
def sweep(grid_file, results_root, dry_run, retry_failed, retry_fallbacks, executor, workers, gpus, partition, time_limit, cpus_per_task, gpus_per_task, mem,
          array_parallelism, account, qos, sbatch_opts, chunk_size, timeout_requeues, wait, follow, data_root, data_paths, cache_dir, device,
          publish_name, max_cells, wandb_target, deterministic=False, gpus_per_cell=None, nodes_per_cell=None):
    """Expand GRID_FILE into cells and run those not done yet (locally or as SLURM job arrays)."""
    import time as _time

    from .grid import load_grid
    from .sweep import plan_sweep, record_skipped, save_plan, summarise

    grid = load_grid(grid_file)
    if max_cells is not None:
        if max_cells < 1:
            raise BobError(f"--max-cells {max_cells}: give a positive number")
        grid.max_cells = max_cells
    if data_root:  # expansion reads the data of tasks that draw it per cell (few-shot ids are part of the cell id)
        grid.data_root = data_root
    grid.data_paths = {**grid.data_paths, **_parse_data_paths(data_paths)}
    grid.deterministic = grid.deterministic or deterministic
    plan = plan_sweep(grid, results_root, retry_failed, retry_fallbacks)
    procs, nodes = gpus_per_cell or grid.gpus_per_cell, nodes_per_cell or grid.nodes_per_cell
    if procs * nodes > 1 or gpus_per_cell is not None:  # bad input fails here, before any cell runs
        from .distributed import check_cells, check_procs

        if executor == "local":
            if workers > 1 and procs > 1:
                raise BobError(f"--workers {workers} with --gpus-per-cell {procs}: run distributed cells one at a time (--workers 1)")
            if nodes > 1:
                raise BobError(f"nodes_per_cell={nodes} needs --executor slurm; locally a cell runs on one node")
            check_procs(procs, device, "--gpus-per-cell" if gpus_per_cell else f"{grid_file}: gpus_per_cell")
        check_cells(plan.to_run, procs * nodes)
    click.echo(plan.describe())
    if dry_run:
        for spec in plan.to_run:
            click.echo(f"  would run {spec.id}  {spec.label()}")
        return
    record_skipped(plan)
    paths = {**grid.data_paths, **_parse_data_paths(data_paths)}
    common = dict(data_root=data_root or grid.data_root, data_paths=paths, cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None)
    since = _time.time()
    from .determinism import prepare_process
    from .environment import new_sweep_invocation

    invocation = new_sweep_invocation()  # records written by this sweep's processes (and array tasks) carry it
    prepare_process(grid.deterministic)
    if not plan.to_run:
        click.echo(f"nothing to run: all {len(plan.done)} cells already done (results in {plan.store.folder})")
    elif executor == "slurm":
        from .executors.slurm import SlurmOptions, parse_time, remember_specs, submit, wait_and_reconcile

        if nodes > 1:
            raise BobError(f"nodes_per_cell={nodes}: a cell spans one node for now (its ranks start under torch.distributed's launcher "
                           "inside one array task); use gpus_per_cell up to a node's GPUs")
        if procs > 1:  # the array task holds the whole cell: a CPU per rank at least, a GPU per rank when GPUs are asked for
            cpus_per_task = max(cpus_per_task, procs)
            if gpus_per_task is not None and gpus_per_task < procs:
                raise BobError(f"--gpus-per-cell {procs} is more than --gpus-per-task {gpus_per_task} gives each array task; raise --gpus-per-task")
        opts = SlurmOptions(partition=partition, time_min=parse_time(time_limit), cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task,
                            mem=mem, array_parallelism=array_parallelism, account=account, qos=qos, chunk_size=chunk_size,
                            timeout_requeues=timeout_requeues, sbatch=_parse_kv(sbatch_opts, "--sbatch"))
        remember_specs(plan.store, plan.to_run)
        manifest = submit(plan.to_run, plan.store, opts, since, wandb_target=wandb_target, procs_per_cell=procs, **common)
        save_plan(plan)  # only once sbatch accepted the array: a refused submission leaves nothing behind
        click.echo(f"submitted SLURM array {manifest['array_job_id']}: {len(manifest['tasks'])} tasks x <= {chunk_size} cells; logs in {plan.store.folder / '.slurm'}")
        if not wait:
            click.echo(f"not waiting; follow with `bob status {plan.store.folder}`")
            return
        states = wait_and_reconcile(plan.store, manifest, follow=follow)
        from collections import Counter

        click.echo("array tasks: " + ", ".join(f"{v} {k}" for k, v in sorted(Counter(states.values()).items())))
    else:
        from .executors.worker import run_worker, run_workers

        specs = [s.as_dict() for s in plan.to_run]
        save_plan(plan)
        if workers > 1:
            run_workers(workers, gpus.split(",") if gpus else None, spec_dicts=specs, store_folder=str(plan.store.folder), since=since,
                        device=device, wandb_target=wandb_target, **common)
        else:
            run_worker(specs, str(plan.store.folder), since, device=device, wandb_target=wandb_target, procs_per_cell=procs, **common)
    if plan.to_run:
        from .executors.worker import finished_since

        finished = [r for r in (plan.store.read(s.id) for s in plan.to_run if finished_since(plan.store, s.id, since)) if r]
        here = [r for r in finished if (r.get("environment") or {}).get("sweep_invocation") in (None, invocation)]  # reconciled failures carry none
        counts = summarise(here)
        by_others = len(finished) - len(here)
        pending = len(plan.to_run) - len(finished)
        click.echo(f"ran {len(here)} cells: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none")
                   + (f"; {by_others} finished elsewhere (by concurrent sweeps)" if by_others else "")
                   + (f"; {pending} still running elsewhere" if pending else "") + f"; results in {plan.store.folder}")
    if publish_name:
        from .leaderboard import publish

        out = publish([plan.store], publish_name, wandb_project=wandb_target)
        click.echo(f"leaderboard: {out / 'index.html'} (and leaderboard.md, .csv, .tex, plots)")


# -- reproduce --------------------------------------------------------------------------------
@main.command()
@click.argument("target")
@click.option("--results", "results_root", default="results", show_default=True, help="where to look a cell id (or, with --sample, a sweep) up")
@click.option("--executor", type=click.Choice(["local", "workers", "slurm"]), default="local", show_default=True,
              help="what reruns the cell: in-process, a local worker pool, or a one-task SLURM array")
@click.option("--workers", type=int, default=2, show_default=True, help="workers: worker processes")
@click.option("--sample", type=int, help="TARGET is a sweep: reproduce N of its finished cells, drawn at random (--seed)")
@click.option("--seed", "sample_seed", type=int, default=0, show_default=True, help="--sample: which cells are drawn")
@click.option("--tolerance", type=float, help="relative band for cells that did not run deterministically (default 0.01, or the metric's declared tolerance)")
@click.option("--scratch", type=click.Path(file_okay=False), help="keep the rerun's store here (default: a temporary folder)")
@click.option("--device", help="cpu, cuda ... (default: cuda if available)")
def reproduce(target, results_root, executor, workers, sample, sample_seed, tolerance, scratch, device):
    """Rerun the cell of a stored record (RECORD file or CELL_ID) into a scratch store, verify its
    weights and data first, and print stored / new / difference per metric. Exit 1 when a
    difference exceeds its tolerance (exact for deterministic cells), 2 when an input changed."""
    from .reproduce import find_record, reproduce_record, report, sample_records

    if sample is not None:
        if sample < 1:
            raise BobError(f"--sample {sample}: give a positive number of cells")
        targets = sample_records(target, sample, results_root, sample_seed)
    else:
        targets = [find_record(target, results_root)]
    failed = []
    for record, path in targets:
        try:
            rep = reproduce_record(record, path, executor, Path(scratch) if scratch else None, tolerance, workers, device)
        except BobError as exc:
            if sample is None:
                raise
            click.echo(f"cell {record['id']}: refused: {exc}")
            failed.append(record["id"])
            continue
        click.echo(report(rep))
        if not rep.ok:
            failed.append(rep.cell_id)
    if sample is not None:
        click.echo(f"{len(targets) - len(failed)}/{len(targets)} sampled cells reproduced" + (f"; not: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


# -- results / aggregate / publish ------------------------------------------------------------
@main.group()
def results():
    """Manage the result store."""


@results.command("compact")
@click.argument("sweeps", nargs=-1, required=True)
@click.option("--results", "results_root", default="results", show_default=True)
def results_compact(sweeps, results_root):
    """Write results/<sweep>.parquet from the sweep's JSON records."""
    from .aggregate import compact
    from .store import resolve_store

    for name in sweeps:
        click.echo(f"wrote {compact(resolve_store(name, results_root))}")


@results.command("clean")
@click.argument("sweeps", nargs=-1, required=True)
@click.option("--results", "results_root", default="results", show_default=True)
def results_clean(sweeps, results_root):
    """Remove temp files left by writers that were killed mid-write (records are never affected)."""
    from .store import resolve_store

    for name in sweeps:
        store = resolve_store(name, results_root)
        leftovers = store.leftover_temp_files()
        for path in leftovers:
            path.unlink(missing_ok=True)
        click.echo(f"{store.folder}: removed {len(leftovers)} temp file(s)")


@main.command()
@click.argument("sweeps", nargs=-1, required=True)
@click.option("--results", "results_root", default="results", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["md", "csv"]), default="md", show_default=True)
@click.option("--family", help="only backbones of this family (cnn, vit, ...)")
@click.option("--pretrain", help="only this pre-training method (substring: supervised, self-supervised, random ...)")
@click.option("--data", "pretrain_data", help="only this pre-training data (substring)")
@click.option("--min-params", type=float, help="millions of parameters, inclusive")
@click.option("--max-params", type=float, help="millions of parameters, inclusive")
@click.option("--view", type=click.Choice(["backbones", "methods", "matrix"]), default="backbones", show_default=True,
              help="backbones: BoB score and backbone x task tables per method; methods: per backbone, methods x suite means with %% trainable; matrix: backbone x method")
def aggregate(sweeps, results_root, fmt, family, pretrain, pretrain_data, min_params, max_params, view):
    """Print the BoB overall score / mean rank and backbone x task tables, one set per method."""
    from .aggregate import aggregate_markdown, csv_long, frame_for
    from .leaderboard import overall_markdown
    from .scores import cell_stats, filter_backbones, overall_scores

    df, _ = frame_for(list(sweeps), results_root, with_json=False)
    if not df.empty:
        df = filter_backbones(df, family, pretrain, pretrain_data, min_params, max_params)
    if df.empty:
        raise BobError("no records match (check the sweep names and the filters)")
    if fmt == "csv":
        click.echo(csv_long(df), nl=False)
        return
    if view != "backbones":
        from .aggregate import backbone_method_matrix, method_view_markdown

        click.echo(method_view_markdown(df) if view == "methods" else backbone_method_matrix(df), nl=False)
        return
    overall = overall_scores(cell_stats(df))
    for method in sorted(overall["method"].unique()):
        click.echo(f"## {method}: overall (BoB score = mean per-task z-score)\n\n{overall_markdown(overall, method)}")
    click.echo(aggregate_markdown(df), nl=False)


@main.command()
@click.argument("sweeps", nargs=-1, required=True)
@click.option("--name", required=True, help="leaderboard name: writes leaderboards/NAME/")
@click.option("--results", "results_root", default="results", show_default=True)
@click.option("--out", "out_root", default="leaderboards", show_default=True)
@click.option("--wandb", "wandb_target", metavar="PROJECT[/ENTITY]", help="also log a summary run with the leaderboard table and plots")
@click.option("--family", help="only backbones of this family (cnn, vit, ...)")
@click.option("--pretrain", help="only this pre-training method (substring: supervised, vision-language, random ...)")
@click.option("--data", "pretrain_data", help="only this pre-training data (substring: LAION-2B, ImageNet-21k ...)")
def publish(sweeps, name, results_root, out_root, wandb_target, family, pretrain, pretrain_data):
    """Write leaderboards/NAME/: index.html, leaderboard.md/.csv, results.parquet, table.tex, plots, METHODOLOGY.md."""
    from .leaderboard import publish_frame

    filters = {k: v for k, v in {"family": family, "pretrain": pretrain, "data": pretrain_data}.items() if v}
    out = publish_frame(list(sweeps), name, out_root, results_root=results_root, wandb_project=wandb_target, filters=filters)
    click.echo(f"leaderboard: {out / 'index.html'} (and leaderboard.md, .csv, .tex, plots)")


# -- analysis (harness.analysis) -----------------------------------------------------------------
def _table_options(f):
    for option in reversed([
        click.option("--method", "-m", help="the method whose table to analyse (needed when the records hold several)"),
        click.option("--suite", help="only the tasks of this suite / page tab (vtab1k, fgvc, ...)"),
        click.option("--group", help="only the tasks of this task group (vtab1k/natural, ...)"),
        click.option("--task", "tasks", multiple=True, help="only these tasks (repeatable)"),
        click.option("--results", "results_root", default="results", show_default=True),
    ]):
        f = option(f)
    return f


@main.command()
@click.argument("a")
@click.argument("b")
@click.argument("sweeps", nargs=-1, required=True)
@_table_options
def compare(a, b, sweeps, method, suite, group, tasks, results_root):
    """Backbone A against backbone B on the tasks both ran: per-task difference with a seed interval,
    the mean difference with a bootstrap interval over tasks and seeds, and a Wilcoxon test."""
    from .analysis import compare as compare_backbones
    from .analysis import load

    click.echo(compare_backbones(load(*sweeps, results_root=results_root), a, b, method, suite, group, list(tasks) or None).to_text())


@main.command()
@click.argument("sweeps", nargs=-1, required=True)
@_table_options
@click.option("--alpha", type=float, default=0.05, show_default=True, help="significance level")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="also write the critical-difference diagram (Nemenyi) here (.png/.pdf/.svg)")
def significance(sweeps, method, suite, group, tasks, results_root, alpha, plot_path):
    """Friedman test over backbones across tasks, then Nemenyi and Wilcoxon-Holm groups and the mean
    win rate, for one table (a method, optionally a suite, group or task list)."""
    from .analysis import load, significance as run_significance
    from .analysis.winrate import RULE, task_win_rates

    if not 0 < alpha < 1:
        raise BobError(f"--alpha {alpha}: give a level between 0 and 1, e.g. 0.05")
    df = load(*sweeps, results_root=results_root)
    sig = run_significance(df, method, suite, group, list(tasks) or None, alpha)
    click.echo(sig.summary())
    from .analysis.frame import select

    rates = task_win_rates(select(df, method, suite, group, list(tasks) or None).wide("good")).mean(axis=0, skipna=True)
    if sig.ran:
        table = sig.table()
        rows = [{"backbone": r["backbone"], "mean rank": f"{r['mean_rank']:.2f}", "win rate": f"{rates.get(r['backbone'], float('nan')):.2f}",
                 **{p: r[f"group_{p}"] if sig.pvalues.get(p) is not None or not sig.friedman.rejected else "-" for p in ("nemenyi", "wilcoxon-holm")}} for r in table.to_dict("records")]
        click.echo(format_table(rows, ["backbone", "mean rank", "win rate", "nemenyi", "wilcoxon-holm"]))
        click.echo(f"backbones sharing a letter are not significantly different" + (f"; Nemenyi critical difference {sig.cd:.2f} ranks" if sig.cd else ""))
    else:
        click.echo(format_table([{"backbone": r, "win rate": f"{v:.2f}"} for r, v in rates.sort_values(ascending=False).items()], ["backbone", "win rate"]))
    for message in (m for k, m in sig.messages.items() if k != "friedman"):
        click.echo(message)
    click.echo(f"assumptions: {sig.assumptions}")
    click.echo(f"win rate: {RULE}")
    if plot_path:
        if not sig.ran:
            raise BobError(f"--plot {plot_path}: no diagram without a test ({sig.friedman.message})")
        fig, _ = sig.plot("nemenyi")
        fig.savefig(plot_path, bbox_inches="tight", dpi=150)
        click.echo(f"wrote {plot_path}")


@main.command()
@click.argument("sweep_name")
@click.option("--results", "results_root", default="results", show_default=True)
@click.option("--grid", "grid_file", type=click.Path(exists=True), help="the sweep's grid, to count cells not submitted yet as pending")
def status(sweep_name, results_root, grid_file):
    """Counts by state (pending, running, ok, failed, skipped), failed cells with their error and log, ETA."""
    from .sweep import sweep_status

    st = sweep_status(sweep_name, results_root, grid_file)
    click.echo(f"{st['folder']}: " + ", ".join(f"{st['counts'][k]} {k}" for k in ("pending", "running", "ok", "failed", "skipped")))
    for cell in st["running"]:
        click.echo(f"  running {cell['id']} on {cell['host']}" + (f" (SLURM {cell['slurm']})" if cell.get("slurm") else "") + f", heartbeat {cell['age_s']:.0f} s ago")
    for r in st["failed"]:
        click.echo(f"  failed {r['id']} {r.get('backbone')} {r.get('method')} {r.get('task')} s{r.get('seed')}: {r['error']['message']}"
                   + (f" [log: {r['log']}]" if r.get("log") else ""))
    if st["eta_s"] is not None:
        click.echo(f"ETA: ~{st['eta_s'] / 60:.1f} min for {st['counts']['pending'] + st['counts']['running']} unfinished cells "
                   f"(mean {st['mean_wall_s']:.1f} s per finished cell, {max(1, st['counts']['running'])} at a time)")


@main.command()
@click.argument("grid_file", type=click.Path())
def prefetch(grid_file):
    """Download every weight and dataset GRID_FILE needs into the local caches (run on a login node)."""
    from .grid import load_grid
    from .prefetch import prefetch_grid

    rows = prefetch_grid(load_grid(grid_file))
    click.echo(format_table(rows, ["item", "kind", "status", "detail"]))
    if any(r["status"] == "missing" for r in rows):
        raise BobError(f"{sum(r['status'] == 'missing' for r in rows)} item(s) could not be fetched; see the table above")


@main.group()
def plot():
    """Figures drawn from records alone."""


@plot.command("icl")
@click.argument("sweeps", nargs=-1, required=True)
@click.option("--results", "results_root", default="results", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="default: <first sweep>/plots")
def plot_icl_cmd(sweeps, results_root, out_dir):
    """Error vs number of in-context examples for every model (PNG per task), from the records."""
    from .plots import plot_icl
    from .store import resolve_store

    stores = [resolve_store(s, results_root) for s in sweeps]
    paths = plot_icl([r for s in stores for r in s.records()], Path(out_dir) if out_dir else stores[0].folder / "plots")
    if not paths:
        raise BobError("no finished in-context-learning records (methods pretrain_icl / icl_eval) in " + ", ".join(sweeps))
    for p in paths:
        click.echo(f"wrote {p}")


# -- data -------------------------------------------------------------------------------------
@main.group()
def data():
    """Check and prepare on-disk datasets (VTAB-1k, FGVC)."""


@data.command("verify")
@click.argument("suite")
@click.option("--root", "data_root", envvar="BOB_DATA", help="data root (env BOB_DATA)")
@click.option("--data-path", "data_paths", multiple=True, metavar="TASK=PATH", help="per-task location, repeatable")
@click.option("--open-images/--no-open-images", default=True, show_default=True, help="decode every image (slower, finds corrupt files)")
def data_verify(suite, data_root, data_paths, open_images):
    """Check every task of SUITE (vtab1k, fgvc, ...): files, counts per split, label range, unreadable images.
    SUITE may also be a task id with a data check (folder:<path>, csv:<file>, parquet:<file>)."""
    if ":" in suite:  # one task that carries its own check: layout, splits, classes, duplicates, the task id to use
        from .registry import TASKS

        verify = TASKS.get(suite).meta.get("verify")
        if verify is None:
            raise BobError(f"task {suite} has no data check; `bob data verify` takes a suite or a folder:/csv:/parquet: task id")
        report, ready = verify(suite, open_images)
        click.echo(report)
        sys.exit(0 if ready else 1)
    from .suites import hook
    from .suites import suite as suite_spec

    check_data = hook(suite, "check_data")
    overrides = _parse_data_paths(data_paths)
    rows, problems = [], []
    for task_id in suite_spec(suite).tasks:
        check = check_data(task_id, data_root, overrides.get(task_id), open_images)
        row = {"task": task_id, "status": check.status, "location": check.location or "-"}
        row.update(check.counts)
        rows.append(row)
        if check.problems:
            problems.append(check)
    split_cols = sorted({k for r in rows for k in r} - {"task", "status", "location"}, key=lambda s: ("test" in s, s))
    click.echo(format_table(rows, ["task", "status", *split_cols, "location"]))
    ready = sum(r["status"] == "ready" for r in rows)
    click.echo(f"\n{ready}/{len(rows)} tasks ready")
    for check in problems:
        for problem in check.problems:
            click.echo(f"  {check.task}: {problem}")
        click.echo(f"    fix: {check.fix}")
    if ready < len(rows):
        sys.exit(1)


@data.command("prepare")
@click.argument("suite")
@click.option("--root", "data_root", envvar="BOB_DATA", help="where to write the suite (env BOB_DATA)")
@click.option("--from-hf", "source", metavar="hf:SOURCE", help="a Hugging Face mirror, {task} = task name, e.g. 'hf:org/vtab-{task}?image=img'")
@click.option("--task", "tasks", multiple=True, help="only these tasks (default: all of the suite)")
def data_prepare(suite, data_root, source, tasks):
    """Explain SUITE's layout and how to get it; with --from-hf, write it from a Hugging Face mirror."""
    from .suites import hook

    if not source:
        click.echo(hook(suite, "prepare_notes"))
        return
    if not data_root:
        raise BobError("--from-hf needs --root DIR (or BOB_DATA): where to write the suite")
    hook(suite, "prepare")(Path(data_root), source, list(tasks) or None, click.echo)
    click.echo(f"next: bob data verify {suite} --root {data_root}")


if __name__ == "__main__":
    main()
