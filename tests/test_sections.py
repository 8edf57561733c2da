"""Leaderboard sections (harness.sections): a plugin's block reaches leaderboard.md, the page
(its own tab, or below a task tab's table) and the folder, with every name escaped."""
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.sections import SECTIONS, Section, figure_html, register_section, table_html, table_markdown

from .test_publish import _chrome, _records

NASTY = 'x<b>|"&'


@pytest.fixture
def section_board(tmp_path):
    seen = {}

    def build(ctx):
        seen["records"] = len(ctx.records())
        rows = [{"backbone": r, "score": round(s, 2)} for r, s in ctx.overall[["row", "score"]].itertuples(index=False)] + [{"backbone": NASTY, "score": None}]
        cols = [("backbone", "backbone"), ("score", "BoB score")]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        img = figure_html(fig, "a line")
        plt.close(fig)
        return [Section(tab="analysis", title="Scores again", html=table_html(rows, cols) + img, markdown=table_markdown(rows, cols),
                        files={"scores_again.csv": "backbone,score\n"}),
                Section(tab="vtab1k", title="Below the table", html="<p id='below'>under vtab1k</p>")]

    register_section("test-scores-again", build)
    try:
        store = _records(tmp_path)
        result = CliRunner().invoke(main, ["publish", str(store.folder), "--name", "demo", "--out", str(tmp_path / "lb")])
        assert result.exit_code == 0, result.output
        yield tmp_path / "lb" / "demo", seen
    finally:
        SECTIONS._entries.pop("test-scores-again", None)


def test_sections_reach_markdown_page_and_files(section_board):
    board, seen = section_board
    assert seen["records"] == 30  # the ok records, parsed
    md = (board / "leaderboard.md").read_text()
    assert "## Scores again" in md and "| timm:c_big |" in md
    assert "x<b>\\|\"&" in md and "| x<b>\\|\"& | \u2014 |" in md  # a pipe in a name does not break the table; missing is a dash
    assert "## Below the table" not in md  # page-only section
    assert (board / "scores_again.csv").read_text() == "backbone,score\n"
    page = (board / "index.html").read_text()
    assert "x&lt;b&gt;|&quot;&amp;" in page and "data:image/png;base64," in page
    assert "<b>|" not in page


def test_section_tab_in_headless_chromium(section_board):
    from selenium.webdriver.common.by import By

    board, _ = section_board
    driver = _chrome()
    try:
        driver.get((board / "index.html").resolve().as_uri())
        tabs = [b.get_attribute("data-tab") for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button")]
        assert "analysis" in tabs and tabs.index("analysis") > tabs.index("vtab1k")
        next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button") if b.get_attribute("data-tab") == "analysis").click()
        assert not driver.find_element(By.ID, "board").is_displayed()  # a section-only tab shows no backbone table
        section = driver.find_element(By.CSS_SELECTOR, '#sections .section[data-section="test-scores-again"]')
        assert section.find_element(By.TAG_NAME, "h2").text == "Scores again"
        cells = [td.text for td in section.find_elements(By.CSS_SELECTOR, "tbody tr:last-child td")]
        assert cells == [NASTY, "\u2014"]  # shown as typed, not interpreted as HTML
        img = section.find_element(By.CSS_SELECTOR, "img.section-figure")
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 50  # the inline image decodes
        next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tabs button") if b.get_attribute("data-tab") == "vtab1k").click()
        assert driver.find_element(By.ID, "board").is_displayed()
        assert driver.find_element(By.ID, "below").text == "under vtab1k"
        assert [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#sections .section h2")] == ["Below the table"]
    finally:
        driver.quit()
