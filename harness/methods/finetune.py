"""End-to-end fine-tuning: backbone + linear head, AdamW, linear warmup then cosine decay.

Augmentation is off by default (the VTAB-1k protocol); ``augment=true`` adds random resized
crops (and flips where the task allows them). Each epoch ends with an atomic checkpoint in the
cell's checkpoint folder, and a fit that finds one resumes from it with the saved RNG states,
so a requeued job ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import time
from pathlib import Path

from ..adapt.lora import TARGETS as LORA_TARGETS
from .timm_recipe import RECIPE_DEFAULTS, apply_preset
from ..distributed import GlobalBatchSampler, SeededItems, all_reduce_sum, default_loader_workers, world, wrap_ddp
from ..errors import NonFiniteLossError
from ..eval_sets import add_eval_sets, finish_eval_sets, model_scores, wants_sets
from ..registry import register_method
from ..spec import canonical_json
from ..types import CLASSIFICATION
from .base import Method, MethodResult, tune_then_refit


class _MemoisedDataset:
    """Transforms each image once (valid only for deterministic transforms)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._items: dict[int, tuple] = {}

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i not in self._items:
            self._items[i] = self.dataset[i]
        return self._items[i]


def _lr_at(step: int, total: int, warmup: int, base_lr: float, milestones: list[int] | None = None) -> float:
    """Linear warmup, then cosine decay to 0, or (``milestones``: steps) x0.1 at each milestone."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if milestones is not None:
        return base_lr * 0.1 ** sum(step >= m for m in milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    from ..atomic import atomic_write

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path, device: str = "cpu", log=print) -> dict | None:
    """A resume checkpoint, loaded with ``weights_only=True`` (tensors and plain containers: a
    checkpoint can never run code). One that is damaged or holds anything else is discarded with
    a warning and the fit starts over, rather than trusted or crashing the cell."""
    import pickle

    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError("not a bob checkpoint")
        return state
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        log(f"warning: checkpoint {path} cannot be loaded safely ({str(exc).splitlines()[0][:120]}); starting this fit over")
        path.unlink(missing_ok=True)
        return None


OPTIMIZERS = ("adamw", "sgd")
AMP_MODES = ("auto", "off", "bf16")


def amp_dtype_for(device: str, amp) -> "object | None":
    """``amp``: auto (bf16 autocast on CUDA, off on CPU where it does not pay), off or bf16. (fp16 is
    not offered: it needs loss scaling, and bf16 trains without it on every GPU bob targets.)"""
    import torch

    from ..errors import BobError

    amp = str(amp).lower()
    if amp not in AMP_MODES:
        raise BobError(f"amp={amp!r} is not one of {', '.join(AMP_MODES)}")
    if amp == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else None
    return {"off": None, "bf16": torch.bfloat16}[amp]


def make_optimizer(params, hp: dict):
    """AdamW or SGD (momentum 0.9) with the cell's weight decay: the wd grid is honoured for both
    (VPT's optimiser code silently ignores it for AdamW)."""
    import torch

    from ..errors import BobError

    name = str(hp.get("optimizer", "adamw")).lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=float(hp["lr"]), weight_decay=float(hp["wd"]))
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(hp["lr"]), weight_decay=float(hp["wd"]), momentum=0.9)
    raise BobError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")


class _Feed:
    """What one rank feeds fit() per micro-batch: ``(batch, samples, global batch size, first, last)``
    (first/last: of its optimiser step). A DataLoader from ``make_loader`` is re-served through
    :class:`~harness.distributed.GlobalBatchSampler` (order from (seed, epoch), this rank's share, workers
    kept alive across epochs); any other iterable's batches are cut into shares here."""

    def __init__(self, ctx, w, accum: int, device: str):
        self.ctx, self.w, self.accum, self.device = ctx, w, accum, str(device)
        self.dataset = self.loader = self.sampler = None
        self.workers = int(ctx.num_workers) if ctx.num_workers else default_loader_workers(self.device)
        self.global_batch = None

    def report(self) -> dict:
        out = {"loader_workers": self.workers if self.loader is not None else 0}
        if self.global_batch:
            out.update(global_batch=self.global_batch, per_device_batch=self.global_batch // (self.w.size * self.accum))
        return out

    def epoch(self, loader, epoch: int):
        from torch.utils.data import DataLoader

        if isinstance(loader, DataLoader) and loader.batch_size is not None:
            yield from self._served(loader, epoch)
        else:
            yield from self._cut(loader)

    def _served(self, loader, epoch: int):
        import torch
        from torch.utils.data import DataLoader

        from ..errors import BobError

        if loader.dataset is not self.dataset:  # first epoch, or a method that builds a new set per epoch
            parts = self.w.size * self.accum
            if loader.batch_size % parts:
                raise BobError(f"batch_size={loader.batch_size} is not divisible by world size {self.w.size} x accum_steps {self.accum}; "
                               f"use a multiple of {parts}")
            self.dataset, self.global_batch = loader.dataset, loader.batch_size
            self.sampler = GlobalBatchSampler(len(loader.dataset), loader.batch_size, self.ctx.seed, self.w.size, self.w.rank, self.accum, loader.drop_last)
            cuda = self.device.startswith("cuda")
            self.loader = DataLoader(SeededItems(loader.dataset, self.ctx.seed), batch_sampler=self.sampler, collate_fn=loader.collate_fn,
                                     num_workers=self.workers, pin_memory=cuda, persistent_workers=self.workers > 0,
                                     prefetch_factor=4 if self.workers else None, generator=torch.Generator().manual_seed(self.ctx.seed))
        self.sampler.set_epoch(epoch)
        shares = [(n, n_global, m == 0, m == len(micro) - 1) for micro, n_global in self.sampler.steps() for m, (_, n) in enumerate(micro)]
        for batch, (n, n_global, first, last) in zip(self.loader, shares):
            yield batch, n, n_global, first, last

    def _cut(self, loader):
        parts = self.w.size * self.accum
        for batch in loader:
            if parts == 1:
                yield batch, None, None, True, True
                continue
            n = len(batch[0])
            bounds = [round(i * n / parts) for i in range(parts + 1)]
            for m in range(self.accum):
                c = m * self.w.size + self.w.rank
                a, b = bounds[c], bounds[c + 1]
                share = type(batch)(e[a:b] if b > a else e[0:1] for e in batch)
                yield share, b - a, n, m == 0, m == self.accum - 1


def fit(model, trainable: list, opt, make_loader, loss_of, hp: dict, ctx, checkpoint: Path | None, steps_per_epoch: int, *,
        desc: str, set_train_mode, metric_prefix: str = "train") -> tuple[list[dict], int, float, str]:
    """The one training loop every trained method runs (classification fine-tuning and its PEFT
    recipes, detection): warmup + cosine learning rate per step, optional bf16 autocast and
    ``torch.compile``, gradient clipping, a non-finite-loss stop, an atomic checkpoint after every
    epoch and resume from it with the saved RNG state (a requeued job ends with the same weights).

    ``make_loader(epoch, generator)`` yields batches; ``loss_of(batch, forward) -> (loss, n_images)``
    is the method's loss. Returns (curve, images seen, fit seconds, AMP label)."""
    import torch

    from ..progress import progress

    device = ctx.device
    epochs = int(hp["epochs"])
    total = epochs * steps_per_epoch
    warmup = int(round(float(hp["warmup_epochs"]) * steps_per_epoch))
    milestones = None
    if str(hp.get("schedule", "cosine")) == "step":  # detection's "1x": x0.1 at the given epochs (default 2/3 and 8/9 of training)
        milestones = [int(round(float(e) * steps_per_epoch)) for e in (hp.get("steps") or [epochs * 2 / 3, epochs * 8 / 9])]
    start_epoch, curve = 0, []
    state = load_checkpoint(checkpoint, device, ctx.log) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, curve = state["epoch"], state["curve"]
        ctx.log(f"resumed {metric_prefix} fit from {checkpoint} at epoch {start_epoch}/{epochs}")

    amp_dtype = amp_dtype_for(device, hp.get("amp", "auto"))
    autocast = torch.autocast(device_type=str(device).split(":")[0], dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    w = world()
    accum = int(hp.get("accum_steps") or 1)
    forward, ddp = model, None
    if w.size > 1:  # every rank holds the same weights (DDP broadcasts rank 0's) and averages gradients
        ddp, _ = wrap_ddp(model, device, bool(hp.get("sync_bn", False)))
        forward = ddp
    forward = torch.compile(forward) if hp.get("compile") else forward  # optional: pays off for long fits on a GPU
    amp_label = str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "off"
    ctx.distributed.update({"world_size": w.size, "accum_steps": accum, "sync_bn": bool(hp.get("sync_bn", False)) if w.size > 1 else None})
    feed = _Feed(ctx, w, accum, device)
    ema = None
    if hp.get("model_ema"):  # timm's EMA of the weights, evaluated instead of the last weights
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=float(hp.get("model_ema_decay", 0.9998)))
        if state is not None and "ema" in state:
            ema.module.load_state_dict(state["ema"])
    step = start_epoch * steps_per_epoch
    images_seen = 0
    t0 = time.perf_counter()
    for epoch in progress(range(start_epoch, epochs), desc=desc, total=epochs - start_epoch):
        set_train_mode()
        if ddp is not None:
            ddp.training = model.training
        order_gen = torch.Generator().manual_seed(ctx.seed * 100003 + epoch)  # epoch order independent of resume
        total_loss, count = 0.0, 0
        for batch, n_real, n_global, first, last in feed.epoch(make_loader(epoch, order_gen), epoch):
            if first:
                for group in opt.param_groups:  # lr_scale: timm's layer-wise decay groups
                    group["lr"] = _lr_at(step, total, warmup, float(hp["lr"]), milestones) * group.get("lr_scale", 1.0)
                opt.zero_grad(set_to_none=True)
            with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
                with autocast:
                    loss, n = loss_of(batch, forward)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"training loss became {loss.item()} at epoch {epoch + 1} step {step} (lr={hp['lr']}); lower the learning rate or add warmup"
                    )
                n_real = n if n_real is None else n_real
                n_global = n if n_global is None else n_global
                # this share's weight in the global batch: DDP's mean over ranks then equals the one-process mean
                (loss if n_real == n_global and w.size == 1 else loss * (n_real * w.size / max(n_global, 1))).backward()
            total_loss += loss.detach().item() * n_real
            count += n_real
            if last:
                if hp.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(trainable, float(hp["grad_clip"]))
                opt.step()
                step += 1
                images_seen += n_global
                if ema is not None:
                    ema.update(model, step=step)
        total_loss, count = all_reduce_sum([total_loss, count])
        curve.append({"epoch": epoch + 1, "train_loss": total_loss / max(count, 1), "lr": opt.param_groups[0]["lr"]})
        if checkpoint is not None and w.main:  # rank 0 alone writes; every rank resumes from the same file
            _atomic_torch_save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "curve": curve,
                 **({"ema": ema.module.state_dict()} if ema is not None else {})},
                checkpoint,
            )
        if ctx.on_metrics and w.main:
            ctx.on_metrics({f"{metric_prefix}/loss": curve[-1]["train_loss"], "lr": curve[-1]["lr"]}, epoch + 1)
    ctx.distributed.update(feed.report())
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    fit_s = time.perf_counter() - t0
    ctx.add_time("fit", fit_s)
    return curve, images_seen, fit_s, amp_label


def train_and_evaluate(backbone, task, train_split: str, eval_split: str, hp: dict, ctx, checkpoint: Path | None, recipe: str | None = None,
                       on_trained=None):
    """Fine-tune a fresh copy of the backbone on ``train_split`` (adapted by ``recipe`` when given:
    only the recipe's parameters and the head train); top-1 on ``eval_split``. ``on_trained(model)``,
    when given, is called with the trained (eval-mode) classifier after that evaluation (the
    shifted evaluation sets of harness.eval_sets are scored there).

    Returns (top1, n_eval, curve, report): the report holds the parameter counts, peak memory,
    training throughput and inference latency against the frozen backbone."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from ..adapt import apply_recipe, train_mode
    from ..adapt.accounting import latency_ms, parameter_report, peak_memory_mb, reset_peak_memory
    from ..adapt.training_split import TrainingSplit

    device = ctx.device
    from . import timm_recipe

    timm_path = timm_recipe.active(hp)  # timm's recipe components (a preset, RandAugment, mixup, layer decay, drop-path)
    torch.manual_seed(ctx.seed)
    encoder = copy.deepcopy(backbone.model)
    if timm_path:
        encoder = timm_recipe.with_drop_path(backbone, encoder, float(hp.get("drop_path") or 0.0))
    backbone_params = sum(p.numel() for p in encoder.parameters())
    # a recipe that selects from data (SCT, GPS, E2VPT's pruning) sees this cell's training split, nothing else
    split = TrainingSplit(train_split, task.num_classes, lambda aug: task.load(train_split).with_transform(backbone.preprocess.train_transform(aug, task.hflip_ok)),
                          hp, ctx, checkpoint, backbone.feature_dim, backbone.meta)
    adaptation = apply_recipe(recipe, encoder, hp, data=split) if recipe else None
    if adaptation is None:
        encoder.requires_grad_(True)
    head = torch.nn.Linear(backbone.feature_dim, task.num_classes)
    model = torch.nn.Sequential(encoder, head).to(device)
    report = parameter_report(encoder, head, set(adaptation.trainable) if adaptation else None, backbone_params,
                              adaptation.extra_params if adaptation else 0)
    report["recipe"] = recipe or "full"
    if adaptation is not None and adaptation.notes:
        report["recipe_notes"] = {k: v for k, v in adaptation.notes.items() if isinstance(v, (int, float, str, bool, dict, list))}
    if adaptation is not None and adaptation.artifacts:
        report["artifacts"] = adaptation.artifacts
    augment = bool(hp["augment"])
    if timm_path and augment:
        train_ds = task.load(train_split).with_transform(timm_recipe.train_transform(backbone.preprocess, hp, task.hflip_ok))
        report["train_transform"] = repr(train_ds.transform) if hasattr(train_ds, "transform") else "timm.data.create_transform"
    else:
        train_ds = task.load(train_split).with_transform(backbone.preprocess.train_transform(augment, task.hflip_ok))
    if not augment:
        train_ds = _MemoisedDataset(train_ds)
    eval_ds = task.load(eval_split).with_transform(timm_recipe.eval_transform(backbone.preprocess, hp) if timm_path else backbone.preprocess.eval_transform())
    bs = int(hp["batch_size"])
    steps_per_epoch = max(1, math.ceil(len(train_ds) / bs))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = timm_recipe.optimizer(encoder, head, trainable, hp) if timm_path else make_optimizer(trainable, hp)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(hp["label_smoothing"]))
    mixup = timm_recipe.MixupLoss(hp, task.num_classes) if (hp.get("mixup") or hp.get("cutmix")) else None
    if hp.get("preset"):
        report["preset"] = {"name": hp["preset"], "values": {k: hp.get(k) for k in timm_recipe.PRESETS[hp["preset"]]}}
    reset_peak_memory(device)
    def make_loader(epoch: int, generator):
        return DataLoader(train_ds, batch_size=bs, shuffle=True, generator=generator, num_workers=0, drop_last=False)

    def loss_of(batch, forward):
        images, labels = batch
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if mixup is not None:
            return mixup(forward, images, labels), len(labels)
        return loss_fn(forward(images), labels), len(labels)

    curve, images_seen, fit_s, report["amp"] = fit(
        model, trainable, opt, make_loader, loss_of, hp, ctx, checkpoint, steps_per_epoch,
        desc=f"{recipe or 'finetune'} {train_split}", set_train_mode=lambda: train_mode(model, adapted=adaptation is not None),
        metric_prefix=train_split)
    if mixup is not None:
        report["mixup"] = {"mixup": hp.get("mixup"), "cutmix": hp.get("cutmix"), "mixed_batches": mixup.mixed_batches}
    if hp.get("model_ema"):
        report["model_ema"] = {"decay": float(hp["model_ema_decay"]), "evaluated": True}
    report["peak_memory_mb"], report["peak_memory_kind"] = peak_memory_mb(device)
    report["train_images_per_s"] = round(images_seen / fit_s, 2) if images_seen and fit_s > 0 else None
    if adaptation is not None:  # a recipe whose update folds into the weights: the merged model is what is evaluated and timed
        report.update(adaptation.merge(encoder) if adaptation.merge is not None else {"merged": False})
        report["extra_params_served"] = 0 if report["merged"] else report["extra_params"]

    t0 = time.perf_counter()
    model.eval()
    correct, seen, probe = 0, 0, None
    with torch.inference_mode():
        for images, labels in DataLoader(eval_ds, batch_size=max(bs, 64), shuffle=False):
            pred = model(images.to(device)).argmax(dim=1).cpu()
            correct += int((pred == labels).sum())
            seen += len(labels)
            probe = images[:16] if probe is None else probe
    if on_trained is not None:
        on_trained(model)
    ctx.add_time("eval", time.perf_counter() - t0)
    if probe is not None:  # the adapted encoder's forward against the frozen backbone's, same images
        frozen = backbone.model.to(device)
        report["latency_ms"] = latency_ms(encoder, probe.to(device))
        report["frozen_latency_ms"] = latency_ms(frozen, probe.to(device))
        report["latency_vs_frozen"] = round(report["latency_ms"] / report["frozen_latency_ms"], 3) if report["frozen_latency_ms"] else None
        report["latency_batch"] = int(len(probe))
    return float(np.float64(correct) / max(seen, 1) * 100.0), seen, curve, report


def check_choices(method: str, given: dict, choices: dict) -> None:
    """Values with a fixed set of choices are checked at grid expansion (``resolve_hparams``), so a
    typo fails the sweep in one line instead of every cell."""
    from ..errors import BobError, did_you_mean

    for key, allowed in choices.items():
        values = given.get(key) if key in given else None
        for value in (values if isinstance(values, list) else [values] if values is not None else []):
            if str(value).lower() not in allowed:
                raise BobError(f"method '{method}': {key}={value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}")


# Deterministic bookkeeping every adaptation record carries in ``metrics`` (declared so tables rank
# them right). Measurements that depend on the machine (throughput, peak memory, latency) stay in
# the record's ``adaptation`` block: a cell's metrics are the same wherever it ran.
ADAPTATION_METRICS = {
    "trainable_pct": {"direction": "lower", "unit": "%", "fmt": ".2f", "label": "trainable parameters (% of the backbone)"},
    "trainable_pct_with_head": {"direction": "lower", "unit": "%", "fmt": ".2f", "label": "trainable parameters incl. head (% of the backbone)"},
}


@register_method
class FineTune(Method):
    name = "finetune"
    kinds = (CLASSIFICATION,)
    frozen_backbone = False
    description = "end-to-end fine-tuning (AdamW, warmup + cosine, augmentation on/off)"
    defaults = {"lr": 5e-4, "wd": 0.05, "epochs": 10, "warmup_epochs": 1.0, "label_smoothing": 0.0, "augment": False, "grad_clip": 1.0, "batch_size": 32,
                "optimizer": "adamw", "amp": "auto", "compile": False, "accum_steps": 1, "sync_bn": False,
                **RECIPE_DEFAULTS}
    search_space = {}  # fixed by default (costly); pass search: {lr: [...]} for the VTAB-1k protocol
    metrics = ADAPTATION_METRICS
    recipe: str | None = None  # None: every parameter trains
    choices = {"optimizer": OPTIMIZERS, "amp": AMP_MODES, "targets": LORA_TARGETS}
    random_sources = {"model_init": "torch.manual_seed(seed) before the head (and a recipe's modules) are built",  # in the record
                      "epoch_order": "torch.Generator().manual_seed(seed * 100003 + epoch) shuffles each epoch",
                      "augmentation": "torch's global generator (seeded with seed) when augment=true"}

    def resolve_hparams(self, given):
        resolved = apply_preset(self.name, given, super().resolve_hparams(given))  # a preset's values under the user's
        check_choices(self.name, given, self.choices)
        return resolved

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        curves, reports = {}, {}

        def fit_and_score(train_split, eval_split, hp):
            ckpt = None
            if ctx.checkpoint_dir is not None:
                tag = hashlib.sha256(canonical_json({"train": train_split, "eval": eval_split, **{k: v for k, v in hp.items() if k != "search"}}).encode()).hexdigest()[:12]
                ckpt = Path(ctx.checkpoint_dir) / f"{ctx.cell_id}-{tag}.pt"
            shifted: dict = {}

            def score_shifted(model):  # the shifted sets, read by the model just trained (harness.eval_sets)
                scores_of = lambda split: model_scores(model, task.load(split).with_transform(backbone.preprocess.eval_transform()),  # noqa: E731
                                                       max(int(hp["batch_size"]), 64), ctx.device)
                add_eval_sets(task, eval_split, shifted, scores_of)

            top1, n, curve, report = train_and_evaluate(backbone, task, train_split, eval_split, hp, ctx, ckpt, recipe=self.recipe,
                                                        on_trained=score_shifted if wants_sets(task, eval_split) else None)
            curves[f"{train_split}->{eval_split}"] = curve
            reports[f"{train_split}->{eval_split}"] = report
            return top1, {"top1": top1, "n_eval": n, **shifted}

        metrics, protocol = tune_then_refit(task, hparams, fit_and_score, self.name)
        final_key = f"{task.final_splits[0]}->{task.final_splits[1]}"
        final = curves.get(final_key, [])
        if final:
            metrics["final_train_loss"] = final[-1]["train_loss"]
        report = reports.get(final_key, {})
        metrics.update({k: report[k] for k in ADAPTATION_METRICS if report.get(k) is not None})
        primary, specs = finish_eval_sets(task, metrics, protocol)
        return MethodResult(metrics, primary, protocol, curves={"train": final}, adaptation=report, metric_specs=specs)
