"""Methods for language models: how the model is adapted before a task scores it.

- ``lm_zeroshot``: the model as it is (log-likelihoods of the choices / sentences).
- ``lm_fewshot``: ``k`` in-context examples drawn with the cell's seed (the task decides from where).
- ``soft_prompt``: ``peft`` prompt tuning (``n_tokens`` virtual tokens, the LM frozen), trained on the
  task's training split through a verbalizer (the first token of each label word at the last
  position), selected on its validation split; scored by bob's ``LMScorer``, which drops the
  virtual-token positions that a prompt-tuned model's logits include.
- ``lm_lora``: ``peft`` LoRA on the same objective.

The two trained methods share one recipe (``_VerbalizedPEFT.train``) on the one training loop
(``finetune.fit``), search the learning rate on the validation split, then repeat the chosen
configuration ``runs`` times with different seeds and report each metric's mean and 95% t-interval
(``<metric>_ci95``): Tian et al. (2023)'s point that one prompt's fairness numbers vary from run to run.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Sequence

import numpy as np

from ..errors import BobError
from ..registry import register_method
from ..types import LM_PROBE
from .base import Method, MethodResult, grid_points

LM_COMMON = {"batch_size": 16, "template": None, "verbalizer": None, "limit": None, "bootstrap_iters": 1000}
TRAIN_COMMON = {**LM_COMMON, "epochs": 10, "warmup_epochs": 0.0, "wd": 0.0, "grad_clip": 1.0, "runs": 3, "amp": "auto"}
REQUIRES = {"capabilities": ["causal-lm"], "why": "it scores text with a causal language model"}


def state_digest(module) -> str:
    """sha256 of a module's state dict (names and bytes): proves which weights a method changed."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def mean_and_interval(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over runs and ``<metric>_ci95``, the half-width of its 95% t-interval (two or more runs)."""
    if len(runs) == 1:
        return dict(runs[0])
    from scipy import stats

    t = float(stats.t.ppf(0.975, len(runs) - 1))
    out: dict[str, float] = {}
    for key in runs[0]:
        values = np.array([r.get(key, float("nan")) for r in runs], dtype=float)
        finite = values[~np.isnan(values)]
        out[key] = float(finite.mean()) if len(finite) else float("nan")
        if len(finite) > 1 and key != "n_examples":
            out[f"{key}_ci95"] = t * float(finite.std(ddof=1)) / math.sqrt(len(finite))
    return out


def _finish(res, protocol: dict, adaptation: dict | None = None, curves: dict | None = None) -> MethodResult:
    return MethodResult(res.metrics, res.primary, {**res.protocol, **protocol}, curves=curves or {}, adaptation=adaptation or {},
                        artifacts={"samples.json": res.samples} if res.samples else {}, metric_specs=dict(getattr(res, "metric_specs", {}) or {}))


def _on_device(backbone, ctx) -> str:
    """Put the model where the cell runs; a cell given several GPUs in one process (``ctx.shard_devices``)
    spreads the model over them (``CausalLMBackbone.shard``) and the record says how. Returns the
    device the inputs go to."""
    if ctx.shard_devices:
        first, how = backbone.shard(list(ctx.shard_devices))
        ctx.distributed["model_sharding"] = how
        return first
    backbone.model.to(ctx.device)
    return ctx.device


@register_method
class LMZeroShot(Method):
    name = "lm_zeroshot"
    kinds = (LM_PROBE,)
    description = "score the task with the language model as it is (log-likelihoods of choices / sentences)"
    defaults = dict(LM_COMMON)
    backbone_requires = REQUIRES
    model_parallel = True  # several GPUs per cell hold one model (inference only): one process, no DDP

    def shots(self, hparams) -> int:
        return 0

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        k = self.shots(hparams)
        device = _on_device(backbone, ctx)
        t0 = time.perf_counter()
        res = task.evaluate(backbone.scorer(device, hparams["batch_size"]), hparams, ctx, fewshot=k)
        ctx.add_time("eval", time.perf_counter() - t0)
        protocol = {"selected_on": None, "adaptation": f"{k}-shot in context" if k else "none"}
        return _finish(res, {**protocol, "fewshot_seed": ctx.seed} if k else protocol)


@register_method
class LMFewShot(LMZeroShot):
    name = "lm_fewshot"
    description = "k in-context examples (seeded by the cell's seed) before each item"
    defaults = {**LM_COMMON, "k": 5}

    def shots(self, hparams) -> int:
        k = int(hparams["k"])
        if k < 1:
            raise BobError(f"lm_fewshot: k must be at least 1 (got {k}); use lm_zeroshot for k = 0")
        return k


class _seeded:
    """The run context with another seed (fit shuffles by ``ctx.seed``)."""

    def __init__(self, ctx, seed: int):
        self._ctx, self.seed = ctx, seed

    def __getattr__(self, name):
        return getattr(self._ctx, name)


class _VerbalizedPEFT(Method):
    """Shared protocol of soft_prompt and lm_lora: search on val, ``runs`` seeds of the chosen config."""

    kinds = (LM_PROBE,)
    frozen_backbone = False
    backbone_requires = REQUIRES

    def wrap(self, base, hp, tokenizer) -> tuple[Any, int]:  # pragma: no cover
        """(peft model around ``base``, number of virtual tokens its logits start with)."""
        raise NotImplementedError

    def unwrap(self, model) -> None:
        """Give the backbone back unchanged for the next run."""

    def train(self, backbone, task, hp: dict, ctx, seed: int):
        """Train the wrapped model on the task's training split with the verbalizer's cross-entropy, on
        the one training loop; returns (scorer on the adapted model, the model, curve, report)."""
        import torch

        from .finetune import fit

        train = task.split("train")
        base = backbone.model
        base_digest = state_digest(base)
        torch.manual_seed(seed)
        model, n_virtual = self.wrap(base, hp, backbone.tokenizer)
        model.to(ctx.device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        scorer = backbone.scorer(ctx.device, hp["batch_size"], model=model, prefix_tokens=n_virtual)
        token_ids = scorer.label_token_ids(task.verbalizer(hp))
        prompts = [task.prompt(t.text, hp) for t in train]
        labels = torch.tensor([t.label for t in train])
        bs = int(hp["batch_size"])

        def make_loader(epoch, generator):
            order = torch.randperm(len(prompts), generator=generator).tolist()
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                yield [prompts[i] for i in idx], labels[idx]

        def loss_of(batch, forward):
            texts, y = batch
            logits = scorer.last_position_logits(texts, token_ids, grad=True, desc=f"{task.name} train")
            return torch.nn.functional.cross_entropy(logits, y.to(logits.device)), len(texts)

        opt = torch.optim.AdamW(trainable, lr=float(hp["lr"]), weight_decay=float(hp["wd"]))
        curve, seen, fit_s, amp = fit(model, trainable, opt, make_loader, loss_of, hp, _seeded(ctx, seed), None, math.ceil(len(prompts) / bs),
                                      desc=f"{self.name} {task.name}", set_train_mode=model.eval, metric_prefix=self.name)
        ctx.add_time("fit", fit_s)
        report = {"trainable_params": int(sum(p.numel() for p in trainable)),
                  "trainable_tensors": [n for n, p in model.named_parameters() if p.requires_grad][:20],
                  "total_params": int(sum(p.numel() for p in model.parameters())),  # the base (LoRA injected into it) + a prompt encoder
                  "base_state_sha256_before": base_digest, "examples_seen": seen, "amp": amp, "virtual_tokens": n_virtual}
        return scorer, model, curve, report

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        if not hasattr(task, "split"):
            raise BobError(f"{self.name} needs a task with a training split; {task.name} has none")
        _on_device(backbone, ctx)
        search = hparams.get("search") or {}
        seeds = [ctx.seed * 1000 + r for r in range(max(1, int(hparams["runs"])))]
        candidates, best = [], None
        for point in grid_points(search):  # choose on the sentiment validation split (first seed)
            scorer, model, curve, report = self.train(backbone, task, {**hparams, **point}, ctx, seeds[0])
            val = task.accuracy(scorer, "val", {**hparams, **point})
            candidates.append({**point, "val_acc": val})
            if best is None or val > best[0]:
                if best is not None:
                    self.unwrap(best[2])
                best = (val, point, model, scorer, curve, report)
            else:
                self.unwrap(model)
        _, chosen, model, scorer, curve, report = best
        hp = {**hparams, **chosen}
        runs, curves, t0 = [], {"train": curve}, time.perf_counter()
        for r, seed in enumerate(seeds):
            if r > 0:
                self.unwrap(model)
                scorer, model, curves[f"train_run{r}"], _ = self.train(backbone, task, hp, ctx, seed)
            res = task.evaluate(scorer, hp, ctx, fewshot=0)
            runs.append(res.metrics)
        ctx.add_time("eval", time.perf_counter() - t0)
        self.unwrap(model)
        report["base_state_sha256_after"] = state_digest(backbone.model)
        res.metrics = mean_and_interval(runs)
        protocol = {"search_space": search, "candidates": candidates, "selected_on": "val" if search else None, "selected": chosen,
                    "runs": len(seeds), "run_seeds": seeds, "interval": "95% t-interval over runs (<metric>_ci95)" if len(seeds) > 1 else None}
        return _finish(res, protocol, adaptation=report, curves=curves)


@register_method
class SoftPrompt(_VerbalizedPEFT):
    name = "soft_prompt"
    description = "peft prompt tuning: n_tokens virtual tokens trained through a verbalizer, the LM frozen"
    defaults = {**TRAIN_COMMON, "n_tokens": 8, "init": "random", "init_text": "Classify the sentiment:", "lr": 3e-2}
    search_space = {"lr": [1e-1, 3e-2]}

    def wrap(self, base, hp, tokenizer):
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        init = str(hp["init"])
        if init not in ("random", "text"):
            raise BobError(f"soft_prompt: init {init!r} is not one of random, text")
        kwargs = {}
        if init == "text":
            kwargs = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": hp["init_text"],
                      "tokenizer_name_or_path": getattr(tokenizer, "name_or_path", None)}
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=int(hp["n_tokens"]), **kwargs)
        return get_peft_model(base, config), int(hp["n_tokens"])


@register_method
class LMLoRA(_VerbalizedPEFT):
    name = "lm_lora"
    description = "peft LoRA on the attention and MLP projections, trained through a verbalizer"
    defaults = {**TRAIN_COMMON, "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear", "lr": 1e-3}
    search_space = {"lr": [1e-3, 3e-4]}

    def wrap(self, base, hp, tokenizer):
        from peft import LoraConfig, get_peft_model

        target = hp["target"]
        config = LoraConfig(task_type="CAUSAL_LM", r=int(hp["r"]), lora_alpha=int(hp["alpha"]), lora_dropout=float(hp["dropout"]),
                            target_modules=target if target == "all-linear" else list(target.split(",") if isinstance(target, str) else target))
        return get_peft_model(base, config), 0

    def unwrap(self, model) -> None:
        model.unload()  # removes the LoRA layers from the base model in place
