"""Figures for stream decomposition, logit attribution and the logit lens.

Every function takes the DataFrame of the matching analysis and returns a
``plotly.graph_objects.Figure``, so any figure can be rebuilt from a saved table.

>>> fig = write_norms(interp.decompose(w, by="head"))
>>> fig = logit_lens(interp.logit_lens(w))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp._checks import options
from interp.plots._frames import CHAR_EM, cell_chars, clip_text, require_columns, show_token
from interp.plots.style import (
    COLUMN_PX,
    DIVERGING,
    HIGHLIGHT,
    KIND_COLOURS,
    PALETTE,
    SEQUENTIAL,
    apply,
    grid_size,
)

KIND_ORDER = ("embed", "pos_embed", "attn", "head", "attn_bias", "mlp", "neuron", "mlp_bias", "unembed_bias")


def _need(df: pd.DataFrame, cols: Sequence[str], fn: str, source: str) -> None:
    require_columns(df, cols, fn, source)


def _rows(df: pd.DataFrame, batch: int | None) -> pd.DataFrame:
    if batch is None or "batch" not in df.columns:
        return df
    out = df[df["batch"] == batch]
    if out.empty:
        raise ValueError(f"batch={batch} has no rows; df holds batches {sorted(df['batch'].unique().tolist())}")
    return out


def _show(token: str) -> str:
    """A token as cell text (``show_token``): whitespace drawn, control characters escaped."""
    return show_token(token)


def _layer_label(layer: object) -> str:
    return "embed" if pd.isna(layer) else f"L{int(layer)}"


@options(batch="index")
def write_norms(df: pd.DataFrame, *, batch: int | None = None) -> go.Figure:
    """Per-layer write norms by kind, side by side, from ``interp.decompose``.

    Each bar is the L2 norm of one component's write of that kind in that layer, averaged over
    positions and over the kind's components there (``by="layer"``: the layer's whole attention
    or MLP write; ``by="head"``: one head). Norms of writes do not add (the norm of a sum is at
    most the sum of the norms), so the bars are grouped, never stacked. Hover gives the number
    of components and names the largest.
    """
    _need(df, ("component", "kind", "layer", "norm"), "write_norms", "interp.decompose")
    d = _rows(df, batch)
    per = d.groupby(["component", "kind", "layer"], observed=True, dropna=False)["norm"].mean().reset_index()
    per["x"] = per["layer"].map(_layer_label)
    xs = ["embed"] if per["layer"].isna().any() else []
    xs += [f"L{int(v)}" for v in sorted(per["layer"].dropna().unique())]
    fig = go.Figure()
    kinds = [k for k in KIND_ORDER if k in set(per["kind"].astype(str))]
    present = {x: [k for k in kinds if ((per["x"] == x) & (per["kind"].astype(str) == k)).any()] for x in xs}
    for kind in kinds:
        sub = per[per["kind"].astype(str) == kind]
        # each layer's bars share its slot among the kinds it has (the embedding column has no
        # attention or MLP bar, the layers no embedding bar), so no bar sits beside a gap
        width = [0.8 / max(1, len(present[x])) for x in xs]
        offset = [-0.4 + present[x].index(kind) * w if kind in present[x] else 0.0 for x, w in zip(xs, width)]
        ys, hover = [], []
        for x in xs:
            cell = sub[sub["x"] == x].sort_values("norm", ascending=False)
            ys.append(float(cell["norm"].mean()) if len(cell) else float("nan"))
            pairs = list(zip(cell["component"].astype(str), cell["norm"], strict=True))[:3]
            top = ", ".join(f"{c} ({v:.3g})" for c, v in pairs)
            hover.append(f"{x} {kind}: mean norm {ys[-1]:.3g} over {len(cell)} component(s)<br>largest: {top or 'none'}")
        fig.add_trace(go.Bar(x=xs, y=ys, name=kind, hovertext=hover, hoverinfo="text", width=width, offset=offset,
                             marker_color=KIND_COLOURS.get(kind, HIGHLIGHT)))
    fig.update_layout(
        barmode="group", title="Write norms per layer, by kind",
        xaxis_title="layer", yaxis_title="mean L2 norm of a write", legend_title="kind",
    )
    return apply(fig)


@options(batch="index", pos="index")
def head_attribution(df: pd.DataFrame, *, batch: int | None = None, pos: int | None = None) -> go.Figure:
    """Layer x head heatmap of direct logit attribution, from ``interp.logit_attribution``
    with ``by="head"`` or ``"component"``; each cell is the mean over the selected positions
    (``pos=None``: all of them). The colour bar names ``df.attrs["quantity"]`` (the pre-cap logit
    ``z`` of a soft-capped model)."""
    _need(df, ("component", "kind", "layer", "head", "attribution"), "head_attribution", "interp.logit_attribution")
    d = _rows(df, batch)
    d = d[d["kind"].astype(str) == "head"]
    if pos is not None:
        d = d[d["pos"] == pos]
    if d.empty:
        raise ValueError("df has no head rows for this selection; use logit_attribution(w, by='head') and a present pos")
    grid = d.groupby(["layer", "head"], observed=True)["attribution"].mean().unstack("head")
    z = grid.to_numpy(dtype=float)
    layers, heads = [int(v) for v in grid.index], [int(v) for v in grid.columns]
    hover = [[f"L{ly}H{h}<br>attribution {z[i, j]:.4g}" for j, h in enumerate(heads)] for i, ly in enumerate(layers)]
    lim = float(np.nanmax(np.abs(z))) or 1.0
    where = "all positions" if pos is None else f"position {pos}"
    fig = go.Figure(go.Heatmap(
        z=z, x=heads, y=layers, colorscale=DIVERGING, zmid=0, zmin=-lim, zmax=lim,
        hovertext=hover, hoverinfo="text", colorbar=dict(title=df.attrs.get("quantity", "logit")),
    ))
    title = f"Direct logit attribution per head (mean over {where})"
    width, height = grid_size(len(layers), len(heads), title=title)
    fig.update_layout(title=title,
                      xaxis_title="head", yaxis_title="layer", width=width, height=height)
    fig.update_yaxes(autorange="reversed", dtick=1)
    fig.update_xaxes(dtick=1)
    return apply(fig)


@options(k="count", batch="index")
def top_neurons(df: pd.DataFrame, *, k: int = 20, value: str | None = None, batch: int | None = None) -> go.Figure:
    """Bar chart of the ``k`` neurons with the largest mean ``|value|`` over positions.

    ``value``: ``"attribution"`` (from ``interp.logit_attribution``) or ``"norm"`` (from
    ``interp.decompose``); default whichever the frame has. Needs ``by="neuron"`` or
    ``"component"`` rows.
    """
    value = value or ("attribution" if "attribution" in df.columns else "norm")
    _need(df, ("component", "kind", value), "top_neurons", "interp.decompose or interp.logit_attribution")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive int (the number of neurons to show)")
    d = _rows(df, batch)
    d = d[d["kind"].astype(str) == "neuron"]
    if d.empty:
        raise ValueError("df has no neuron rows; decompose or attribute with by='neuron' or by='component'")
    agg = d.groupby("component", observed=True)[value].agg(["mean", "count"])
    agg["key"] = agg["mean"].abs()
    agg = agg.sort_values("key", ascending=False).head(k).iloc[::-1]
    names = [str(c) for c in agg.index]
    hover = [f"{c}<br>mean {value} {m:.4g} over {n} positions" for c, m, n in
             zip(names, agg["mean"], agg["count"], strict=True)]
    colours = [PALETTE[1] if m > 0 else PALETTE[0] for m in agg["mean"]]
    fig = go.Figure(go.Bar(x=agg["mean"], y=names, orientation="h", hovertext=hover, hoverinfo="text",
                           marker_color=colours))
    sign = ("orange: raises the actual next token's logit; blue: lowers it" if value == "attribution"
            else "orange: positive mean; blue: negative")
    fig.update_layout(title=dict(text=f"Top {len(names)} neurons by mean |{value}|", subtitle=dict(text=sign)),
                      xaxis_title=f"mean {value}", yaxis_title="neuron", height=150 + 22 * len(names))
    fig.update_yaxes(tickmode="array", tickvals=names, ticktext=names)  # every bar named
    return apply(fig)


def _stream_labels(df: pd.DataFrame) -> pd.Series:
    top = int(df["layer"].max())
    only_pre = set(df.loc[df["layer"] == top, "where"]) == {"pre"}
    return pd.Series(
        ["final" if (ly == top and w == "pre" and only_pre) else f"L{ly} {w}" for ly, w in
         zip(df["layer"], df["where"], strict=True)],
        index=df.index,
    )


def _stream_order(df: pd.DataFrame) -> list[str]:
    rank = {"pre": 0, "mid": 1, "post": 2}
    keys = df[["layer", "where"]].drop_duplicates()
    keys = keys.assign(r=keys["where"].map(rank)).sort_values(["layer", "r"])
    return list(dict.fromkeys(_stream_labels(df).loc[keys.index]))


def _pick(order: list[str], most: int) -> list[str]:
    """At most ``most`` streams, evenly spaced, always the first and the last."""
    if len(order) <= most:
        return order
    idx = np.unique(np.round(np.linspace(0, len(order) - 1, most)).astype(int))
    return [order[i] for i in idx]


def _clip(text: str, chars: int) -> str:
    return clip_text(text, chars)


#: Plot-area width (px) the logit lens sizes its cell text for: the report's column at 1400 px.
LENS_WIDTH_PX = 860
#: Height of one position's row in the logit lens (px).
LENS_ROW_PX = 22
#: Top margin of the logit lens (px): title, subtitle, the top x axis's title and its tick labels.
LENS_TOP_PX = 150
#: Narrowest column of the logit lens (px): a stream's label ("L12 pre") fits above it.
LENS_MIN_CELL_PX = 72
#: Cell text size of the logit lens (px).
LENS_FONT_PX = 11
CHAR_EM_PX = CHAR_EM * LENS_FONT_PX
#: Room for the logit lens's colour bar and its title (px).
LENS_COLORBAR_PX = 130


@options(batch="index", max_streams="count")
def logit_lens(df: pd.DataFrame, *, batch: int = 0, max_streams: int = 12) -> go.Figure:
    """Logit-lens heatmap from ``interp.logit_lens``: one row per position (its token on the
    y axis), one column per stream; cell text = the stream's top token, colour = the
    probability of the actual next token.

    ``max_streams``: columns shown (evenly spaced, always the first and the final stream),
    so the top token stays readable on a deep model; hover gives every cell's numbers. The
    figure grows with the number of positions (``LENS_ROW_PX`` per row).
    """
    _need(df, ("layer", "where", "pos", "token", "top_token", "top_prob", "next_token", "next_prob"),
          "logit_lens", "interp.logit_lens")
    if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 2:
        raise ValueError(f"max_streams={max_streams!r} must be an int >= 2")
    d = _rows(df, batch).copy()
    d["stream"] = _stream_labels(d)
    order = _pick(_stream_order(d), max_streams)
    positions = sorted(d["pos"].unique())
    toks = d.drop_duplicates("pos").set_index("pos")["token"].astype(str)
    ys = [f"{p} {_clip(_show(toks[p]), 14)}" for p in positions]
    label_px = CHAR_EM_PX * max(len(y) for y in ys) + 40
    # the plot area the cells get at most: the report's column less the labels and colour bar
    plot_px = min(LENS_WIDTH_PX, COLUMN_PX - label_px - LENS_COLORBAR_PX)
    chars = cell_chars(plot_px / len(order), LENS_FONT_PX)
    cell = d.set_index(["stream", "pos"])
    z = np.full((len(positions), len(order)), np.nan)
    text = [["" for _ in order] for _ in positions]
    hover = [["" for _ in order] for _ in positions]
    for j, s in enumerate(order):
        for i, p in enumerate(positions):
            if (s, p) not in cell.index:
                continue
            r = cell.loc[(s, p)]
            z[i, j] = r["next_prob"]
            text[i][j] = _clip(_show(str(r["top_token"])), chars)
            nxt = "none (last position)" if pd.isna(r["next_prob"]) else f"{r['next_token']!r} p={r['next_prob']:.3g}"
            hover[i][j] = (f"{s}, pos {p} {toks[p]!r}<br>top {r['top_token']!r} p={r['top_prob']:.3g}"
                           f"<br>next {nxt}" + (f"<br>KL to final {r['kl_to_final']:.3g}" if "kl_to_final" in r else ""))
    # columns as wide as their text needs, no wider: a 2-layer model's three streams make a
    # narrow figure, not three page-wide bands
    longest = max((len(t) for row in text for t in row), default=1)
    cell_px = min(plot_px / len(order), max(LENS_MIN_CELL_PX, CHAR_EM_PX * longest + 16))
    fig = go.Figure(go.Heatmap(
        z=z, x=order, y=ys, text=text, texttemplate="%{text}", textfont=dict(size=LENS_FONT_PX),
        colorscale=SEQUENTIAL, zmin=0, zmax=1, xgap=1, ygap=1,
        hovertext=hover, hoverinfo="text", colorbar=dict(title=dict(text="p(next)", side="right")),
    ))
    shown = "" if len(order) == len(_stream_order(d)) else f" ({len(order)} of {len(_stream_order(d))} streams)"
    fig.update_layout(
        title=dict(text="Logit lens: top token of each stream" + shown,
                   subtitle=dict(text="colour: probability of the actual next token")),
        xaxis_title="stream (before each layer; final = the model's output)", yaxis_title="position and token",
        height=LENS_TOP_PX + 90 + LENS_ROW_PX * len(positions),
        width=int(max(560, len(order) * cell_px + label_px + LENS_COLORBAR_PX)),
        # the title and its subtitle sit above the top axis's title and tick labels, which the
        # axis's automargin places just above the plot: the top margin holds all four
        margin=dict(t=LENS_TOP_PX),
    )
    fig.update_xaxes(side="top", showgrid=False, type="category")
    fig.update_yaxes(autorange="reversed", showgrid=False, type="category", tickfont=dict(size=11))
    return apply(fig)


@options(batch="index", max_lines="count")
def stream_norms(df: pd.DataFrame, *, batch: int = 0, max_lines: int = 24) -> go.Figure:
    """Stream norm growth through the layers, from ``interp.stream_norms``: one line per
    position (up to ``max_lines`` positions; beyond that the first position, the median of
    the others and their range)."""
    _need(df, ("layer", "where", "pos", "token", "norm"), "stream_norms", "interp.stream_norms")
    d = _rows(df, batch).copy()
    d["stream"] = _stream_labels(d)
    order = _stream_order(d)
    fig = go.Figure()
    positions = sorted(d["pos"].unique())
    by_pos = {p: g.set_index("stream").reindex(order) for p, g in d.groupby("pos")}
    if len(positions) <= max_lines:
        for p in positions:
            g = by_pos[p]
            tok = str(g["token"].dropna().iloc[0])
            fig.add_trace(go.Scatter(
                x=order, y=g["norm"], mode="lines+markers", name=f"{p}: {tok!r}",
                hovertext=[f"pos {p} {tok!r}, {s}: norm {v:.4g}" for s, v in zip(order, g["norm"], strict=True)],
                hoverinfo="text",
            ))
    else:
        first, rest = positions[0], positions[1:]
        wide = d[d["pos"].isin(rest)].groupby("stream")["norm"].agg(["median", "min", "max"]).reindex(order)
        g = by_pos[first]
        tok = str(g["token"].dropna().iloc[0])
        fig.add_trace(go.Scatter(x=order, y=wide["max"], mode="lines", line=dict(width=0), showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=order, y=wide["min"], mode="lines", line=dict(width=0), fill="tonexty",
                                 name="range of other positions", hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=order, y=wide["median"], mode="lines+markers", name=f"median of {len(rest)} positions",
            hovertext=[f"{s}: median norm {v:.4g} over positions {rest[0]}..{rest[-1]}"
                       for s, v in zip(order, wide["median"], strict=True)], hoverinfo="text",
        ))
        fig.add_trace(go.Scatter(
            x=order, y=g["norm"], mode="lines+markers", name=f"{first}: {tok!r}",
            hovertext=[f"pos {first} {tok!r}, {s}: norm {v:.4g}" for s, v in zip(order, g["norm"], strict=True)],
            hoverinfo="text",
        ))
    fig.update_layout(title="Residual stream norm through the layers", xaxis_title="stream",
                      yaxis_title="L2 norm", legend_title="position")
    return apply(fig)
