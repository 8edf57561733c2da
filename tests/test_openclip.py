"""Vision-language backbones (#11): open_clip towers under every method, zero-shot, retrieval.

Offline: random-init open_clip models (``pretrained=None``) with open_clip's bundled BPE tokenizer;
data in the real formats (VTAB-style list files, VPT json, Karpathy-split json).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.features import FeatureCache
from harness.registry import BACKBONES, TASKS
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore

from .conftest import run_bob, write_grid
from .fixtures import COLOURS, colour_image, make_image_folder_dataset, make_list_file_dataset, make_vpt_fgvc

SMALL = "openclip:ViT-S-32"  # 22.6 M-parameter image tower, bundled tokenizer; no pretrained tag
COLOUR_NAMES = ["red", "green", "blue"]


def make_karpathy_set(root: Path, images_per_colour: int = 4, captions_per_image: int = 3, seed: int = 0) -> tuple[Path, Path]:
    """A Karpathy-split json (Flickr30k layout) with colour images and several captions per image."""
    rng = np.random.RandomState(seed)
    image_dir = root / "flickr-images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(images_per_colour * len(COLOURS)):
        label = i % len(COLOURS)
        name = f"{i:04d}.jpg"
        colour_image(label, rng, 24).save(image_dir / name)
        sentences = [{"raw": f"a {COLOUR_NAMES[label]} picture number {j}", "tokens": []} for j in range(captions_per_image)]
        images.append({"filename": name, "split": "test" if i < 9 else "val", "sentences": sentences, "imgid": i})
    path = root / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return path, image_dir


# -- backbones ---------------------------------------------------------------------------------
def test_every_pretrained_pair_is_listed_with_vl_metadata():
    import open_clip

    out = run_bob("list", "backbones", "--source", "openclip")
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("openclip:")}
    assert {f"openclip:{m}/{t}" for m, t in open_clip.list_pretrained()} <= listed
    row = next(line for line in out.stdout.splitlines() if line.startswith("openclip:ViT-B-32/laion2b_s34b_b79k "))
    assert "vision-language" in row and "LAION-2B" in row and "87.849" in row  # image-tower params measured by the catalog
    only = run_bob("list", "backbones", "--source", "openclip", "--data", "DataComp")
    assert only.stdout.count("openclip:") >= 5 and "LAION-2B" not in only.stdout
    meta = BACKBONES.get("openclip:ViT-B-32/laion2b_s34b_b79k").meta
    assert meta["pretrain_method"] == "vision-language" and meta["capabilities"] == ["image", "text"]


def test_unknown_names_and_unavailable_weights_are_one_line_errors():
    bad_tag = run_bob("run", "--backbone", "openclip:ViT-B-32/laion2b_s34b_b7", "--method", "knn", "--task", "digits")
    assert bad_tag.returncode != 0
    assert "did you mean ViT-B-32/laion2b_s34b_b79k" in bad_tag.stderr and "Traceback" not in bad_tag.stderr
    bad_model = run_bob("run", "--backbone", "openclip:ViT-B-3", "--method", "knn", "--task", "digits")
    assert "did you mean ViT-B-32" in bad_model.stderr
    offline = run_bob("run", "--backbone", "openclip:ViT-B-32/laion2b_s34b_b79k", "--method", "knn", "--task", "digits")
    assert "pretrained weights for openclip:ViT-B-32/laion2b_s34b_b79k are unavailable" in offline.stdout + offline.stderr
    assert "--weights auto" in offline.stdout + offline.stderr


def test_hf_tokenizer_that_needs_a_download_is_a_one_line_error(tmp_path):
    out = run_bob("run", "--backbone", "openclip:ViT-B-16-SigLIP/webli", "--method", "zeroshot", "--task", "digits", "--weights", "random",
                  "--set", "img_size=32", env={"HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_OFFLINE": "1"})
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "needs the Hugging Face tokenizer 'timm/ViT-B-16-SigLIP'" in text and "--set tokenizer=PATH" in text
    assert "Traceback" not in text


def test_local_checkpoint_loads_through_weights_path(tmp_path):
    """--weights PATH: the features are those of the saved model, not of a fresh random init."""
    import open_clip
    import torch

    torch.manual_seed(123)
    source = open_clip.create_model("ViT-S-32", pretrained=None, force_image_size=32)
    ckpt = tmp_path / "clip-vit-s-32.pt"
    torch.save(source.state_dict(), ckpt)
    loaded = BACKBONES.get(SMALL).factory(weights=str(ckpt), seed=0, img_size=32)
    fresh = BACKBONES.get(SMALL).factory(weights="random", seed=0, img_size=32)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = source.encode_image(x)
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
        assert not torch.allclose(fresh.model(x), expected, atol=1e-3)
        texts = ["a red picture", "a blue picture"]
        assert np.allclose(loaded.text_encoder()(texts), source.encode_text(open_clip.get_tokenizer("ViT-S-32")(texts)).numpy(), atol=1e-5)
    assert loaded.meta["weights"] == "pretrained" and loaded.meta["weights_sha256"] and loaded.cache_key.startswith(f"{SMALL}|file:")
    assert loaded.meta["params_m"] == pytest.approx(22.64, abs=0.05)  # measured on the image tower once built


# -- zero-shot correctness -----------------------------------------------------------------------
def test_template_averaging_normalisation_and_metrics_match_a_direct_computation():
    from harness.methods.zeroshot import class_embeddings, classification_metrics, fill_templates, zeroshot_logits

    names, templates = ["cat", "dog", "eel"], ["a {c}.", "a photo of a {c}."]
    prompts = fill_templates(names, templates)
    assert prompts == ["a cat.", "a photo of a cat.", "a dog.", "a photo of a dog.", "a eel.", "a photo of a eel."]
    # per prompt embedding: template 2 of 'cat' is huge and points at 'dog': without per-prompt
    # normalisation it would dominate the average and turn 'cat' into 'dog'
    emb = np.array([[1, 0, 0], [0, 50, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    cls = class_embeddings(emb, 3, 2)
    n = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected = np.stack([(n[0] + n[1]) / np.linalg.norm(n[0] + n[1]), n[2], n[4]])
    assert np.allclose(cls, expected)
    images = np.array([[3.0, 0.1, 0], [0, 2.0, 0], [0, 0, 7.0], [1.0, 0.9, 0]])
    logits = zeroshot_logits(images, cls)
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    assert np.allclose(logits, 100 * unit @ expected.T)
    labels = np.array([0, 1, 2, 1])
    m = classification_metrics(logits, labels, 3)
    pred = logits.argmax(1)
    assert m["top1"] == pytest.approx(100 * (pred == labels).mean())
    assert m["mean_per_class_recall"] == pytest.approx(100 * np.mean([(pred[labels == c] == c).mean() for c in range(3)]))
    assert "top5" not in m  # fewer than 5 classes
    many = classification_metrics(np.eye(6)[[1, 1, 2, 3, 4, 5]] + np.linspace(0, .5, 6), np.array([0, 1, 2, 3, 4, 5]), 6)
    assert many["top1"] == pytest.approx(100 * 5 / 6)
    assert many["top5"] == pytest.approx(100 * 5 / 6)  # sample 0's class scores lowest of the six: outside its top 5


def test_zeroshot_cell_equals_direct_computation_with_a_stubbed_text_tower(tmp_path):
    """The real method on the real image tower and digits; the text tower is replaced at the
    embedding level by a fixed table, so the expected numbers are computable by hand."""
    from harness.features import split_features
    from harness.methods.zeroshot import ZeroShot
    from harness.types import RunContext

    backbone = BACKBONES.get(SMALL).factory(weights="random", seed=0, img_size=32)
    task = TASKS.get("digits").factory()
    names, templates, _ = task.class_text()
    rng = np.random.RandomState(0)
    table = {p: rng.randn(backbone.model.num_features) * (1 + 10 * (i % 3)) for i, p in enumerate(t.replace("{c}", n) for n in names for t in templates)}
    backbone.text_encoder = lambda tokenizer=None: (lambda texts, batch_size=256, device="cpu": np.stack([table[t] for t in texts]))
    ctx = RunContext(device="cpu", seed=0, cell_id="z", feature_cache=FeatureCache(tmp_path / "cache"), checkpoint_dir=None)
    result = ZeroShot().run(backbone, task, ZeroShot().resolve_hparams({"batch_size": 256}), ctx)
    feats, labels = split_features(backbone, task, "test", ctx, 256)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    class_vecs = np.stack([unit(np.mean([unit(table[t.replace("{c}", n)]) for t in templates], axis=0)) for n in names])
    scores = np.stack([unit(f) for f in feats]) @ class_vecs.T
    pred = scores.argmax(1)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    assert result.metrics["top1"] == pytest.approx(100 * (pred == labels).mean())
    assert result.metrics["top5"] == pytest.approx(100 * np.mean([labels[i] in top5[i] for i in range(len(labels))]))
    assert result.metrics["mean_per_class_recall"] == pytest.approx(100 * np.mean([(pred[labels == c] == c).mean() for c in range(10)]))
    assert result.protocol["reported_on"] == "test" and result.protocol["templates"] == len(templates)
    hits = ctx.feature_cache.hits
    ZeroShot().run(backbone, task, ZeroShot().resolve_hparams({"batch_size": 256}), ctx)  # text and image embeddings from the cache
    assert ctx.feature_cache.hits == hits + 2


# -- retrieval ------------------------------------------------------------------------------------
def test_recall_at_k_on_a_hand_made_similarity_matrix():
    from tasks.retrieval import retrieval_recalls

    # 3 images; captions 0,1 -> image 0, caption 2 -> image 1, captions 3,4 -> image 2
    caption_image = np.array([0, 0, 1, 2, 2])
    sim = np.array([
        [0.1, 0.9, 0.8, 0.0, 0.2],   # image 0: its best caption (1) ranks 1st -> i2t rank 0
        [0.5, 0.4, 0.3, 0.6, 0.7],   # image 1: its caption (2) ranks 5th -> rank 4
        [0.2, 0.1, 0.9, 0.3, 0.4],   # image 2: captions 3, 4 rank 3rd and 2nd -> rank 1
    ])
    m = retrieval_recalls(sim, caption_image, ks=(1, 2, 5))
    assert m["i2t_r1"] == pytest.approx(100 / 3) and m["i2t_r2"] == pytest.approx(200 / 3) and m["i2t_r5"] == 100
    # text->image ranks: c0 -> image 0 (0.1 vs .5 .2) rank 2; c1 rank 0; c2 -> image 1 (.3 vs .8 .9) rank 2;
    # c3 -> image 2 (.3 vs 0 .6) rank 1; c4 -> image 2 (.4 vs .2 .7) rank 1
    assert m["t2i_r1"] == pytest.approx(20.0) and m["t2i_r2"] == pytest.approx(60.0) and m["t2i_r5"] == pytest.approx(100.0)
    assert m["mean_recall"] == pytest.approx(np.mean([100 / 3, 200 / 3, 100, 20, 60, 100]))
    ties = retrieval_recalls(np.zeros((2, 2)), np.array([0, 1]), ks=(1,))  # ties rank by index, deterministically
    assert ties["i2t_r1"] == 50.0 and ties["t2i_r1"] == 50.0


def test_karpathy_retrieval_task_runs_zeroshot_and_bad_input_is_one_line(tmp_path):
    ann, images = make_karpathy_set(tmp_path)
    record = run_cell(RunSpec(SMALL, "zeroshot", f"retrieval:{ann}@{images}", 0, "random", {"img_size": 32}), ResultStore(tmp_path / "r"))
    assert record["status"] == "ok", record["error"]
    m = record["metrics"]
    assert m["n_images"] == 9 and m["n_captions"] == 27 and 0 <= m["i2t_r1"] <= 100 and m["t2i_r10"] == 100.0  # only 9 images: every caption finds its image in the top 10
    assert record["primary_metric"]["name"] == "mean_recall" and record["metric_specs"]["i2t_r5"]["direction"] == "higher"
    knn = run_cell(RunSpec(SMALL, "knn", f"retrieval:{ann}@{images}", 0, "random", {"img_size": 32}), None)
    assert knn["status"] == "skipped" and "retrieval" in knn["error"]["message"]
    (tmp_path / "bad.json").write_text(json.dumps({"annotations": []}))
    bad = run_cell(RunSpec(SMALL, "zeroshot", f"retrieval:{tmp_path / 'bad.json'}@{images}", 0, "random", {}), None)
    assert bad["status"] == "failed" and "not a Karpathy-split file" in bad["error"]["message"] and "\n" not in bad["error"]["message"]
    (images / "0003.jpg").unlink()
    gone = run_cell(RunSpec(SMALL, "zeroshot", f"retrieval:{ann}@{images}", 0, "random", {}), None)
    assert "images[3]" in gone["error"]["message"] and "does not exist" in gone["error"]["message"]


# -- class names ----------------------------------------------------------------------------------
def test_class_names_and_templates_cover_vtab_fgvc_and_builtin_tasks():
    from tasks.class_names import zeroshot_config

    config = zeroshot_config()
    tasks = [e for e in TASKS.entries() if e.meta.get("suite") in ("vtab1k", "fgvc")] + [TASKS.get(t) for t in ("digits", "shapes/location", "shapes/orientation")]
    assert len(tasks) == 19 + 5 + 3
    for entry in tasks:
        assert entry.meta.get("class_names") is True, entry.name
        declared = config[entry.name]
        assert declared["templates"] and all("{c}" in t for t in declared["templates"])
        if "names" in declared:
            names = declared["names"]
            assert len(names) == entry.meta["num_classes"] == len(set(names)), entry.name
    assert config["vtab1k/cifar100"]["names"][:3] == ["apple", "aquarium fish", "baby"]
    assert config["vtab1k/sun397"]["names"][0] == "abbey" and config["vtab1k/clevr_count"]["names"][0] == "three"


def test_fgvc_names_are_read_from_the_dataset_in_label_order(tmp_path):
    make_vpt_fgvc(tmp_path, "CUB_200_2011", "images", class_ids=(5, 2, 9))  # folders 000.class_5, 001.class_2, 002.class_9
    from tasks.class_names import names_from_dataset

    names = names_from_dataset(tmp_path / "fgvc" / "CUB_200_2011", {"kind": "image_folder", "strip": r"^\d+\."}, "cub")
    assert names == ["class 2", "class 5", "class 9"]  # sorted class ids, as tasks.suites.read_vpt_json labels them
    nabirds = make_vpt_fgvc(tmp_path, "nabirds", "images", class_ids=(295, 1010, 400))
    (nabirds / "classes.txt").write_text("0 Birds\n295 Forster's Tern\n400 Ross's Goose\n1010 Lazuli Bunting\n")
    assert names_from_dataset(nabirds, {"kind": "classes_file", "file": "classes.txt"}, "nabirds") == ["Forster's Tern", "Ross's Goose", "Lazuli Bunting"]


def test_task_without_class_names_refuses_zeroshot_and_names_can_be_given(tmp_path):
    root = make_list_file_dataset(tmp_path / "colours")
    out = run_bob("run", "--backbone", SMALL, "--method", "zeroshot", "--task", f"folder:{root}", "--weights", "random", "--set", "img_size=32")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "has no class names for zeroshot" in text and "tasks/configs/zeroshot.yaml" in text and "--set classnames=FILE" in text
    assert "Traceback" not in text
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\nblue\n")
    ok = run_bob("run", "--backbone", SMALL, "--method", "zeroshot", "--task", f"folder:{root}", "--weights", "random",
                 "--set", "img_size=32", "--set", f"classnames={names}", "--set", "templates=a {c} square.")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: top1=" in ok.stdout
    folders = make_image_folder_dataset(tmp_path / "folders")  # class folders red/green/blue name the classes
    record = run_cell(RunSpec(SMALL, "zeroshot", f"folder:{folders}", 0, "random", {"img_size": 32}), None)
    assert record["status"] == "ok", record["error"]
    assert record["protocol"]["class_names_source"].startswith("class folder names")


def test_zeroshot_on_an_image_only_backbone_is_skipped_at_expansion(tmp_path):
    record = run_cell(RunSpec("timm:resnet18.a1_in1k", "zeroshot", "digits", 0, "random", {}), None)
    assert record["status"] == "skipped" and "needs a text tower" in record["error"]["message"]


# -- the whole flow -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_and_publish_put_zeroshot_and_retrieval_beside_the_other_methods(tmp_path):
    """One sweep: open_clip (zeroshot, knn, linear, bitfit; adapters skipped with the reason) and a timm
    backbone on digits + a retrieval set; publish filtered by the VL metadata."""
    import open_clip
    import torch

    torch.manual_seed(7)
    ckpt = tmp_path / "pe-core-t.pt"
    torch.save(open_clip.create_model("PE-Core-T-16-384", pretrained=None).state_dict(), ckpt)
    ann, images = make_karpathy_set(tmp_path)
    grid = write_grid(tmp_path / "vl.yaml", f"""
name: vl
backbones:
  - {{name: "openclip:PE-Core-T-16-384/meta", weights: "{ckpt}"}}
  - {{name: "timm:resnet18.a1_in1k", weights: random}}
methods: [zeroshot, knn, linear, bitfit, adapter]
tasks: [digits, "retrieval:{ann}@{images}"]
exclude:
  - {{backbone: "timm:*", method: [bitfit, adapter]}}
seeds: [0]
hparams:
  all: {{img_size: 32}}
  bitfit: {{epochs: 1}}
  linear: {{search: {{C: [0.1, 1.0]}}}}
""")
    out = run_bob("sweep", str(grid), "--results", str(tmp_path / "results"))
    assert out.returncode == 0, out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "vl").glob("*.json") if not p.name.startswith(".")]
    status = {(r["backbone"].split(":")[0], r["method"], r["task"].split(":")[0]): r["status"] for r in records}
    assert status[("openclip", "zeroshot", "digits")] == "ok" and status[("openclip", "zeroshot", "retrieval")] == "ok"
    assert status[("openclip", "bitfit", "digits")] == "ok" and status[("openclip", "adapter", "digits")] == "skipped"
    assert status[("openclip", "knn", "retrieval")] == "skipped"
    vl = next(r for r in records if r["method"] == "zeroshot" and r["status"] == "ok")
    assert vl["backbone_meta"]["pretrain_method"].startswith("vision-language") and vl["backbone_meta"]["pretrain_data"] == "MetaCLIP (PE)"
    assert vl["preprocess"]["mean"] == [0.5, 0.5, 0.5]  # the tower's own normalisation, recorded (and part of the cache key)
    pub = run_bob("publish", "vl", "--name", "vl", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "boards"))
    assert pub.returncode == 0, pub.stderr
    methods_md = (tmp_path / "boards" / "vl" / "methods.md").read_text()
    assert "zeroshot" in methods_md and "linear" in methods_md
    csv = (tmp_path / "boards" / "vl" / "leaderboard.csv").read_text()
    assert "zeroshot" in csv and "mean_recall" in csv and "timm:resnet18.a1_in1k" in csv
    filtered = run_bob("publish", "vl", "--name", "vl-only", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "boards"),
                       "--pretrain", "vision-language", "--data", "MetaCLIP")
    assert filtered.returncode == 0, filtered.stderr
    only = (tmp_path / "boards" / "vl-only" / "leaderboard.csv").read_text()
    assert "openclip:PE-Core-T-16-384/meta" in only and "resnet18" not in only
    assert "Only backbones matching" in (tmp_path / "boards" / "vl-only" / "METHODOLOGY.md").read_text()
    none = run_bob("publish", "vl", "--name", "x", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "boards"), "--data", "LAION-2B")
    assert none.returncode != 0 and "no records match --data LAION-2B" in none.stderr


def test_pretrained_tag_loads_from_the_local_hugging_face_cache(tmp_path):
    """The real download path of `pretrained` / `auto`, served from a hub cache laid out as
    huggingface_hub writes it: open_clip's own file name in the pair's hub repo."""
    import os
    import subprocess
    import sys

    import open_clip
    import torch
    from safetensors.torch import save_file

    repo = tmp_path / "hub" / "models--timm--PE-Core-T-16-384"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    torch.manual_seed(5)
    weights_file = repo / "snapshots" / "0123abcd" / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("PE-Core-T-16-384", pretrained=None).state_dict().items()}, str(weights_file))
    reference = open_clip.create_model("PE-Core-T-16-384", pretrained=str(weights_file), force_image_size=32)  # open_clip's own resize
    code = (
        "import json, torch\n"
        "from harness.registry import BACKBONES\n"
        "bb = BACKBONES.get('openclip:PE-Core-T-16-384/meta').factory(weights='auto', img_size=32)\n"
        "torch.manual_seed(0); x = torch.randn(2, 3, 32, 32)\n"
        "with torch.no_grad(): f = bb.model(x)\n"
        "print(json.dumps({'weights': bb.meta['weights'], 'data': bb.meta['pretrain_data'], 'sum': float(f.sum()), 'key': bb.cache_key}))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = float(reference.encode_image(x).sum())
    assert got["weights"] == "pretrained" and got["data"] == "MetaCLIP (PE)" and got["key"] == "openclip:PE-Core-T-16-384/meta|pretrained:PE-Core-T-16-384/meta"
    assert got["sum"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
