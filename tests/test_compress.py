"""Compressed backbones as a grid axis: the algorithms against the papers' rules, measured bits and
sparsity, dense layers bit-identical, sizes, the build cache, records, pairing table, bad input."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.compress import algorithms
from harness.compress.adapter import qparams, quantize
from harness.compress.config import parse_compress
from harness.errors import BobError
from harness.grid import expand, parse_grid
from harness.spec import RunSpec

VIT = "timm:vit_tiny_patch16_224"


# -- the algorithms on tiny layers ---------------------------------------------------------------
def gptq_columnwise(w, H, bits, group, damp=0.01):
    """GPTQ as the paper's Algorithm 1 states it, one column at a time, no lazy batches."""
    W = w.double().clone()
    H = H.double().clone()
    cols = W.shape[1]
    g = group or cols
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)  # Cholesky of H^-1, upper
    Q = torch.zeros_like(W)
    for j in range(cols):
        if j % g == 0:
            s, z = qparams(W[:, j : j + g].float(), bits, g)
        _, q = quantize(W[:, j : j + 1].float(), s, z, bits)
        Q[:, j] = q[:, 0].double()
        err = (W[:, j] - Q[:, j]) / U[j, j]
        W[:, j:] -= err[:, None] * U[j, j:][None, :]
    return Q.float()


def correlated_inputs(n=256, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g)
    return torch.randn(n, d, generator=g) @ mix


@pytest.mark.parametrize("group", [None, 8])
def test_gptq_equals_the_columnwise_algorithm_and_beats_rtn(group):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 32, generator=g)
    x = correlated_inputs()
    H = 2 * x.double().t() @ x.double() / len(x)
    out = algorithms.gptq(w, H, bits=3, group=group, damp=0.01, block_size=16)
    ref = gptq_columnwise(w, H, 3, group)
    assert torch.allclose(out["weight"], ref, atol=1e-5)
    _, deq = quantize(w, *qparams(w, 3, group or 32), 3)
    assert torch.allclose(algorithms.rtn(w, 3, group)["weight"], deq)
    err_gptq = ((w - out["weight"]) @ x.t()).norm()
    err_rtn = ((w - deq) @ x.t()).norm()
    assert err_gptq < 0.8 * err_rtn  # the property GPTQ exists for: a smaller output error on the calibration inputs
    assert int(out["codes"].max()) <= 7 and out["codes"].dtype == torch.uint8


def test_wanda_mask_is_the_papers_rule_on_a_hand_made_layer():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [4.0, 1.0, -1.0, 2.0]])
    norms = torch.tensor([10.0, 1.0, 0.1, 4.0])  # |W| x ||X_j||: row0 = [10, 2, 0.3, 2], row1 = [40, 1, 0.1, 8]
    keep = algorithms.wanda_mask(w, norms, 0.5)
    assert keep.tolist() == [[True, False, False, True], [True, False, False, True]]  # 2 lowest scores of each row
    assert algorithms.magnitude_mask(w, 0.5).tolist() == [[False, True, True, False], [True, False, False, True]]  # magnitude differs
    nm = algorithms.wanda_mask(torch.tensor([[1.0, 2, 3, 4, 4, 3, 2, 1]]), torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 10]), 0.5, (2, 4))
    assert nm.tolist() == [[False, False, True, True, True, False, False, True]]  # per group of 4: the 2 best scores (4 and 1x10 in the second)


def test_magnitude_zeroes_exactly_the_fraction():
    w = torch.randn(10, 30, generator=torch.Generator().manual_seed(0))
    keep = algorithms.magnitude_mask(w, 0.37)
    assert int((~keep).sum()) == round(0.37 * 300)
    assert w.abs()[~keep].max() <= w.abs()[keep].min()


# -- on a real (tiny) backbone --------------------------------------------------------------------
def _compressed_backbone(cfg, task=None, weights="random"):
    from harness.compress.backbone import compress_backbone
    from harness.registry import BACKBONES

    backbone = BACKBONES.get(VIT).factory(weights=weights, seed=0, img_size=32)
    spec = RunSpec(backbone=VIT, method="knn", task="digits", weights=weights, hparams={"img_size": 32}, compress=parse_compress(cfg))
    compress_backbone(backbone, spec, task)
    return backbone, spec


def _dense_state():
    from harness.registry import BACKBONES

    return BACKBONES.get(VIT).factory(weights="random", seed=0, img_size=32).model.state_dict()


@pytest.fixture
def digits(tmp_path):
    from harness.registry import TASKS

    return TASKS.get("digits").factory(data_root=str(tmp_path / "data"), overrides={})


@pytest.mark.parametrize("cfg", [{"method": "rtn", "bits": 8}, {"method": "rtn", "bits": 4, "group_size": 32}, {"method": "magnitude", "sparsity": 0.5},
                                 {"method": "wanda", "pattern": "2:4", "calibration": {"samples": 8}}, {"method": "gptq", "bits": 4, "calibration": {"samples": 4}}])
def test_measured_equals_nominal_and_dense_layers_are_bit_identical(cfg, digits):
    backbone, _ = _compressed_backbone(cfg, digits)
    model = backbone.model
    report = backbone.meta["_compression_report"]
    dense = _dense_state()
    state = model.state_dict()
    assert report["n_compressed_layers"] == 48  # qkv, proj, fc1, fc2 of 12 blocks
    for name in report["dense_layers"]:
        assert torch.equal(state[name], dense[name]), name
    assert "patch_embed.proj.weight" in report["dense_layers"] and "cls_token" in report["dense_layers"]
    for layer in report["compressed_layers"]:
        assert not torch.equal(state[f"{layer}.weight"], dense[f"{layer}.weight"])
    if "bits" in cfg:
        assert report["measured_bits"] == cfg["bits"] == report["nominal_bits"]
        assert report["max_levels_per_group"] <= 2 ** cfg["bits"]
    else:
        assert report["measured_sparsity"] == 0.5
        for layer in report["compressed_layers"]:
            w = state[f"{layer}.weight"]
            if cfg.get("pattern") == "2:4":
                assert ((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all()  # every group of 4 has exactly 2 zeros
            else:
                assert (w == 0).sum().item() == w.numel() // 2
    if cfg["method"] in ("gptq", "wanda"):
        assert report["calibration_tokens"] == cfg["calibration"]["samples"] * 5  # 2x2 patches + class token per training image
        assert backbone.meta["_compression_static"]["calibration"]["split"] == "train800"


def test_serialized_size_shrinks_as_declared(digits):
    sizes = {}
    for bits in (8, 4):
        backbone, _ = _compressed_backbone({"method": "rtn", "bits": bits})
        backbone.model
        sizes[bits] = backbone.meta["_compression_report"]
    r8, r4 = sizes[8], sizes[4]
    assert 0.25 <= r8["compressed_layer_ratio"] <= 0.27  # int8 codes + one fp32 scale and uint8 zero per row (widths >= 192)
    assert 0.125 <= r4["compressed_layer_ratio"] <= 0.14
    assert r4["serialized_bytes"] < r8["serialized_bytes"] < 0.35 * r8["dense_parameter_bytes"]
    assert r8["parameter_bytes"] <= r8["serialized_bytes"]
    assert r8["latency"]["batch"] == 8 and r8["latency"]["median_ms"] > 0 and r8["latency"]["threads"] == torch.get_num_threads()


def test_channel_pruning_through_torch_pruning():
    backbone, _ = _compressed_backbone({"method": "channel", "ratio": 0.3})
    model = backbone.model
    report = backbone.meta["_compression_report"]
    assert report["library"].startswith("torch-pruning 1.6")
    assert report["params_after"] == sum(p.numel() for p in model.parameters()) < report["params_before"]
    assert model(torch.zeros(2, 3, 32, 32)).shape[0] == 2


# -- the cache, the cell identity -------------------------------------------------------------------
def test_compressed_model_is_built_once_for_many_cells(tmp_path):
    from harness.compress import backbone as cb
    from harness.runner import run_cell

    cfg = parse_compress({"method": "rtn", "bits": 8})
    specs = [RunSpec(backbone=VIT, method="knn", task="digits", weights="random", hparams={"img_size": 32, "k": k}, compress=cfg) for k in (5, 9)]
    cb._MEMO.clear()  # a fresh worker: nothing built in this process, an empty $BOB_CACHE
    before = sum(cb.BUILDS.values())
    records = [run_cell(s, data_root=str(tmp_path / "data")) for s in specs]
    assert [r["status"] for r in records] == ["ok", "ok"], [r["error"] for r in records]
    assert sum(cb.BUILDS.values()) - before == 1
    assert records[0]["compression"]["key"] == records[1]["compression"]["key"]
    cb._MEMO.clear()  # another worker process: the disk cache serves it
    third = run_cell(dataclasses.replace(specs[0], hparams={"img_size": 32, "k": 3}), data_root=str(tmp_path / "data"))
    assert third["status"] == "ok" and sum(cb.BUILDS.values()) - before == 1
    dense = RunSpec(backbone=VIT, method="knn", task="digits", weights="random", hparams={"img_size": 32, "k": 5})
    assert records[0]["compression"]["dense_twin_id"] == dense.id
    assert records[0]["compression"]["serialized_bytes"] > 0 and records[0]["spec"]["compress"] == cfg


def test_calibration_changes_the_cache_key_and_the_cell_id(digits, tmp_path):
    a, spec_a = _compressed_backbone({"method": "wanda", "sparsity": 0.5, "calibration": {"samples": 4, "seed": 0}}, digits)
    b, spec_b = _compressed_backbone({"method": "wanda", "sparsity": 0.5, "calibration": {"samples": 4, "seed": 1}}, digits)
    assert spec_a.id != spec_b.id and a.cache_key != b.cache_key
    assert a.meta["_compression_static"]["calibration"]["sha256"] != b.meta["_compression_static"]["calibration"]["sha256"]
    text = tmp_path / "cal.txt"
    text.write_text("one corpus")
    first = parse_compress({"method": "gptq", "bits": 4, "calibration": {"text": str(text)}})
    text.write_text("another corpus")
    second = parse_compress({"method": "gptq", "bits": 4, "calibration": {"text": str(text)}})
    assert RunSpec(backbone="x", method="m", task="t", compress=first).id != RunSpec(backbone="x", method="m", task="t", compress=second).id


def test_none_keeps_existing_cell_ids():
    base = {"backbones": [VIT], "methods": ["knn"], "tasks": ["digits"], "weights": "random"}
    plain = expand(parse_grid(base)).cells
    with_none = expand(parse_grid({**base, "compress": ["none"]})).cells
    both = expand(parse_grid({**base, "compress": ["none", {"method": "rtn", "bits": 8}]})).cells
    assert [c.id for c in plain] == [c.id for c in with_none]
    assert len(both) == 2 and both[0].id == plain[0].id and both[1].compress == {"method": "rtn", "bits": 8, "group_size": None}


# -- bad input: one line at expansion -------------------------------------------------------------
@pytest.fixture
def narrow_lm(tmp_path):
    from transformers import LlamaConfig

    folder = tmp_path / "narrow-lm"
    LlamaConfig(vocab_size=50, hidden_size=18, intermediate_size=36, num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=3).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.mark.parametrize("entry,backbone,expected", [
    ({"method": "rtn", "bits": 5}, VIT, "bits=5 is not supported"),
    ({"method": "magnitude", "sparsity": 1.5}, VIT, "strictly between 0 and 1"),
    ({"method": "magnitude", "sparsity": 0}, VIT, "strictly between 0 and 1"),
    ({"method": "wanda", "pattern": "2:4", "calibration": {"text": "CAL"}}, "NARROW", "multiple of 4"),
    ({"method": "gptq", "bits": 4, "calibration": {"text": "/no/such/file.txt"}}, VIT, "does not exist"),
    ({"method": "channel", "ratio": 0.3}, "NARROW", "cannot compress"),
    ({"method": "rtn", "bits": 8}, "timm:resnet18", "no linear layers"),
    ({"method": "gptq", "bits": 4}, "NARROW", "needs calibration.text"),
    ({"method": "rtn", "bits": 4, "group_size": 100}, VIT, "does not divide"),
    ({"method": "wanda", "calibration": {"split": "test"}, "sparsity": 0.5}, VIT, "never reads a test split"),
])
def test_bad_input_is_one_line_at_expansion(entry, backbone, expected, narrow_lm, tmp_path):
    cal = tmp_path / "cal.txt"
    cal.write_text("some calibration text " * 50)
    if isinstance(entry.get("calibration"), dict) and entry["calibration"].get("text") == "CAL":
        entry = {**entry, "calibration": {"text": str(cal)}}
    name = narrow_lm if backbone == "NARROW" else backbone
    task = "perplexity:" + str(cal) if backbone == "NARROW" else "digits"
    method = "lm_zeroshot" if backbone == "NARROW" else "knn"
    with pytest.raises(BobError) as info:
        expand(parse_grid({"backbones": [name], "methods": [method], "tasks": [task], "weights": "random", "compress": [entry]}, "g.yaml"))
    message = str(info.value)
    assert expected in message and "\n" not in message and "g.yaml" in message


# -- the pairing table ------------------------------------------------------------------------------
def test_pairing_table_shows_the_twin_and_a_missing_twin_as_missing(tmp_path):
    from harness.compress.board import pairing_rows, zscore_rows
    from harness.runner import run_cell
    from harness.sections import table_html, table_markdown

    dense = RunSpec(backbone=VIT, method="knn", task="digits", weights="random", hparams={"img_size": 32})
    comp = dataclasses.replace(dense, compress=parse_compress({"method": "magnitude", "sparsity": 0.5}))
    orphan = dataclasses.replace(dense, compress=parse_compress({"method": "rtn", "bits": 4}), hparams={"img_size": 32, "k": 3})  # twin never run
    records = [run_cell(s, data_root=str(tmp_path / "data")) for s in (dense, comp, orphan)]
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    rows = {r["compression"]: r for r in pairing_rows(records)}
    paired, missing = rows["magnitude-50%"], rows["rtn-w4"]
    assert paired["dense"] == round(records[0]["primary_metric"]["value"], 3)
    assert paired["drop"] == round(records[0]["primary_metric"]["value"] - records[1]["primary_metric"]["value"], 3)
    assert paired["direction"] == "higher" and paired["sparsity"] == "0.5/0.5"
    assert missing["dense"] is None and missing["drop"] is None and "(missing)" in missing["twin"]
    from harness.compress.board import COLUMNS

    md = table_markdown([missing], COLUMNS)
    assert "\u2014" in md and "| 0 |" not in md and "0.0 |" not in md.split("rtn-w4")[1].split("|")[3]
    assert '<td class="missing">' in table_html([missing], COLUMNS)
    z = zscore_rows(records)
    assert {r["level"] for r in z} == {"dense", "sparse-50%", "int4"} and all(r["z_within_level"] == 0.0 for r in z)  # one backbone per level


def test_drop_follows_the_declared_direction():
    from harness.compress.board import drop, pareto_front

    assert drop(10.0, 12.0, "lower") == 2.0 and drop(0.9, 0.8, "higher") == pytest.approx(0.1) and drop(None, 1.0, "higher") is None
    assert drop(50.0, 55.0, "target", 50.0) == 5.0
    assert pareto_front([(1, 0.5), (2, 0.4), (3, 0.9), (0.5, 0.1)]) == [(0.5, 0.1), (1, 0.5), (3, 0.9)]
    assert not math.isnan(drop(1.0, 1.0, "higher"))


def test_open_clip_image_tower_is_compressed_with_calibration(tmp_path):
    from harness.runner import run_cell

    cells = expand(parse_grid({"backbones": ["openclip:bob-tiny-clip"], "weights": "random", "methods": ["knn"], "tasks": ["digits"],
                               "compress": [{"method": "wanda", "sparsity": 0.5, "calibration": {"samples": 8}}]})).cells
    record = run_cell(cells[0], data_root=str(tmp_path / "data"))
    assert record["status"] == "ok", record["error"]
    comp = record["compression"]
    assert comp["measured_sparsity"] == 0.5 and comp["n_compressed_layers"] > 0
    assert any(n.endswith("attn.out_proj.weight") for n in comp["dense_layers"])  # nn.MultiheadAttention's fused projection: declared dense
