"""Figures for memory management on data: the screen against the verdict, attention sinks,
entropy neurons, prediction and suppression neurons. One style: verdict colours below, the
null or cut drawn as a grey band or dashed line.

>>> import interp
>>> model = interp.load()
>>> fig = neuron_verdicts(interp.neuron_verdicts(model, ["def f(x):\\n    return x\\n"] * 4))
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp._checks import options
from interp.plots._frames import require_columns
from interp.plots.style import HIGHLIGHT, NULL_BAND, PALETTE, apply

#: One colour per verdict, in every memory figure.
VERDICT_COLOURS = {"deleting": HIGHLIGHT, "partial": "#E69F00", "coupled": "#CC79A7", "amplifying": PALETTE[0],
                   "none": "#B0B0B0", "unmeasured": "#B0B0B0", "entropy": HIGHLIGHT, "prediction": PALETTE[2],
                   "suppression": HIGHLIGHT}


def _thin(df: pd.DataFrame, keep: pd.Series, max_points: int, seed: int = 0) -> pd.DataFrame:
    """All rows where ``keep``, and at most ``max_points`` of the others (seeded)."""
    rest = df[~keep]
    if len(rest) > max_points:
        rest = rest.sample(max_points, random_state=seed)
    return pd.concat([df[keep], rest])


@options(max_points="count", title="text")
def neuron_verdicts(df: pd.DataFrame, *, max_points: int = 4000, title: str | None = None) -> go.Figure:
    """The screen against the verdict: each neuron's in/out cosine (x) and the median share of
    its input component its write removes on firing tokens (y), coloured by verdict. The dashed
    line is the ``deleting`` cut; neurons with verdict ``none`` beyond ``max_points`` are
    thinned (seeded). ``df``: ``interp.neuron_verdicts``."""
    require_columns(df, ("label", "cosine", "removed_median", "verdict"), "neuron_verdicts", "interp.neuron_verdicts")
    m = df.dropna(subset=["removed_median"])
    d = _thin(m, m["verdict"] != "none", max_points)
    fig = go.Figure()
    for v in ("none", "amplifying", "coupled", "partial", "deleting"):
        g = d[d["verdict"] == v]
        if g.empty:
            continue
        fig.add_trace(go.Scattergl(
            x=g["cosine"], y=g["removed_median"].clip(-2, 3), mode="markers", name=f"{v} ({(df['verdict'] == v).sum():,})",
            marker=dict(size=5 if v == "none" else 7, color=VERDICT_COLOURS[v], opacity=0.5 if v == "none" else 0.85),
            text=g["label"], customdata=np.stack([g["removed_q10"], g["removed_q90"]], -1) if "removed_q10" in g else None,
            hovertemplate="%{text}<br>cosine %{x:.3f}<br>median removal %{y:.2f}"
                          + ("<br>10-90%%: %{customdata[0]:.2f} to %{customdata[1]:.2f}" if "removed_q10" in g else "")
                          + "<extra></extra>",
        ))
    cut = float(df.attrs.get("min_removed", 0.3))
    fig.add_hline(y=cut, line=dict(color=HIGHLIGHT, dash="dash", width=1),
                  annotation_text=f"deleting: median removal ≥ {cut:.0%}", annotation_position="top left")
    fig.add_hline(y=0, line=dict(color="#7F7F7F", width=1))
    fig.update_layout(
        title=title or "Screen against verdict: in/out cosine and measured removal",
        xaxis=dict(title="cos(W_in[:, n], W_out[n])  (weights-only screen)"),
        yaxis=dict(title="median removal on firing tokens<br>(1 erased, 0 none, <0 amplified)"),
        legend=dict(title="verdict (count)"),
    )
    return apply(fig)


@options(title="text")
def attention_sinks(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Left: each sink group's stream norm over the median token's, per layer (log scale; the
    dashed line is the massive cut). Right: the attention that layer's heads put on it (mean
    over heads and non-sink queries) and the most attending head's. ``df``: ``interp.attention_sinks``."""
    require_columns(df, ("layer", "sink", "norm_ratio", "attention"), "attention_sinks", "interp.attention_sinks")
    fig = make_subplots(1, 2, subplot_titles=("stream norm / median token's", "attention it draws"),
                        horizontal_spacing=0.12)
    groups = list(dict.fromkeys(df["sink"]))[:8]
    for i, key in enumerate(groups):
        g = df[df["sink"] == key].sort_values("layer")
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=g["layer"], y=g["norm_ratio"], mode="lines+markers", name=key if key == "position 0" else f"token {key}",
                                 legendgroup=key, marker=dict(color=colour), line=dict(color=colour),
                                 hovertemplate="layer %{x}<br>norm ratio %{y:.3g}<extra></extra>"), 1, 1)
        a = g.dropna(subset=["attention"])
        fig.add_trace(go.Scatter(x=a["layer"], y=a["attention"], mode="lines+markers", name=f"{key}: mean", showlegend=False,
                                 legendgroup=key, marker=dict(color=colour), line=dict(color=colour),
                                 hovertemplate="layer %{x}<br>mean attention %{y:.2f}<extra></extra>"), 1, 2)
        if "top_head_attention" in a.columns:
            fig.add_trace(go.Scatter(x=a["layer"], y=a["top_head_attention"], mode="markers", showlegend=False,
                                     legendgroup=key, marker=dict(color=colour, symbol="triangle-up", size=9),
                                     text=a["top_head"], hovertemplate="%{text}: %{y:.2f}<extra></extra>"), 1, 2)
    cut = float(df.attrs.get("sink_ratio", 10.0))
    fig.add_hline(y=cut, line=dict(color=HIGHLIGHT, dash="dash", width=1), row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, title_text="norm ratio (log)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], title_text="attention (line: mean; ▲ top head)", row=1, col=2)
    fig.update_xaxes(title_text="layer (stream entering it)", dtick=max(1, int(df["layer"].max()) // 10))
    fig.update_layout(title=title or f"Attention sinks: tokens whose stream norm is ≥ {cut:g}× the median's",
                      height=460, legend=dict(title="sink"))
    return apply(fig)


@options(title="text")
def entropy_neurons(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Left: every screened neuron's output norm against rho, its share in the unembedding's
    bottom singular directions (grey: the random-direction expectation k / d_model). Right: the
    measured neurons' total against direct effect on the loss (on the diagonal: no effect through
    the final norm). ``df``: ``interp.entropy_neurons``."""
    require_columns(df, ("label", "norm", "rho", "verdict"), "entropy_neurons", "interp.entropy_neurons")
    fig = make_subplots(1, 2, subplot_titles=("screen: output norm and null-space share",
                                              "data: total and direct effect on the loss"), horizontal_spacing=0.12)
    measured = {"unmeasured": "#B0B0B0", "none": PALETTE[0], "entropy": HIGHLIGHT}  # measured apart from the rest
    for v in ("unmeasured", "none", "entropy"):
        g = df[df["verdict"] == v]
        if g.empty:
            continue
        fig.add_trace(go.Scattergl(x=g["norm"], y=g["rho"], mode="markers",
                                   name=f"{'measured: ' if v != 'unmeasured' else ''}{v} ({len(g):,})",
                                   marker=dict(size=5 if v == "unmeasured" else 9, color=measured[v],
                                               opacity=0.5 if v == "unmeasured" else 0.9),
                                   text=g["label"], hovertemplate="%{text}<br>|w_out| %{x:.3g}<br>rho %{y:.3g}<extra></extra>"),
                      1, 1)
    exp = df.attrs.get("expected_rho")
    if exp:
        fig.add_hline(y=float(exp), line=dict(color="#7F7F7F", dash="dot", width=1), row=1, col=1)
    m = df.dropna(subset=["total_effect"])
    if len(m):
        for role, sym in (("candidate", "circle"), ("control", "x")):
            g = m[m["role"] == role]
            fig.add_trace(go.Scatter(x=g["direct_effect"], y=g["total_effect"], mode="markers", name=role,
                                     marker=dict(symbol=sym, size=10, color=[measured[v] for v in g["verdict"]]),
                                     text=g["label"], hovertemplate="%{text}<br>direct %{x:.3g}<br>total %{y:.3g}<extra></extra>"),
                          1, 2)
        top = float(max(m["total_effect"].max(), m["direct_effect"].max(), 1e-9))
        fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="total = direct",
                                 line=dict(color="#7F7F7F", dash="dash", width=1)), 1, 2)
    fig.update_xaxes(title_text="|w_out|", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, title_text=f"rho (bottom {df.attrs.get('k', 'k')} directions of W_U, log)", row=1, col=1)
    fig.update_xaxes(title_text="direct effect (final-norm scale frozen), nats", row=1, col=2)
    fig.update_yaxes(title_text="total effect (scale recomputed), nats", row=1, col=2)
    fig.update_layout(title=title or "Entropy neurons: writing into the unembedding's null space", height=460)
    return apply(fig)


@options(max_points="count", title="text")
def prediction_neurons(df: pd.DataFrame, *, max_points: int = 4000, title: str | None = None) -> go.Figure:
    """Each neuron's vocabulary skew (x) and kurtosis (y, log) of ``W_U^T w_out``, coloured by
    kind; the grey band is the null of random directions read through the same ``W_U`` (its
    largest |skew| and kurtosis). ``df``: ``interp.prediction_neurons``."""
    require_columns(df, ("label", "vocab_skew", "vocab_kurtosis", "kind"), "prediction_neurons", "interp.prediction_neurons")
    d = _thin(df, df["kind"] != "none", max_points)
    fig = go.Figure()
    ks, kk = df.attrs.get("null_skew_max"), df.attrs.get("null_kurtosis_max")
    if ks is not None and kk is not None:
        fig.add_shape(type="rect", x0=-float(ks), x1=float(ks), y0=max(1.0, float(df["vocab_kurtosis"].min()) * 0.9),
                      y1=float(kk), fillcolor=NULL_BAND, line=dict(width=0), layer="below")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="null: random directions",
                                 marker=dict(symbol="square", size=12, color=NULL_BAND)))
    for k in ("none", "prediction", "suppression"):
        g = d[d["kind"] == k]
        if g.empty:
            continue
        fig.add_trace(go.Scattergl(
            x=g["vocab_skew"], y=g["vocab_kurtosis"], mode="markers", name=f"{k} ({(df['kind'] == k).sum():,})",
            marker=dict(size=5 if k == "none" else 8, color=VERDICT_COLOURS[k], opacity=0.5 if k == "none" else 0.9),
            text=[f"{r.label}: {r.top_token} {r.top_value:+.2f}" for r in g.itertuples()] if "top_token" in g else g["label"],
            hovertemplate="%{text}<br>skew %{x:.2f}<br>kurtosis %{y:.1f}<extra></extra>",
        ))
    fig.update_layout(title=title or "Prediction and suppression neurons: the shape of W_U^T w_out",
                      xaxis=dict(title="skew over the vocabulary (+ raises a few tokens, − lowers them)"),
                      yaxis=dict(title="kurtosis (log; 3 for a Gaussian)", type="log", dtick=1), legend=dict(title="kind (count)"))
    return apply(fig)


__all__ = ["VERDICT_COLOURS", "attention_sinks", "entropy_neurons", "neuron_verdicts", "prediction_neurons"]
