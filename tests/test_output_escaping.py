"""Issue 28: names with LaTeX, Markdown and HTML specials survive every published format, and
every table says which cells ran in deterministic mode."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

GOLDEN = Path(__file__).parent / "golden"
NAME = r"timm:a$b{c}~d^e\f&g%h#i_j|k <b>bold</b> &amp; `x`"
TASK = r"weird/t$1{2}|3_<i>x</i>"


def _board(tmp_path: Path) -> Path:
    """The quickstart golden records with one backbone and one task renamed, and one backbone's
    cells run in deterministic mode."""
    from harness.leaderboard import publish
    from harness.store import ResultStore

    store = ResultStore(tmp_path / "results" / "esc")
    for line in (GOLDEN / "quickstart.records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["backbone"] == "timm:resnet18.a1_in1k":
            r["backbone"] = r["spec"]["backbone"] = r["backbone_meta"]["name"] = NAME
            r["spec"]["deterministic"] = True
        if r["task"] == "shapes/location":
            r["task"] = r["spec"]["task"] = TASK
            r["task_meta"] = {**(r.get("task_meta") or {}), "name": TASK, "group": "weird"}
        r["id"] = r["id"][:8] + format(abs(hash((r["backbone"], r["task"], r["method"]))) % 16**8, "08x")
        store.write(dict(r, sweep="esc"))
    return publish([store], "esc", tmp_path / "leaderboards")


class _Cells(HTMLParser):
    """The text of every table cell (th/td) of an HTML fragment."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells, self._buf = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._buf = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._buf is not None:
            self.cells.append("".join(self._buf).strip())
            self._buf = None

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)


def test_names_survive_markdown_csv_html_and_latex(tmp_path):
    board = _board(tmp_path)

    # Markdown, rendered by a GFM table parser: the name is one cell, shown exactly as written
    from markdown_it import MarkdownIt

    md = (board / "leaderboard.md").read_text()
    parser = _Cells()
    parser.feed(MarkdownIt("commonmark").enable("table").render(md))
    assert NAME + " (random-init)" in parser.cells  # the overall and per-task rows (a code span; the golden records are random-init)
    assert TASK.split("/", 1)[1] in parser.cells  # a per-task column header (plain text, escaped)
    assert "<b>bold</b>" not in MarkdownIt("commonmark").enable("table").render(md).replace("&lt;b&gt;", "")
    for line in md.splitlines():  # no table row gained or lost a column through a name
        if line.startswith("| ") and NAME.split("|")[0][:8] in line:
            header = next(l for l in md[: md.index(line)].splitlines()[::-1] if l.startswith("|---") or l.startswith("|---:"))
            assert len(re.split(r"(?<!\\)\|", line)) == len(header.split("|")), line

    # CSV: the names as they are
    csv = pd.read_csv(board / "leaderboard.csv")
    assert NAME + " (random-init)" in set(csv["row"]) and TASK in set(csv["task"])

    # HTML: the page's data block parses back to the names; the page writes names with textContent
    page = (board / "index.html").read_text()
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert NAME + " (random-init)" in {c["row"] for c in data["cells"]} and TASK in {c["task"] for c in data["cells"]}
    assert "<b>bold</b>" not in page and "<i>x</i>" not in page  # only inside the JSON, as <\/b>
    assert {c["n_deterministic"] for c in data["cells"] if c["row"] == NAME + " (random-init)"} == {1}

    # LaTeX: every special escaped; unescaping gives the name back; a LaTeX engine compiles it
    from harness.leaderboard import TEX_SPECIALS

    tex = (board / "table.tex").read_text()
    row = next(l for l in tex.splitlines() if l.startswith(r"timm:a\$"))
    escaped = row.split(" & ")[0]
    back = escaped
    for char, code in sorted(TEX_SPECIALS.items(), key=lambda kv: -len(kv[1])):
        back = back.replace(code, char)
    assert back == NAME + " (random-init)"
    assert "$^{d}$" in row and "deterministic mode" in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (Debian texlive-latex-base; scripts/install_system_deps.sh installs it): escaped text checked only")
    doc = tmp_path / "doc.tex"
    booktabs = r"\IfFileExists{booktabs.sty}{\usepackage{booktabs}}{\newcommand\toprule{\hline}\newcommand\midrule{\hline}\newcommand\bottomrule{\hline}}"
    doc.write_text("\\documentclass{article}" + booktabs + "\\begin{document}\n" + tex + "\n\\end{document}\n")  # texlive-latex-base lacks booktabs
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", "doc.pdf", "-"], cwd=tmp_path, capture_output=True, text=True).stdout
        assert "bold" in text and "a$b{c}" in text.replace(" ", "")


def test_markdown_deterministic_marker_and_note(tmp_path):
    md = (_board(tmp_path) / "leaderboard.md").read_text()
    rows = [l for l in md.splitlines() if l.startswith("| `` timm:a$b") or l.startswith("| ``timm:a$b") or l.startswith("| `timm:a$b")]
    per_task = [l for l in rows if "(det)" in l]
    assert per_task and all(l.count("(det)") == 2 for l in per_task)  # both tasks of the deterministic backbone
    assert "(det) = every seed of the cell ran in deterministic mode" in md
    assert not any("(det)" in l for l in md.splitlines() if "vit_tiny" in l)
