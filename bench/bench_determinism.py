"""Cost of deterministic mode: one fine-tuning fit (vit_tiny on digits) in deterministic mode vs the
default mode, interleaved. Two ratios: against the default with all the machine's intra-op
threads (what a user gives up: deterministic mode runs one thread) and against the default at the
same single thread (the cost of the deterministic kernels and flags alone; target <= 1.2x).
On a GPU the first ratio is the cost of cuDNN/cuBLAS's deterministic algorithms as well."""
from __future__ import annotations

import contextlib

from common import cli, interleaved_times, write_result


def main(quick: bool = False) -> dict:
    import torch

    from harness.determinism import deterministic_mode
    from harness.features import FeatureCache
    from harness.methods.finetune import train_and_evaluate
    from harness.registry import BACKBONES, METHODS, TASKS
    from harness.types import RunContext

    task = TASKS.get("digits").factory()
    size, epochs = 32, 1 if quick else 2
    backbone = BACKBONES.get("timm:vit_tiny_patch16_224").factory(weights="random", seed=0, img_size=size)
    backbone.model  # built once, outside the timings
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hp = METHODS.get("finetune").factory().resolve_hparams({"img_size": size, "epochs": epochs, "batch_size": 64, "lr": 1e-3})
    threads = torch.get_num_threads()

    def fit(deterministic: bool, n_threads: int):
        def run():
            torch.set_num_threads(n_threads)
            ctx = RunContext(device=device, seed=0, cell_id="bench", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda *_: None)
            with deterministic_mode(True) if deterministic else contextlib.nullcontext():
                train_and_evaluate(backbone, task, "train800", "val200", dict(hp), ctx, None)
            torch.set_num_threads(threads)
        return run

    times = interleaved_times({"default": fit(False, threads), "default_1_thread": fit(False, 1), "deterministic": fit(True, threads)},
                              repeats=2 if quick else 3)
    figures = {"model": "vit_tiny_patch16_224", "img_size": size, "epochs": epochs, "device": device, "default_threads": threads,
               "seconds": {k: round(v, 2) for k, v in times.items()},
               "ratio_vs_default": round(times["deterministic"] / times["default"], 3),
               "ratio_vs_default_same_threads": round(times["deterministic"] / times["default_1_thread"], 3)}
    checks = {"deterministic <= 1.2x default at the same thread count": figures["ratio_vs_default_same_threads"] <= 1.2}
    return write_result("determinism", figures, checks,
                        f"deterministic fine-tuning fit {figures['ratio_vs_default']:.2f}x the default's time ({threads} threads), "
                        f"{figures['ratio_vs_default_same_threads']:.2f}x at the same single thread")


if __name__ == "__main__":
    cli(main, __doc__)
