"""The ImageNet family's readers on a generated tree in the released layouts (issue 21, acceptance 1
and 6): labels equal the official loaders' rule, R/A masks equal timm's shipped index files, ReaL
labels come from the real.json layout, and bad folders are one-line errors naming them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import BobError
from harness.store import ResultStore
from tasks.shift import imagenet
from tasks.shift.generate import populated_classes, write_imagenet_family

from .conftest import write_grid


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    return write_imagenet_family(tmp_path_factory.mktemp("inet") / "data")


def _timm_file(name: str) -> Path:
    import timm.data

    return Path(timm.data.__file__).parent / "_info" / name


def _read(root: Path):
    imagenet._read_all.cache_clear()
    return imagenet._read_all(str(root))


def test_labels_follow_the_official_loaders(family):
    from torchvision.datasets import ImageFolder

    data = _read(family)
    splits = data["splits"]
    # ImageNet train / val and Sketch: torchvision's ImageFolder over the 1000 wnid folders (its sorted order)
    for split, folder in (("val", family / "imagenet" / "val"), ("imagenet_sketch", family / "sketch")):
        ref = ImageFolder(str(folder), allow_empty=True)
        assert sorted((str(Path(p)), y) for p, y in ref.samples) == sorted((str(s.image), s.label) for s in splits[split])
    ref = ImageFolder(str(family / "imagenet" / "train"), allow_empty=True)
    assert sorted((str(Path(p)), y) for p, y in ref.samples) == sorted((str(s.image), s.label) for s in splits["train"])
    assert sorted(s.image for s in splits["train"]) == sorted(s.image for s in splits["train_tune"] + splits["minival"])
    assert not {s.image for s in splits["train_tune"]} & {s.image for s in splits["minival"]}
    # ImageNetV2 (imagenetv2_pytorch): every *.jpeg under the root, label = int(parent folder name)
    for name, folder in imagenet.V2_VARIANTS.items():
        ref = sorted((str(p), int(p.parent.name)) for p in (family / folder).glob("**/*.jpeg"))
        assert ref == sorted((str(s.image), s.label) for s in splits[name])
    # R / A (Hendrycks): ImageFolder over the 200 folders gives a local index; indices_in_1k[local] is the 1000-way label
    for which in ("r", "a"):
        mask = [int(x) for x in _timm_file(f"imagenet_{which}_indices.txt").read_text().split()]
        assert list(imagenet.subset_mask(which)) == mask
        ref = ImageFolder(str(family / f"imagenet-{which}"), allow_empty=True)
        assert len(ref.classes) == 200
        assert sorted((str(Path(p)), mask[y]) for p, y in ref.samples) == sorted((str(s.image), s.label) for s in splits[f"imagenet_{which}"])
    # class order is timm's imagenet_synsets.txt
    assert list(imagenet.synsets()) == _timm_file("imagenet_synsets.txt").read_text().split()
    assert {s.label for s in splits["train"]} == set(populated_classes())


def test_real_labels_are_read_from_the_json_by_file_name(family):
    data = _read(family)
    real = json.loads((family / "imagenet" / "real.json").read_text())
    for sample, labels in zip(data["splits"]["val"], data["real"]):
        number = int(Path(sample.image).stem.split("_")[-1])
        assert list(labels) == real[number - 1]
    assert data["real_source"] == str(family / "imagenet" / "real.json")
    assert any(len(s) == 2 for s in data["real"]) and any(len(s) == 0 for s in data["real"])


def test_real_labels_fall_back_to_timms_copy(tmp_path):
    from harness.data import Sample

    labels, source = imagenet.real_label_sets(tmp_path, [Sample(tmp_path / "ILSVRC2012_val_00000002.JPEG", 0)])
    shipped = json.loads(_timm_file("imagenet_real_labels.json").read_text())
    assert source.endswith("imagenet_real_labels.json") and list(labels[0]) == shipped[1]


def test_bad_folders_are_one_line_errors(family, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(family, root)
    (root / "imagenet-r" / "n99999999").mkdir()
    with pytest.raises(BobError) as err:
        _read(root)
    assert "n99999999" in str(err.value) and "not an ImageNet-1k wnid" in str(err.value) and "\n" not in str(err.value)
    (root / "imagenet-r" / "n99999999").rmdir()
    not_in_r = next(w for i, w in enumerate(imagenet.synsets()) if i not in set(imagenet.subset_mask("r")))
    (root / "imagenet-r" / not_in_r).mkdir()
    with pytest.raises(BobError, match="not one of ImageNet-R's 200 classes"):
        _read(root)
    (root / "imagenet-r" / not_in_r).rmdir()
    (root / "imagenetv2-top-images-format-val" / "1000").mkdir()
    with pytest.raises(BobError) as err:
        _read(root)
    assert "imagenetv2-top-images-format-val/1000" in str(err.value) and "0..999" in str(err.value) and "\n" not in str(err.value)
    shutil.rmtree(root / "imagenetv2-top-images-format-val" / "1000")
    # bob data verify names the same problem and exits non-zero
    (root / "sketch" / "cats").mkdir()
    out = CliRunner().invoke(main, ["data", "verify", "shift", "--root", str(root), "--no-open-images"])
    assert out.exit_code == 1 and "sketch/cats" in out.output and "not an ImageNet-1k wnid" in out.output
    imagenet._read_all.cache_clear()


def test_knn_cell_reports_every_imagenet_set(tmp_path):
    """One kNN cell on the generated family: every set's metrics, R/A masked to timm's 200 and strict 1000-way."""
    grid = write_grid(tmp_path / "g.yaml", "name: inet\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn]\n"
                                           "tasks: [shift/imagenet_toy]\nhparams:\n  all: {img_size: 16}\n  knn: {k: 3}\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(tmp_path / "res")])
    assert out.exit_code == 0, out.output
    (record,) = list(ResultStore(tmp_path / "res" / "inet").records())
    assert record["status"] == "ok", record["error"]
    m = record["metrics"]
    for name in ("imagenet_v2_mf", "imagenet_v2_t07", "imagenet_v2_top", "imagenet_sketch", "imagenet_r", "imagenet_a", "real"):
        assert f"{name}/top1" in m and m[f"{name}/n_eval"] > 0
    for which in ("r", "a"):
        assert f"imagenet_{which}/top1_all" in m and m[f"imagenet_{which}/top1"] >= m[f"imagenet_{which}/top1_all"]
        assert record["metric_specs"][f"imagenet_{which}/top1"]["label"].endswith("200-way masked")
    assert m["ood_top1"] == pytest.approx(sum(m[f"{n}/top1"] for n in ("imagenet_v2_mf", "imagenet_v2_t07", "imagenet_v2_top",
                                                                         "imagenet_sketch", "imagenet_r", "imagenet_a")) / 6)
    assert record["protocol"]["reported_on"] == "val" and record["task_meta"]["split_provenance"]["carved"]["minival"]["fraction"] == 0.01
