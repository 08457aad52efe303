"""Probe figures: built from the analyses' DataFrames, titled, labelled, with hover text
naming the component."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from interp.plots.probes import probe_accuracy, subspace_angles, subspace_writers
from interp.probes import Subspace, overlap_matrix, writers


def probe_frame(label: str, acc: list[float]) -> pd.DataFrame:
    n = len(acc)
    return pd.DataFrame({
        "label": label, "layer": range(n), "where": "resid_pre", "site": [f"L{i}_resid_pre" for i in range(n)],
        "accuracy": acc, "train_accuracy": acc, "baseline": 0.3, "control_accuracy": [0.5] * n,
        "selectivity": [a - 0.5 for a in acc],
    })


def test_probe_accuracy_figure():
    df = pd.concat([probe_frame("previous_token", [0.3, 0.9, 0.8]), probe_frame("current_token", [1.0, 0.9, 0.7])])
    fig = probe_accuracy(df)
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text and fig.layout.yaxis.title.text == "held-out accuracy"
    assert any(ax.title.text for ax in (fig.layout.xaxis, fig.layout.xaxis2))
    # one panel per label, so no band or line is shared between labels
    assert [a.text for a in fig.layout.annotations] == ["previous token", "current token"]
    acc = [t for t in fig.data if t.name == "held-out accuracy" and t.meta == "previous_token"][0]
    assert list(acc.y) == [0.3, 0.9, 0.8] and "L1_resid_pre" in acc.customdata[1][0] and acc.xaxis == "x"
    assert "selectivity" in acc.hovertemplate
    assert sum(t.fill == "toself" for t in fig.data) == 2  # one baseline band per panel
    assert sum(bool(t.showlegend) for t in fig.data) == 3  # each kind of line named once
    with pytest.raises(ValueError, match=r"df lacks the column\(s\) \['control_accuracy'\]"):
        probe_accuracy(df.drop(columns="control_accuracy"))


def test_writers_heatmap(gpt2_model):
    w = gpt2_model.run_with_writes(["def f(x):\n    return x\n"])
    df = writers(Subspace.random(gpt2_model.cfg.d_model, 3), w, layer=2)
    fig = subspace_writers(df)
    heat = fig.data[0]
    assert len(heat.z) == 2 and len(heat.z[0]) == 4
    by = df.set_index("component")
    assert heat.z[1][3] == pytest.approx(by.loc["L1H3", "norm"])
    assert heat.text[1][3].startswith("L1H3")
    assert fig.layout.title.text.startswith("Heads writing into the subspace")
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    signed = subspace_writers(df, value="signed_share")
    assert signed.data[0].zmid == 0
    with pytest.raises(ValueError, match="df has no head rows"):
        subspace_writers(df[df["kind"] != "head"])


def test_principal_angle_matrix():
    e = torch.eye(6)
    df = overlap_matrix({"a": Subspace(e[:2]), "b": Subspace(e[1:3]), "c": Subspace(e[4])})
    fig = subspace_angles(df)
    z = fig.data[0].z
    assert z[0][0] == pytest.approx(0.0, abs=1e-3) and z[0][1] == pytest.approx(0.0, abs=1e-3)  # share e1
    assert z[0][2] == pytest.approx(90.0)
    assert "a (k=2) vs c (k=1)" in fig.data[0].text[0][2]
    assert fig.layout.title.text and fig.layout.xaxis.title.text == "subspace"
    assert subspace_angles(df, value="mean_cos2").data[0].zmax == 1
    with pytest.raises(TypeError, match="df must be a pandas DataFrame"):
        subspace_angles([1, 2])
