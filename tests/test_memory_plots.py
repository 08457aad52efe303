"""Memory figures: built from the analyses' DataFrames, titled, labelled, named on hover."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

import interp
from interp.memory import MLPStack
from interp.plots.memory import deleting_heads, deleting_neurons, deletion_graph


@pytest.fixture(scope="module")
def planted_stack():
    g = torch.Generator().manual_seed(0)
    W_in, W_out = torch.randn(2, 64, 256, generator=g), torch.randn(2, 256, 64, generator=g)
    W_out[1, 17] = -0.9 * W_in[1, :, 17]
    return MLPStack(W_in, W_out)


def _hover(fig):
    out = []
    for t in fig.data:
        for v in (t.text, t.customdata):
            if v is not None:
                out += [str(x) for x in (v.flatten() if hasattr(v, "flatten") else v)]
    return " ".join(out)


def test_deleting_neurons_figure(planted_stack):
    df = interp.neuron_in_out_cosines(planted_stack)
    fig = deleting_neurons(df)
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text and fig.layout.xaxis.title.text == "layer"
    assert fig.layout.yaxis.title.text.startswith("cos(")
    assert "L1N17" in _hover(fig)
    flagged = [t for t in fig.data if t.name == "flagged"][0]
    assert len(flagged.y) == int(df["flagged"].sum()) == 1
    assert len(fig.layout.shapes) == 2  # one null band per layer
    band = fig.layout.shapes[1]
    assert band.y1 == pytest.approx(2 / 8) and band.y0 == pytest.approx(-2 / 8)
    assert len(deleting_neurons(interp.find_deleting_neurons(planted_stack)).data) >= 2


def test_deleting_heads_and_graph(gpt2_model):
    heads = interp.find_deleting_heads(gpt2_model)
    fig = deleting_heads(heads)
    assert isinstance(fig, go.Figure) and fig.layout.title.text
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert "L1H3" in _hover(fig)
    ev = interp.deletion_evidence(gpt2_model, ["def f(x):\n    return x\n"], neurons=["L1N3"], heads=["L1H0"],
                                  progress=False)
    g = deletion_graph(ev, min_share=0.0)
    assert isinstance(g, go.Figure) and g.layout.title.text and g.layout.xaxis.title.text
    text = _hover(g)
    assert "L1N3" in text and "L1H0" in text
    top = ev[ev["writer"] != "other"].iloc[0]
    assert f"L1N3 erases {top.share:.0%} from {top.writer}" in text


def test_plots_reject_the_wrong_table(gpt2_model):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['neuron', 'cosine'\]"):
        deleting_neurons(interp.find_deleting_heads(gpt2_model))
    with pytest.raises(TypeError, match="df must be a pandas DataFrame"):
        deletion_graph([1, 2])
