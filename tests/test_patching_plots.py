"""Patching figures: built from the frames, one trace per thing drawn, errors name the source."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

import interp

PAIR = ("def f(a):\n    return f(a", "def f(a):\n    return f[a")


@pytest.fixture(scope="module")
def frames(default_model):
    m = default_model
    kw = dict(answers=(")", "]"), progress=False)
    return dict(
        heads=interp.activation_patching(m, *PAIR, **kw),
        resid=interp.activation_patching(m, *PAIR, by="resid", **kw),
        neurons=interp.attribution_patching(m, *PAIR, answers=(")", "]"), by="neuron"),
        deletion=interp.deletion_effect(m, "L1N154", [PAIR[0] * 3] * 4, n_controls=2, progress=False),
    )


def test_heatmaps(frames):
    fig = interp.plots.patching_heads(frames["heads"])
    assert isinstance(fig, go.Figure) and fig.data[0].type == "heatmap"
    assert len(fig.data[0].z) == 2 and len(fig.data[0].z[0]) == 4  # layer x head
    fig = interp.plots.patching_positions(frames["resid"])
    assert len(fig.data[0].x) == 11 and fig.data[0].x[9].endswith("[")  # tokens of the corrupt prompt
    with pytest.raises(ValueError, match="no head rows"):
        interp.plots.patching_heads(frames["resid"])


def test_neuron_bar_and_deleter(frames):
    fig = interp.plots.patching_neurons(frames["neurons"], top=10)
    assert len(fig.data[0].x) == 10 and fig.data[0].x[0].startswith("L")
    fig = interp.plots.deletion_effect(frames["deletion"])
    names = [t.name for t in fig.data]
    assert any("ablated" in n for n in names) and any("predict" in n for n in names)
    assert any("control" in n for n in names) and len(fig.data) == 5
    with pytest.raises(ValueError, match="lacks the column"):
        interp.plots.deletion_effect(frames["heads"])


def test_readme_causal_example_runs():
    import re
    from pathlib import Path

    section = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "patching.md").read_text()
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    ns: dict = {}
    exec(compile(block, "docs/reference/patching.md", "exec"), ns)
    assert ns["heads"].sort_values("effect", ascending=False)["component"].iloc[0] == "L0H1"
    d = ns["effect"][ns["effect"].role == "deleter"].iloc[0]
    assert abs(d.change - d.predicted) < 1e-4
