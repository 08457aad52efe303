"""Figures for subspace probes: probe accuracy per layer, the writers of a subspace, and
principal angles between subspaces.

Every function takes the DataFrame of the matching analysis and returns a
``plotly.graph_objects.Figure``.

>>> fig = probe_accuracy(interp.probe_layers(model, texts, label="previous_token"))
>>> fig = subspace_writers(interp.writers(sub, w))
>>> fig = subspace_angles(interp.probes.overlap_matrix({"prev": a, "cur": b}))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp._checks import options
from interp.plots._frames import require_columns
from interp.plots.style import NULL_BAND, PALETTE, SEQUENTIAL, apply, grid_size


def _need(df: pd.DataFrame, cols: Sequence[str], fn: str, source: str) -> None:
    require_columns(df, cols, fn, source)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


@options(title="text")
def probe_accuracy(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Held-out probe accuracy per layer, from ``interp.probe_layers``: one panel per label
    (several ``probe_layers`` frames can be concatenated), on a shared accuracy axis.

    Each panel: the probe's held-out accuracy (solid), the accuracy of predicting the label
    from the current token alone (``lookup_accuracy``, dotted; a probe above it reads more
    than the current token), the control task (dashed, Hewitt & Liang: random labels keyed
    on the current token) and the majority-class baseline (grey band). Hover names the site
    and gives every number, selectivity included.

    The control is not a ceiling. Its labels are a function of the current token, so it is as
    easy as the current token is decodable: near 1 at the embedding, where the stream is the
    current token. A control above the probe means the probed label is harder to read than the
    token's identity (selectivity below zero), not that the probe failed.
    """
    _need(df, ["layer", "accuracy", "control_accuracy", "baseline"], "probe_accuracy", "interp.probe_layers")
    df = df.copy()
    if "label" not in df.columns:
        df["label"] = "probe"
    if "site" not in df.columns:
        df["site"] = [f"L{int(ly)}" for ly in df["layer"]]
    labels = list(dict.fromkeys(df["label"].astype(str)))
    fig = make_subplots(rows=1, cols=len(labels), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[lab.replace("_", " ") for lab in labels])
    colours = dict(accuracy=PALETTE[0], lookup=PALETTE[1], control=PALETTE[7])
    for i, label in enumerate(labels):
        d = df[df["label"].astype(str) == label].sort_values("layer")
        x = d["layer"].astype(int).tolist()
        first, col = i == 0, i + 1
        fig.add_trace(go.Scatter(  # a band, drawn as lines: no markers on its corners at 0 and the baseline
            x=x + x[::-1], y=[0.0] * len(x) + d["baseline"].tolist()[::-1], fill="toself", fillcolor=NULL_BAND,
            mode="lines", line=dict(width=0), hoverinfo="skip", name="majority baseline", legendgroup="baseline",
            showlegend=first,
        ), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=x, y=d["control_accuracy"], mode="lines+markers", line=dict(color=colours["control"], dash="dash"),
            marker=dict(size=5), name="control task (random label per current token; not a ceiling)",
            legendgroup="control",
            showlegend=first, customdata=d[["site"]].to_numpy(),
            hovertemplate="%{customdata[0]}<br>control accuracy %{y:.3f}<extra>" + label + "</extra>",
        ), row=1, col=col)
        if "lookup_accuracy" in d.columns and d["lookup_accuracy"].notna().any():
            fig.add_trace(go.Scatter(
                x=x, y=d["lookup_accuracy"], mode="lines", line=dict(color=colours["lookup"], dash="dot", width=2),
                name="current token alone (lookup table)", legendgroup="lookup", showlegend=first,
                hovertemplate="from the current token alone %{y:.3f}<extra>" + label + "</extra>",
            ), row=1, col=col)
        train = d["train_accuracy"] if "train_accuracy" in d else d["accuracy"]
        sel = d["selectivity"] if "selectivity" in d else d["accuracy"] - d["control_accuracy"]
        custom = np.stack([d["site"].to_numpy(), train.to_numpy(), d["control_accuracy"].to_numpy(),
                           d["baseline"].to_numpy(), sel.to_numpy()], axis=1)
        fig.add_trace(go.Scatter(
            x=x, y=d["accuracy"], mode="lines+markers", line=dict(color=colours["accuracy"], width=2.5),
            name="held-out accuracy", legendgroup="accuracy", showlegend=first, customdata=custom,
            meta=label,
            hovertemplate=(
                "%{customdata[0]}<br>accuracy %{y:.3f}<br>train %{customdata[1]:.3f}"
                "<br>control %{customdata[2]:.3f}<br>baseline %{customdata[3]:.3f}"
                "<br>selectivity %{customdata[4]:.3f}<extra>" + label + "</extra>"
            ),
        ), row=1, col=col)
        n_layers = int(d["layer"].max())
        fig.update_xaxes(tickmode="linear", dtick=max(1, round(n_layers / 8)), range=[-0.3, n_layers + 0.3],
                         row=1, col=col)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_yaxes(title_text="held-out accuracy", row=1, col=1)
    fig.update_xaxes(title_text="layer (stream entering it)", row=1, col=(len(labels) + 1) // 2)
    fig.update_layout(
        title=title or "Linear probe accuracy by layer",
        legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"), height=460,
    )
    return apply(fig)


@options(title="text")
def subspace_writers(df: pd.DataFrame, *, value: str = "norm", title: str | None = None) -> go.Figure:
    """Heatmap layer × head of how much each head writes into a subspace, from ``interp.writers``.

    ``value``: a column of the writers frame (``norm``, ``share``, ``fraction`` or
    ``signed_share``). Hover names the head (``L1H3``) and gives norm, share and fraction.
    The other components (embeddings, MLPs, biases) are listed in the subtitle's top five.
    """
    _need(df, ["component", "kind", "layer", "head", value], "subspace_writers", "interp.writers")
    heads = df[df["kind"] == "head"]
    if heads.empty:
        raise ValueError("df has no head rows; pass the DataFrame from interp.writers")
    L, H = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
    z = np.full((L, H), np.nan)
    text = np.full((L, H), "", dtype=object)
    for r in heads.itertuples(index=False):
        z[int(r.layer), int(r.head)] = getattr(r, value)
        text[int(r.layer), int(r.head)] = (
            f"{r.component}<br>norm {r.norm:.3g}<br>share {getattr(r, 'share', float('nan')):.3f}"
            f"<br>fraction {getattr(r, 'fraction', float('nan')):.3f}"
        )
    top = df[df["kind"] != "neuron"].nlargest(5, value)
    sub = ", ".join(f"{c} {v:.3g}" for c, v in zip(top["component"], top[value]))
    signed = value == "signed_share"
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"H{h}" for h in range(H)], y=[f"L{ly}" for ly in range(L)], text=text,
        hovertemplate="%{text}<extra></extra>", colorscale="RdBu_r" if signed else SEQUENTIAL,
        zmid=0 if signed else None, colorbar=dict(title=value),
    ))
    width, height = grid_size(L, H, extra_h=170, title=title or "Heads writing into the subspace")
    fig.update_layout(
        title=dict(text=title or "Heads writing into the subspace", subtitle=dict(text=f"top writers: {sub}")),
        xaxis=dict(title="head", showgrid=False), yaxis=dict(title="layer", autorange="reversed", showgrid=False),
        width=max(width, 120 + 7 * len(f"top writers: {sub}")), height=height,  # the subtitle fits
    )
    return apply(fig)


@options(title="text")
def subspace_angles(df: pd.DataFrame, *, value: str = "min_angle", title: str | None = None) -> go.Figure:
    """Matrix of principal angles between several subspaces, from
    ``interp.probes.overlap_matrix``.

    ``value``: ``"min_angle"`` (degrees, the smallest principal angle; default) or
    ``"mean_cos2"`` (mean squared cosine; the chance level is in the hover). Hover names
    both subspaces and their dimensions.
    """
    _need(df, ["a", "b", value, "k_a", "k_b"], "subspace_angles", "interp.probes.overlap_matrix")
    names = list(dict.fromkeys(df["a"].tolist() + df["b"].tolist()))
    idx = {n: i for i, n in enumerate(names)}
    z = np.full((len(names), len(names)), np.nan)
    text = np.full(z.shape, "", dtype=object)
    for r in df.itertuples(index=False):
        i, j = idx[r.a], idx[r.b]
        z[i, j] = getattr(r, value)
        chance = f"<br>chance mean cos² {r.random_cos2:.3f}" if hasattr(r, "random_cos2") else ""
        text[i, j] = (
            f"{r.a} (k={r.k_a}) vs {r.b} (k={r.k_b})<br>smallest angle "
            f"{getattr(r, 'min_angle', float('nan')):.1f}°<br>mean cos² {getattr(r, 'mean_cos2', float('nan')):.3f}"
            + chance
        )
    angle = value == "min_angle"
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, text=text, hovertemplate="%{text}<extra></extra>",
        colorscale=SEQUENTIAL + ("_r" if angle else ""), zmin=0, zmax=90 if angle else 1,
        colorbar=dict(title="degrees" if angle else "mean cos²"),
    ))
    label_px = 8 * max(len(str(n)) for n in names)  # the subspace names label both axes
    title = title or ("Smallest principal angle between subspaces" if angle else "Overlap between subspaces")
    width, height = grid_size(len(names), len(names), extra_w=200 + label_px, extra_h=150 + label_px, title=title)
    fig.update_layout(
        title=title,
        xaxis=dict(title="subspace", showgrid=False), yaxis=dict(title="subspace", autorange="reversed", showgrid=False),
        width=width, height=height,
    )
    return apply(fig)
