"""Shared by the benchmarks: the machine, timing helpers, and the result files.

Every benchmark writes ``bench/results/<name>.json`` (figures, ratios, targets, machine) and one
line to ``bench/results/SUMMARY.md``. Figures are ratios against a plain alternative measured in
the same run, because these shared machines are at times many times slower than usual.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "host": platform.node()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        pass
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def write_result(name: str, figures: dict[str, Any], checks: dict[str, bool], summary: str) -> dict[str, Any]:
    """``bench/results/<name>.json`` and a line in SUMMARY.md (replacing the benchmark's old line)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"name": name, "figures": figures, "checks": checks, "passed": all(checks.values()), "machine": machine(),
              "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    summary_file = RESULTS / "SUMMARY.md"
    lines = summary_file.read_text().splitlines() if summary_file.is_file() else ["# Benchmark summary", "",
                                                                                   "One line per benchmark (`python bench/run_all.py`); details in `<name>.json`.", ""]
    lines = [line for line in lines if not line.startswith(f"- **{name}**")]
    mark = "pass" if result["passed"] else "FAIL"
    lines.append(f"- **{name}** [{mark}] {summary} ({result['machine'].get('device', 'cpu')}, {result['machine'].get('cores')} cores, {result['when']})")
    summary_file.write_text("\n".join(lines) + "\n")
    print(f"{name}: {'pass' if result['passed'] else 'FAIL'}: {summary}")
    return result


def interleaved_times(variants: dict[str, Callable[[], Any]], repeats: int = 3) -> dict[str, float]:
    """Median wall time per variant, run round-robin (A B C A B C ...) so that a machine whose
    speed drifts during the run slows every variant alike."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def cli(main: Callable[[bool], Any], doc: str | None) -> None:
    """``python bench/bench_<name>.py [--quick]``."""
    import argparse

    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the reported figures)")
    main(p.parse_args().quick)
