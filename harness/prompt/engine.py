"""One prompt-learning cell: build the learner on the frozen towers, train it on the one loop
(``harness.methods.finetune.fit``), select honestly, evaluate every evaluation set.

Selection: the reported model is the last epoch of the declared budget (``select=last``, the
papers' practice) or the epoch with the best few-shot validation accuracy (``select=val``);
Tip-Adapter's alpha/beta are searched on the few-shot validation set. Test splits are read once,
by the final evaluation; nothing is chosen on them (ImageNet's val is its test, so its few-shot
val is drawn from unchosen training images by the task).

Epoch hooks (PromptSRC's aggregation, val selection) run when fit() asks for the next epoch's
loader, i.e. after the previous epoch's checkpoint was written, and once more after fit(): their
state lives in the learner's buffers, so a resumed cell applies each epoch's hook exactly once.

The towers are frozen and hashed before and after the cell (the record holds both hashes).
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BobError
from ..spec import canonical_json
from .sets import PromptSet, prompt_sets_of, masked_top1, metric_name, metric_specs, summarise
from .recipes import PROMPT_RECIPES, PromptRecipe, resolve_auto


def _train_transform(preprocess, hp: dict[str, Any], hflip: bool):
    """The references' training augmentation: random resized crop (area ``crop_min`` to 1) + horizontal flip."""
    from torchvision import transforms as T

    from ..types import _interp

    if not hp.get("augment", True):
        return preprocess.eval_transform()
    steps = [T.RandomResizedCrop(preprocess.img_size, scale=(float(hp.get("crop_min", 0.08)), 1.0), interpolation=_interp(preprocess.interpolation))]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(preprocess.mean, preprocess.std)])


class PromptCell:
    """Everything one cell holds: the recipe, the towers, the task's sets, the resolved settings."""

    def __init__(self, method: str, backbone, task, hp: dict[str, Any], ctx):
        import torch

        self.recipe: PromptRecipe = PROMPT_RECIPES[method]
        self.backbone, self.task, self.ctx, self.device = backbone, task, ctx, ctx.device
        if getattr(backbone, "clip_model", None) is None:
            raise BobError(f"method {method} needs an open_clip backbone (both towers); {backbone.name} has no text tower")
        from .towers import Towers

        clip, tokenizer = backbone.clip_model(hp.get("tokenizer"))
        self.towers = Towers(clip.to(self.device), tokenizer, backbone.name)
        self.sets: list[PromptSet] = prompt_sets_of(task)
        names, templates, self.names_source = task.class_text() if task.class_text else (None, None, None)
        if names is None:
            raise BobError(f"method {method}: task {task.name} has no class names; prompt learning builds its classifier from them")
        from .learners import ClassSet

        self.train_classes = ClassSet(tuple(names), tuple(templates))
        protocol, shots = getattr(task, "protocol", "full"), getattr(task, "shots", None)
        self.hp, self.auto = resolve_auto(self.recipe, hp, protocol, shots)
        defaults = getattr(task, "method_defaults", {}) or {}
        scale = defaults.get("tip_search_scale", [7.0, 3.0])  # Tip-Adapter's per-dataset (beta, alpha) search ranges
        for key, value in (("init_alpha", defaults.get("tip_init_alpha", 1.0)), ("beta_max", scale[0]), ("alpha_max", scale[1]),
                           ("augmix", defaults.get("tpt_augmix", True))):
            if self.hp.get(key) == "auto":
                self.hp[key] = self.auto[key] = value
        self.hp["method"] = method
        if self.hp.get("select", "last") not in ("last", "val"):
            raise BobError(f"method {method}: select={self.hp['select']!r} is not one of last, val")
        if self.hp.get("select") == "val" and self.hp.get("gpa"):
            raise BobError(f"method {method}: its final prompts are the Gaussian aggregate over epochs (gpa=true); select=val does not apply (set gpa=false)")
        self.amp = self._autocast()
        self.frozen_before = None
        torch.manual_seed(ctx.seed)

    def _autocast(self):
        import contextlib

        import torch

        from ..methods.finetune import amp_dtype_for

        dtype = amp_dtype_for(self.device, self.hp.get("amp", "auto"))
        return (lambda: torch.autocast(device_type=str(self.device).split(":")[0], dtype=dtype)) if dtype is not None else contextlib.nullcontext

    # -- features -------------------------------------------------------------------------------------
    def features(self, split: str):
        """Frozen image features of a split, through the feature cache. Keyed by the dataset rather than
        the task id (the key also holds the split's sample list), so the test features of one dataset
        are extracted once for every shot count, seed and method."""
        from types import SimpleNamespace

        from ..features import split_features

        dataset = getattr(self.task, "dataset", "")
        source = SimpleNamespace(name=f"prompt-data:{dataset}" if dataset else self.task.name, load=self.task.load, union_splits={})
        return split_features(self.backbone, source, split, self.ctx, int(self.hp.get("batch_size") or 64))

    def build_learner(self, **extra):
        from . import learners

        learner = getattr(learners, self.recipe.learner)(self.towers, self.hp, self.train_classes, **extra).to(self.device)
        return learner

    # -- training ----------------------------------------------------------------------------------------
    def train(self, learner, checkpoint_tag: dict[str, Any], train_split: str = "train", val_split: str | None = "val") -> dict[str, Any]:
        """fit() the learner on ``train_split``; returns the training report (curve, selection, timing)."""
        import torch
        from torch.utils.data import DataLoader

        from ..methods.finetune import fit, make_optimizer

        hp = self.hp
        declared = learner.declared()
        for name, p in learner.named_parameters():
            p.requires_grad_(name in declared)
        trainable = [p for n, p in learner.named_parameters() if n in declared]
        if not trainable:
            raise BobError(f"method {self.recipe.name} declares no trainable parameters")
        if str(hp.get("optimizer", "sgd")).lower() == "adamw" and hp.get("adam_eps"):
            opt = torch.optim.AdamW(trainable, lr=float(hp["lr"]), weight_decay=float(hp["wd"]), eps=float(hp["adam_eps"]))
        else:
            opt = make_optimizer(trainable, hp)
        dataset = self.task.load(train_split).with_transform(_train_transform(self.backbone.preprocess, hp, self.task.hflip_ok))
        bs = int(hp["batch_size"])
        drop_last = len(dataset) >= bs  # Dassl's loader drops the last partial batch when there is a full one
        steps_per_epoch = max(1, len(dataset) // bs if drop_last else math.ceil(len(dataset) / bs))
        epochs = int(hp["epochs"])
        selector = ValSelection(self, learner, val_split) if hp.get("select") == "val" else None
        towers, device = self.towers, self.device

        def epoch_done(epoch: int) -> None:  # after epoch ``epoch`` (from 1): the learner's hook, then val selection
            learner.epoch_end(epoch, epochs)
            if selector is not None:
                selector.after_epoch(epoch)

        def set_train_mode():
            learner.train()
            towers.clip.eval()

        def make_loader(epoch: int, generator):
            if epoch > 0:
                epoch_done(epoch)
                set_train_mode()
            return DataLoader(dataset, batch_size=bs, shuffle=True, generator=generator, num_workers=self.ctx.num_workers, drop_last=drop_last)

        def loss_of(batch, forward):
            images, labels = batch
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if learner.prompts_vision:
                return learner.loss(images, labels), len(labels)
            with torch.no_grad():
                feats = towers.encode_image(images)
            return learner.loss(images, labels, feats), len(labels)

        checkpoint = None
        if self.ctx.checkpoint_dir is not None:
            tag = hashlib.sha256(canonical_json({k: v for k, v in checkpoint_tag.items()}).encode()).hexdigest()[:12]
            checkpoint = Path(self.ctx.checkpoint_dir) / f"{self.ctx.cell_id}-{tag}.pt"
        fit_hp = {**hp, "schedule": "cosine"}
        curve, seen, fit_s, amp = fit(learner, trainable, opt, make_loader, loss_of, fit_hp, self.ctx, checkpoint, steps_per_epoch,
                                      desc=f"{self.recipe.name} {train_split}", set_train_mode=set_train_mode, metric_prefix="train")
        if epochs > 0:
            epoch_done(epochs)
        notes = learner.finish(epochs)
        report = {"curve": curve, "fit_s": fit_s, "images_seen": seen, "amp": amp, "steps_per_epoch": steps_per_epoch, **notes}
        if selector is not None:
            report["selection"] = selector.restore()
        learner.eval()
        return report

    # -- evaluation ---------------------------------------------------------------------------------------
    def logits(self, learner, split: str, classes, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of every image of ``split`` for ``classes``."""
        import torch
        from torch.utils.data import DataLoader

        learner.eval()
        out, labels = [], []
        bs = max(int(self.hp.get("batch_size") or 64), 64)
        with torch.no_grad(), self.amp():
            if learner.prompts_vision:
                dataset = self.task.load(split).with_transform(self.backbone.preprocess.eval_transform())
                for images, y in DataLoader(dataset, batch_size=bs, shuffle=False, num_workers=self.ctx.num_workers):
                    out.append(learner.logits(images.to(self.device), classes).float().cpu())
                    labels.append(torch.as_tensor(y))
                return torch.cat(out).numpy(), torch.cat(labels).numpy()
            feats, y = self.features(split)
            for start in range(0, len(feats), bs):
                chunk = torch.from_numpy(np.ascontiguousarray(feats[start:start + bs])).to(self.device)
                out.append(learner.logits_from_features(chunk, classes, **kwargs).float().cpu())
        return (torch.cat(out).numpy() if out else np.zeros((0, len(classes.names)), np.float32)), np.asarray(y)

    def evaluate(self, learner, **kwargs) -> dict[str, float]:
        """top-1 (%) of every evaluation set, each within its own classes."""
        from .learners import ClassSet

        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        for es in self.sets:
            classes = ClassSet(tuple(es.class_names), tuple(es.templates))
            extra = {"class_map": es.train_class_of} if "class_map" in kwargs else {}
            extra.update({k: v for k, v in kwargs.items() if k != "class_map"})
            if self.recipe.kind == "tpt":
                logits, labels = self.tpt_logits(learner, es, classes)
            else:
                logits, labels = self.logits(learner, es.split, classes, **extra)
            metrics[metric_name(es)], strict = masked_top1(logits, labels, es.label_mask)
            if strict is not None:
                metrics[f"{metric_name(es)}_all"] = strict
            metrics[f"n_{es.name}"] = int(len(labels))
        self.ctx.add_time("eval", time.perf_counter() - t0)
        return metrics

    def tpt_logits(self, learner, es: PromptSet, classes) -> tuple[np.ndarray, np.ndarray]:
        from ..data import open_rgb
        from ..progress import progress
        from .tpt import tpt_predict, views_of

        dataset = self.task.load(es.split)
        rows, labels = [], []
        learner.eval()
        for sample in progress(dataset.samples, desc=f"tpt {es.name}", total=len(dataset)):
            views = views_of(open_rgb(sample), sample.identity[0], self.ctx.seed, int(self.hp["views"]), self.backbone.preprocess,
                             bool(self.hp["augmix"])).to(self.device)
            rows.append(tpt_predict(learner, self.towers, views, classes, self.hp, self.amp()).cpu().numpy()[0])
            labels.append(sample.label)
        return np.stack(rows) if rows else np.zeros((0, len(classes.names))), np.asarray(labels)

    def val_accuracy(self, learner, split: str = "val", **kwargs) -> float:
        logits, labels = self.logits(learner, split, self.train_classes, **kwargs)
        return float((logits.argmax(1) == labels).mean() * 100.0) if len(labels) else float("nan")


class ValSelection:
    """select=val: after each epoch, the few-shot val accuracy; the best epoch's parameters are kept
    in the learner's buffers (so they are checkpointed) and restored at the end. Ties keep the earlier."""

    def __init__(self, cell: PromptCell, learner, split: str | None):
        import torch

        if not split or split not in cell.task.splits or not len(cell.task.load(split)):
            raise BobError(f"select=val: task {cell.task.name} has no few-shot validation split; use select=last")
        self.cell, self.learner, self.split = cell, learner, split
        self.names = learner.declared()
        params = dict(learner.named_parameters())
        for name in self.names:
            learner.register_buffer("best__" + name.replace(".", "__"), params[name].detach().clone())
        learner.register_buffer("best_val", torch.tensor(-1.0, dtype=torch.float64))
        learner.register_buffer("best_epoch", torch.tensor(0))
        self.history: list[dict] = []

    def after_epoch(self, epoch: int) -> None:
        import torch

        acc = self.cell.val_accuracy(self.learner, self.split)
        self.history.append({"epoch": epoch, "val_top1": acc})
        if acc > float(self.learner.best_val):
            params = dict(self.learner.named_parameters())
            with torch.no_grad():
                for name in self.names:
                    getattr(self.learner, "best__" + name.replace(".", "__")).copy_(params[name])
                self.learner.best_val.fill_(acc)
                self.learner.best_epoch.fill_(epoch)

    def restore(self) -> dict[str, Any]:
        import torch

        params = dict(self.learner.named_parameters())
        with torch.no_grad():
            for name in self.names:
                params[name].copy_(getattr(self.learner, "best__" + name.replace(".", "__")))
        return {"selected_on": self.split, "epoch": int(self.learner.best_epoch), "val_top1": float(self.learner.best_val), "history": self.history}


# -- the cell ---------------------------------------------------------------------------------------------
def build_cache(cell: PromptCell):
    """Tip-Adapter's cache: keys = the training images' features averaged over ``augment_epochs``
    random-crop passes (seeded by the cell seed), normalised; values = one-hot labels (N, C)."""
    import torch
    from torch.utils.data import DataLoader

    from .learners import normalise

    dataset = cell.task.load("train").with_transform(_train_transform(cell.backbone.preprocess, {**cell.hp, "augment": True}, cell.task.hflip_ok))
    passes, labels = [], None
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.no_grad(), cell.amp():
        torch.manual_seed(cell.ctx.seed)
        for _ in range(int(cell.hp["augment_epochs"])):
            feats, ys = [], []
            for images, y in DataLoader(dataset, batch_size=max(int(cell.hp.get("batch_size") or 64), 64), shuffle=False, num_workers=cell.ctx.num_workers):
                feats.append(cell.towers.encode_image(images.to(cell.device)).float())
                ys.append(torch.as_tensor(y))
            passes.append(torch.cat(feats))
            labels = torch.cat(ys)
    cell.ctx.add_time("cache", time.perf_counter() - t0)
    keys = normalise(torch.stack(passes).mean(0))
    values = torch.nn.functional.one_hot(labels.long(), num_classes=len(cell.train_classes.names)).float().to(cell.device)
    return keys, values


def tip_search(cell: PromptCell, learner) -> dict[str, Any]:
    """alpha / beta on the few-shot val set (the training classes), with the learner's keys."""
    import torch

    from .learners import hand_text_features, normalise
    from .tip import search_alpha_beta

    feats, labels = cell.features("val")
    if not len(labels):
        raise BobError(f"method {cell.recipe.name}: task {cell.task.name} has no few-shot validation images to search alpha/beta on")
    with torch.no_grad():
        f = normalise(torch.from_numpy(np.ascontiguousarray(feats)).float().to(cell.device))
        clip_logits = cell.towers.logit_scale() * f @ hand_text_features(cell.towers, cell.train_classes, f.device).T
        found = search_alpha_beta(clip_logits, f @ learner.keys.detach().T, learner.values, labels,
                                  (cell.hp["beta_max"], cell.hp["alpha_max"]), (cell.hp["beta_steps"], cell.hp["alpha_steps"]))
    return found


def run_prompt_cell(method: str, backbone, task, hparams: dict[str, Any], ctx):
    """One cell of a prompt-learning method: the MethodResult with every evaluation set's accuracy."""
    from ..methods.base import MethodResult, grid_points
    from .towers import state_sha256

    cell = PromptCell(method, backbone, task, hparams, ctx)
    kind = cell.recipe.kind
    before = state_sha256(cell.towers.clip)
    base_hp = dict(cell.hp)
    protocol: dict[str, Any] = {"selected_on": None, "selected": {}, "trained_on": "train", "reported_on": [es.split for es in cell.sets],
                                "prompt_sets": [{"name": es.name, "split": es.split, "role": es.role, "classes": len(es.class_names)} for es in cell.sets],
                                "class_names_source": cell.names_source, "resolved": cell.auto}
    fewshot = (getattr(task, "split_provenance", None) or {}).get("fewshot")
    if fewshot:
        protocol["fewshot"] = {k: fewshot[k] for k in ("k", "seed", "val_shots", "val_from", "counts", "sha256") if k in fewshot}
    report: dict[str, Any] = {}
    search = hparams.get("search") or {}
    if search and kind not in ("trained", "tpt", "tip_f"):
        raise BobError(f"method {method} trains nothing to search hyper-parameters for; drop 'search'")
    tag = {"method": method, **{k: v for k, v in base_hp.items() if k != "search"}}
    if kind == "zero":
        learner = cell.build_learner()
        protocol["note"] = "zero-shot: nothing fitted or selected"
        metrics = cell.evaluate(learner)
    elif kind in ("trained", "tpt"):
        learner, candidates = None, []
        for point in grid_points(search):
            cell.hp = {**base_hp, **point}
            candidate = cell.build_learner()
            if kind == "trained" or int(cell.hp["epochs"]) > 0:
                report = cell.train(candidate, {**tag, **point})
            if search:
                score = cell.val_accuracy(candidate)
                candidates.append({**point, "val_top1": score})
                if learner is None or score > candidates[best]["val_top1"]:
                    learner, best = candidate, len(candidates) - 1
            else:
                learner = candidate
        if search:  # the model trained at the chosen point is the final one (the few-shot train split is the refit split too)
            cell.hp = {**base_hp, **{k: candidates[best][k] for k in search}}
            protocol.update(search_space=search, candidates=candidates, selected_on="val", selected={k: candidates[best][k] for k in search})
        if "selection" in report:
            protocol.update(selected_on="val", selected={"epoch": report["selection"]["epoch"]}, selection=report.pop("selection"))
        elif kind == "trained" or int(cell.hp["epochs"]) > 0:
            protocol["selection"] = f"last epoch of the declared budget ({cell.hp['epochs']} epochs)"
        if report.get("gpa"):
            protocol["selection"] = f"Gaussian prompt aggregation over the {cell.hp['epochs']} epochs (the method's final model; nothing chosen on val or test)"
        if kind == "tpt":
            protocol["tpt"] = {k: cell.hp[k] for k in ("views", "selection", "tta_steps", "tta_lr", "augmix")}
            protocol["tpt"]["reset"] = "prompt and optimizer state restored after every test image"
            protocol["note"] = "TPT's settings are the paper's (tuned by its authors on ImageNet); nothing is selected here"
        metrics = cell.evaluate(learner)
    else:  # tip, tip_f
        from .learners import TipAdapterF

        keys, values = build_cache(cell)
        learner = TipAdapterF(cell.towers, cell.hp, cell.train_classes, keys=keys, values=values).to(cell.device)
        if kind == "tip_f":
            report = cell.train(learner, tag)
            if "selection" in report:
                protocol.update(selection=report.pop("selection"))
            else:
                protocol["selection"] = f"last epoch of the declared budget ({cell.hp['epochs']} epochs)"
        found = tip_search(cell, learner)
        protocol.update(selected_on="val", selected={"alpha": found["alpha"], "beta": found["beta"]},
                        tip={"val_top1": found["val_top1"], "grid": found["grid"], "rule": "best few-shot val accuracy, first in grid order on ties; test is read once, after"})
        protocol["cache_entries"] = int(keys.shape[0])
        metrics = cell.evaluate(learner, alpha=found["alpha"], beta=found["beta"], class_map=None)
    after = state_sha256(cell.towers.clip)
    if after != before:  # pragma: no cover - a bug in a learner, never a result
        raise RuntimeError(f"method {method} changed the frozen towers (state hash {before[:12]} -> {after[:12]})")
    metrics, primary = summarise(cell.sets, metrics)
    declared = learner.declared() if kind in ("trained", "tip_f") or (kind == "tpt") else []
    params = dict(learner.named_parameters())
    n_train = int(sum(params[n].numel() for n in declared))
    n_backbone = int(sum(p.numel() for p in cell.towers.clip.parameters()))
    metrics["trainable_params"] = n_train
    adaptation = {"recipe": method, "trainable_params": n_train, "trainable_names": declared, "backbone_params": n_backbone,
                  "trainable_pct": round(100.0 * n_train / n_backbone, 6) if n_backbone else None, "extra_params": int(sum(p.numel() for p in learner.parameters())),
                  "frozen_towers_sha256": {"before": before, "after": after}, "widths": {"text": cell.towers.text_width, "vision": cell.towers.vision_width,
                                                                                     "embed": cell.towers.embed_dim}}
    if report:
        adaptation.update(fit_s=round(report["fit_s"], 3), amp=report["amp"], steps_per_epoch=report["steps_per_epoch"],
                          train_images_per_s=round(report["images_seen"] / report["fit_s"], 2) if report["fit_s"] > 0 else None)
        if "gpa" in report:
            protocol["gpa"] = report["gpa"]
    specs = metric_specs(cell.sets)
    specs["trainable_params"] = {"direction": "lower", "unit": "", "fmt": ",.0f", "label": "trainable parameters"}
    curves = {"train": report.get("curve", [])} if report else {}
    if report.get("curve"):
        metrics["final_train_loss"] = report["curve"][-1]["train_loss"]
    return MethodResult(metrics, primary, protocol, curves=curves, adaptation=adaptation, metric_specs=specs)
