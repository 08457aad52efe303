"""Figures for memory management: deleting neurons, deleting heads, and who they erase.

>>> import interp
>>> model = interp.load()
>>> fig = deleting_neurons(interp.neuron_in_out_cosines(model))
>>> fig = deleting_heads(interp.find_deleting_heads(model))
>>> fig = deletion_graph(interp.deletion_evidence(model, ["x = 1 + 2"], progress=False))
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp._checks import options
from interp.plots._frames import require_columns
from interp.plots.style import DIVERGING, HIGHLIGHT, KIND_COLOURS, NULL_BAND, apply

_NEURONS = "interp.neuron_in_out_cosines or interp.find_deleting_neurons"


def _need(df: pd.DataFrame, cols: Sequence[str], fn: str, source: str) -> None:
    require_columns(df, cols, fn, source, allow_empty=True)


@options(max_points="count", title="text")
def deleting_neurons(df: pd.DataFrame, *, max_points: int = 3000, title: str | None = None) -> go.Figure:
    """Per-layer distribution of neuron in/out cosines with flagged neurons highlighted.

    ``df``: ``neuron_in_out_cosines`` (all neurons: a violin per layer, and the unflagged
    points themselves when a layer has at most ``max_points``) or ``find_deleting_neurons``
    (flagged only). Flagged neurons are marked and named on hover; the grey band is the null's
    ``mean +/- 2 std`` and the dashed line the layer's threshold.
    """
    _need(df, ("layer", "neuron", "cosine"), "deleting_neurons", _NEURONS)
    flagged = df[df["flagged"]] if "flagged" in df.columns else df
    layers = sorted(int(v) for v in df["layer"].unique())
    fig = go.Figure()
    rng = np.random.default_rng(0)
    if "flagged" in df.columns:
        for i, ly in enumerate(layers):
            d = df[df["layer"] == ly]
            fig.add_trace(go.Violin(
                x=np.full(len(d), ly), y=d["cosine"], name="all neurons", legendgroup="all",
                showlegend=i == 0, points=False, line=dict(color="#7F7F7F", width=1),
                fillcolor="rgba(127,127,127,0.15)", width=0.8, spanmode="hard", hoverinfo="y",
            ))
            rest = d[~d["flagged"]]
            if len(rest) <= max_points:
                fig.add_trace(go.Scatter(
                    x=ly + rng.uniform(-0.25, 0.25, len(rest)), y=rest["cosine"], mode="markers",
                    name="not flagged", legendgroup="rest", showlegend=i == 0,
                    marker=dict(size=3, color="#7F7F7F", opacity=0.5), text=rest["label"],
                    hovertemplate="%{text}<br>cosine %{y:.3f}<extra></extra>",
                ))
    for ly in layers:
        d = df[df["layer"] == ly].iloc[:1]
        if d.empty or "null_std" not in d.columns:
            continue
        mean = float(d["null_mean"].iloc[0]) if "null_mean" in d.columns else 0.0
        sd = float(d["null_std"].iloc[0])
        fig.add_shape(type="rect", x0=ly - 0.45, x1=ly + 0.45, y0=mean - 2 * sd, y1=mean + 2 * sd,
                      fillcolor=NULL_BAND, line=dict(width=0), layer="below")
        if "threshold" in d.columns:
            thr = float(d["threshold"].iloc[0])
            fig.add_trace(go.Scatter(
                x=[ly - 0.45, ly + 0.45], y=[thr, thr], mode="lines", name="threshold", legendgroup="thr",
                showlegend=ly == layers[0], line=dict(color=HIGHLIGHT, dash="dash", width=1),
                hovertemplate=f"L{ly} threshold {thr:.3f}<extra></extra>",
            ))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="null mean ± 2 std",
                             marker=dict(symbol="square", size=12, color=NULL_BAND)))
    jitter = rng.uniform(-0.25, 0.25, len(flagged))
    hover = [f"{r.label if 'label' in flagged.columns else f'L{r.layer}N{r.neuron}'}<br>cosine {r.cosine:.3f}"
             + (f"<br>z {r.z:.1f}" if "z" in flagged.columns else "") for r in flagged.itertuples()]
    fig.add_trace(go.Scatter(
        x=flagged["layer"].to_numpy() + jitter, y=flagged["cosine"], mode="markers", name="flagged",
        marker=dict(color=HIGHLIGHT, size=8, line=dict(color="white", width=1)),
        text=hover, hovertemplate="%{text}<extra></extra>",
    ))
    proc = df.attrs.get("processing")
    fig.update_layout(
        title=title or "Neuron input/output cosines" + (f" ({proc} weights)" if proc else ""),
        xaxis=dict(title="layer", tickmode="array", tickvals=layers, ticktext=[f"L{ly}" for ly in layers]),
        yaxis=dict(title="cos(W_in[:, n], W_out[n])"), violinmode="overlay",
    )
    return apply(fig)


@options(title="text")
def deleting_heads(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Heatmap of the heads' OV eigenvalue score (layer x head), from ``find_deleting_heads``;
    flagged heads are ringed, and hover gives every component of the score."""
    _need(df, ("layer", "head", "score"), "deleting_heads", "interp.find_deleting_heads")
    layers = sorted(int(v) for v in df["layer"].unique())
    n_heads = int(df["head"].max()) + 1
    grid = np.full((len(layers), n_heads), np.nan)
    text = np.full((len(layers), n_heads), "", dtype=object)
    for r in df.itertuples():
        i = layers.index(int(r.layer))
        grid[i, int(r.head)] = r.score
        parts = [f"L{r.layer}H{r.head}", f"score {r.score:.3f}"]
        for col in ("z", "neg_eig_share", "copy_suppression", "flagged"):
            if col in df.columns:
                v = getattr(r, col)
                parts.append(f"{col} {v:.3f}" if isinstance(v, float) else f"{col} {v}")
        text[i, int(r.head)] = "<br>".join(parts)
    fig = go.Figure(go.Heatmap(
        z=grid, x=list(range(n_heads)), y=layers, text=text, hovertemplate="%{text}<extra></extra>",
        colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1, colorbar=dict(title="score"),
    ))
    if "flagged" in df.columns:
        f = df[df["flagged"]]
        fig.add_trace(go.Scatter(
            x=f["head"], y=f["layer"], mode="markers", name="flagged",
            marker=dict(symbol="circle-open", size=18, color=HIGHLIGHT, line=dict(width=3)),
            text=[f"L{r.layer}H{r.head} flagged" for r in f.itertuples()], hovertemplate="%{text}<extra></extra>",
        ))
    fig.update_layout(
        title=title or "Head OV circuits: +1 erases what it reads, -1 copies",
        xaxis=dict(title="head", dtick=1), yaxis=dict(title="layer", dtick=1, autorange="reversed"),
    )
    return apply(fig)


def _stage(kind: str, layer: int) -> float:
    """x position: embeddings at -1, attention at the layer, MLP half a layer later."""
    if kind in ("embed", "pos_embed"):
        return -1.0
    return layer + (0.5 if kind in ("neuron", "mlp_bias", "mlp") else 0.0)


#: Vertical room per node in the deletion graph (px), so stacked labels never touch.
GRAPH_ROW_PX = 26


@options(min_share="share", title="text")
def deletion_graph(df: pd.DataFrame, *, min_share: float = 0.05, title: str | None = None) -> go.Figure:
    """Deleters linked to the writers they erase, from ``deletion_evidence``.

    Columns are stages of the forward pass (embeddings left, each layer's attention, then its
    MLP); within a column the nodes are stacked in name order, one row each (vertical
    position carries no meaning; the figure grows with the longest column). Deleters are
    orange diamonds labelled on their right, writers circles coloured by kind and labelled
    on their left. An edge ``writer -> deleter`` is drawn for every share of at least
    ``min_share``, its width proportional to the share; hovering a node or the middle of an
    edge names it and gives the numbers.
    """
    _need(df, ("deleter", "kind", "layer", "writer", "writer_kind", "writer_layer", "share"), "deletion_graph",
          "interp.deletion_evidence")
    edges = df[(df["writer"] != "other") & (df["share"] >= min_share)]
    nodes: dict[str, dict] = {}
    for r in df.drop_duplicates("deleter").itertuples():
        nodes[r.deleter] = dict(kind=r.kind, x=_stage(r.kind, int(r.layer)), deleter=True,
                                info=f"firing rate {r.firing_rate:.2f}<br>removed fraction {r.removed_fraction:.2f}")
    for r in edges.itertuples():
        if r.writer not in nodes:
            nodes[r.writer] = dict(kind=r.writer_kind, x=_stage(r.writer_kind, int(r.writer_layer)), deleter=False,
                                   info="writer")
    by_x: dict[float, list[str]] = {}
    for name, n in nodes.items():
        by_x.setdefault(n["x"], []).append(name)
    tallest = max((len(v) for v in by_x.values()), default=1)
    for names in by_x.values():
        ordered = sorted(names, key=lambda k: (not nodes[k]["deleter"], _natural(k)))
        for i, name in enumerate(ordered):
            nodes[name]["y"] = (len(ordered) - 1) / 2 - i
    fig = go.Figure()
    top = max(float(edges["share"].max()), 1e-9) if len(edges) else 1.0
    mids_x, mids_y, mids_t = [], [], []
    for r in edges.itertuples():
        a, b = nodes[r.writer], nodes[r.deleter]
        fig.add_trace(go.Scatter(
            x=[a["x"], b["x"]], y=[a["y"], b["y"]], mode="lines", showlegend=False, hoverinfo="skip",
            line=dict(width=1 + 7 * min(r.share, top) / top, color="rgba(213,94,0,0.35)"),
        ))
        mids_x.append((a["x"] + b["x"]) / 2)
        mids_y.append((a["y"] + b["y"]) / 2)
        mids_t.append(f"{r.deleter} erases {r.share:.0%} from {r.writer}")
    # invisible hover targets at the edges' midpoints (the share is also the edge's width)
    fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", showlegend=False, name="edge",
                             marker=dict(size=10, opacity=0), text=mids_t, hovertemplate="%{text}<extra></extra>"))
    groups: dict[tuple[bool, str], list[str]] = {}
    for k, n in nodes.items():
        groups.setdefault((n["deleter"], "deleter" if n["deleter"] else str(n["kind"])), []).append(k)
    for (role, kind), names in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1])):
        fig.add_trace(go.Scatter(
            x=[nodes[k]["x"] for k in names], y=[nodes[k]["y"] for k in names], mode="markers+text",
            name="deleter" if role else f"writer ({kind})", text=names,
            textposition="middle right" if role else "middle left", textfont=dict(size=12),
            marker=dict(size=14 if role else 11, color=HIGHLIGHT if role else KIND_COLOURS.get(kind, "#7F7F7F"),
                        symbol="diamond" if role else "circle", line=dict(color="white", width=1)),
            customdata=[nodes[k]["info"] for k in names],
            hovertemplate="%{text}<br>%{customdata}<extra></extra>",
        ))
    xs = sorted({n["x"] for n in nodes.values()})
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = max(hi - lo, 1.0)
    fig.update_layout(
        title=dict(text=title or "Deletion graph: who erases whose writes",
                   subtitle=dict(text="edge width: the writer's share of what the deleter erases")),
        xaxis=dict(title="stage of the forward pass", tickmode="array", tickvals=xs, showgrid=False,
                   ticktext=["embed" if x < 0 else f"L{int(x)} {'mlp' if x % 1 else 'attn'}" for x in xs],
                   range=[lo - 0.22 * span, hi + 0.22 * span]),
        yaxis=dict(visible=False, range=[-(tallest + 1) / 2, (tallest + 1) / 2]),
        height=max(420, 170 + GRAPH_ROW_PX * tallest),
        legend=dict(orientation="h", yanchor="top", y=-0.12, x=0, xanchor="left"),
    )
    return apply(fig)


def _natural(name: str) -> tuple:
    """Sort key: ``L1N10`` after ``L1N9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
