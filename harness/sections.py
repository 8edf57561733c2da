"""Sections a family or an analysis adds to a published leaderboard (page tab + Markdown + files).

Why a registry: the robustness scatter of the distribution-shift suite, the retrieval table, the
prompt-learning base/new table, the compression pairing and the significance diagrams are each
owned by the code that knows their data. ``harness.leaderboard`` only lays out what the builders
return, so a new family adds its tab without touching the page code (and the engine never imports
a plugin: plugins register here on import, like every other registry).

A builder is ``build(ctx: PublishContext) -> list[Section]``; it returns ``[]`` when the records
hold nothing for it. Sections are self-contained: HTML fragments with inline images (``data:``
URIs or inline SVG), so the page keeps working offline from its folder.
"""
from __future__ import annotations

import base64
import html as _html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .registry import Registry

SECTIONS = Registry("section")


@dataclass
class Section:
    """One block of a published leaderboard.

    ``tab``: the page tab it appears in — a task tab (``shift``, ``retrieval``...) puts it below
    that tab's table; a new name makes a tab of its own. ``html`` is a trusted fragment: builders
    escape every name they put in it (:func:`esc`, :func:`table_html`). ``markdown`` is what
    ``leaderboard.md`` shows ("" = page only). ``files``: extra files written beside ``index.html``
    (name -> bytes or text), e.g. the CSV behind a plot.
    """

    tab: str
    title: str
    html: str
    markdown: str = ""
    files: dict[str, bytes | str] = field(default_factory=dict)
    order: int = 100
    key: str = ""

    def as_page(self) -> dict[str, Any]:
        return {"tab": self.tab, "title": self.title, "html": self.html, "key": self.key}


@dataclass
class PublishContext:
    """What a builder may read: the records frame (``record_json`` holds each full record), the
    per-cell statistics (mean, interval, z, rank per method x task x row) and the overall scores."""

    df: Any  # pandas.DataFrame of records (harness.aggregate.records_frame)
    stats: Any  # harness.scores.cell_stats -> zscore_by_task -> rank_by_task
    overall: Any  # harness.scores.overall_scores
    name: str
    out: Path | None = None

    def records(self, status: str = "ok") -> list[dict[str, Any]]:
        """The full records (parsed ``record_json``) with the given status."""
        import json

        if self.df is None or self.df.empty or "record_json" not in self.df:
            return []
        rows = self.df[self.df["status"] == status] if status else self.df
        return [json.loads(r) for r in rows["record_json"] if isinstance(r, str)]


def register_section(name: str, build: Callable[[PublishContext], list[Section]], order: int = 100) -> None:
    """Register a section builder (called at plugin import). ``order`` sorts sections within a tab."""
    SECTIONS.add(name, build, order=order)


def build_sections(ctx: PublishContext) -> list[Section]:
    """Every registered builder's sections, ordered by (order, registration name)."""
    out: list[Section] = []
    for entry in sorted(SECTIONS.entries(), key=lambda e: (e.meta.get("order", 100), e.name)):
        for section in entry.factory(ctx) or []:
            section.key = section.key or entry.name
            section.order = entry.meta.get("order", section.order)
            out.append(section)
    return out


# -- helpers for builders ---------------------------------------------------------------------------
def esc(text: Any) -> str:
    """HTML-escape a value for a fragment (names may hold ``<``, ``&``, quotes)."""
    return _html.escape(str(text), quote=True)


def md_cell(text: Any) -> str:
    """A value safe inside a Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], caption: str = "", css_class: str = "section-table") -> str:
    """A plain HTML table of ``rows`` (dicts) with ``columns`` = (key, header); values escaped,
    None shown as the missing mark (never as zero)."""
    head = "".join(f"<th>{esc(label)}</th>" for _, label in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            cells.append('<td class="missing">\u2014</td>' if value is None else f"<td>{esc(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table class="{esc(css_class)}">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def table_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """The same table in Markdown (missing values as an em dash)."""
    lines = ["| " + " | ".join(md_cell(label) for _, label in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("\u2014" if row.get(k) is None else md_cell(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def figure_html(fig, alt: str, fmt: str = "png", dpi: int = 110) -> str:
    """A matplotlib figure as an inline ``<img>`` (``data:`` URI): the page needs no file beside it."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    mime = {"png": "image/png", "svg": "image/svg+xml"}[fmt]
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="section-figure" alt="{esc(alt)}" src="data:{mime};base64,{data}">'
