"""Head figures: a pattern (one head and a grid) with every token labelled and hover text,
and the composition-edge graph."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

import interp
from interp.plots import attention_pattern, composition_edges

CODE = "def add(a, b):\n    return a + b\n"


def test_one_head_pattern(default_model):
    df = interp.pattern_frame(default_model, CODE, layers=[0], heads=[2])
    fig = attention_pattern(df)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    n = len(df.attrs["tokens"])
    hm = fig.data[0]
    assert len(hm.x) == len(hm.y) == n and hm.z[3][2] == pytest.approx(
        df.query("query_pos == 3 and key_pos == 2")["weight"].item())
    assert "query %{y}" in hm.hovertemplate and "key %{x}" in hm.hovertemplate and "weight" in hm.hovertemplate
    assert list(fig.layout.xaxis.ticktext) == list(hm.x) and "↵" in "".join(hm.x)  # whitespace shown
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1


def test_grid_at_200_tokens_labels_every_token(default_model):
    text = "x = [i * 2 for i in range(10)]\n" * 10
    toks = default_model.to_tokens(text).tokens[:, :200]
    df = interp.pattern_frame(default_model, toks, layers=[0, 1], heads=[2])
    fig = attention_pattern(df)
    assert len(fig.data) == 2 and {t.name for t in fig.data} == {"L0H2", "L1H2"}
    assert len(fig.layout.xaxis.ticktext) == 200 and fig.layout.xaxis.tickfont.size >= 7
    assert fig.layout.height >= 200 * 8  # 8 px per token at least
    with pytest.raises(ValueError, match="not in df"):
        attention_pattern(df, heads=["L5H0"])


def test_composition_edges(default_model):
    df = interp.composition_scores(default_model)
    fig = composition_edges(df, top_k=8)
    assert isinstance(fig, go.Figure)
    mids = [t for t in fig.data if t.mode == "markers" and t.text is not None and "→" in t.text[0]]
    assert sum(len(t.x) for t in mids) == 8
    assert any("L0H" in s and "→ L1H" in s for t in mids for s in t.text)
    k = composition_edges(df, kind="K", top_k=3)
    assert {t.name for t in k.data if t.showlegend} == {"K"}
    nc = composition_edges(interp.neuron_composition(default_model, ["L0N5"], kinds="V"), top_k=4)
    assert any("L0N5" in str(t.text) for t in nc.data)
    with pytest.raises(ValueError, match="kind='X'"):
        composition_edges(df, kind="X")
