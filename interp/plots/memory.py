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
from interp.plots.style import DIVERGING, HIGHLIGHT, KIND_COLOURS, NULL_BAND, apply, grid_height

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
    """Heatmap (layer x head) of what each head's write removes on data, from
    ``find_deleting_heads``: the median removal over counted queries (1: erases what it reads of
    the stream, 0: none, < 0: amplifies); heads with verdict ``deleting`` are ringed, and
    hover gives the attention to its own position and to sinks and the OV screen. A frame without
    ``removed_median`` (weights only) is drawn by its OV ``score``."""
    _need(df, ("layer", "head"), "deleting_heads", "interp.find_deleting_heads")
    measured = "removed_median" in df.columns
    value = "removed_median" if measured else "score"
    if value not in df.columns:
        raise ValueError("df has neither removed_median nor score; pass the output of interp.find_deleting_heads")
    layers = sorted(int(v) for v in df["layer"].unique())
    n_heads = int(df["head"].max()) + 1
    grid = np.full((len(layers), n_heads), np.nan)
    text = np.full((len(layers), n_heads), "", dtype=object)
    shown = ("verdict", "removed_median", "removed_q10", "removed_q90", "self_attention", "sink_attention",
             "removed_self", "score", "z", "copy_suppression")
    for r in df.itertuples():
        i = layers.index(int(r.layer))
        grid[i, int(r.head)] = getattr(r, value)
        parts = [f"L{r.layer}H{r.head}"]
        for col in shown:
            if col in df.columns:
                v = getattr(r, col)
                parts.append(f"{col} {v:.2f}" if isinstance(v, float) else f"{col} {v}")
        text[i, int(r.head)] = "<br>".join(parts)
    lim = 1.5 if measured else 1.0
    fig = go.Figure(go.Heatmap(
        z=np.clip(grid, -lim, lim), x=list(range(n_heads)), y=layers, text=text,
        hovertemplate="%{text}<extra></extra>", colorscale=DIVERGING, zmid=0, zmin=-lim, zmax=lim,
        colorbar=dict(title="median<br>removal" if measured else "OV score"),
    ))
    if "flagged" in df.columns:
        f = df[df["flagged"]]
        fig.add_trace(go.Scatter(
            x=f["head"], y=f["layer"], mode="markers", name="deleting (verdict)" if measured else "flagged",
            marker=dict(symbol="circle-open", size=18, color=HIGHLIGHT, line=dict(width=3)),
            text=[f"L{r.layer}H{r.head}" for r in f.itertuples()], hovertemplate="%{text}<extra></extra>",
        ))
    fig.update_layout(
        title=title or ("Heads on data: share of what each head reads that its write removes"
                        if measured else "Head OV circuits: +1 erases what it reads, -1 copies"),
        # the ranges are the grid's own: the ringed markers must not widen them (stray ticks)
        xaxis=dict(title="head", dtick=1, range=[-0.5, n_heads - 0.5]),
        yaxis=dict(title="layer", dtick=1, range=[max(layers) + 0.5, min(layers) - 0.5]),
        height=grid_height(len(layers)),
    )
    return apply(fig)


def _stage(kind: str, layer: int) -> float:
    """x position: embeddings at -1, attention at the layer, MLP half a layer later."""
    if kind in ("embed", "pos_embed"):
        return -1.0
    return layer + (0.5 if kind in ("neuron", "mlp_bias", "mlp") else 0.0)


#: Vertical room per node in the deletion graph (px), so stacked labels never touch.
GRAPH_ROW_PX = 40
#: Plot-area width (px) the deletion graph places its labels for: the report's column at 1400 px,
#: less the legend. Labels that would not fit at this width are left to the hover.
GRAPH_WIDTH_PX = 740


def _strongest(info: pd.DataFrame, most: int) -> list[str]:
    """Up to ``most`` deleters, strongest (firing rate x removed fraction) first, taken in turn
    from each kind so that neither heads nor neurons crowd the other out."""
    strength = info["firing_rate"].astype(float) * info["removed_fraction"].astype(float)
    ranked = info.assign(strength=strength).sort_values("strength", ascending=False, kind="stable")
    queues = [list(g["deleter"]) for _, g in ranked.groupby("kind", sort=False)]
    out: list[str] = []
    while len(out) < most and any(queues):
        for q in queues:
            if q and len(out) < most:
                out.append(q.pop(0))
    return out


def _place_labels(nodes: dict[str, dict], x_range: tuple[float, float], y_range: tuple[float, float],
                  height_px: float) -> None:
    """Give each node a text position where its label (estimated box) meets no other label and no
    node, deleters first, then the writers with the largest shares; a node with no free position
    keeps its name for the hover only."""
    sx = GRAPH_WIDTH_PX / (x_range[1] - x_range[0])
    sy = height_px / (y_range[1] - y_range[0])
    w_all, h_all = GRAPH_WIDTH_PX, height_px

    def px(n: dict) -> tuple[float, float]:
        return (n["x"] - x_range[0]) * sx, (y_range[1] - n["y"]) * sy

    taken = []
    for n in nodes.values():
        cx, cy = px(n)
        taken.append((cx - 8, cy - 8, cx + 8, cy + 8))
    # deleters first, then writers by the share they lose to deleters (the strongest edges named)
    order = sorted(nodes, key=lambda k: (not nodes[k]["deleter"], -nodes[k].get("weight", 0.0), _natural(k)))
    for name in order:
        n = nodes[name]
        cx, cy = px(n)
        w, h = 7.2 * len(name) + 4, 17.0
        boxes = {"middle right": (cx + 10, cy - h / 2, cx + 10 + w, cy + h / 2),
                 "middle left": (cx - 10 - w, cy - h / 2, cx - 10, cy + h / 2),
                 "top center": (cx - w / 2, cy - 10 - h, cx + w / 2, cy - 10),
                 "bottom center": (cx - w / 2, cy + 10, cx + w / 2, cy + 10 + h)}
        prefer = ["middle right", "middle left"] if n["deleter"] else ["middle left", "middle right"]
        n["textposition"], n["label"] = "middle right", ""
        for pos in prefer + ["top center", "bottom center"]:
            b = boxes[pos]
            inside = b[0] >= 0 and b[2] <= w_all and b[1] >= 0 and b[3] <= h_all
            if inside and not any(b[0] < t[2] and t[0] < b[2] and b[1] < t[3] and t[1] < b[3] for t in taken):
                n["textposition"], n["label"] = pos, name
                taken.append(b)
                break


@options(min_share="share", max_deleters="count", title="text")
def deletion_graph(df: pd.DataFrame, *, min_share: float = 0.05, max_deleters: int = 8,
                   title: str | None = None) -> go.Figure:
    """Deleters linked to the writers they erase, from ``deletion_evidence``.

    Draws the ``max_deleters`` strongest deleters (firing rate x removed fraction, taken in turn
    from neurons and heads); the subtitle says how many of how many are drawn, and the frame
    itself lists them all. Columns are the stages of the forward pass that hold a node, in order
    and evenly spaced (embeddings, then each layer's attention, then its MLP); within a column
    the nodes are stacked in name order, one row each (vertical position carries no meaning).
    Deleters are orange diamonds, writers circles coloured by kind. A node is labelled where
    its name fits beside, above or below it without touching another label; every node is
    named on hover. An edge ``writer -> deleter`` is drawn for every share of at least
    ``min_share``, its width proportional to the share; hovering the middle of an edge gives
    the numbers.
    """
    _need(df, ("deleter", "kind", "layer", "writer", "writer_kind", "writer_layer", "share"), "deletion_graph",
          "interp.deletion_evidence")
    info = df.drop_duplicates("deleter")
    has_rates = {"firing_rate", "removed_fraction"} <= set(df.columns)
    keep = _strongest(info, max_deleters) if has_rates else list(info["deleter"])[:max_deleters]
    df = df[df["deleter"].isin(keep)]
    edges = df[(df["writer"] != "other") & (df["share"] >= min_share)]
    nodes: dict[str, dict] = {}
    for r in df.drop_duplicates("deleter").itertuples():
        rates = (f"firing rate {r.firing_rate:.2f}<br>removed fraction {r.removed_fraction:.2f}" if has_rates
                 else "deleter")
        nodes[r.deleter] = dict(kind=r.kind, stage=_stage(r.kind, int(r.layer)), deleter=True, info=rates)
    for r in edges.itertuples():
        if r.writer not in nodes:
            nodes[r.writer] = dict(kind=r.writer_kind, stage=_stage(r.writer_kind, int(r.writer_layer)),
                                   deleter=False, info="writer", weight=0.0)
        nodes[r.writer]["weight"] = nodes[r.writer].get("weight", 0.0) + float(r.share)
    stages = sorted({n["stage"] for n in nodes.values()})
    by_x: dict[float, list[str]] = {}
    for name, n in nodes.items():
        n["x"] = float(stages.index(n["stage"]))
        by_x.setdefault(n["x"], []).append(name)
    tallest = max((len(v) for v in by_x.values()), default=1)
    for names in by_x.values():
        ordered = sorted(names, key=lambda k: (not nodes[k]["deleter"], _natural(k)))
        for i, name in enumerate(ordered):
            nodes[name]["y"] = (len(ordered) - 1) / 2 - i
    height = max(440, 230 + GRAPH_ROW_PX * tallest)
    x_range = (-1.5, len(stages) + 0.5)  # room for the labels beside the outer columns
    y_range = (-(tallest + 1) / 2, (tallest + 1) / 2)
    _place_labels(nodes, x_range, y_range, height - 230)
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
    for (role, kind), names in sorted(groups.items(), key=lambda g: (not g[0][0], g[0][1])):
        fig.add_trace(go.Scatter(
            x=[nodes[k]["x"] for k in names], y=[nodes[k]["y"] for k in names], mode="markers+text",
            name="deleter" if role else f"writer ({kind})", text=[nodes[k]["label"] for k in names],
            textposition=[nodes[k]["textposition"] for k in names], textfont=dict(size=12),
            marker=dict(size=14 if role else 11, color=HIGHLIGHT if role else KIND_COLOURS.get(kind, "#7F7F7F"),
                        symbol="diamond" if role else "circle", line=dict(color="white", width=1)),
            customdata=[[k, nodes[k]["info"]] for k in names],
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        ))
    n_all, unlabelled = info["deleter"].nunique(), sum(not n["label"] for n in nodes.values())
    notes = ["edge width: the writer's share of what the deleter erases"]
    if len(keep) < n_all:
        notes.append(f"the {len(keep)} strongest of {n_all} deleters (firing rate × removed fraction); "
                     "the tables list them all")
    if unlabelled:
        notes.append(f"{unlabelled} node{'s' if unlabelled > 1 else ''} without room for a label: hover to name")
    fig.update_layout(
        title=dict(text=title or "Deletion graph: who erases whose writes", subtitle=dict(text="<br>".join(notes))),
        xaxis=dict(title="stage of the forward pass", tickmode="array", tickvals=list(range(len(stages))),
                   showgrid=False, range=list(x_range),
                   ticktext=["embed" if x < 0 else f"L{int(x)}<br>{'mlp' if x % 1 else 'attn'}" for x in stages]),
        yaxis=dict(visible=False, range=list(y_range)),
        height=height, margin=dict(t=64 + 16 * len(notes)),
    )
    return apply(fig)


def _natural(name: str) -> tuple:
    """Sort key: ``L1N10`` after ``L1N9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
