"""Assemble the report as ONE self-contained HTML file.

plotly.js is inlined once in ``<head>``; each figure is a JSON spec in a
``<script type="application/json">`` drawn by ``Plotly.newPlot`` when the page loads. The
page keeps a hidden ``#report-status`` element (``data-figures``, ``data-rendered``,
``data-errors``) and records JavaScript errors into ``#js-errors``, so a headless browser
can check that every figure was drawn.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.plots.style import apply
from interp.report.document import Figure, Html, Section, Table, Text, Unavailable, slug

_MARKER = re.compile(r"@@([A-Z]+)@@")


@dataclass
class Page:
    """What goes around the sections: title, subtitle, headline numbers, footer."""

    title: str
    subtitle: str = ""
    lede: str = ""
    cards: dict[str, str] = field(default_factory=dict)
    footer: str = ""
    version: str = ""


def plotly_js() -> str:
    """The plotly.js bundle shipped with the installed plotly package, safe inside <script>."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


def _figure_json(fig: go.Figure) -> tuple[str, int | None, int]:
    """The figure's JSON, its natural width (set by the plot function from its data; None:
    as wide as the column) and its height (px)."""
    fig = apply(go.Figure(fig))
    if fig.layout.height is None:
        fig.update_layout(height=440)
    width = None if fig.layout.width is None else int(fig.layout.width)
    # every figure of the report is responsive: the column decides its width, up to its natural
    # width, so a small model's 2 x 4 heatmap stays a small figure instead of a stretched one
    fig.layout.width = None
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    return fig.to_json().replace("</", "<\\/"), width, int(fig.layout.height)


def _cell(value: object) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        value = ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in items)
    text = str(value)
    return html.escape(text if len(text) <= 160 else text[:157] + "...")


def _table_html(t: Table) -> str:
    """A plain table: numbers right-aligned (tabular figures), text left, NA as blank."""
    df = t.df
    shown = df.head(t.max_rows)
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
               for c in shown.columns]
    head = "".join(f'<th class="{"num" if n else "txt"}">{html.escape(str(c)).replace("_", "_<wbr>")}</th>'
                   for c, n in zip(shown.columns, numeric))
    rows = []
    for values in shown.itertuples(index=False, name=None):
        cells = "".join(f'<td class="{"num" if n else "txt"}">{_cell(v)}</td>' for v, n in zip(values, numeric))
        rows.append(f"<tr>{cells}</tr>")
    note = f'<p class="rows-note">showing {len(shown)} of {len(df):,} rows</p>' if len(df) > len(shown) else ""
    return (f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{note}')


def _paragraphs(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "".join(f"<p{attr}>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def render(sections: Sequence[Section], page: Page) -> str:
    """The whole HTML document for ``sections``."""
    toc: list[str] = ["<ol>"]
    body: list[str] = []
    if page.title:
        body.append(f'<header class="top"><h1>{html.escape(page.title)}</h1>')
        if page.lede:
            body.append(f'<p class="lede">{html.escape(page.lede)}</p>')
        if page.cards:
            cards = "".join(
                f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{html.escape(v)}</div></div>'
                for k, v in page.cards.items()
            )
            body.append(f'<div class="cards">{cards}</div>')
        body.append("</header>")
    n_fig = 0
    used: set[str] = set()
    for section in sections:
        sid = _unique(section.id, used)
        na = f' <span class="na">({section.n_unavailable} unavailable)</span>' if section.n_unavailable else ""
        toc.append(f'<li><a href="#{sid}">{html.escape(section.title)}{na}</a><ol>')
        time = f'<span class="time">{section.seconds:.1f} s</span>' if section.seconds is not None else ""
        body.append(f'<section class="top" id="{sid}"><h2>{html.escape(section.title)}{time}</h2>')
        if section.intro:
            body.append(_paragraphs(section.intro, "intro"))
        for block in section.blocks:
            if isinstance(block, Text):
                body.append(_paragraphs(block.text))
                continue
            bid = _unique(f"{sid}--{slug(block.title)}", used)
            toc.append(f'<li><a href="#{bid}">{html.escape(block.title)}</a></li>')
            if isinstance(block, Figure):
                n_fig += 1
                body.append(f'<h3 id="{bid}">{html.escape(block.title)}</h3>')
                if block.caption:
                    body.append(f'<p class="caption">{html.escape(block.caption)}</p>')
                spec, width, height = _figure_json(block.fig)
                # the frame holds the figure's natural width (plus its padding and border), the
                # plot its height: no blank band under a short figure, no stretched small one
                frame = "" if width is None else f' style="max-width: {width + 10}px"'
                body.append(
                    f'<div class="figure"{frame}><div class="plot" id="fig-{n_fig}" data-spec="fig-{n_fig}-spec" '
                    f'data-title="{html.escape(block.title)}" style="height: {height}px"></div></div>'
                    f'<script type="application/json" id="fig-{n_fig}-spec">{spec}</script>'
                )
            elif isinstance(block, Table):
                body.append(f'<h3 id="{bid}">{html.escape(block.title)}</h3>')
                if block.caption:
                    body.append(f'<p class="caption">{html.escape(block.caption)}</p>')
                body.append(_table_html(block))
            elif isinstance(block, Html):
                body.append(f'<h3 id="{bid}">{html.escape(block.title)}</h3><div class="card-md">{block.html}</div>')
            elif isinstance(block, Unavailable):
                body.append(
                    f'<div class="unavailable" id="{bid}"><b>{html.escape(block.title)}</b> &mdash; '
                    f"section unavailable: <code>{html.escape(block.reason)}</code></div>"
                )
        toc.append("</ol></li>")
        body.append("</section>")
    toc.append("</ol>")
    values = {
        "TITLE": html.escape(page.title or "interp report"),
        "SUBTITLE": html.escape(page.subtitle),
        "TOC": "\n".join(toc),
        "BODY": "\n".join(body),
        "FOOTER": html.escape(page.footer),
        "VERSION": html.escape(page.version),
        "NFIGURES": str(n_fig),
    }
    template = resources.files("interp.report").joinpath("template.html").read_text(encoding="utf-8")
    # One pass, so nothing substituted (e.g. plotly.js) is itself searched for markers.
    values["PLOTLYJS"] = plotly_js()
    return _MARKER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _unique(base: str, used: set[str]) -> str:
    out, i = base, 2
    while out in used:
        out, i = f"{base}-{i}", i + 1
    used.add(out)
    return out


def markdown_html(text: str, *, heading_offset: int = 0) -> str:
    """Markdown (CommonMark with GitHub tables) as HTML, through markdown-it-py.

    Raw HTML in the source is escaped, not passed through; headings move down
    ``heading_offset`` levels (``#`` becomes ``<h3>`` with 2), so a model card's title sits
    under the report's own headings. A ``|`` inside a table cell must be written ``\\|``, as
    on GitHub.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for tok in tokens:
        if tok.type in ("heading_open", "heading_close"):
            tok.tag = f"h{min(6, int(tok.tag[1]) + heading_offset)}"
    return md.renderer.render(tokens, md.options, {})


def table_block(title: str, df: pd.DataFrame, caption: str = "", max_rows: int = 20) -> Table:
    """A ``Table`` block (for stages that want a row limit other than the default)."""
    return Table(title, df, caption, max_rows)
