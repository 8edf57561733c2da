"""Prompt learning's data and protocols (CoOp and successors), as bob tasks.

* ``datasets.py`` reads the eleven datasets from their released folders (``split_zhou_<Name>.json``,
  FGVC-Aircraft's official lists, ImageNet's folders) and the two generated ones;
* ``fewshot.py`` draws the K-shot subset by the reference rule (Dassl's);
* ``task.py`` builds the protocols' tasks: few-shot, base-to-new, cross-dataset, domain
  generalisation (``dg.py``: ImageNet -> V2 / Sketch / A / R) (and any bob
  classification task few-shot: ``fewshot:<task>?shots=K``);
* ``generate.py`` writes the generated pair in the CoOp layout;
* ``sections.py`` adds the prompt-learning tab to published leaderboards.

Task ids: ``coop:<dataset>?shots=K[&protocol=base2new|cross|dg]``; the standard ones are registered
(``bob list tasks --suite coop_fewshot`` ...) and grouped in suites. The cell's seed draws the
subset; the hash of the chosen images is part of the cell id (``RunSpec.data``). This module
stays import-light: ``bob list`` imports it.
"""
from __future__ import annotations

from harness.registry import TASKS, Entry
from harness.suites import register_suite
from harness.types import CLASSIFICATION

from .verify import PREPARE_NOTES

# methods whose classifier is built from class names, so they classify classes they never trained on
TRANSFER_METHODS = ("zsclip", "coop", "cocoop", "kgcoop", "maple", "promptsrc", "tpt", "clip_adapter")
TRANSFER_WHY = "its evaluation classes are not the training classes; only methods that build the classifier from class names run it"
DG_WHY = "its target sets are scored by the prompt-learning methods (the classifier built from ImageNet's class names)"
DATASET_NAMES = {  # id -> title (datasets.py holds the specs; this copy keeps `bob list` from reading them)
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD",
    "eurosat": "EuroSAT", "ucf101": "UCF101", "toy_colours": "ToyColours", "toy_textures": "ToyTextures",
}
COOP = [d for d in DATASET_NAMES if not d.startswith("toy_")]
TOYS = [d for d in DATASET_NAMES if d.startswith("toy_")]
SHOTS = (1, 2, 4, 8, 16)
TOY_SHOTS = (1, 2, 4)


def _identity(name, seed, data_root, data_paths):
    from .task import coop_identity

    return coop_identity(name, seed, data_root, data_paths)


def _fewshot_identity(name, seed, data_root, data_paths):
    from .task import fewshot_identity

    return fewshot_identity(name, seed, data_root, data_paths)


def _check(task_id, data_root, override=None, open_images=False):
    from .verify import check_coop_data

    return check_coop_data(task_id, data_root, override, open_images)


def _coop_factory(name: str):
    def factory(data_root=None, overrides=None, cell=None, **_):
        from .task import build_coop_task

        return build_coop_task(name, data_root, overrides, cell)

    return factory


def _coop_meta(name: str, dataset: str, shots: int, protocol: str) -> dict:
    meta = {"kind": CLASSIFICATION, "group": f"prompt-learning/{protocol}", "metric": "top1", "data_identity": _identity, "prefetch": _check,
            "class_names": True, "protocol": protocol, "shots": shots, "dataset": dataset,
            "description": {"fewshot": f"{DATASET_NAMES[dataset]} {shots}-shot (CoOp split, seed draws the shots)",
                            "base2new": f"{DATASET_NAMES[dataset]} base-to-new, {shots} shots of the base classes",
                            "cross": f"{DATASET_NAMES[dataset]} {shots}-shot -> the other datasets of its family",
                            "dg": f"{DATASET_NAMES[dataset]} {shots}-shot -> ImageNetV2, -Sketch, -A, -R (A / R within their 200 classes, and strict)"}[protocol]}
    if protocol == "dg":  # the targets share ImageNet's classes, so every prompt method runs; methods that ignore the sets do not
        meta.update(methods=list(TRANSFER_METHODS) + ["tip_adapter", "tip_adapter_f"], methods_why=DG_WHY)
    elif protocol != "fewshot":
        meta.update(methods=list(TRANSFER_METHODS), methods_why=TRANSFER_WHY)
    return meta


def _resolve_coop(name: str) -> Entry:
    from .task import parse_coop_id

    dataset, shots, protocol = parse_coop_id(name)  # a malformed id fails at grid expansion, not in the cell
    return Entry(name, _coop_factory(name), _coop_meta(name, dataset, shots, protocol))


def _resolve_fewshot(name: str) -> Entry:
    from .task import parse_fewshot_id

    inner, shots = parse_fewshot_id(name)
    TASKS.get(inner)  # unknown inner task: the registry's one-line error

    def factory(data_root=None, overrides=None, cell=None, **_):
        from .task import build_fewshot_task

        return build_fewshot_task(name, data_root, overrides, cell)

    return Entry(name, factory, {"kind": CLASSIFICATION, "group": "few-shot", "data_identity": _fewshot_identity, "protocol": "fewshot",
                                 "shots": shots, "dataset": inner, "description": f"{inner}, {shots} shots per class"})


def _task_id(dataset: str, shots: int, protocol: str = "fewshot") -> str:
    return f"coop:{dataset}?shots={shots}" + ("" if protocol == "fewshot" else f"&protocol={protocol}")


def _register() -> None:
    suites = {  # suite -> (title, caption, [(group, title, [(dataset, shots, protocol)])])
        "coop_fewshot": ("CoOp few-shot", "Few-shot classification on the eleven CoOp datasets (top-1 %, test; mean over seeds)",
                         [(f"{k}shot", f"{k}-shot", [(d, k, "fewshot") for d in COOP]) for k in SHOTS]),
        "coop_base2new": ("CoOp base-to-new", "Base-to-new generalisation, 16 shots of the base classes (HM of base and new accuracy, %)",
                          [("base2new", "Base-to-new", [(d, 16, "base2new") for d in COOP])]),
        "coop_cross": ("CoOp cross-dataset", "Trained on 16-shot ImageNet, evaluated on the other ten (mean target accuracy, %)",
                       [("cross", "Cross-dataset", [("imagenet", 16, "cross")])]),
        "coop_dg": ("CoOp domain generalisation", "Trained on 16-shot ImageNet, evaluated on ImageNetV2, -Sketch, -A, -R (mean target accuracy, %)",
                    [("dg", "Domain generalisation", [("imagenet", 16, "dg")])]),
        "prompt_toy": ("Prompt learning (generated)", "The generated pair: few-shot, base-to-new (HM) and cross-dataset (mean target accuracy)",
                       [("toy_fewshot", "Few-shot", [(d, k, "fewshot") for k in TOY_SHOTS for d in TOYS]),
                        ("toy_base2new", "Base-to-new", [(d, 4, "base2new") for d in TOYS]),
                        ("toy_cross", "Cross-dataset", [("toy_colours", 4, "cross")])]),
    }
    for suite, (title, caption, groups) in suites.items():
        for group, _, members in groups:
            for dataset, shots, protocol in members:
                name = _task_id(dataset, shots, protocol)
                TASKS.add(name, _coop_factory(name), **{**_coop_meta(name, dataset, shots, protocol), "suite": suite, "group": f"{suite}/{group}"})
        register_suite(suite, title=title, caption=caption, rule="mean_of_tasks", group_columns=len(groups) > 1,
                       groups=[{"name": g, "title": t, "tasks": [_task_id(*m) for m in members]} for g, t, members in groups],
                       check_data=_check, prepare_notes=PREPARE_NOTES)


_register()
TASKS.add_prefix("coop", _resolve_coop, "coop:<dataset>?shots=K[&protocol=base2new|cross|dg] runs the CoOp protocols on "
                 f"{', '.join(DATASET_NAMES)} (data: <data root>/<CoOp folder>)")
TASKS.add_prefix("fewshot", _resolve_fewshot, "fewshot:<task>?shots=K draws K shots per class of any classification task (Dassl's rule)")

from . import sections  # noqa: E402,F401 - registers the prompt-learning section (its heavy imports are lazy)
