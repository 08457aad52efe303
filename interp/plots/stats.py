"""A neuron's top activating examples as text, each token shaded by the neuron's activation.

>>> import interp
>>> stats = interp.neuron_stats(interp.load(), max_tokens=5_000, progress=False)
>>> fig = top_examples(interp.top_examples(stats, ["L1N5"]))
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp._checks import options
from interp.plots._frames import cell_chars, clip_text, require_columns, show_token
from interp.plots.style import COLUMN_PX, apply

_SOURCE = "interp.top_examples(interp.neuron_stats(...), neurons)"
#: Cell width (px) of one token at the figure's natural width, and the cell text's size.
TOKEN_CELL_PX = 70
TOKEN_FONT_PX = 11
#: Room beside the cells (px): the row labels (rank, activation, document) and the colour bar.
LABELS_PX = 270
_COLUMNS = ("label", "rank", "activation", "doc", "pos", "tokens", "acts", "center")


def _short(doc: str, width: int = 28) -> str:
    return doc if len(doc) <= width else "…" + doc[-(width - 1):]


@options(max_examples="count", title="text")
def top_examples(df: pd.DataFrame, *, label: str | None = None, max_examples: int = 20,
                 title: str | None = None) -> go.Figure:
    """One row per example (best first), one cell per token of its context window, shaded by
    the neuron's activation on that token (white at zero, red positive, blue negative; the
    example token is boxed). Hover: the token, its activation, the document and position.

    ``df``: ``interp.top_examples(stats, neurons)``; ``label``: the neuron to draw (default:
    the first in ``df``).
    """
    require_columns(df, _COLUMNS, "top_examples", _SOURCE)
    if label is None:
        label = str(df["label"].iloc[0])
    d = df[df["label"] == label].sort_values("rank").head(max_examples)
    if d.empty:
        raise ValueError(f"label={label!r} has no examples in df (labels: {sorted(df['label'].unique())[:5]}...)")
    width = int(max(len(t) - c for t, c in zip(d["tokens"], d["center"])) + d["center"].max())
    left = int(d["center"].max())
    # each token's text fits its cell also where the report's column narrows the figure
    cell_px = min(TOKEN_CELL_PX, (COLUMN_PX - LABELS_PX) / width)
    chars = cell_chars(cell_px, TOKEN_FONT_PX)
    z = np.full((len(d), width), np.nan)
    text = np.full((len(d), width), "", dtype=object)
    hover = np.full((len(d), width), "", dtype=object)
    for i, r in enumerate(d.itertuples()):
        off = left - int(r.center)
        for j, (tok, act) in enumerate(zip(r.tokens, r.acts)):
            z[i, off + j] = act
            text[i, off + j] = html.escape(clip_text(show_token(tok), chars), quote=False)
            hover[i, off + j] = (f"{html.escape(repr(tok), quote=False)}<br>activation {act:.3f}<br>"
                                 f"{html.escape(str(r.doc), quote=False)}, "
                                 f"position {r.pos + j - int(r.center)}")
    bound = float(np.nanmax(np.abs(z))) or 1.0
    ylabels = [f"#{r.rank}  {r.activation:.2f}  {_short(str(r.doc))}:{r.pos}" for r in d.itertuples()]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(-left, width - left)), y=ylabels, text=text, texttemplate="%{text}",
        textfont=dict(size=TOKEN_FONT_PX, family="Menlo, Consolas, monospace"), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound,
        colorbar=dict(title="activation"), xgap=1, ygap=2,
    ))
    for i in range(len(d)):
        fig.add_shape(type="rect", x0=-0.5, x1=0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="#222222", width=1.5))
    fig.update_yaxes(autorange="reversed", title=None, showgrid=False)
    fig.update_xaxes(title="tokens before (−) and after (+) the example", showgrid=False, zeroline=False)
    fig.update_layout(
        title=title or f"{label}: top {len(d)} activating examples",
        height=150 + 26 * len(d), width=int(TOKEN_CELL_PX * width + LABELS_PX),
    )
    return apply(fig)
