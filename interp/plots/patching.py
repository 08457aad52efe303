"""Figures for causal evidence: patching heatmaps, a per-neuron bar, and a deleter before and
after ablation.

>>> import interp
>>> model = interp.load()
>>> pair = ("def f(a):\\n    return f(a", "def f(a):\\n    return f[a")
>>> fig = patching_heads(interp.activation_patching(model, *pair, answers=(")", "]"), progress=False))
>>> fig = patching_positions(interp.activation_patching(model, *pair, answers=(")", "]"), by="resid",
...                                                      progress=False))
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp._checks import options
from interp.plots._frames import require_columns, show_token
from interp.plots.style import DIVERGING, HIGHLIGHT, PALETTE, apply, grid_size

_SOURCE = "interp.activation_patching or interp.attribution_patching"


def _limit(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(max(1.0, np.abs(finite).max())) if finite.size else 1.0


@options(title="text")
def patching_heads(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Layer x head heatmap of ``effect`` (0: the corrupt run, 1: the clean run), from a
    ``by="head"`` frame patched over all positions (``pos`` is <NA>). Hover names the head and
    shows the metric on the patched run."""
    require_columns(df, ("kind", "layer", "head", "effect", "pos"), "patching_heads", _SOURCE)
    d = df[(df["kind"] == "head") & df["pos"].isna()]
    if d.empty:
        raise ValueError("df has no head rows patched over all positions; pass activation_patching(..., by='head')")
    grid = d.pivot_table(index="layer", columns="head", values="effect", aggfunc="first").sort_index()
    z = grid.to_numpy(dtype=float)
    lim = _limit(z)
    text = [[f"L{ly}H{h}" for h in grid.columns] for ly in grid.index]
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(h) for h in grid.columns], y=[str(ly) for ly in grid.index], text=text,
        colorscale=DIVERGING, zmin=-lim, zmax=lim, colorbar=dict(title="effect"),
        hovertemplate="%{text}<br>effect %{z:.3f}<extra></extra>",
    ))
    method = df.attrs.get("method", "activation")
    title = title or f"{method.capitalize()} patching per head ({df.attrs.get('metric', 'metric')})"
    width, height = grid_size(len(grid), len(grid.columns), title=title)
    fig.update_layout(
        title=title,
        xaxis=dict(title="head", type="category"), yaxis=dict(title="layer", type="category", autorange="reversed"),
        width=width, height=height,
    )
    return apply(fig)


@options(title="text")
def patching_positions(df: pd.DataFrame, *, kind: str | None = None, title: str | None = None) -> go.Figure:
    """Layer x position heatmap of ``effect`` for per-position rows (``by="resid"`` by
    default, or ``kind=`` any kind patched with ``positions="each"``). The x axis shows the
    corrupt prompt's tokens."""
    require_columns(df, ("kind", "layer", "pos", "token", "effect"), "patching_positions", _SOURCE)
    d = df[df["pos"].notna()]
    kind = kind or ("resid" if (d["kind"] == "resid").any() else (d["kind"].iloc[0] if len(d) else None))
    d = d[d["kind"] == kind]
    groups = ["layer"] + (["head"] if kind == "head" else ["neuron"] if kind == "neuron" else [])
    if d.empty:
        raise ValueError("df has no per-position rows; pass activation_patching(..., by='resid') "
                         "or positions='each'")
    d = d.assign(row=[" ".join(f"{g[0].upper()}{int(v)}" for g, v in zip(groups, r)) for r in d[groups].to_numpy()])
    grid = d.pivot_table(index="row", columns="pos", values="effect", aggfunc="first", sort=False)
    toks = d.drop_duplicates("pos").set_index("pos")["token"]
    labels = [f"{p}: {show_token(toks.get(p, ''))}" for p in grid.columns]
    z = grid.to_numpy(dtype=float)
    lim = _limit(z)
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=list(grid.index), colorscale=DIVERGING, zmin=-lim, zmax=lim,
        colorbar=dict(title="effect"), hovertemplate="%{y} at %{x}<br>effect %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title=title or f"Patching the {kind} at each position",
        xaxis=dict(title=dict(text="position: token (corrupt prompt)", standoff=12), type="category",
                   tickangle=-45, automargin=True),
        yaxis=dict(title="", autorange="reversed", automargin=True),
        height=max(320, 22 * len(grid) + 180), width=max(640, 26 * len(labels) + 200),
    )
    return apply(fig)


@options(top="count", title="text")
def patching_neurons(df: pd.DataFrame, *, top: int = 30, title: str | None = None) -> go.Figure:
    """Bar of the ``top`` neurons by |effect| (over all positions), labelled ``L3N120``; with
    an attribution frame's ``approximation`` column the estimate is the bar and, when the frame
    also holds the real ``effect_patched`` (merged by the caller), it is drawn as markers."""
    require_columns(df, ("kind", "component", "effect"), "patching_neurons", _SOURCE)
    d = df[(df["kind"] == "neuron")]
    if "pos" in d.columns:
        d = d[d["pos"].isna()]
    if d.empty:
        raise ValueError("df has no neuron rows; pass activation_patching(..., by='neuron')")
    d = d.reindex(d["effect"].abs().sort_values(ascending=False).index).head(top)
    fig = go.Figure(go.Bar(
        x=d["component"], y=d["effect"], marker_color=[HIGHLIGHT if v > 0 else PALETTE[0] for v in d["effect"]],
        name=df.attrs.get("method", "activation"), hovertemplate="%{x}<br>effect %{y:.3f}<extra></extra>",
    ))
    if "effect_patched" in d.columns:
        fig.add_trace(go.Scatter(x=d["component"], y=d["effect_patched"], mode="markers", name="activation patching",
                                 marker=dict(color="black", symbol="diamond")))
    fig.update_layout(
        title=title or f"Top {len(d)} neurons by {df.attrs.get('method', 'activation')} patching effect",
        xaxis=dict(title=dict(text="neuron", standoff=14), type="category", tickangle=-45, automargin=True),
        yaxis=dict(title="effect (0 corrupt, 1 clean)"), showlegend="effect_patched" in d.columns,
    )
    return apply(fig)


@options(title="text")
def deletion_effect(df: pd.DataFrame, *, deleter: str | None = None, title: str | None = None) -> go.Figure:
    """Deleters before and after ablation, from ``interp.deletion_effect``.

    Left: survival of the direction each erases, with it (clean) and without it (ablated), and
    the change its weights predict at the first site. Survival is a ratio to the component
    before the deleter: 1 arrives intact, 0 erased, below 0 reversed (below -1: reversed and
    larger than it was). Right: the change (ablated minus clean) as bars, against the random
    controls of the same kind and layer: grey box, their mean +- 2 std (the control band).
    ``deleter=None`` (default) draws every deleter at its downstream sites in one figure (one
    x category per deleter and site, so a model with few layers still gives a readable plot);
    a name draws that one deleter alone.
    """
    from plotly.subplots import make_subplots

    require_columns(df, ("deleter", "role", "site", "survival_clean", "survival_ablated", "change"),
                    "deletion_effect", "interp.deletion_effect")
    if deleter is not None and not (df["deleter"] == deleter).any():
        raise ValueError(f"df has no rows for deleter={deleter!r}; it has {sorted(df['deleter'].unique())}")
    rows = df if deleter is None else df[df["deleter"] == deleter]
    d = rows[rows["role"] == "deleter"]
    if d.empty:
        raise ValueError("df has no deleter rows; pass the output of interp.deletion_effect")
    many = d["deleter"].nunique() > 1
    cats = [f"{r.deleter} @ {r.site}" if many else str(r.site) for r in d.itertuples()]
    mode = df.attrs.get("mode", "zero")
    fig = make_subplots(1, 2, subplot_titles=("survival of the erased direction", "change when ablated"),
                        horizontal_spacing=0.14)
    lines = "markers" if many else "lines+markers"
    who = "deleter" if many else deleter or str(d["deleter"].iloc[0])
    fig.add_trace(go.Scatter(x=cats, y=d["survival_clean"], mode=lines, name=f"with {who} (clean)",
                             marker=dict(size=11, color=PALETTE[0]), line=dict(color=PALETTE[0])), 1, 1)
    fig.add_trace(go.Scatter(x=cats, y=d["survival_ablated"], mode=lines, name=f"{who} ablated ({mode})",
                             marker=dict(size=11, symbol="square", color=HIGHLIGHT), line=dict(color=HIGHLIGHT)), 1, 1)
    if "predicted" in d.columns and d["predicted"].notna().any():
        keep = d["predicted"].notna().to_numpy()
        fig.add_trace(go.Scatter(x=[c for c, k in zip(cats, keep) if k],
                                 y=(d["survival_clean"] + d["predicted"])[keep], mode="markers",
                                 name="ablated, as its weights predict",
                                 marker=dict(symbol="circle-open", size=19, color="black", line=dict(width=2))), 1, 1)
    fig.add_trace(go.Bar(x=cats, y=d["change"], name="change (ablated - clean)", marker_color=HIGHLIGHT,
                         width=0.35), 1, 2)
    if {"control_change", "control_std"} <= set(d.columns) and d["control_change"].notna().any():
        fig.add_trace(go.Scatter(
            x=cats, y=d["control_change"], mode="markers", name="random controls: mean ± 2 std",
            marker=dict(symbol="line-ew", size=26, color="rgba(90, 90, 90, 0.9)", line=dict(width=2)),
            error_y=dict(type="data", array=2 * d["control_std"].fillna(0), color="rgba(90, 90, 90, 0.55)",
                         thickness=14, width=0),
            hovertemplate="controls %{x}<br>mean change %{y:.3f}<extra></extra>"), 1, 2)
    fig.add_hline(y=0, line=dict(color="#7F7F7F", width=1), row=1, col=1)
    fig.add_hline(y=1, line=dict(color="#7F7F7F", width=1, dash="dot"), row=1, col=1)
    fig.update_xaxes(type="category", title_text="deleter @ site downstream" if many else "site downstream")
    fig.update_yaxes(title_text="survival (1 intact, 0 erased, < 0 reversed)", row=1, col=1)
    fig.update_yaxes(title_text="ablated - clean", zeroline=True, row=1, col=2)
    fig.update_layout(title=title or ("What survives of the direction each deleter erases, with and without it"
                                      if many else f"What survives of the direction {who} erases, with and without it"),
                      height=500, margin=dict(t=90))
    return apply(fig)
