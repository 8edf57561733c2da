"""Tiny datasets written in real on-disk formats (PNG/JPEG files + list files or class folders)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


def colour_image(label: int, rng: np.random.RandomState, size: int = 20) -> Image.Image:
    base = np.array(COLOURS[label], dtype=np.float32)
    pixels = np.clip(base + rng.randn(size, size, 3) * 25, 0, 255).astype("uint8")
    return Image.fromarray(pixels, "RGB")


def make_list_file_dataset(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """VTAB-1k/NOAH style: images/ + train800.txt, val200.txt, train800val200.txt, test.txt (small counts)."""
    per_class = per_class or {"train800": 8, "val200": 2, "test": 4}
    rng = np.random.RandomState(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for split, n in per_class.items():
        lines[split] = []
        for label in range(len(COLOURS)):
            for i in range(n):
                rel = f"images/{split}_{label}_{i}.{'jpg' if i % 2 else 'png'}"
                colour_image(label, rng).save(root / rel)
                lines[split].append(f"{rel} {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def make_image_folder_dataset(root: Path, per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    per_split = per_split or {"train": 10, "test": 4}
    rng = np.random.RandomState(seed)
    names = ["red", "green", "blue"]
    for split, n in per_split.items():
        for label, name in enumerate(names):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour_image(label, rng).save(root / split / name / f"{i}.png")
    return root


# -- the standard suites' on-disk formats ---------------------------------------------------------
VTAB_COUNTS = {"train800": 800, "val200": 200, "test": 60}


def make_vtab_task(root: Path, folder: str, num_labels: int = 4, seed: int = 0, counts: dict | None = None, size: int = 8) -> Path:
    """<root>/vtab-1k/<folder>/images/*.png + the four list files, with VTAB-1k's real counts."""
    counts = counts or VTAB_COUNTS
    rng = np.random.RandomState(seed)
    task_dir = root / "vtab-1k" / folder
    (task_dir / "images").mkdir(parents=True, exist_ok=True)
    lists = {}
    for split, n in counts.items():
        rows = []
        for i in range(n):
            label = i % num_labels
            rel = f"images/{split}_{i:04d}.png"
            colour_image(label % len(COLOURS), rng, size).rotate(90 * (label // len(COLOURS))).save(task_dir / rel)
            rows.append(f"{rel} {label}")
        lists[split] = rows
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, rows in lists.items():
        (task_dir / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return task_dir


def make_vpt_fgvc(root: Path, folder: str = "CUB_200_2011", image_dir: str = "images", class_ids=(1, 2, 3), counts=None, seed: int = 0) -> Path:
    """VPT's FGVC layout: images under <folder>/<image_dir>/ and {train,val,test}.json mapping path -> class id."""
    import json

    counts = counts or {"train": 30, "val": 9, "test": 15}
    rng = np.random.RandomState(seed)
    base = root / "fgvc" / folder
    for split, n in counts.items():
        anno = {}
        for i in range(n):
            k = i % len(class_ids)
            rel = f"{k:03d}.class_{class_ids[k]}/{split}_{i}.jpg"
            (base / image_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            colour_image(k % len(COLOURS), rng).save(base / image_dir / rel)
            anno[rel] = class_ids[k]
        (base / f"{split}.json").write_text(json.dumps(anno))
    return base


def make_hf_parquet(folder: Path, splits: dict[str, int], image_col: str = "img", label_col: str = "label", num_labels: int = 3, seed: int = 0) -> Path:
    """A Hugging Face `datasets` export: one <split>.parquet per split with an Image column."""
    import datasets

    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        labels = [i % num_labels for i in range(n)]
        ds = datasets.Dataset.from_dict({image_col: [colour_image(l, rng) for l in labels], label_col: labels})
        ds = ds.cast_column(image_col, datasets.Image())
        ds.to_parquet(str(folder / f"{split}.parquet"))
    return folder


def make_hf_hub_cache(hub: Path, repo_id: str, seed: int = 3):
    """A Hugging Face hub cache holding ``repo_id``'s model.safetensors, laid out as huggingface_hub
    writes it (``models--org--name/{refs/main,snapshots/<rev>/}``). Returns the timm model saved."""
    import timm
    import torch
    from safetensors.torch import save_file

    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    torch.manual_seed(seed)
    model = timm.create_model(repo_id.split("/")[-1].split(".")[0], num_classes=1000)
    save_file(model.state_dict(), str(snapshot / "model.safetensors"))
    return model
