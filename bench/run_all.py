"""Run every benchmark (one command): ``python bench/run_all.py [--quick] [--only NAME ...]``.

Each writes ``bench/results/<name>.json`` and a line in ``bench/results/SUMMARY.md``. Exit status
1 when a target is missed. Run it on an idle machine: every figure is a ratio against a plain
alternative measured in the same run, but a machine whose load changes mid-run still adds noise.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("BOB_PROGRESS", "0")
os.environ.setdefault("BOB_OFFLINE", "1")

BENCHMARKS = ["bench_extract", "bench_train", "bench_probe_grid", "bench_memory", "bench_store", "bench_sweep_overhead", "bench_retrieval_search", "bench_determinism"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the reported figures)")
    p.add_argument("--only", nargs="*", help="benchmark names, e.g. extract store")
    args = p.parse_args()
    failed = []
    for module in BENCHMARKS:
        short = module.replace("bench_", "")
        if args.only and short not in args.only and module not in args.only:
            continue
        try:
            result = importlib.import_module(module).main(args.quick)
            if not result["passed"]:
                failed.append(short)
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(short)
    print("all targets met" if not failed else f"missed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
