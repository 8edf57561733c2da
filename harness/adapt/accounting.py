"""What an adaptation costs, measured on the model that ran: trainable and added parameters,
peak training memory, training throughput and inference latency against the frozen backbone.

Peak memory is CUDA's max-allocated on a GPU; on CPU it is the process's peak resident set
(VmHWM), reset before training through ``/proc/self/clear_refs`` where the kernel allows, so it
is the cell's own peak, not that of an earlier cell in the same worker.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any


def count(params) -> int:
    return int(sum(p.numel() for p in params))


def parameter_report(encoder, head, trainable_names: set[str] | None, backbone_params: int, extra_params: int) -> dict[str, Any]:
    """Trainable parameters with and without the head, as counts and % of the backbone's own parameters."""
    enc_trainable = count(p for n, p in encoder.named_parameters() if (trainable_names is None and p.requires_grad) or (trainable_names is not None and n in trainable_names))
    head_params = count(head.parameters()) if head is not None else 0
    pct = lambda n: round(100.0 * n / backbone_params, 4) if backbone_params else None  # noqa: E731
    return {"trainable_params": enc_trainable, "trainable_params_with_head": enc_trainable + head_params, "head_params": head_params,
            "backbone_params": backbone_params, "extra_params": extra_params,
            "trainable_pct": pct(enc_trainable), "trainable_pct_with_head": pct(enc_trainable + head_params)}


def reset_peak_memory(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def peak_memory_mb(device: str) -> tuple[float | None, str]:
    if str(device).startswith("cuda"):
        import torch

        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "cuda_max_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1), "cpu_peak_rss"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1), "cpu_peak_rss_process"


def latency_ms(model, images, reps: int = 3) -> float:
    """Median wall time (ms) of one forward pass over ``images`` in eval mode, after a warm-up pass."""
    import torch

    model.eval()
    times = []
    with torch.inference_mode():
        model(images)
        for _ in range(reps):
            if images.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(images)
            if images.is_cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000)
    return round(sorted(times)[len(times) // 2], 3)
