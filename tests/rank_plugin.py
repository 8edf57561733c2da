"""A method that reports where it ran and can fail on one rank, for the distributed-cell tests
(loaded with BOB_PLUGINS=tests.rank_plugin; uses the toy backbones and tasks, no model is built).

``fail_rank``: that rank raises (``fail: raise``) or is killed by SIGKILL (``fail: kill``) after
the ranks met in a collective; ``sleep`` before that keeps a cell running long enough to requeue."""
from __future__ import annotations

import os
import signal
import time

import tests.fake_family_plugin as toy  # noqa: F401 - registers toy:a/b/c and the toybias tasks
from harness.methods.base import Method, MethodResult
from harness.registry import register_method


@register_method
class RankProbe(Method):
    name = "rankprobe"
    kinds = (toy.KIND,)
    backbone_sources = ("toy",)
    frozen_backbone = False
    description = "all-reduces 1 over the cell's ranks and returns the world size (test plugin)"
    defaults = {"fail_rank": -1, "fail": "raise", "sleep": 0.0, "batch_size": 4}

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        from harness.distributed import all_reduce_sum, world

        w = world()
        total = all_reduce_sum([1.0])[0]
        time.sleep(float(hparams["sleep"]))
        if w.rank == int(hparams["fail_rank"]):
            if hparams["fail"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError(f"injected failure on rank {w.rank}")
        all_reduce_sum([1.0])  # the healthy ranks wait here for the failed one
        return MethodResult({task.metric: float(total), "world": float(w.size)}, task.metric, {"note": "rank probe"})
