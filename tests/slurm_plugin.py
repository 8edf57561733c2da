"""A test-only method registered through BOB_PLUGINS (the way users add plugins without packaging).

``sleepy`` sleeps ``seconds`` (``mode`` ok: 1 s, anything else but raise: 600 s), raises
with ``mode=raise``, appends the cell id to
$BOB_TEST_COUNTER (to count executions) and returns a deterministic metric. With
$BOB_TEST_FAST=1 it neither sleeps nor fails (the "fixed code" of a rerun).
"""
import os
import time

from harness.methods.base import Method, MethodResult
from harness.registry import register_method
from harness.types import CLASSIFICATION


@register_method
class Sleepy(Method):
    name = "sleepy"
    kinds = (CLASSIFICATION,)
    description = "test-only: sleeps, optionally fails"
    defaults = {"mode": "ok", "seconds": None}

    def run(self, backbone, task, hparams, ctx):
        counter = os.environ.get("BOB_TEST_COUNTER")
        if counter:
            with open(counter, "a") as f:
                f.write(f"{ctx.cell_id}:{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\n")
        fast = os.environ.get("BOB_TEST_FAST") == "1"
        if hparams["mode"] == "raise" and not fast:
            raise ValueError("sleepy was asked to fail")
        seconds = hparams["seconds"] if hparams["seconds"] is not None else (1 if hparams["mode"] == "ok" else 600)
        if not fast:
            time.sleep(float(seconds))
        value = float((ctx.seed * 7 + len(task.name)) % 100)
        return MethodResult({"top1": value}, "top1", {"selected_on": None})
