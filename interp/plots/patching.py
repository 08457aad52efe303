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

from interp.plots._frames import require_columns, show_token
from interp.plots.style import DIVERGING, HIGHLIGHT, NULL_BAND, PALETTE, apply

_SOURCE = "interp.activation_patching or interp.attribution_patching"


def _limit(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(max(1.0, np.abs(finite).max())) if finite.size else 1.0


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
    fig.update_layout(
        title=title or f"{method.capitalize()} patching per head ({df.attrs.get('metric', 'metric')})",
        xaxis=dict(title="head", type="category"), yaxis=dict(title="layer", type="category", autorange="reversed"),
        height=max(320, 22 * len(grid) + 140),
    )
    return apply(fig)


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
        title=title or f"Top {len(d)} neurons by patching effect",
        xaxis=dict(title=dict(text="neuron", standoff=14), type="category", tickangle=-45, automargin=True),
        yaxis=dict(title="effect (0 corrupt, 1 clean)"), showlegend="effect_patched" in d.columns,
    )
    return apply(fig)


def deletion_effect(df: pd.DataFrame, *, deleter: str | None = None, title: str | None = None) -> go.Figure:
    """A deleter before and after ablation: survival of its erased direction at each
    downstream site, clean (with it) and ablated (without it), with the random controls'
    ablated survival as a band (clean control survival shifted by the controls' mean
    change ± one std). ``df``: ``interp.deletion_effect``; ``deleter`` picks one (default the
    first)."""
    require_columns(df, ("deleter", "role", "site", "survival_clean", "survival_ablated"), "deletion_effect",
                    "interp.deletion_effect")
    deleter = deleter or str(df["deleter"].iloc[0])
    d = df[(df["deleter"] == deleter) & (df["role"] == "deleter")]
    if d.empty:
        raise ValueError(f"df has no rows for deleter={deleter!r}; it has {sorted(df['deleter'].unique())}")
    fig = go.Figure()
    sites = list(d["site"])
    if "control_change" in d.columns and d["control_change"].notna().any():
        lo = d["survival_clean"] + d["control_change"] - d["control_std"].fillna(0)
        hi = d["survival_clean"] + d["control_change"] + d["control_std"].fillna(0)
        fig.add_trace(go.Scatter(x=sites + sites[::-1], y=list(hi) + list(lo[::-1]), fill="toself",
                                 fillcolor=NULL_BAND, line=dict(width=0), hoverinfo="skip",
                                 name="random control ablated (mean ± std of its change)"))
    fig.add_trace(go.Scatter(x=sites, y=d["survival_clean"], mode="lines+markers", name=f"with {deleter} (clean)",
                             line=dict(color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=sites, y=d["survival_ablated"], mode="lines+markers",
                             name=f"{deleter} ablated ({df.attrs.get('mode', 'zero')})", line=dict(color=HIGHLIGHT)))
    if "predicted" in d.columns and d["predicted"].notna().any():
        p = d[d["predicted"].notna()]
        fig.add_trace(go.Scatter(x=p["site"], y=p["survival_clean"] + p["predicted"], mode="markers",
                                 name="predicted by its weights", marker=dict(symbol="x", size=11, color="black")))
    fig.update_layout(
        title=title or f"What survives of the direction {deleter} erases",
        xaxis=dict(title="site downstream", type="category"),
        yaxis=dict(title="survival (1 intact, 0 erased)"),
        legend=dict(orientation="h", y=-0.25),
    )
    return apply(fig)
