"""One command to check a machine with a GPU (written before one was at hand, run on CPU in CI so it
cannot rot): ``python bench/gpu_check.py`` (CUDA, < 8 min) or ``--device cpu`` (< 1 min).

1. one tiny cell of every method family (knn, linear, finetune, a PEFT recipe, detection) on the device;
2. bf16 vs fp32 on the same fine-tuning cell (loss curve and top-1 agreement);
3. extraction and training throughput against plain timm loops with the same model, data, batch
   and loader workers (ratios: bob / plain);
4. DDP over all visible GPUs (gloo processes on CPU) against one, same global batch: step-time
   ratio and the per-step overhead;
5. peak memory.
Writes ``bench/results/gpu_check.json`` (``--out`` elsewhere) and prints one ``SUMMARY:`` line.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BACKBONE = "timm:vit_tiny_patch16_224.augreg_in21k"


def _cell(method: str, task: str, device: str, hp: dict, cache) -> dict:
    from harness.runner import run_cell
    from harness.spec import RunSpec

    spec = RunSpec(backbone=BACKBONE, method=method, task=task, seed=0, weights="random", hparams=hp)
    record = run_cell(spec, None, device=device, feature_cache=cache, log=lambda m: None)
    return {"status": record["status"], "primary": (record.get("primary_metric") or {}).get("value"),
            "error": (record.get("error") or {}).get("message"), "wall_s": record["timing"].get("wall_s"),
            "curve": [p["train_loss"] for p in record.get("curves", {}).get("train", []) or []]}


def _detection_cell(root: Path, device: str, size: int) -> dict:
    try:
        sys.path.insert(0, str(REPO / "tests"))
        from tests.test_detection import make_mini_lvis
    except Exception as exc:  # the generator lives with the tests; a wheel install has no tests/
        return {"status": "skipped", "error": f"no detection data generator ({exc})"}
    from harness.features import FeatureCache
    from harness.runner import run_cell
    from harness.spec import RunSpec

    root.mkdir(parents=True, exist_ok=True)
    train, val, images = make_mini_lvis(root, n_train=8, n_val=4)
    spec = RunSpec(backbone="timm:resnet18.a1_in1k", method="detector", task=f"lvis:{val}@{images}?train={train}", seed=0, weights="random",
                   hparams={"img_size": 64, "epochs": 1, "batch_size": 4, "fpn_channels": 16, "box_head_dim": 32, "rois_per_image": 16, "proposals": 50})
    record = run_cell(spec, None, device=device, feature_cache=FeatureCache(None), log=lambda m: None)
    return {"status": record["status"], "primary": (record.get("primary_metric") or {}).get("value"), "error": (record.get("error") or {}).get("message")}


def _throughput(device: str, n: int, size: int, batch: int, workers: int) -> dict:
    """bob's extraction and fit() against plain loops over the same timm model, transform and workers."""
    import torch
    from torch.utils.data import DataLoader

    from harness.features import ExtractOptions, extract_features
    from harness.methods.finetune import fit
    from harness.registry import BACKBONES, TASKS
    from harness.types import RunContext
    from harness.features import FeatureCache

    backbone = BACKBONES.get(BACKBONE).factory(weights="random", seed=0, img_size=size)
    task = TASKS.get(_THROUGHPUT_TASK).factory()
    data = task.load("train800")
    transform = backbone.preprocess.train_transform(True, True)
    ds = data.with_transform(transform)
    model = backbone.model.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def plain_extract():
        with torch.inference_mode():
            for x, _ in DataLoader(data.with_transform(backbone.preprocess.eval_transform()), batch_size=batch, num_workers=workers):
                model(x.to(device))
        sync()

    def bob_extract():
        extract_features(backbone, data, batch, device, options=ExtractOptions(workers=workers))
        sync()

    head = torch.nn.Linear(backbone.feature_dim, task.num_classes).to(device)
    net = torch.nn.Sequential(model, head)
    loss_fn = torch.nn.CrossEntropyLoss()

    def plain_train():
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        net.train()
        for x, y in DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False):
            loss = loss_fn(net(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()

    def bob_train():
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        ctx = RunContext(device=device, seed=0, cell_id="bench", feature_cache=FeatureCache(None), checkpoint_dir=None, num_workers=workers, log=lambda m: None)
        fit(net, list(net.parameters()), opt, lambda e, g: DataLoader(ds, batch_size=batch, shuffle=True, generator=g, num_workers=workers),  # the plain loop's workers
            lambda b, f: (loss_fn(f(b[0].to(device))), b[1].to(device)) if False else (loss_fn(f(b[0].to(device)), b[1].to(device)), len(b[1])),
            {"epochs": 1, "warmup_epochs": 0, "lr": 1e-4, "amp": "off", "grad_clip": 0}, ctx, None, (len(ds) + batch - 1) // batch,
            desc="bench", set_train_mode=net.train)
        sync()

    times = {}
    for name, fn in (("plain_extract", plain_extract), ("bob_extract", bob_extract), ("plain_train", plain_train), ("bob_train", bob_train)):
        fn()  # warm-up (workers, kernels)
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    return {"images": len(data), "batch": batch, "workers": workers, "seconds": {k: round(v, 4) for k, v in times.items()},
            "extract_ratio": round(times["plain_extract"] / times["bob_extract"], 3),  # bob images/s over plain images/s
            "train_ratio": round(times["plain_train"] / times["bob_train"], 3)}


_THROUGHPUT_TASK = ""


def _ddp_worker(rank: int, world: int, port: int, device: str, steps: int, global_batch: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    import timm

    dev = f"cuda:{rank}" if cuda else "cpu"
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32).to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    x, y = torch.randn(global_batch // world, 3, 32, 32, device=dev), torch.randint(0, 10, (global_batch // world,), device=dev)
    times = []
    for i in range(steps + 3):  # 3 warm-up steps (kernels, allocator, the reducer's buckets)
        dist.barrier()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    dist.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": sorted(times)[len(times) // 2]}))  # the median step
    dist.destroy_process_group()


def _ddp(device: str, steps: int, global_batch: int) -> dict:
    import socket

    import torch
    import torch.multiprocessing as mp

    world = torch.cuda.device_count() if device.startswith("cuda") else min(2, os.cpu_count() or 1)
    result = {}
    for w in sorted({1, max(1, world)}):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = tempfile.mktemp(suffix=".json")
        mp.spawn(_ddp_worker, args=(w, port, device, steps, global_batch, out), nprocs=w, join=True)
        result[w] = json.loads(Path(out).read_text())["step_s"]
        os.unlink(out)
    top = max(result)
    # the same global batch over W devices: ideal speed-up is W; the ratio says what DDP keeps of it
    return {"world_sizes": sorted(result), "step_s": {str(k): round(v, 5) for k, v in result.items()}, "global_batch": global_batch,
            "speedup": round(result[1] / result[top], 3), "efficiency": round(result[1] / result[top] / top, 3),
            "backend": "nccl" if device.startswith("cuda") else "gloo"}


def main(argv=None) -> dict:
    global _THROUGHPUT_TASK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    import torch

    from harness.features import FeatureCache
    from tests.fixtures import make_list_file_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    t_start = time.perf_counter()
    size = 32 if not cuda else 64
    per_class = {"train800": 6, "val200": 2, "test": 4} if not cuda else {"train800": 200, "val200": 20, "test": 40}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_list_file_dataset(Path(tmp) / "data", per_class)
        task = f"folder:{root}"
        _THROUGHPUT_TASK = task
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        cache = FeatureCache(None)
        common = {"img_size": size, "batch_size": 8 if not cuda else 64}
        train = {**common, "epochs": 1 if not cuda else 3, "warmup_epochs": 0.5}
        cells = {
            "knn": _cell("knn", task, device, dict(common), cache),
            "linear": _cell("linear", task, device, dict(common), cache),
            "finetune": _cell("finetune", task, device, {**train, "amp": "off"}, cache),
            "lora": _cell("lora", task, device, {**train, "amp": "off"}, cache),
            "detector": _detection_cell(Path(tmp) / "det", device, size),
        }
        bf16 = _cell("finetune", task, device, {**train, "amp": "bf16"}, cache)
        fp32 = cells["finetune"]
        rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(bf16["curve"], fp32["curve"])]
        precision = {"fp32_curve": fp32["curve"], "bf16_curve": bf16["curve"], "max_rel_loss_diff": round(max(rel), 4) if rel else None,
                     "top1_fp32": fp32["primary"], "top1_bf16": bf16["primary"]}
        throughput = _throughput(device, 0, size, 8 if not cuda else 64, 0 if not cuda else min(8, os.cpu_count() or 1))
    ddp = _ddp(device, steps=5 if not cuda else 20, global_batch=8 if not cuda else 128)
    peak = (torch.cuda.max_memory_allocated() / 2**20) if cuda else None
    import resource

    figures = {"device": device, "device_name": torch.cuda.get_device_name(0) if cuda else "cpu", "cells": cells, "bf16_vs_fp32": precision,
               "throughput": throughput, "ddp": ddp, "peak_gpu_memory_mb": round(peak, 1) if peak else None,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "wall_s": round(time.perf_counter() - t_start, 1)}
    ok = all(c["status"] in ("ok", "skipped") for c in cells.values()) and bf16["status"] == "ok"
    figures["checks"] = {"every_family_ran": ok, "bf16_agrees": precision["max_rel_loss_diff"] is not None and precision["max_rel_loss_diff"] < 0.05,
                         "train_ratio_ge_0.9": throughput["train_ratio"] >= 0.9}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=1, default=str) + "\n")
    summary = (f"SUMMARY: gpu_check on {figures['device_name']}: cells {sum(c['status'] == 'ok' for c in cells.values())}/{len(cells)} ok; "
               f"bf16 vs fp32 max rel loss diff {precision['max_rel_loss_diff']}; extract x{throughput['extract_ratio']}, train x{throughput['train_ratio']} "
               f"of plain timm; DDP {ddp['world_sizes'][-1]} vs 1: speed-up x{ddp['speedup']}; peak {figures['peak_gpu_memory_mb'] or figures['peak_rss_mb']} MB; "
               f"{figures['wall_s']} s")
    print(summary)
    return figures


if __name__ == "__main__":
    main()
