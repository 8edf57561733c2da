"""ICL benchmark: a small GPT-2 (d=5, 4 layers, width 64) trained on CPU on icl/linear.

Records the error curve next to least squares and averaging (bench/results/icl_linear.json and
a PNG) and the wall time. Targets: error < 0.2 at k = 2d, training within 15 minutes.
Usage: python bench/bench_icl.py [--steps 3000] [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
TARGET_ERR, TARGET_WALL_S = 0.2, 900.0


def main() -> int:
    from harness.plots import plot_icl
    from harness.runner import run_cell
    from harness.spec import RunSpec

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit non-zero when a target is missed")
    args = parser.parse_args()
    d = 5
    t0 = time.perf_counter()
    model = run_cell(RunSpec("scratch:gpt2", "pretrain_icl", "icl/linear", args.seed, "random",
                             {"d": d, "n_layer": 4, "n_embd": 64, "n_head": 2, "train_steps": args.steps}))
    wall = time.perf_counter() - t0
    if model["status"] != "ok":
        print(f"bench_icl: training failed: {model['error']['message']}", file=sys.stderr)
        return 1
    baselines = [run_cell(RunSpec(b, "icl_eval", "icl/linear", args.seed, "random", {"d": d})) for b in ("baseline:least_squares", "baseline:averaging")]
    OUT.mkdir(exist_ok=True)
    records = [model, *baselines]
    (OUT / "icl_linear.json").write_text(json.dumps({
        "steps": args.steps, "wall_s": round(wall, 1), "device": model["environment"]["device"],
        "curves": {r["backbone"]: r["curves"]["icl_error"] for r in records},
    }, indent=1))
    plot_icl(records, OUT)
    err = model["metrics"]["err_at_2d"]
    for r in records:
        print(f"bench_icl: {r['backbone']:<24} err@d={r['metrics']['err_at_d']:.3f}  err@2d={r['metrics']['err_at_2d']:.3f}")
    print(f"bench_icl: gpt2 trained {args.steps} steps in {wall:.0f} s on {model['environment']['device']} "
          f"(targets: err@2d < {TARGET_ERR}, < {TARGET_WALL_S:.0f} s); curves in {OUT}")
    return 1 if args.check and (err >= TARGET_ERR or wall >= TARGET_WALL_S) else 0


if __name__ == "__main__":
    sys.exit(main())
