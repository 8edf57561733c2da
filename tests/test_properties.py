"""Issue 14: property-based tests. Any grid file, list file, record or ``--set`` value gives a
result or a one-line BobError, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import BobError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,  # the same examples in every CI run
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
GRID_KEYS = ["name", "backbones", "weights", "methods", "tasks", "seeds", "hparams", "exclude", "include", "data_root", "data_paths", "max_cells"]
names = st.sampled_from(["digits", "shapes/location", "knn", "linear", "lora", "timm:resnet18", "timm:vit_tiny_patch16_224", "nope", "", "icl"])
grid_like = st.dictionaries(st.one_of(st.sampled_from(GRID_KEYS), st.text(max_size=6)),
                            st.one_of(values, st.lists(names, max_size=3), names), max_size=8)


def one_line(exc: BaseException) -> bool:
    return isinstance(exc, BobError) and "\n" not in str(exc).strip()


@SETTINGS
@given(data=st.one_of(grid_like, values))
def test_any_grid_mapping_parses_or_fails_in_one_line(data):
    from harness.grid import expand, parse_grid

    try:
        grid = parse_grid(data, "g.yaml")
        expand(grid)
    except Exception as exc:  # noqa: BLE001 - the property: nothing but a one-line BobError
        assert one_line(exc), repr(exc)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_grid_text_loads_or_fails_in_one_line(tmp_path, text):
    from harness.grid import load_grid

    path = tmp_path / "g.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else path.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_grid(path)
    except Exception as exc:  # noqa: BLE001
        assert one_line(exc), repr(exc)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_list_file_reads_or_fails_in_one_line(tmp_path, raw):
    from harness.data import read_list_file

    path = tmp_path / "train800.txt"
    path.write_bytes(raw)
    try:
        samples = read_list_file(path, tmp_path / "root", num_classes=10)
        assert all(0 <= s.label < 10 and str(s.image).startswith(str(tmp_path / "root")) for s in samples)
    except Exception as exc:  # noqa: BLE001
        assert one_line(exc), repr(exc)


@SETTINGS
@given(record=st.one_of(values, st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s and s not in (".", "..")),
                                                      "status": st.sampled_from(["ok", "failed", "skipped", "weird"])},
                                                     optional={k: values for k in ("metrics", "primary_metric", "backbone_meta", "spec", "task_meta",
                                                                                   "metric_specs", "timing", "error", "method", "task", "backbone", "seed")})))
def test_any_record_aggregates_or_fails_in_one_line(tmp_path, record):
    from harness.aggregate import aggregate_markdown, records_frame
    from harness.scores import cell_stats, overall_scores
    from harness.store import ResultStore

    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "r.json").write_text(json.dumps(record, default=str))
    try:
        df = records_frame([ResultStore(folder)])
        if not df.empty:
            aggregate_markdown(df)
            overall_scores(cell_stats(df))
    except Exception as exc:  # noqa: BLE001
        assert one_line(exc), repr(exc)


@SETTINGS
@given(pairs=st.lists(st.text(max_size=30), max_size=4))
def test_any_set_value_parses_or_fails_in_one_line(pairs):
    from harness.cli import _parse_sets

    try:
        assert isinstance(_parse_sets(pairs), dict)
    except Exception as exc:  # noqa: BLE001
        assert one_line(exc), repr(exc)
