"""Training throughput: bob's fine-tuning loop (full fine-tuning, and LoRA through its recipe) vs a
plain timm training loop with the same model, data, batch and precision (target: >= 0.9x images/s).
Both loops start from the same raw images and decode them once, in the first epoch; bob's figure
is its own record's train_images_per_s."""
from __future__ import annotations

import copy
import time

from common import cli, write_result


def main(quick: bool = False) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from harness.features import FeatureCache
    from harness.methods.finetune import _MemoisedDataset, train_and_evaluate
    from harness.registry import BACKBONES, METHODS, TASKS
    from harness.types import RunContext

    task = TASKS.get("digits").factory()
    size, batch, epochs = 32, 64, 2
    backbone = BACKBONES.get("timm:vit_tiny_patch16_224").factory(weights="random", seed=0, img_size=size)
    backbone.model  # build once, outside the timings
    device = "cuda" if torch.cuda.is_available() else "cpu"
    transform = backbone.preprocess.eval_transform()

    def plain(recipe: str | None):
        torch.manual_seed(0)
        encoder = copy.deepcopy(backbone.model)
        if recipe == "lora":
            import peft

            peft.inject_adapter_in_model(peft.LoraConfig(r=8, lora_alpha=8, target_modules=["qkv"]), encoder)
        model = torch.nn.Sequential(encoder, torch.nn.Linear(backbone.feature_dim, 10)).to(device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
        train = _MemoisedDataset(task.load("train800").with_transform(transform))  # decoded in epoch 1, as bob's loop does
        seen, t0 = 0, time.perf_counter()
        for epoch in range(epochs):
            model.train()
            for images, labels in DataLoader(train, batch_size=batch, shuffle=True):
                loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(labels)
        return seen / (time.perf_counter() - t0)

    def bob(method: str):
        hp = METHODS.get(method).factory().resolve_hparams({"img_size": size, "epochs": epochs, "batch_size": batch, "lr": 1e-3, "wd": 1e-4,
                                                           "warmup_epochs": 0.0, "grad_clip": 0.0, **({"r": 8, "targets": "qkv"} if method == "lora" else {})})
        ctx = RunContext(device=device, seed=0, cell_id="bench", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda *_: None)
        _, _, _, report = train_and_evaluate(backbone, task, "train800", "val200", hp, ctx, None, recipe=None if method == "finetune" else method)
        return report["train_images_per_s"]

    repeats = 2 if quick else 3
    figures = {"model": "vit_tiny_patch16_224", "img_size": size, "batch": batch, "epochs": epochs, "device": device, "precision": "fp32 (CPU; bf16 autocast on CUDA)"}
    checks = {}
    for method, recipe in (("finetune", None), ("lora", "lora")):
        plain_rates, bob_rates = [], []
        for _ in range(repeats):  # interleaved
            plain_rates.append(plain(recipe))
            bob_rates.append(bob(method))
        p, b = sorted(plain_rates)[len(plain_rates) // 2], sorted(bob_rates)[len(bob_rates) // 2]
        figures[method] = {"plain_images_per_s": round(p, 1), "bob_images_per_s": round(b, 1), "ratio": round(b / p, 3)}
        checks[f"{method} >= 0.9x plain"] = b / p >= 0.9
    return write_result("train", figures, checks, "training throughput vs a plain timm loop: " +
                        ", ".join(f"{m} {figures[m]['ratio']:.2f}x ({figures[m]['bob_images_per_s']:.0f} vs {figures[m]['plain_images_per_s']:.0f} img/s)" for m in ("finetune", "lora")))


if __name__ == "__main__":
    cli(main, __doc__)
