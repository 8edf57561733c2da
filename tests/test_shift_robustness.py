"""Effective robustness and the robustness tab (issue 21, acceptance 5): ER equals a hand
computation on a three-model testbed; a published shift sweep gets the tab with the OOD-vs-ID
scatter (logit axes, fit line), rendered in headless Chromium; the shift suite enters the tables."""
from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from harness.cli import main
from tasks.shift.robustness import effective_robustness, fit_testbed, read_testbed

from .conftest import write_grid
from .test_publish import _chrome


def test_effective_robustness_equals_a_hand_computation(tmp_path):
    ids, oods = [60.0, 70.0, 80.0], [30.0, 45.0, 50.0]
    lx = [math.log(p / (100 - p)) for p in ids]  # logit of 0.6, 0.7, 0.8
    ly = [math.log(p / (100 - p)) for p in oods]
    mx, my = sum(lx) / 3, sum(ly) / 3
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    intercept = my - slope * mx
    fit = fit_testbed(ids, oods)
    assert fit == pytest.approx((slope, intercept), abs=1e-12)
    # a fourth model at ID 75 %, OOD 52 %: ER = 52 - 100 * sigmoid(slope * logit(0.75) + intercept)
    z = slope * math.log(0.75 / 0.25) + intercept
    assert effective_robustness(fit, 75.0, 52.0) == pytest.approx(52.0 - 100.0 / (1.0 + math.exp(-z)), abs=1e-10)
    # a testbed model's ER is its residual; residuals of a least-squares fit in logit space sum to ~0 there
    assert sum(math.log(o / (100 - o)) - (slope * math.log(i / (100 - i)) + intercept) for i, o in zip(ids, oods)) == pytest.approx(0, abs=1e-9)
    csv = tmp_path / "testbed.csv"
    csv.write_text("name,id_top1,ood_top1,source\na,60,30,paper X\nb,70,45,paper X\nc,80,50,paper X\n")
    rows, source = read_testbed(csv)
    assert fit_testbed([r["id_top1"] for r in rows], [r["ood_top1"] for r in rows]) == pytest.approx(fit)
    assert "paper X" in source


@pytest.mark.slow
def test_robustness_tab_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By

    grid = write_grid(tmp_path / "g.yaml", "name: shiftpub\nbackbones: [timm:resnet18.a1_in1k]\nweights: random\nmethods: [knn, linear]\n"
                                           "tasks: [shift/imagenet_toy]\nhparams:\n  all: {img_size: 16}\n  knn: {k: [1, 5]}\n"
                                           "  linear: {epochs: 3, search: null}\n")
    res = tmp_path / "res"
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", str(res)])
    assert out.exit_code == 0, out.output
    pub = CliRunner().invoke(main, ["publish", str(res / "shiftpub"), "--name", "shift", "--out", str(tmp_path / "lb")])
    assert pub.exit_code == 0, pub.output
    board = tmp_path / "lb" / "shift"
    md = (board / "leaderboard.md").read_text()
    assert "## Robustness: OOD against ID" in md and "effective robustness" in md
    assert "## Per-set top-1" in md and "ImageNetV2 matched-frequency" in md and "ImageNet-A" in md
    assert "Distribution shift" in md  # the shift suite's table (ImageNet shifts group) is part of the board
    lines = (board / "robustness.csv").read_text().splitlines()
    assert len(lines) == 4  # header + the three cells
    import csv

    rows = list(csv.DictReader(lines))
    fit = fit_testbed([float(r["id_top1"]) for r in rows], [float(r["ood_top1"]) for r in rows]) if len({r["id_top1"] for r in rows}) > 1 else None
    if fit is not None:
        for r in rows:  # the table's ER is the testbed residual (values rounded to 0.1 in the table)
            assert float(r["effective_robustness"]) == pytest.approx(effective_robustness(fit, float(r["id_top1"]), float(r["ood_top1"])), abs=0.2)
    driver = _chrome()
    try:
        driver.get((board / "index.html").resolve().as_uri())
        buttons = driver.find_elements(By.CSS_SELECTOR, "#tabs button")
        assert "robustness" in [b.get_attribute("data-tab") for b in buttons]
        next(b for b in buttons if b.get_attribute("data-tab") == "robustness").click()
        section = driver.find_element(By.CSS_SELECTOR, '#sections .section[data-section="shift-robustness"]')
        assert section.is_displayed() and "Taori" in section.text and "Testbed: this leaderboard" in section.text
        img = section.find_element(By.CSS_SELECTOR, "img.section-figure")
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 100
        assert len(section.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3
    finally:
        driver.quit()
