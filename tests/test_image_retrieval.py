"""Image retrieval (issue 23): the reference evaluators' metrics on hand-made rankings, exact chunked
search, query cropping, descriptors through the cache, class-level retrieval without the backbone,
bad input as one-line errors, and one end-to-end sweep published with its retrieval section."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.errors import BobError
from harness.features import FeatureCache
from harness.registry import BACKBONES, TASKS
from harness.retrieval_search import ranks_in_row, read_rows, score_blocks, top_k_row
from harness.runner import run_cell
from harness.spec import RunSpec
from harness.store import ResultStore
from harness.types import RunContext
from tasks.image_retrieval import metrics as M
from tasks.image_retrieval.task import Setup, make_task

from .fixtures import colour_image, make_list_file_dataset


# -- metrics on hand-made rankings (pure numpy) -------------------------------------------------------
def revisited_task(gnd: list[dict], n_db: int):
    """An ImageRetrievalTask with revisitop's three setups over ``gnd`` (no images needed to score)."""
    from harness.data import Sample
    from tasks.image_retrieval.revisited import REVISITED_SETUPS
    from tasks.image_retrieval.task import DatabasePart

    setups = [Setup(name, [np.concatenate([np.asarray(g[k], dtype=np.int64) for k in pos]) for g in gnd],
                    [np.concatenate([np.asarray(g[k], dtype=np.int64) for k in junk]) for g in gnd], suffix)
              for name, suffix, pos, junk in REVISITED_SETUPS]
    queries = [Sample(f"q{i}.jpg", i) for i in range(len(gnd))]
    return make_task("t", "retrieval/toy", "mAP_M", queries=queries, boxes=[None] * len(gnd),
                     parts=[DatabasePart("t", "database", [Sample(f"d{i}.jpg", i) for i in range(n_db)])],
                     setups=setups, scoring="revisited", protocol={}, source="test")


def score_rankings(task, rankings: list[list[int]]) -> dict[str, float]:
    """What the method computes, from explicit rankings (database indices, best first)."""
    ranks = []
    for ranking, targets in zip(rankings, task.targets()):
        position = {j: r for r, j in enumerate(ranking)}
        ranks.append(np.asarray([position[int(t)] for t in targets], dtype=np.int64))
    return task.score(ranks)


GND = [{"easy": [0], "hard": [1], "junk": [2]}, {"easy": [3, 4], "hard": [], "junk": [0]}]


def test_perfect_ranking_is_map_100_in_every_setup_and_junk_first_changes_nothing():
    task = revisited_task(GND, 6)
    perfect = [[0, 1, 2, 3, 4, 5], [3, 4, 0, 1, 2, 5]]  # easy, then hard, then junk, then the rest
    out = score_rankings(task, perfect)
    assert out["mAP_E"] == out["mAP_M"] == 100.0 and out["mP@1_E"] == out["mP@5_M"] == out["mP@10_E"] == 100.0
    assert out["mAP_H"] == 100.0  # query 1 has no hard positive: left out of Hard's mean (revisitop's nempty)
    junk_first = [[2, 0, 1, 3, 4, 5], [0, 3, 4, 1, 2, 5]]
    assert score_rankings(task, junk_first) == out


def test_hard_positive_counts_in_medium_and_hard_not_easy():
    task = revisited_task(GND[:1], 6)
    hard_last, hard_first = [[0, 3, 4, 5, 2, 1]], [[1, 0, 3, 4, 5, 2]]
    a, b = score_rankings(task, hard_last), score_rankings(task, hard_first)
    assert a["mAP_E"] == b["mAP_E"] == 100.0  # Easy: the hard image is junk wherever it lands
    assert b["mAP_M"] == 100.0 and a["mAP_M"] == pytest.approx(100 * (1.0 + (1 / 4 + 2 / 5) / 2) / 2)  # 1 at junk-free position 4
    assert b["mAP_H"] == 100.0 and a["mAP_H"] == pytest.approx(100 * (0 / 3 + 1 / 4) / 2)  # junk 0 and 2 removed: position 3
    assert a["mP@5_M"] == pytest.approx(100 * 2 / 5) and a["mP@1_H"] == 0.0


def test_precision_recall_mrr_by_hand():
    out = M.setup_metrics([(np.array([1, 3]), np.array([], dtype=np.int64), 2)])  # positives 2nd and 4th of the ranking
    assert out["mAP"] == pytest.approx(100 * ((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2)
    assert out["mP@1"] == 0.0 and out["mP@5"] == pytest.approx(50.0) and out["mP@10"] == pytest.approx(50.0)  # kq = min(max pos, k) = 4
    assert out["mR@1"] == 0.0 and out["mR@5"] == 100.0 and out["MRR"] == pytest.approx(50.0)
    few = M.setup_metrics([(np.array([0]), np.array([], dtype=np.int64), 1)])  # one positive, first: P@10 is 1 (revisitop), not 1/10
    assert few["mP@10"] == 100.0
    junk = M.setup_metrics([(np.array([1, 3]), np.array([0, 2]), 2)])  # junk at 0 and 2: the positives become 1st and 2nd
    assert junk["mAP"] == 100.0 and junk["MRR"] == 100.0
    assert M.map_at_k([np.array([0, 2, 150])], [3]) == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert M.map_at_k([np.arange(200)], [200]) == pytest.approx(100.0)  # divided by min(200, 100)


def test_map_at_r_and_recall_at_k_by_hand():
    from harness.methods.image_retrieval import class_level_metrics

    out = class_level_metrics([(np.array([False, True, True, False, True]), 3), (np.array([True] + [False] * 9), 1)])
    assert out["R@1"] == 50.0 and out["R@5"] == 100.0
    assert out["mAP@R"] == pytest.approx(100 * ((1 / 2 + 2 / 3) / 3 + 1.0) / 2)  # only the top R count


def test_class_level_metrics_equal_pytorch_metric_learning():
    """mAP@R and precision@1 as the metric's authors compute them (pytorch-metric-learning's
    AccuracyCalculator), through bob's chunked search."""
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    from harness.methods.image_retrieval import class_level_metrics
    from harness.retrieval_search import l2_normalise

    rng = np.random.default_rng(0)
    ref, ref_y = rng.standard_normal((300, 16)).astype(np.float32), rng.integers(0, 7, 300)
    q, q_y = rng.standard_normal((80, 16)).astype(np.float32), rng.integers(0, 7, 80)
    q[:40], q_y[:40] = ref[:40] + 0.3 * rng.standard_normal((40, 16)).astype(np.float32), ref_y[:40]
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu"),
                              knn_func=CustomKNN(CosineSimilarity()))
    reference = calc.get_accuracy(torch.from_numpy(q), torch.from_numpy(q_y), torch.from_numpy(ref), torch.from_numpy(ref_y), ref_includes_query=False)
    relevant = np.bincount(ref_y, minlength=7)[q_y]
    hits = []
    for q0, scores in score_blocks(l2_normalise(q), [ref], transform=l2_normalise, chunk=64, memory_mb=0.5):
        for i, row in enumerate(scores):
            top = top_k_row(row, max(10, int(relevant[q0 + i])))
            hits.append((ref_y[top] == q_y[q0 + i], int(relevant[q0 + i])))
    ours = class_level_metrics(hits)
    assert ours["R@1"] == pytest.approx(100 * reference["precision_at_1"]) and ours["R@1"] > 30
    assert ours["mAP@R"] == pytest.approx(100 * reference["mean_average_precision_at_r"])


def _reference_style_map(ranking: list[int], ok: set, junk: set) -> tuple[float, list[float]]:
    """The definition, literally: drop junk from the ranking, walk it, trapezoids; P@k with kq."""
    kept = [j for j in ranking if j not in junk]
    positions = [r for r, j in enumerate(kept) if j in ok]
    ap = 0.0
    for n, r in enumerate(positions):
        ap += ((1.0 if r == 0 else n / r) + (n + 1) / (r + 1)) / 2 / len(ok)
    prec = []
    for k in (1, 5, 10):
        kq = min(max(positions) + 1, k)
        prec.append(sum(p + 1 <= kq for p in positions) / kq)
    return ap, prec


def test_vectorised_metrics_match_the_definition_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(12, 60))
        perm = rng.permutation(n)
        ok, junk = set(perm[:rng.integers(1, 6)].tolist()), set(perm[6:6 + rng.integers(0, 5)].tolist())
        ranking = rng.permutation(n).tolist()
        where = {j: r for r, j in enumerate(ranking)}
        ap, prec = _reference_style_map(ranking, ok, junk)
        scores = M.query_scores(np.array([where[j] for j in ok]), np.array([where[j] for j in junk], dtype=np.int64), len(ok))
        assert scores["ap"] == pytest.approx(ap) and [scores["p1"], scores["p5"], scores["p10"]] == pytest.approx(prec)


# -- exact chunked search -----------------------------------------------------------------------------
def test_chunked_search_equals_one_matrix_product(tmp_path):
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((9, 16)).astype(np.float32)
    database = rng.standard_normal((1000, 16)).astype(np.float32)
    database[500] = database[20]  # exact ties rank by the lower index
    database[777] = database[20]
    np.save(tmp_path / "a.npy", database[:600])
    np.save(tmp_path / "b.npy", database[600:])
    parts = [np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")]
    assert np.array_equal(read_rows(parts[0], 590, 700), database[590:600])
    full = queries.astype(np.float64) @ database.astype(np.float64).T
    order = np.argsort(-full, axis=1, kind="stable")  # the one-shot ranking
    rank_of = np.argsort(order, axis=1)
    targets = [rng.choice(1000, 30, replace=False) for _ in queries]
    for q in range(len(queries)):
        targets[q][:3] = (20, 500, 777)
    for chunk, memory_mb in ((7, 0.01), (64, 0.05), (333, 1.0), (5000, 256)):  # databases larger than the chunk, 1 to 9 queries per block
        rows = {}
        for q0, scores in score_blocks(queries, parts, chunk=chunk, memory_mb=memory_mb):
            for i, row in enumerate(scores):
                rows[q0 + i] = row
        assert sorted(rows) == list(range(9))
        for q, row in rows.items():
            assert np.allclose(row, full[q], rtol=0, atol=1e-9)
            assert np.array_equal(ranks_in_row(row, targets[q]), rank_of[q, targets[q]])
            assert np.array_equal(top_k_row(row, 25), order[q, :25])


# -- tasks, descriptors and the cache ------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    import os

    from tasks.image_retrieval.generate import ensure_toy_sets

    cache = tmp_path_factory.mktemp("toy-cache")
    old = os.environ.get("BOB_CACHE")
    os.environ["BOB_CACHE"] = str(cache)
    try:
        root = ensure_toy_sets()
    finally:
        os.environ.pop("BOB_CACHE") if old is None else os.environ.__setitem__("BOB_CACHE", old)
    return root


def copy_revisited(toy_root: Path, dest: Path) -> Path:
    shutil.copytree(toy_root / "revisited", dest)
    return dest / "gnd_toyrevisited.pkl"


@pytest.fixture(scope="module")
def vit():
    """A random-init ViT-Tiny at 32 px, built once for the descriptor tests."""
    backbone = BACKBONES.get("timm:vit_tiny_patch16_224").factory(weights="random", seed=0, img_size=32)
    backbone.model.eval()
    return backbone


def context(tmp_path: Path) -> RunContext:
    return RunContext(device="cpu", seed=0, cell_id="t", feature_cache=FeatureCache(tmp_path / "features"), checkpoint_dir=None)


def test_query_feature_is_computed_on_the_box_crop(toy_root, vit, tmp_path):
    import torch
    from PIL import Image

    from harness.retrieval_features import Descriptor, cached_descriptors

    task = TASKS.get(f"retrieval:{copy_revisited(toy_root, tmp_path / 'rox')}").factory()
    assert task.kind == "image_retrieval" and task.crops_queries
    backbone, ctx = vit, context(tmp_path)
    cropped = np.asarray(cached_descriptors(backbone, task.queries(crop=True), task.name, "query", Descriptor(), ctx, 4))
    whole = np.asarray(cached_descriptors(backbone, task.queries(crop=False), task.name, "query", Descriptor(), ctx, 4))
    assert ctx.feature_cache.misses == 2  # the box is part of the cache key
    box = task.query_boxes[3]
    manual = Image.open(task.query_samples[3].image).convert("RGB").crop(box)  # what revisitop's example does
    with torch.no_grad():
        expected = backbone.model.eval()(backbone.preprocess.eval_transform()(manual)[None]).numpy()[0]
    assert np.allclose(cropped[3], expected, atol=1e-5)
    assert not np.allclose(whole[3], expected, atol=1e-3)


def test_gem_cls_and_multiscale_descriptors(vit):
    import torch

    from harness.retrieval_features import describe, make_descriptor

    backbone = vit
    model = backbone.model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        gem = describe(backbone, model, x, make_descriptor({"pooling": "gem", "gem_p": 3.0}))
        assert torch.allclose(gem, tokens[:, 1:].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3), atol=1e-6)
        assert torch.allclose(describe(backbone, model, x, make_descriptor({"pooling": "cls"})), tokens[:, 0])
        from harness.retrieval_features import any_input_size

        with any_input_size(model):  # BoB's 3 scales at 32 px: 32, 22.6 -> 16, 16 (multiples of the patch), averaged
            multi = describe(backbone, model, x, make_descriptor({"scales": "bob"}))
            half = model(torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
        assert torch.allclose(multi, (model(x) + 2 * half) / 3, atol=1e-5)
    cnn = BACKBONES.get("timm:resnet18").factory(weights="random", seed=0, img_size=32)
    from harness.retrieval_features import check_support

    with pytest.raises(BobError, match="pooling=cls cannot run on timm:resnet18.*class token"):
        check_support(cnn, cnn.model, make_descriptor({"pooling": "cls"}))
    clip = BACKBONES.get("openclip:ViT-S-32").factory(weights="random", seed=0, img_size=32)  # declared support, checked without building
    with pytest.raises(BobError, match="open_clip tower's head output already is its class embedding"):
        check_support(clip, None, make_descriptor({"pooling": "cls"}))
    with pytest.raises(BobError, match="fixed grid"):
        check_support(clip, None, make_descriptor({"scales": "bob"}))
    with pytest.raises(BobError, match="scales="):
        make_descriptor({"scales": "1,9"})


def test_class_level_retrieval_on_a_cached_task_never_builds_the_backbone(tmp_path, monkeypatch):
    data = make_list_file_dataset(tmp_path / "vtabish")
    cache = FeatureCache(tmp_path / "features")
    common = dict(backbone="timm:vit_tiny_patch16_224", task=f"folder:{data}", weights="random", hparams={"img_size": 32})
    first = run_cell(RunSpec(method="knn", **common), feature_cache=cache, device="cpu")
    assert first["status"] == "ok"
    import timm

    def refuse(*a, **k):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(timm, "create_model", refuse)
    record = run_cell(RunSpec(method="knn_retrieval", **common), feature_cache=FeatureCache(tmp_path / "features"), device="cpu")
    assert record["status"] == "ok", record["error"]
    assert record["feature_cache"] == {"hits": 3, "misses": 0, "backbone_built": False}
    assert set(record["metrics"]) == {"R@1", "R@5", "R@10", "mAP@R"} and record["primary_metric"]["name"] == "mAP@R"
    assert record["protocol"]["queries"] == 12 and record["protocol"]["database"] == 30
    assert 0 <= record["metrics"]["mAP@R"] <= 100 and record["metrics"]["R@10"] >= record["metrics"]["R@1"]


# -- bad input: one line naming the file and the entry --------------------------------------------------
def _load(path) -> object:
    return TASKS.get(f"retrieval:{path}").factory()


def _error(path) -> str:
    with pytest.raises(BobError) as info:
        _load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_inputs_are_one_line_errors_naming_file_and_entry(toy_root, tmp_path):
    pkl = copy_revisited(toy_root, tmp_path / "rox")
    good = pickle.loads(pkl.read_bytes())
    pkl.write_bytes(pickle.dumps({"images": good["imlist"], "queries": good["qimlist"]}))
    assert str(pkl) in (m := _error(pkl)) and "missing key(s) imlist, qimlist, gnd" in m
    bad = {**good, "gnd": [dict(g) for g in good["gnd"]]}
    del bad["gnd"][1]["hard"]
    pkl.write_bytes(pickle.dumps(bad))
    assert "gnd[1] (query query_0_1): missing key(s) hard" in _error(pkl)
    bad = {**good, "gnd": [dict(g) for g in good["gnd"]]}
    bad["gnd"][2]["bbx"] = [10.0, 10.0, 120.0, 40.0]  # the images are 96 px wide
    pkl.write_bytes(pickle.dumps(bad))
    assert "gnd[2] (query query_1_0): bbx [10, 10, 120, 40] lies outside its 96x72 image" in _error(pkl)
    pkl.write_bytes(pickle.dumps(good))
    (pkl.parent / "jpg" / f"{good['imlist'][5]}.jpg").unlink()
    assert f"imlist[5] ({good['imlist'][5]}): database image" in (m := _error(pkl)) and "does not exist" in m
    tree = tmp_path / "classes"
    rng = np.random.RandomState(0)
    for cls, n in (("a", 6), ("b", 3)):
        (tree / cls).mkdir(parents=True)
        for i in range(n):
            colour_image(0, rng).save(tree / cls / f"{i}.png")
    assert f"class folder {tree / 'b'} has 3 image(s); the 20% query split needs at least 5" in _error(tree)
    with pytest.raises(BobError, match="cap=0"):
        TASKS.get(f"retrieval:{tree}?cap=0").factory()


def test_gldv2_and_copydays_layouts(tmp_path):
    rng = np.random.RandomState(0)
    gld = tmp_path / "gldv2"
    ids = [f"{c}{c}{c}0000000000{i:03d}" for c in "ab" for i in range(3)]
    for folder, names in (("index", ids), ("test", ["abc000000000000q", "abd000000000000r", "abe000000000000s"])):
        for id_ in names:
            path = gld / folder / id_[0] / id_[1] / id_[2] / f"{id_}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour_image(0, rng).save(path)
    (gld / "index.csv").write_text("id\n" + "\n".join(ids) + "\n")
    (gld / "retrieval_solution_v2.1.csv").write_text(
        f"id,images,Usage\nabc000000000000q,{ids[0]} {ids[4]},Private\nabd000000000000r,{ids[1]},Public\nabe000000000000s,None,Ignored\n")
    task = _load(gld)
    assert task.metric == "mAP@100_private" and len(task.query_samples) == 2 and task.n_database == 6
    out = score_rankings(task, [[4, 1, 2, 0, 3, 5], [0, 1, 2, 3, 4, 5]])
    assert out["mAP@100_private"] == pytest.approx(100 * (1 + 2 / 4) / 2) and out["mAP@100_public"] == pytest.approx(50.0)
    (gld / "retrieval_solution_v2.1.csv").write_text("id,images,Usage\nabc000000000000q,nosuchimage,Private\n")
    assert f"{gld / 'retrieval_solution_v2.1.csv'}:2: test image abc000000000000q: index image nosuchimage is not in index.csv" in _error(gld)
    days = tmp_path / "copydays"
    for sub, names in (("original", ["200000.jpg", "200100.jpg"]), ("strong", ["200000_a.jpg", "200001.jpg", "200100_b.jpg"]),
                       ("distractors", ["x1.jpg", "x2.jpg"])):
        (days / sub).mkdir(parents=True)
        for name in names:
            colour_image(1, rng).save(days / sub / name)
    task = _load(days)
    assert task.n_database == 4 and [p.split for p in task.parts] == ["database", "distractors"]
    assert [t.tolist() for t in task.setups[0].positives] == [[0], [0], [1]]  # the 4-character id prefix (DINO's rule)
    (days / "strong" / "999999.jpg").write_bytes((days / "strong" / "200001.jpg").read_bytes())
    assert "999999.jpg: no image in" in _error(days)


# -- the method end to end ------------------------------------------------------------------------------
def test_whitening_is_learned_on_a_separate_set_and_never_reruns_the_backbone(toy_root, tmp_path):
    cache = tmp_path / "features"
    task = f"retrieval:{copy_revisited(toy_root, tmp_path / 'rox')}"
    spec = dict(backbone="timm:vit_tiny_patch16_224", method="image_retrieval", task=task, weights="random")
    on_test = run_cell(RunSpec(**spec, hparams={"img_size": 32, "whitening": str(tmp_path / "rox" / "jpg")}), feature_cache=FeatureCache(cache), device="cpu")
    assert on_test["status"] == "failed" and "shares 60 image(s)" in on_test["error"]["message"]
    whitened = run_cell(RunSpec(**spec, hparams={"img_size": 32, "whitening": str(toy_root / "classes"), "whitening_dim": 64}),
                        feature_cache=FeatureCache(cache), device="cpu")
    assert whitened["status"] == "ok", whitened["error"]
    w = whitened["protocol"]["whitening"]
    assert w["source"] == str(toy_root / "classes") and w["learned_on_images"] == 60 and w["dim"] == 64
    plain = run_cell(RunSpec(**spec, hparams={"img_size": 32}), feature_cache=FeatureCache(cache), device="cpu")
    assert plain["feature_cache"]["backbone_built"] is False and plain["feature_cache"]["misses"] == 0
    assert plain["protocol"]["whitening"] is None and plain["metrics"] != whitened["metrics"]
    assert plain["protocol"]["queries"] == 8 and plain["protocol"]["database"] == 52 and plain["protocol"]["query_crop"] is True
    assert set(plain["metrics"]) == {f"{m}_{s}" for s in "EMH" for m in ("mAP", "mP@1", "mP@5", "mP@10")}
    uncropped = run_cell(RunSpec(**spec, hparams={"img_size": 32, "query_crop": False}), feature_cache=FeatureCache(cache), device="cpu")
    assert uncropped["protocol"]["query_crop"] is False and uncropped["feature_cache"]["misses"] == 1  # the queries only


@pytest.mark.slow
def test_sweep_and_publish_with_the_retrieval_section(toy_root, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from harness.cli import main

    monkeypatch.setenv("BOB_CACHE", str(toy_root.parent.parent))  # the generated sets are already there
    data = make_list_file_dataset(tmp_path / "vtabish")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"""name: ret
backbones: [timm:vit_tiny_patch16_224]
weights: random
methods: [image_retrieval, knn_retrieval]
tasks: [retrieval/toy/revisited+1m, retrieval/toy/classes, "folder:{data}"]
hparams:
  all: {{img_size: 32}}
  image_retrieval: {{pooling: [head, gem]}}
""")
    runner = CliRunner()
    result = runner.invoke(main, ["sweep", str(grid), "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    records = list(ResultStore(tmp_path / "results" / "ret").records())
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 5, [(r["method"], r["task"], r["status"], (r.get("error") or {}).get("message")) for r in records]
    one_m = next(r for r in ok if r["task"] == "retrieval/toy/revisited+1m" and r["protocol"]["descriptor"]["pooling"] == "gem")
    assert one_m["protocol"]["database"] == 52 + 24 and [p["images"] for p in one_m["protocol"]["database_parts"]] == [52, 24]
    assert (Path(one_m["artifacts"]["top10.json"])).is_file()
    result = runner.invoke(main, ["publish", str(tmp_path / "results" / "ret"), "--name", "ret", "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "lb" / "ret" / "leaderboard.md").read_text()
    assert "## retrieval/toy/revisited+1m: every setup (image_retrieval)" in md
    assert "| mAP_E | mP@1_E | mP@5_E | mP@10_E | mAP_M |" in md and "gem p=3, scales 1, square, no whitening, queries cropped" in md
    assert "## folder:" in md and "| R@1 | R@5 | R@10 | mAP@R |" in md
    page = (tmp_path / "lb" / "ret" / "index.html").read_text()
    assert '"tab": "retrieval"' in page and "retrieval/toy/classes" in page


def test_the_published_grid_expands():
    """grids/retrieval.yaml (leaderboards/retrieval): 2 backbones x (3 generated sets x 4 descriptors + knn_retrieval on digits)."""
    from click.testing import CliRunner

    from harness.cli import main

    from .conftest import REPO

    dry = CliRunner().invoke(main, ["sweep", str(REPO / "grids" / "retrieval.yaml"), "--results", "res", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "26 cells -> 26 to run, 0 done, 0 failed before, 0 skipped" in dry.output
