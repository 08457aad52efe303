"""The report's figures fit the data they are drawn for: sizes from the data (a 2-layer model's
heatmaps are small figures, a deep model's grow), norms never stacked, cell text clipped to its
cell, no markers on the probe figure's baseline band; and the report draws each figure at its
natural size, with no blank band under it."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

import interp
from interp.plots import decomposition as dplots
from interp.plots._frames import CHAR_EM, cell_chars
from interp.plots.stats import TOKEN_FONT_PX
from interp.plots.style import COLUMN_PX, LAYER_ROW_PX
from interp.report.document import Section
from interp.report.html import Page, render


def _grid(n_layers: int, n_heads: int) -> pd.DataFrame:
    rows = [dict(component=f"L{ly}H{h}", kind="head", layer=ly, head=h, pos=p, batch=0, attribution=ly - h + p * 0.1)
            for ly in range(n_layers) for h in range(n_heads) for p in range(2)]
    return pd.DataFrame(rows)


def test_heatmaps_are_sized_from_their_grid():
    small, deep = dplots.head_attribution(_grid(2, 4)), dplots.head_attribution(_grid(30, 9))
    # a 2 x 4 grid is a small figure of readable cells, not a page-wide band
    assert small.layout.width < 700 and small.layout.height < 340  # as wide as its title needs, no wider
    assert deep.layout.height >= 30 * LAYER_ROW_PX and deep.layout.width <= COLUMN_PX
    patch = pd.DataFrame([dict(kind="head", layer=ly, head=h, effect=0.1, pos=pd.NA) for ly in range(2) for h in range(4)])
    assert interp.plots.patching_heads(patch).layout.width < 700


def test_write_norms_are_grouped_means_never_stacked(default_model):
    w = default_model.run_with_writes("def add(a, b):\n    return a + b")
    df = interp.decompose(w, by="head")
    fig = interp.plots.write_norms(df)
    assert fig.layout.barmode != "stack"
    heads = next(t for t in fig.data if t.name == "head")
    want = df[df["kind"] == "head"].groupby("layer")["norm"].mean()  # the mean of one head's norm
    got = dict(zip(heads.x, heads.y))
    for layer, value in want.items():
        assert got[f"L{int(layer)}"] == pytest.approx(value, rel=1e-6)
    # in each column the bars of the kinds it has sit side by side, without overlap or gap
    for x in heads.x:
        spans = sorted((t.offset[i], t.offset[i] + t.width[i]) for t in fig.data for i, xx in enumerate(t.x)
                       if xx == x and np.isfinite(t.y[i]))
        assert spans[0][0] == pytest.approx(-0.4) and spans[-1][1] == pytest.approx(0.4)
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:]))


def test_logit_lens_width_follows_its_streams():
    def lens(n_streams: int) -> pd.DataFrame:
        return pd.DataFrame([dict(layer=ly, where="pre", batch=0, pos=p, token=f"t{p}", top_token="abc", top_prob=0.5,
                                  next_token="x", next_prob=0.2, kl_to_final=0.1)
                             for ly in range(n_streams) for p in range(5)])
    narrow, wide = interp.plots.logit_lens(lens(3)), interp.plots.logit_lens(lens(12))
    assert narrow.layout.width < 620 < wide.layout.width


def test_top_example_cells_hold_their_text():
    tokens = ["a", " Implementation", "\n        ", "x", "<0xE2><0x80>"] * 3
    ex = pd.DataFrame([dict(label="L0N1", layer=0, neuron=1, rank=1, activation=2.0, doc="d.py", pos=7,
                            tokens=tokens, acts=list(np.linspace(-1, 2, len(tokens))), center=7)])
    fig = interp.plots.top_examples(ex)
    n = len(tokens)
    cell_px = min(fig.layout.width, COLUMN_PX) - (fig.layout.width - 70 * n)  # the plot area at the narrower width
    limit = cell_chars(cell_px / n, TOKEN_FONT_PX)
    texts = [html.unescape(t) for row in fig.data[0].text for t in row if t]  # drawn unescaped
    assert max(len(t) for t in texts) <= limit and any(t.endswith("\u2026") for t in texts)
    assert CHAR_EM * TOKEN_FONT_PX * limit + 8 <= cell_px / n


def test_probe_band_has_no_markers_and_the_control_is_explained():
    df = pd.DataFrame([dict(label="line_start_distance", layer=ly, accuracy=0.2, control_accuracy=0.9, baseline=0.07,
                            lookup_accuracy=0.17, site=f"L{ly}") for ly in range(3)])
    fig = interp.plots.probe_accuracy(df)
    band = next(t for t in fig.data if t.name == "majority baseline")
    assert band.mode == "lines"
    from interp.report.stages import _probe_caption

    assert "not a ceiling" in _probe_caption(df) and "line start distance" in _probe_caption(df)
    assert "control lies above" not in _probe_caption(df.assign(control_accuracy=0.1))


def test_the_report_draws_figures_at_their_natural_size():
    small = dplots.head_attribution(_grid(2, 4))
    wide = interp.plots.probe_accuracy(pd.DataFrame([dict(layer=ly, accuracy=0.5, control_accuracy=0.4, baseline=0.1)
                                                     for ly in range(3)]))
    section = Section("Figures")
    section.attempt("small", lambda: small)
    section.attempt("wide", lambda: wide)
    page = render([section], Page("sizes"))
    frames = re.findall(r'<div class="figure"( style="max-width: (\d+)px")?><div class="plot"[^>]*'
                        r'style="height: (\d+)px"', page)
    assert [(w, int(h)) for _, w, h in frames] == [(str(small.layout.width + 10), small.layout.height),
                                                   ("", wide.layout.height)]
    spec = json.loads(re.search(r'id="fig-1-spec">(.*?)</script>', page).group(1).replace("<\\/", "</"))
    assert "width" not in spec["layout"]  # responsive within its frame
    assert "min-height" not in re.search(r"\.plot \{[^}]*\}", page).group(0)
