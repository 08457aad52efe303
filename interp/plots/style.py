"""The look shared by every interp figure: a plotly template and colour constants.

Importing this module registers the template ``"interp"`` with ``plotly.io.templates``.
Plot functions pass ``template=TEMPLATE`` to ``fig.update_layout`` (or call ``apply``),
and colour traces by component kind with ``KIND_COLOURS``.

Examples:
    >>> import plotly.graph_objects as go
    >>> from interp.plots.style import TEMPLATE, apply
    >>> fig = apply(go.Figure(go.Bar(x=["L0H1"], y=[1.0])))
    >>> fig.layout.template.layout.font.family.startswith("Inter")
    True
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "interp"

#: Qualitative palette (colour-blind-safe, Okabe-Ito order, without yellow on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000", "#999999")

#: One colour per component kind, used for bars and legends across analyses.
KIND_COLOURS = {
    "embed": "#7F7F7F",
    "pos_embed": "#BDBDBD",
    "head": "#0072B2",
    "attn": "#0072B2",
    "attn_bias": "#56B4E9",
    "mlp": "#D55E00",
    "neuron": "#D55E00",
    "mlp_bias": "#E69F00",
    "bias": "#E69F00",
}

#: Diverging scale centred on zero (negative blue, positive red): attributions, cosines.
DIVERGING = "RdBu_r"
#: Sequential scale for non-negative quantities: norms, probabilities, accuracies.
SEQUENTIAL = "Viridis"
#: Highlight colour for flagged items (deleting neurons, top writers) and the null band fill.
HIGHLIGHT = "#D55E00"
NULL_BAND = "rgba(120, 120, 120, 0.18)"

_FONT = "Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def _template() -> go.layout.Template:
    # automargin: the margins grow to hold the tick labels and the axis title, so no label is
    # clipped by the figure's edge and the title is set off from the ticks (``standoff`` only
    # applies with automargin).
    axis = dict(
        showgrid=True, gridcolor="#ECECEC", zeroline=False, linecolor="#BBBBBB", ticks="outside",
        tickcolor="#BBBBBB", title=dict(standoff=10), automargin=True,
    )
    return go.layout.Template(
        # colour-bar titles beside the bar, not on its top tick label
        data=dict(heatmap=[go.Heatmap(colorbar=dict(title=dict(side="right"), thickness=14))]),
        layout=dict(
            font=dict(family=_FONT, size=13, color="#222222"),
            title=dict(x=0.0, xanchor="left", y=1.0, yanchor="top", yref="container", pad=dict(t=12, l=4),
                       automargin=True, font=dict(size=16),
                       subtitle=dict(font=dict(size=12, color="#59636E"))),
            colorway=list(PALETTE),
            paper_bgcolor="white",
            plot_bgcolor="white",
            xaxis=axis,
            yaxis=axis,
            margin=dict(l=64, r=24, t=64, b=56),
            hoverlabel=dict(font=dict(family=_FONT, size=12)),
            legend=dict(bgcolor="rgba(255,255,255,0.8)"),
            coloraxis=dict(colorbar=dict(thickness=12, outlinewidth=0, title=dict(side="right"))),
        )
    )


pio.templates[TEMPLATE] = _template()


#: Height of one layer's row in a layer x head heatmap (px): every layer keeps its tick label.
LAYER_ROW_PX = 20


def grid_height(n_layers: int) -> int:
    """Figure height for a layer x head heatmap: 440 px, or more so each layer gets ``LAYER_ROW_PX``."""
    return max(440, 160 + LAYER_ROW_PX * n_layers)


#: Width (px) of the report's column in a 1400 px window. A figure's natural width (set from its
#: data) is the widest the report draws it; cell text is sized so that it fits at this width too.
COLUMN_PX = 1040
#: Side of a heatmap cell (px) between these bounds: a 2-layer, 4-head model gets a small figure
#: of readable cells, not a 2 x 4 grid stretched over the page; a deep model gets rows of at
#: least ``LAYER_ROW_PX``.
GRID_CELL_PX = (LAYER_ROW_PX, 56)
#: The smallest plot area of a heatmap (px): room for its colour bar's ticks.
GRID_MIN_PLOT_PX = 150


def text_px(text: str, font_px: float = 16) -> int:
    """The drawn width (px) of ``text`` at ``font_px`` (the template's font: 0.55 em a character
    on average), for sizing a figure so its title fits."""
    return int(0.55 * font_px * len(text)) + 1


def grid_size(n_rows: int, n_cols: int, *, panels: int = 1, extra_w: int = 200, extra_h: int = 150,
              gap: int = 40, title: str = "") -> tuple[int, int]:
    """``(width, height)`` of a figure of ``panels`` heatmaps side by side, each ``n_rows`` x
    ``n_cols`` cells, from the data: cells between ``GRID_CELL_PX``, the whole within
    ``COLUMN_PX`` where the cells allow, and wide enough for ``title`` and the tool bar beside
    it. ``extra_w`` / ``extra_h``: margins, titles, colour bar."""
    lo, hi = GRID_CELL_PX
    cell_w = max(lo, min(hi, (COLUMN_PX - extra_w - gap * (panels - 1)) / max(1, panels * n_cols)))
    cell_h = max(lo, min(hi, 700 / max(1, n_rows)))
    plot_w = max(GRID_MIN_PLOT_PX, n_cols * cell_w)
    width = int(max(panels * plot_w + gap * (panels - 1) + extra_w, text_px(title) + 140))
    height = int(max(GRID_MIN_PLOT_PX, n_rows * cell_h) + extra_h)
    return width, height


def apply(fig: go.Figure) -> go.Figure:
    """Give ``fig`` the interp template (in place) and return it."""
    fig.update_layout(template=TEMPLATE)
    return fig
