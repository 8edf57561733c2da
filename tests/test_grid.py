import pytest

from harness.errors import BobError
from harness.grid import expand, load_grid, parse_grid
from harness.registry import TASKS
from harness.spec import RunSpec

BASE = {"backbones": ["timm:resnet18.a1_in1k"], "methods": ["knn"], "tasks": ["digits"]}


def test_spec_id_is_a_stable_content_hash():
    a = RunSpec("timm:resnet18.a1_in1k", "linear", "digits", 0, "auto", {"lr": 0.1, "wd": 0.0})
    b = RunSpec("timm:resnet18.a1_in1k", "linear", "digits", 0, "auto", {"wd": 0.0, "lr": 0.1})
    assert a.id == b.id and len(a.id) == 16
    assert a.id != RunSpec("timm:resnet18.a1_in1k", "linear", "digits", 1, "auto", {"lr": 0.1, "wd": 0.0}).id
    assert a.id != RunSpec("timm:resnet18.a1_in1k", "linear", "digits", 0, "random", {"lr": 0.1, "wd": 0.0}).id


@pytest.mark.parametrize(
    "change, message",
    [
        ({"backbone": ["x"]}, "unknown key 'backbone' (did you mean backbones?)"),
        ({"seeds": "abc"}, "'seeds' must be a non-empty list of integers"),
        ({"seeds": [0, "1"]}, "'seeds' must hold integers"),
        ({"tasks": []}, "'tasks' is an empty list"),
        ({"methods": 3}, "'methods' must be a list of names"),
        ({"hparams": {"knn": {"k": []}}}, "hparams.knn.k is an empty list"),
        ({"exclude": [{"methd": "knn"}]}, "unknown key 'methd' (did you mean method?)"),
    ],
)
def test_malformed_grid_is_one_line_error(change, message):
    with pytest.raises(BobError) as err:
        parse_grid({**BASE, **change}, "grids/bad.yaml")
    text = str(err.value)
    assert text.startswith("grids/bad.yaml: ") and message in text and "\n" not in text


def test_unknown_names_and_hparams_fail_at_expansion():
    with pytest.raises(BobError, match="did you mean knn"):
        expand(parse_grid({**BASE, "methods": ["kn"]}))
    with pytest.raises(BobError, match="method 'knn' has no hyper-parameter 'kk' \\(did you mean k"):
        expand(parse_grid({**BASE, "hparams": {"knn": {"kk": 3}}}))
    with pytest.raises(BobError, match="hparams given for 'linear', which is not in methods"):
        expand(parse_grid({**BASE, "hparams": {"linear": {"lr": 0.1}}}))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("backbones: [a\nmethods: knn\n")
    with pytest.raises(BobError, match=r"g.yaml:\d+:\d+: not valid YAML"):
        load_grid(path)


def test_expansion_sweeps_lists_and_applies_rules(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "name: t\n"
        "backbones: [timm:resnet18.a1_in1k, {name: timm:convnext_atto.d2_in1k, weights: [random, auto]}]\n"
        "methods: [knn, linear]\n"
        "tasks: [digits, shapes/location]\n"
        "seeds: [0, 1]\n"
        "hparams:\n"
        "  all: {img_size: 16}\n"
        "  linear: {solver: sgd, lr: [1e-3, 1e-2], search: {wd: [0, 1e-4]}}\n"
        "exclude:\n"
        "  - {method: linear, backbone: 'timm:convnext*', weights: random}\n"
    )
    grid = load_grid(path)
    exp = expand(grid)
    # 3 backbone/weights x 2 tasks x 2 seeds x (knn 1 + linear 2) = 36, minus excluded 1 x 2 x 2 x 2 = 8
    assert len(exp.cells) == 28 and exp.excluded == 8
    linear = [c for c in exp.cells if c.method == "linear"]
    assert {c.hparams["lr"] for c in linear} == {0.001, 0.01}  # "1e-3" in YAML is read as a number
    assert all(c.hparams["search"] == {"wd": [0, 0.0001]} and c.hparams["img_size"] == 16 for c in linear)
    assert len({c.id for c in exp.cells}) == 28


def test_unsupported_combination_is_reported_not_dropped():
    from harness.types import ICL_REGRESSION

    TASKS.add("test-only/icl", lambda data_root=None: None, kind=ICL_REGRESSION, group="test")
    try:
        exp = expand(parse_grid({**BASE, "tasks": ["digits", "test-only/icl"]}))
    finally:
        TASKS._entries.pop("test-only/icl")
    assert len(exp.cells) == 1
    assert len(exp.skipped) == 1 and "does not support icl_regression" in exp.skipped[0][1]
