"""A method that does (almost) nothing, for fault-injection and sweep-overhead tests. Each time a
cell's method finishes it appends the cell id to $BOB_NOOP_LOG (one short O_APPEND write, atomic).
Uses the toy backbones and tasks of tests/fake_family_plugin.py (no torch model is built)."""
from __future__ import annotations

import os
import time

import tests.fake_family_plugin as toy  # noqa: F401 - registers toy:a/b/c and the toybias tasks
from harness.methods.base import Method, MethodResult
from harness.registry import register_method


@register_method
class NoOp(Method):
    name = "noop"
    kinds = (toy.KIND,)
    backbone_sources = ("toy",)
    description = "sleeps `sleep` seconds and returns 1.0 (test plugin)"
    defaults = {"sleep": 0.0}

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        time.sleep(float(hparams["sleep"]))
        log = os.environ.get("BOB_NOOP_LOG")
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{ctx.cell_id}\n".encode())
            finally:
                os.close(fd)
        return MethodResult({task.metric: 1.0}, task.metric, {"note": "no-op"})
