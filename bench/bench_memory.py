"""Memory: extraction's peak RSS must not grow with the number of images (bob streams features
to an .npy file batch by batch). Each size runs in a fresh process; the figure is the peak RSS
above the process's level after the model is built, at 1x and 10x a dataset's size, for bob and
for a plain loop that accumulates features in a Python list (the usual script)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import REPO, cli, write_result

CHILD = r'''
import json, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[4])
from PIL import Image

class Synthetic:
    """n generated 16 px images, made on the fly (the dataset itself holds nothing)."""
    def __init__(self, n, transform=None): self.n, self.transform = n, transform
    def __len__(self): return self.n
    def __getitem__(self, i):
        img = Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8))
        return self.transform(img), i % 10
    def with_transform(self, t): return Synthetic(self.n, t)
    def identity(self): return [f"synthetic-{self.n}"]

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024

import torch
from torch.utils.data import DataLoader
from harness.features import ExtractOptions, extract_features
from harness.registry import BACKBONES
n, mode = int(sys.argv[1]), sys.argv[2]
bb = BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=0, img_size=16)
extract_features(bb, Synthetic(512), 256, "cpu", options=ExtractOptions())  # warm-up: allocator and kernels
Path("/proc/self/clear_refs").write_text("5")
base = hwm()
if mode == "bob":
    feats, labels = extract_features(bb, Synthetic(n), 256, "cpu", options=ExtractOptions(), out_path=Path(sys.argv[3]) / "f.npy")
    assert feats.shape == (n, 512)
else:
    out = []
    with torch.inference_mode():
        for x, _ in DataLoader(Synthetic(n, bb.preprocess.eval_transform()), batch_size=256):
            out.append(bb.model(x).numpy())
    feats = np.concatenate(out)
print(json.dumps({"n": n, "mode": mode, "peak_above_base_mb": round(hwm() - base, 1), "base_mb": round(base, 1)}))
'''


def run(n: int, mode: str, tmp: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), mode, str(tmp), str(REPO)], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "BOB_PROGRESS": "0", "BOB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> dict:
    import tempfile

    n = 4000 if quick else 20000
    with tempfile.TemporaryDirectory() as tmp:
        bob_1x, bob_10x = run(n, "bob", Path(tmp)), run(10 * n, "bob", Path(tmp))
        plain_10x = run(10 * n, "plain", Path(tmp))
    feature_mb = 10 * n * 512 * 4 / 2**20
    growth = bob_10x["peak_above_base_mb"] - bob_1x["peak_above_base_mb"]
    figures = {"images_1x": n, "images_10x": 10 * n, "feature_dim": 512, "features_10x_mb": round(feature_mb, 1),
               "bob_peak_above_base_mb": {"1x": bob_1x["peak_above_base_mb"], "10x": bob_10x["peak_above_base_mb"]},
               "plain_list_peak_above_base_mb_10x": plain_10x["peak_above_base_mb"], "bob_growth_1x_to_10x_mb": round(growth, 1)}
    # "does not grow": the 10x run's extra peak stays within 10% of the 10x feature array (noise of the allocator)
    checks = {"peak RSS flat from 1x to 10x": growth <= 0.1 * feature_mb}
    return write_result("memory", figures, checks,
                        f"extraction peak RSS +{bob_1x['peak_above_base_mb']:.0f} MB at {n} images, +{bob_10x['peak_above_base_mb']:.0f} MB at {10 * n} "
                        f"(features {feature_mb:.0f} MB); a plain list-accumulating loop: +{plain_10x['peak_above_base_mb']:.0f} MB at {10 * n}")


if __name__ == "__main__":
    cli(main, __doc__)
