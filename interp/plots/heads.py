"""Figures for attention heads: patterns and composition edges.

>>> import interp
>>> model = interp.load()
>>> fig = attention_pattern(interp.pattern_frame(model, "def f(x):\\n    return x", layers=[0], heads=[2]))
>>> fig = composition_edges(interp.composition_scores(model), top_k=10)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp._checks import options
from interp.plots._frames import require_columns, show_token
from interp.plots.style import PALETTE, apply

KIND_COLOURS = {"Q": PALETTE[0], "K": PALETTE[1], "V": PALETTE[2], "in": PALETTE[3]}


def _cell(n: int) -> int:
    """Pixels per token: 24 for short texts, down to 8 at 110 tokens and beyond (200 tokens:
    a 1,600 px panel whose every token label is drawn at 8 px)."""
    return int(max(8, min(24, 900 // max(n, 1))))


@options(max_cols="count", title="text")
def attention_pattern(df: pd.DataFrame, *, heads: list[str] | None = None, max_cols: int = 2,
                      title: str | None = None) -> go.Figure:
    """One head's attention pattern, or a grid of heads, from ``interp.pattern_frame``.

    Query tokens down, key tokens across, every token labelled (``"12 ·value"``: position
    and token, whitespace shown); hover gives the query token, the key token and the weight.
    Weights share one colour scale from 0 to 1; keys after the query are blank.

    Args:
        df: the frame of ``interp.pattern_frame`` (columns label, query, key, weight, and
            query_token / key_token).
        heads: labels to draw (default every head in ``df``, in its order).
        max_cols: panels per row of the grid.
    """
    require_columns(df, ("label", "query_pos", "key_pos", "weight", "query_token", "key_token"), "attention_pattern",
                    "interp.pattern_frame")
    labels = list(dict.fromkeys(df["label"])) if heads is None else list(heads)
    missing = [h for h in labels if h not in set(df["label"])]
    if missing or not labels:
        raise ValueError(f"heads={heads!r}: {missing or 'nothing'} not in df (it holds {sorted(set(df['label']))})")
    n = int(max(df["query_pos"].max(), df["key_pos"].max())) + 1
    toks = df.attrs.get("tokens")
    if toks is None or len(toks) != n:
        toks = (df.drop_duplicates("query_pos").set_index("query_pos")["query_token"].reindex(range(n)).fillna("").tolist())
    names = [f"{i} {show_token(t)}" for i, t in enumerate(toks)]
    cols = min(max_cols, len(labels))
    rows = math.ceil(len(labels) / cols)
    cell = _cell(n)
    font = max(7, min(12, cell - 2))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=labels, horizontal_spacing=0.5 / (cols * 4 + 1),
                        vertical_spacing=min(0.3 / rows, 120 / (rows * n * cell + 1)))
    for i, label in enumerate(labels):
        g = df[df["label"] == label]
        z = np.full((n, n), np.nan)
        z[g["query_pos"].to_numpy(), g["key_pos"].to_numpy()] = g["weight"].to_numpy()
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Heatmap(
            z=z, x=names, y=names, coloraxis="coloraxis", name=label, xgap=0, ygap=0,
            customdata=np.dstack(np.meshgrid([show_token(t) for t in toks], [show_token(t) for t in toks])),
            hovertemplate=(f"{label}<br>query %{{y}} (%{{customdata[1]}})<br>key %{{x}} (%{{customdata[0]}})"
                           "<br>weight %{z:.3f}<extra></extra>"),
        ), row=r, col=c)
        fig.update_xaxes(tickmode="array", tickvals=names, ticktext=names, tickangle=-90, tickfont=dict(size=font),
                         showgrid=False, showticklabels=r == rows or len(labels) == 1, row=r, col=c)
        fig.update_yaxes(tickmode="array", tickvals=names, ticktext=names, tickfont=dict(size=font),
                         autorange="reversed", showgrid=False, showticklabels=c == 1, row=r, col=c)
    fig.update_xaxes(title_text="key")
    fig.update_yaxes(title_text="query")
    label_px = int(font * 0.62 * max(len(s) for s in names)) + 40
    panel = n * cell
    fig.update_layout(
        title=title or ("Attention pattern" if len(labels) == 1 else "Attention patterns"),
        coloraxis=dict(colorscale="Blues", cmin=0, cmax=1, colorbar=dict(title="weight")),
        width=cols * panel + (cols - 1) * 40 + label_px + 140, height=rows * panel + (rows - 1) * 60 + label_px + 100,
    )
    return apply(fig)


#: Height of one row (head index) of the composition graph (px): room for a label above and below.
COMPOSITION_ROW_PX = 46


@options(top_k="count", title="text")
def composition_edges(df: pd.DataFrame, *, kind: str | None = None, top_k: int = 30,
                      title: str | None = None) -> go.Figure:
    """The strongest composition edges as a layered graph, from ``composition_scores`` or
    ``neuron_composition``: components at (layer, head), one line per edge, its width the
    score's excess over the random baseline and its colour the kind (Q, K, V, in); hover on
    an edge's midpoint gives the score and the baseline.
    """
    require_columns(df, ("kind", "source", "source_layer", "source_head", "target", "target_layer",
                         "target_head", "score", "baseline", "excess"), "composition_edges",
                    "interp.composition_scores")
    if kind is not None:
        if kind not in set(df["kind"]):
            raise ValueError(f"kind={kind!r} is not in df (it holds {sorted(set(df['kind']))})")
        df = df[df["kind"] == kind]
    top = df.sort_values("excess", ascending=False, kind="stable").head(top_k)

    def node_xy(label: str, layer: int, head: Any) -> tuple[float, float]:
        is_neuron = "N" in label[1:]
        return (layer + (0.5 if is_neuron else 0.0), float(head if not is_neuron else -1 - neurons.index(label)))

    neurons = sorted({lab for lab in pd.concat([top["source"], top["target"]]) if "N" in lab[1:]},
                     key=lambda s: (int(s[1:s.index("N")]), int(s[s.index("N") + 1:])))
    fig = go.Figure()
    span = max(float(top["excess"].max()), 1e-9)
    nodes: dict[str, tuple[float, float]] = {}
    for k_name in sorted(set(top["kind"]), key=list(KIND_COLOURS).index):
        g = top[top["kind"] == k_name]
        first = True
        for r in g.itertuples():
            a = node_xy(r.source, r.source_layer, r.source_head)
            b = node_xy(r.target, r.target_layer, r.target_head)
            nodes[r.source], nodes[r.target] = a, b
            fig.add_trace(go.Scatter(
                x=[a[0], b[0]], y=[a[1], b[1]], mode="lines", legendgroup=k_name, showlegend=first, name=k_name,
                line=dict(color=KIND_COLOURS[k_name], width=1 + 7 * max(r.excess, 0) / span), hoverinfo="skip",
                opacity=0.8,
            ))
            first = False
        fig.add_trace(go.Scatter(
            x=[(node_xy(r.source, r.source_layer, r.source_head)[0] + node_xy(r.target, r.target_layer, r.target_head)[0]) / 2
               for r in g.itertuples()],
            y=[(node_xy(r.source, r.source_layer, r.source_head)[1] + node_xy(r.target, r.target_layer, r.target_head)[1]) / 2
               for r in g.itertuples()],
            mode="markers", marker=dict(size=6, color=KIND_COLOURS[k_name]), legendgroup=k_name, showlegend=False,
            text=[f"{r.source} → {r.target} ({k_name})<br>score {r.score:.3f}, baseline {r.baseline:.3f}, "
                  f"excess {r.excess:+.3f}" for r in g.itertuples()],
            hovertemplate="%{text}<extra></extra>",
        ))
    # labels above the nodes of every other column and below those of the others, so the
    # labels of adjacent layers' nodes in the same row are a row's height apart
    column = {x: i for i, x in enumerate(sorted({p[0] for p in nodes.values()}))}
    fig.add_trace(go.Scatter(
        x=[p[0] for p in nodes.values()], y=[p[1] for p in nodes.values()], mode="markers+text",
        text=list(nodes), showlegend=False, hoverinfo="text", textfont=dict(size=11),
        textposition=["top center" if column[p[0]] % 2 == 0 else "bottom center" for p in nodes.values()],
        marker=dict(size=11, color="white", line=dict(color="#444444", width=1.5)),
    ))
    layers = sorted({int(v) for v in pd.concat([top["source_layer"], top["target_layer"]])})
    heads = sorted({int(p[1]) for p in nodes.values() if p[1] >= 0})
    ys = [p[1] for p in nodes.values()] or [0.0]
    fig.update_layout(
        title=title or f"Strongest composition edges ({'all kinds' if kind is None else kind}, top {len(top)})",
        xaxis=dict(title="layer", tickmode="array", tickvals=layers, ticktext=[f"L{ly}" for ly in layers]),
        yaxis=dict(title="head", tickmode="array", tickvals=heads, ticktext=[f"H{h}" for h in heads],
                   range=[max(ys) + 0.75, min(ys) - 0.75], zeroline=False),  # reversed, room for the labels
        legend=dict(title="reads through"), height=max(360, 120 + COMPOSITION_ROW_PX * (len(heads) + len(neurons))),
        width=max(560, 160 + 110 * len(layers)),
    )
    return apply(fig)
