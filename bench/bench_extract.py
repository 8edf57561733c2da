"""Feature extraction: bob's extractor vs a hand-written ``torch.inference_mode()`` timm loop over
the same images, batch size and resolution (target: bob >= 0.9x the plain loop's images/s), plus
each accelerator option on its own: channels-last, bf16 autocast, DataLoader workers with pinned
memory, and decoded-image reuse (a second backbone with the same preprocessing)."""
from __future__ import annotations


from common import cli, interleaved_times, write_result


def main(quick: bool = False) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from harness.features import ExtractOptions, extract_features
    from harness.registry import BACKBONES, TASKS

    task = TASKS.get("digits").factory()
    dataset = task.load("test")  # 797 real images, decoded and resized by the backbone's transform
    size, batch = 64, 64
    backbone = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=0, img_size=size)
    model = backbone.model.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    def plain():
        loader = DataLoader(dataset.with_transform(backbone.preprocess.eval_transform()), batch_size=batch, shuffle=False)
        out = []
        with torch.inference_mode():
            for images, _ in loader:
                out.append(model(images.to(device)).float().cpu())
        return torch.cat(out)

    def bob(options):
        return lambda: extract_features(backbone, dataset, batch, device, options=options)

    cpu = device == "cpu"
    variants = {
        "plain_loop": plain,
        "bob_default": bob(ExtractOptions.auto(device)),
        "channels_last": bob(ExtractOptions(channels_last=True)),
        "bf16_autocast": bob(ExtractOptions(precision="bf16")),
        "workers_pinned": bob(ExtractOptions(workers=2, pin_memory=not cpu, prefetch=2)),
    }
    repeats = 3 if quick else 5
    plain()  # warm-up
    reuse_opts = ExtractOptions(reuse_decoded=True)
    extract_features(backbone, dataset, batch, device, options=reuse_opts)  # a first backbone decodes and keeps the split
    variants["decoded_reuse_second_backbone"] = bob(reuse_opts)
    times = interleaved_times(variants, repeats)
    n = len(dataset)
    figures = {"images": n, "img_size": size, "batch": batch, "device": device,
               "images_per_s": {k: round(n / v, 1) for k, v in times.items()},
               "ratio_vs_plain": {k: round(times["plain_loop"] / v, 3) for k, v in times.items()}}
    ratio = figures["ratio_vs_plain"]["bob_default"]
    return write_result("extract", figures, {"bob_default >= 0.9x plain": ratio >= 0.9},
                        f"feature extraction: bob default {ratio:.2f}x the plain inference_mode loop ({figures['images_per_s']['plain_loop']:.0f} img/s plain); "
                        + ", ".join(f"{k} {v:.2f}x" for k, v in figures["ratio_vs_plain"].items() if k not in ("plain_loop", "bob_default")))


if __name__ == "__main__":
    cli(main, __doc__)
