"""CLI latency benchmark: `bob --help` and `bob list ...` must answer in well under a second.

Runs each command N times in a fresh process (what a user waits for) and reports the median.
`--check` exits non-zero when a median exceeds its target.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 1.0
COMMANDS = [["--help"], ["list", "backbones"], ["list", "tasks"], ["list", "methods"], ["list", "backbones", "--family", "vit"]]


def bob_executable() -> list[str]:
    exe = Path(sys.executable).with_name("bob")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "harness.cli"]


def time_command(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([*bob_executable(), *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help=f"fail if a median exceeds {TARGET_S} s")
    args = parser.parse_args()
    worst = 0.0
    for cmd in COMMANDS:
        median = time_command(cmd, args.repeats)
        worst = max(worst, median)
        print(f"bench: bob {' '.join(cmd):<30} median {median * 1000:7.1f} ms  (target < {TARGET_S * 1000:.0f} ms)")
    if args.check and worst > TARGET_S:
        print(f"bench: FAILED, slowest median {worst:.2f} s > {TARGET_S} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
