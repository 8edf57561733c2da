"""A task family the engine has never seen, registered only through the public API (issue 15,
acceptance 2). Loaded with BOB_PLUGINS=tests.fake_family_plugin.

Suite ``toybias`` -> groups ``stereotype`` (metric ``ss``, best at 50) and ``fairness`` (metric
``gap``, lower is better). The method ``toy_probe`` returns a fixed table per backbone, so the
expected ranks are known: on ss, |x - 50| decides (a: 50.5 beats c: 42 beats b: 60, although b
has the highest value); on gap, the smallest wins (b, then c, then a).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.methods.base import Method, MethodResult
from harness.registry import BACKBONES, TASKS, register_method
from harness.suites import register_suite

KIND = "toy_probe_kind"
VALUES = {
    "toy:a": {"toybias/gender_ss": 50.5, "toybias/race_ss": 49.0, "toybias/age_gap": 0.30, "toybias/religion_gap": 0.40},
    "toy:b": {"toybias/gender_ss": 60.0, "toybias/race_ss": 65.0, "toybias/age_gap": 0.05, "toybias/religion_gap": 0.02},
    "toy:c": {"toybias/gender_ss": 42.0, "toybias/race_ss": 55.0, "toybias/age_gap": 0.10, "toybias/religion_gap": 0.20},
}
SS = {"ss": {"direction": "target", "target": 50, "unit": "%", "fmt": ".1f", "label": "stereotype score"}}
GAP = {"gap": {"direction": "lower", "fmt": ".2f", "label": "accuracy gap between groups"}}


@dataclass
class ToyBackbone:
    name: str
    meta: dict = field(default_factory=dict)
    feature_dim: int = 0
    built: bool = False


@dataclass
class ToyTask:
    name: str
    metric: str

    def meta(self) -> dict:
        return {"name": self.name, "kind": KIND, "group": self.name.split("_")[0], "metric": self.metric}


for _name in VALUES:
    BACKBONES.add(_name, lambda weights="pretrained", seed=0, img_size=None, _n=_name: ToyBackbone(
        _n, {"source": "toy", "family": "toy", "pretrain_method": "toy", "pretrain_data": "none", "params_m": 1.0, "weights": "pretrained"}),
        source="toy", family="toy")

for _task in VALUES["toy:a"]:
    _metric = "ss" if _task.endswith("_ss") else "gap"
    TASKS.add(_task, lambda data_root=None, overrides=None, _t=_task, _m=_metric: ToyTask(_t, _m), kind=KIND,
              group="toybias/" + ("stereotype" if _metric == "ss" else "fairness"), suite="toybias", metrics=SS if _metric == "ss" else GAP)

register_suite(
    "toybias", title="Toy bias", caption="Toy bias (ss: best at 50; gap: lower is better)", rule="mean_of_group_means",
    groups=[{"name": "stereotype", "title": "Stereotype", "tasks": ["toybias/gender_ss", "toybias/race_ss"]},
            {"name": "fairness", "title": "Fairness", "tasks": ["toybias/age_gap", "toybias/religion_gap"]}],
)


@register_method
class ToyProbe(Method):
    name = "toy_probe"
    kinds = (KIND,)
    backbone_sources = ("toy",)
    description = "returns a fixed table (test plugin)"

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        value = VALUES[backbone.name][task.name] + 0.001 * ctx.seed
        return MethodResult({task.metric: value}, task.metric, {"note": "fixed table"})
