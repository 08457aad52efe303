"""A neuron's or a head's page as one figure: the activation histogram, the token tables, the
examples (the example token in brackets) and the components it reads from and writes to."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.plots._frames import show_token
from interp.plots.style import HIGHLIGHT, KIND_COLOURS, PALETTE, apply

#: Characters of context shown each side of the example token.
SIDE_CHARS = 40
#: Rows of the lower tables (they share one band of the figure).
MAX_ROWS = 8


def _context(tokens: list[str], center: int, side: int = SIDE_CHARS) -> str:
    left = "".join(tokens[:center]).replace("\n", "↵")[-side:]
    right = "".join(tokens[center + 1:]).replace("\n", "↵")[:side]
    esc = lambda x: html.escape(x, quote=False)  # noqa: E731  (plotly tables read &lt; &gt; &amp;, not &quot;)
    return f"{esc(left)}<b>[{esc(show_token(tokens[center]))}]</b>{esc(right)}"


def _examples_cells(df: pd.DataFrame, value: str, side: int = SIDE_CHARS) -> list[list[Any]]:
    """Value and context cells of the first ``MAX_ROWS`` examples; ``side`` characters each side
    keep a row on one line (a wrapped row would push the table past its band)."""
    df = df.head(MAX_ROWS)
    if df.empty:
        return [[], []]
    return [[f"{v:.3g}" for v in df[value]], [_context(t, c, side) for t, c in zip(df["tokens"], df["center"])]]


def _table(fig: go.Figure, row: int, col: int, header: list[str], cells: list[list[Any]], widths: list[float]) -> None:
    fig.add_trace(go.Table(
        columnwidth=widths, header=dict(values=[f"<b>{h}</b>" for h in header], align="left", fill_color="#F2F2F2"),
        cells=dict(values=cells, align="left", height=22, font=dict(size=11)),
    ), row=row, col=col)


def _check(page: Any, kind: str, fn: str) -> None:
    from interp.pages import Page

    if not isinstance(page, Page) or page.kind != kind:
        raise TypeError(f"page must be an interp.pages.{kind.capitalize()}Page from interp.{kind}_page(...), "
                        f"got {type(page).__name__}; {fn} draws one page")


def _links_cells(page: Any) -> list[list[Any]]:
    half = MAX_ROWS // 2
    rows = pd.concat([page.reads_from.head(half).assign(way="reads"), page.writes_to.head(half).assign(way="writes")],
                     ignore_index=True)
    return [rows["way"].tolist(), rows["component"].tolist(), rows["kind"].tolist(),
            [f"{v:.3f}" for v in rows["score"]], [f"{v:+.3f}" for v in rows["excess"]]]


def _histogram(fig: go.Figure, page: Any, name: str, colour: str) -> None:
    h = page.histogram
    fig.add_trace(go.Bar(x=(h["left"] + h["right"]) / 2, y=h["n_positions"], width=(h["right"] - h["left"]),
                         marker_color=colour, name=name, showlegend=False), row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, title_text="positions", row=1, col=1)  # decades only: no crowded minor labels
    fig.update_xaxes(title_text=name, row=1, col=1)


def neuron_page(page: Any) -> go.Figure:
    """A ``NeuronPage`` (from ``interp.neuron_page``) as one figure."""
    _check(page, "neuron", "neuron_page")
    s = page.summary
    fig = make_subplots(
        rows=3, cols=2, column_widths=[0.5, 0.5], row_heights=[0.28, 0.35, 0.37], vertical_spacing=0.07,
        horizontal_spacing=0.1,
        specs=[[{"type": "xy"}, {"type": "xy"}], [{"type": "table", "colspan": 2}, None],
               [{"type": "table"}, {"type": "table"}]],
        subplot_titles=["activation (signed) over the corpus", "tokens its write promotes / suppresses",
                        "top activations (one per context line)", "most negative", "reads from / writes to (weights)"],
    )
    _histogram(fig, page, "activation", KIND_COLOURS["neuron"])
    pro, sup = page.promoted.head(8), page.suppressed.head(8)
    # ranks in the labels keep two equal token strings (byte tokens shown as the same glyph) apart
    fig.add_trace(go.Bar(y=[f"{show_token(t)} +{r}" for t, r in zip(pro["token"], pro["rank"])][::-1],
                         x=pro["logit"][::-1], orientation="h", marker_color=PALETTE[2], name="promoted",
                         showlegend=False), row=1, col=2)
    fig.add_trace(go.Bar(y=[f"{show_token(t)} −{r}" for t, r in zip(sup["token"], sup["rank"])][::-1],
                         x=sup["logit"][::-1], orientation="h", marker_color=PALETTE[0], name="suppressed",
                         showlegend=False), row=1, col=2)
    labels = list(fig.data[-2].y) + list(fig.data[-1].y)
    fig.update_yaxes(tickmode="array", tickvals=labels, ticktext=labels, tickfont=dict(size=10), row=1, col=2)
    fig.update_xaxes(title_text="logit per unit of activation", row=1, col=2)
    _table(fig, 2, 1, ["activation", "context"], _examples_cells(page.top, "activation"), [1, 9])
    _table(fig, 3, 1, ["activation", "context"], _examples_cells(page.bottom, "activation", side=18), [1, 5])
    _table(fig, 3, 2, ["", "component", "kind", "score", "excess"], _links_cells(page), [1, 1.4, 1, 1, 1])
    verdict = f", verdict {s['verdict']}" if s.get("verdict") else ""
    title = (f"{page.label} · {s['model']} · in/out cosine {s['cosine']:+.3f} (z {s['cosine_z']:+.1f}"
             f"{', flagged' if s['flagged'] else ''}{verdict}) · mean {s['mean']:+.3f}, "
             f"{100 * s['share_positive']:.0f}% positive, {100 * s['share_negative']:.0f}% negative "
             f"over {s['n_tokens']:,} tokens")
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=960, width=1100, bargap=0.05,
                      margin=dict(t=90, l=60, r=30, b=20))
    return apply(fig)


def head_page(page: Any) -> go.Figure:
    """A ``HeadPage`` (from ``interp.head_page``) as one figure."""
    _check(page, "head", "head_page")
    s = page.summary
    fig = make_subplots(
        rows=3, cols=2, column_widths=[0.5, 0.5], row_heights=[0.28, 0.36, 0.36], vertical_spacing=0.07,
        horizontal_spacing=0.1,
        specs=[[{"type": "xy"}, {"type": "xy"}], [{"type": "table", "colspan": 2}, None],
               [{"type": "table"}, {"type": "table"}]],
        subplot_titles=["write norm |z W_O| over the corpus", "detector scores (#rank among all heads; line: uniform)",
                        "where it writes most, and the key it attends to", "OV: attending to a token promotes",
                        "QK: a query token seeks (token-only)"],
    )
    _histogram(fig, page, "write norm", KIND_COLOURS["head"])
    sc = page.scores
    fig.add_trace(go.Bar(x=sc["kind"], y=sc["score"], marker_color=[HIGHLIGHT if f else KIND_COLOURS["head"]
                                                                     for f in sc["flagged"]],
                         text=[f"#{r}" for r in sc["rank"]], textposition="outside", showlegend=False), row=1, col=2)
    fig.add_trace(go.Scatter(x=sc["kind"], y=sc["baseline"], mode="markers", marker=dict(symbol="line-ew-open", size=28,
                             color="#555"), showlegend=False), row=1, col=2)
    fig.update_yaxes(title_text="score", range=[0, 1.1], row=1, col=2)
    top = page.top.head(MAX_ROWS)
    cells = _examples_cells(top, "activation")
    if len(top):
        cells.append([f"{show_token(k)} ({o} back, {w:.2f})" if k is not None else "" for k, o, w in
                      zip(top["key_token"], top["key_offset"], top["key_weight"])])
    else:
        cells.append([])
    _table(fig, 2, 1, ["write norm", "context", "attends to (weight)"], cells, [1, 7, 2])
    for col, df, src, val in ((1, page.ov, "source_token", "logit"), (2, page.qk, "query_token", "score")):
        g = df.groupby(src, sort=False)
        # the top 4 per token: five long byte tokens run past a half-width cell (plotly does not wrap)
        _table(fig, 3, col, ["token", "top 4"], [
            [show_token(t) for t in g.groups],
            [", ".join(f"{show_token(t)} {v:.1f}" for t, v in zip(x["token"][:4], x[val][:4])) for _, x in g]], [1, 5])
    title = (f"{page.label} · {s['model']} · mean write norm {s['mean_write_norm']:.3g} (max "
             f"{s['max_write_norm']:.3g}) over {s['n_tokens']:,} tokens")
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=960, width=1100, bargap=0.05,
                      margin=dict(t=90, l=60, r=30, b=20))
    return apply(fig)
