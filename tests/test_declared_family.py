"""Issue 15, acceptance 2: a task family registered inside the test (target-50 metric, lower-is-
better metric, suite -> group -> task) is published with correct tables, ranks and methodology,
through the real CLI, with no change in harness/."""
from __future__ import annotations

import json
import os

import pandas as pd

from tests.conftest import REPO, run_bob, write_grid

PLUGIN_ENV = {"BOB_PLUGINS": "tests.fake_family_plugin", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_fake_family_publishes_by_its_declarations(tmp_path):
    grid = write_grid(tmp_path / "toy.yaml", "name: toy\nbackbones: [toy:a, toy:b, toy:c]\nmethods: [toy_probe]\ntasks: [toybias]\nseeds: [0, 1]\n")
    res = run_bob("sweep", str(grid), "--results", "res", "--publish", "toy", env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr + res.stdout
    board = tmp_path / "leaderboards" / "toy"

    csv = pd.read_csv(board / "leaderboard.csv").set_index(["task", "row"])
    # ss: best at 50, so 50.5 (a) ranks first and 60 (b, the largest value) last
    assert [csv.loc[("toybias/gender_ss", b), "rank"] for b in ("toy:a", "toy:c", "toy:b")] == [1, 2, 3]
    assert csv.loc[("toybias/gender_ss", "toy:a"), "z"] > 0 > csv.loc[("toybias/gender_ss", "toy:b"), "z"]
    # gap: lower is better
    assert [csv.loc[("toybias/age_gap", b), "rank"] for b in ("toy:b", "toy:c", "toy:a")] == [1, 2, 3]
    assert csv.loc[("toybias/age_gap", "toy:b"), "direction"] == "lower" and csv.loc[("toybias/race_ss", "toy:a"), "target"] == 50

    md = (board / "leaderboard.md").read_text()
    assert "**Toy bias (ss: best at 50; gap: lower is better)**" in md
    header = next(line for line in md.splitlines() if line.startswith("| backbone | gender_ss"))
    # groups in declared order; their metrics differ, so the suite value is a mean z-score, never a mean of ss and gap
    assert header == "| backbone | gender_ss | race_ss | age_gap | religion_gap | Stereotype | Fairness | mean z |"
    rows = [line for line in md.split(header)[1].split("\n\n")[0].splitlines()[1:] if line.startswith("| `")]
    cells = {r.split("|")[1].strip(" `"): [c.strip() for c in r.split("|")[2:-1]] for r in rows}
    assert cells["toy:a"][0] == "50.5 ± 0.0" and cells["toy:b"][2] == "0.05 ± 0.00"  # each metric in its declared format
    assert cells["toy:a"][4] == "49.8" and cells["toy:b"][5] == "0.04"  # group means of one metric each
    overall_rank = {r.split("|")[2].strip(" `"): int(r.split("|")[1]) for r in md.split("## toy_probe: overall")[1].splitlines() if r.startswith("| ") and r.split("|")[1].strip().isdigit()}
    mean_z = {name: float(c[-1]) for name, c in cells.items()}
    assert sorted(mean_z, key=mean_z.get, reverse=True) == [r for r, _ in sorted(overall_rank.items(), key=lambda kv: kv[1])]
    assert [r.split("|")[1].strip(" `") for r in rows] == sorted(mean_z, key=mean_z.get, reverse=True)  # best first

    method = (board / "METHODOLOGY.md").read_text()
    assert "`toybias/gender_ss`: **ss** [%] (stereotype score): best at 50" in method
    assert "`toybias/age_gap`: **gap** (accuracy gap between groups): lower is better" in method
    assert "Toy bias: Stereotype: mean over its 2 task(s); Fairness: mean over its 2 task(s); the suite value is the mean of the group means" in method

    page = (board / "index.html").read_text()
    data = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert data["metrics"]["toybias/gender_ss"] == {"name": "ss", "direction": "target", "target": 50, "fmt": ".1f", "label": "stereotype score"}
    assert data["metrics"]["toybias/age_gap"]["direction"] == "lower"
    tex = (board / "table.tex").read_text()
    assert r"\textbf{50.5}" in tex and r"\textbf{0.05}" in tex and r"\textbf{60.0}" not in tex  # best by direction, not by max

    agg = run_bob("aggregate", "toy", "--results", "res", env=PLUGIN_ENV)
    assert agg.returncode == 0 and "| Stereotype | Fairness | mean z |" in agg.stdout
