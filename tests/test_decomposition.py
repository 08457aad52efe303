"""decompose and stream_norms: reconstruction, per-neuron exactness, agreement with
TransformerLens, padding, directions, planted truth, bad inputs, figures."""

from __future__ import annotations

import dataclasses
import doctest

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import interp
import interp.decomposition
from interp.errors import IndexOutOfRangeError, ModelMismatchError
from interp.plots import decomposition as plots
from interp.probes.subspace import Subspace

TEXTS = ["def add(a, b):\n    return a + b", "x = 1"]
BY = ("layer", "head", "neuron", "component")


@pytest.fixture(scope="module")
def gpt2(tiny_models):
    return tiny_models["gpt2"]


@pytest.fixture(scope="module")
def writes(tiny_models):
    return {f: m.run_with_writes(TEXTS) for f, m in tiny_models.items()}


def vectors(df, d_model: int) -> np.ndarray:
    """Each row's write vector, read back from projections onto the standard basis."""
    return df[[f"proj_{i}" for i in range(d_model)]].to_numpy(dtype=np.float64)


def test_contract_columns_and_labels(writes):
    w = writes["gpt2"]
    df = interp.decompose(w, by="head")
    assert {"component", "pos", "norm", "batch", "frac", "layer", "head", "neuron", "kind", "token"} <= set(df.columns)
    labels = set(df["component"].astype(str))
    assert {"embed", "pos_embed", "L0H3", "L1H0", "L0_attn_bias", "L1_mlp"} <= labels
    one = interp.decompose(w, by="layer")
    assert set(one["component"].astype(str)) == {"embed", "pos_embed", "L0_attn", "L0_mlp", "L1_attn", "L1_mlp"}
    neur = interp.decompose(w, by="neuron")
    row = neur[neur["component"] == "L1N7"].iloc[0]
    assert (row["layer"], row["neuron"], row["kind"]) == (1, 7, "neuron") and pd.isna(row["head"])


@pytest.mark.parametrize("by", BY)
@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_rows_sum_to_the_stream(writes, family, by):
    w = writes[family]
    d = int(w.meta["d_model"])
    df = interp.decompose(w, by=by, directions=torch.eye(d))
    summed = df.groupby(["batch", "pos"])[[f"proj_{i}" for i in range(d)]].sum().to_numpy()
    want = w.resid(w.n_layers)[w.mask].double().numpy()
    assert np.abs(summed - want).max() <= 1e-5 * np.abs(want).max()
    # and the stream entering layer 1, with layer=
    part = interp.decompose(w, by=by, layer=1, directions=torch.eye(d))
    summed = part.groupby(["batch", "pos"])[[f"proj_{i}" for i in range(d)]].sum().to_numpy()
    assert np.abs(summed - w.resid(1)[w.mask].numpy()).max() <= 1e-5 * np.abs(want).max()
    assert not part["layer"].astype("Float64").ge(1).any()


def test_norm_and_frac_are_the_write_norm_over_the_stream_norm(writes):
    w = writes["llama"]
    d = int(w.meta["d_model"])
    df = interp.decompose(w, by="component", directions=torch.eye(d))
    np.testing.assert_allclose(df["norm"], np.linalg.norm(vectors(df, d), axis=1), rtol=1e-4, atol=1e-7)
    stream = w.resid(w.n_layers).norm(dim=-1).numpy()[df["batch"].to_numpy(), df["pos"].to_numpy()]
    np.testing.assert_allclose(df["frac"], df["norm"] / stream, rtol=1e-5)


def test_neuron_rows_equal_act_times_w_out(writes):
    w = writes["neox"]
    d = int(w.meta["d_model"])
    df = interp.decompose(w, by="neuron", directions=torch.eye(d))
    for layer, neuron in [(0, 5), (1, 200)]:
        rows = df[df["component"] == f"L{layer}N{neuron}"].sort_values(["batch", "pos"])
        want = w.neuron_write(layer, neuron)[w.mask].numpy()
        np.testing.assert_allclose(vectors(rows, d), want, atol=1e-6)
        np.testing.assert_allclose(rows["norm"], np.linalg.norm(want, axis=1), rtol=1e-5, atol=1e-8)


def test_neuron_decomposition_never_builds_pos_by_d_mlp_by_d_model(writes):
    """Every tensor made while decomposing by neuron stays far below [pos, d_mlp, d_model]."""
    w = writes["gpt2"]
    rows, d_mlp, d = int(w.mask.sum()), w.acts[0].shape[-1], int(w.meta["d_model"])
    biggest = [0]

    class Watch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    biggest[0] = max(biggest[0], t.numel())
            return out

    with Watch():
        interp.decompose(w, by="neuron", directions=torch.randn(2, d))
        interp.logit_attribution(w, by="neuron")
    assert 0 < biggest[0] < rows * d_mlp * d / 8


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_agrees_with_transformer_lens(tiny_models, writes, family):
    model, w = tiny_models[family], writes[family]
    d = model.cfg.d_model
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(w.tokens)
        stack, labels = cache.decompose_resid(return_labels=True)
        heads, head_labels = cache.stack_head_results(layer=-1, return_labels=True)
    by_layer = interp.decompose(w, by="layer", directions=torch.eye(d))
    by_head = interp.decompose(w, by="head", directions=torch.eye(d))
    for i, label in enumerate(labels):  # "embed", "0_attn_out", "0_mlp_out", ...
        ours = label if "_" not in label or label == "pos_embed" else "L" + label.removesuffix("_out")
        rows = by_layer[by_layer["component"] == ours].sort_values(["batch", "pos"])
        assert np.abs(vectors(rows, d) - stack[i][w.mask].numpy()).max() <= 1e-5
    for i, label in enumerate(head_labels):  # "L0H0", ...
        rows = by_head[by_head["component"] == label].sort_values(["batch", "pos"])
        assert np.abs(vectors(rows, d) - heads[i][w.mask].numpy()).max() <= 1e-5
    assert len(head_labels) == model.cfg.n_layers * model.cfg.n_heads


def test_padded_positions_give_no_rows_and_rows_do_not_depend_on_the_batch(gpt2, writes):
    w = writes["gpt2"]
    assert not w.mask.all()
    df = interp.decompose(w, by="head")
    assert len(df[["batch", "pos"]].drop_duplicates()) == int(w.mask.sum())
    assert df[df["batch"] == 1]["pos"].max() == int(w.mask[1].sum()) - 1
    alone = interp.decompose(gpt2.run_with_writes(TEXTS[1]), by="head")
    short = df[df["batch"] == 1]
    np.testing.assert_allclose(short["norm"].to_numpy(), alone["norm"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert (alone["batch"] == 0).all() and list(short["token"].astype(str)) == list(alone["token"].astype(str))
    # a record may keep batch-independent writes once, with a batch axis of 1
    shared = dataclasses.replace(w, pos_embed=w.pos_embed[:1])
    np.testing.assert_allclose(interp.decompose(shared, by="head")["norm"], df["norm"])
    np.testing.assert_allclose(
        interp.logit_attribution(shared)["attribution"], interp.logit_attribution(w)["attribution"], atol=1e-6
    )


def test_top_k_keeps_the_largest_rows_per_position(writes):
    w = writes["llama"]
    full = interp.decompose(w, by="component")
    top = interp.decompose(w, by="component", top_k=4)
    assert (top.groupby(["batch", "pos"]).size() == 4).all()
    want = full.sort_values("norm", ascending=False).groupby(["batch", "pos"]).head(4)
    assert set(zip(top["batch"], top["pos"], top["component"].astype(str), strict=True)) == set(
        zip(want["batch"], want["pos"], want["component"].astype(str), strict=True)
    )
    first = top.groupby(["batch", "pos"])["norm"].apply(lambda s: s.is_monotonic_decreasing)
    assert first.all()


def test_planted_neuron_ranks_first(writes):
    """Silence every neuron but one, and give it a large activation: it must top each position."""
    w = writes["gpt2"]
    acts = {ly: torch.zeros_like(a) for ly, a in w.acts.items()}
    acts[1][..., 42] = 50.0
    planted = dataclasses.replace(w, acts=acts)
    top = interp.decompose(planted, by="neuron", top_k=1)
    assert (top["component"].astype(str) == "L1N42").all()
    u = w.weights.W_out[1, 42]
    proj = interp.decompose(planted, by="component", directions={"out": u})
    best = proj.loc[proj.groupby(["batch", "pos"])["proj_out"].idxmax(), "component"].astype(str)
    assert (best == "L1N42").all()


def test_directions_tokens_subspaces_and_names(gpt2, writes):
    w = writes["gpt2"]
    d = gpt2.cfg.d_model
    g = torch.Generator().manual_seed(1)
    raw = torch.randn(3, d, generator=g)
    sub = Subspace(raw[:2], name="pair")
    df = interp.decompose(w, by="head", directions=[raw[2] * 7.0, " a", sub], model=gpt2)
    assert {"proj_0", "proj_ a", "proj_pair"} <= set(df.columns)
    vec = interp.decompose(w, by="head", directions=torch.eye(d))
    v = vectors(vec, d)
    np.testing.assert_allclose(df["proj_0"], v @ (raw[2] / raw[2].norm()).numpy(), atol=1e-6)
    tid = gpt2.tokenizer(" a", add_special_tokens=False)["input_ids"][0]
    u = gpt2.weights.W_U[:, tid]
    np.testing.assert_allclose(df["proj_ a"], v @ (u / u.norm()).numpy(), atol=1e-6)
    np.testing.assert_allclose(df["proj_pair"], np.linalg.norm(v @ sub.basis.numpy(), axis=1), atol=1e-6)
    # a non-orthonormal basis reads the same span
    skew = type("S", (), {"basis": raw[:2].T * torch.tensor([3.0, 0.5]), "name": "skew"})()
    again = interp.decompose(w, by="head", directions=skew)
    np.testing.assert_allclose(again["proj_skew"], df["proj_pair"], atol=1e-5)
    named = interp.decompose(w, by="layer", directions={"r": raw[:2]})
    assert {"proj_r_0", "proj_r_1"} <= set(named.columns)


def test_stream_norms(writes):
    w = writes["neox"]
    df = interp.stream_norms(w)
    n = int(w.mask.sum())
    assert len(df) == (w.n_layers + 1) * n and set(df["where"]) == {"pre"}
    for layer in range(w.n_layers + 1):
        got = df[df["layer"] == layer].sort_values(["batch", "pos"])["norm"].to_numpy()
        np.testing.assert_allclose(got, w.resid(layer).norm(dim=-1)[w.mask].numpy(), rtol=1e-5)
    allw = interp.stream_norms(w, where="all")
    assert len(allw) == (2 * w.n_layers + 1) * n
    mid = allw[(allw["layer"] == 1) & (allw["where"] == "mid")].sort_values(["batch", "pos"])["norm"]
    np.testing.assert_allclose(mid, w.resid(1, "mid").norm(dim=-1)[w.mask].numpy(), rtol=1e-5)
    post = interp.stream_norms(w, where="post")
    assert sorted(set(post["layer"])) == list(range(w.n_layers))


def test_bf16_record_and_saved_record(gpt2, tmp_path):
    w = gpt2.run_with_writes(TEXTS[0], dtype=torch.bfloat16)
    d = gpt2.cfg.d_model
    df = interp.decompose(w, by="component", directions=torch.eye(d))
    summed = df.groupby(["batch", "pos"])[[f"proj_{i}" for i in range(d)]].sum().to_numpy()
    want = w.resid(w.n_layers)[w.mask].numpy()
    assert np.abs(summed - want).max() <= 1e-4 * np.abs(want).max()
    path = w.save(tmp_path / "w")
    loaded = interp.ResidualWrites.load(path)
    again = interp.decompose(loaded, by="head")
    np.testing.assert_allclose(again["norm"], interp.decompose(w, by="head")["norm"])
    with pytest.raises(ValueError, match=r"directions=' a' is a string but these writes carry no tokenizer; pass model="):
        interp.decompose(loaded, directions=" a")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(by="heads"), ValueError, r"by='heads' is not supported; use one of 'layer', 'head', 'neuron'"),
        (dict(directions=torch.zeros(64)), ValueError, r"directions contains a zero-norm vector"),
        (dict(directions=torch.full((64,), float("nan"))), ValueError, r"directions contains NaN or inf"),
        (dict(directions=torch.ones(65)), ValueError, r"directions has shape \(65,\) but the model's d_model is 64"),
        (dict(directions=[torch.ones(64), torch.ones(2, 3, 64)]), ValueError, r"directions\[1\] has shape \(2, 3, 64\)"),
        (dict(directions=Subspace(torch.randn(2, 32))), ValueError, r"basis has shape \(32, 2\) but the model's d_model is 64"),
        (dict(directions=3), TypeError, r"directions is a int; pass a tensor"),
        (dict(directions=" a b c d"), ValueError, r"directions=' a b c d' is \d+ tokens"),
        (dict(directions=[]), ValueError, r"directions=\[\] is empty"),
        (dict(directions=[torch.ones(64), {"x": 1}]), TypeError, r"directions\[1\] is a dict"),
        (dict(top_k=0), ValueError, r"top_k=0 must be a positive int"),
        (dict(layer=5), IndexOutOfRangeError, r"layer=5 out of range for a model with 2 layers \(use 0..1 or -2..-1\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(writes, kwargs, error, match):
    with pytest.raises(error, match=match):
        interp.decompose(writes["gpt2"], **kwargs)


def test_wrong_writes_or_model(tiny_models, writes):
    with pytest.raises(TypeError, match=r"writes must be a ResidualWrites, got str; record one with model.run_with_writes"):
        interp.decompose("def f(): pass")
    with pytest.raises(ModelMismatchError, match=r"model=.* is not the model these writes were recorded on"):
        interp.decompose(writes["gpt2"], model=tiny_models["llama"])
    with pytest.raises(ModelMismatchError, match=r"pass the model the writes came from"):
        interp.stream_norms(writes["gpt2"], model=tiny_models["neox"])
    partial = tiny_models["gpt2"].run_with_writes(TEXTS[0], layers=[0])
    with pytest.raises(ValueError, match=r"needs layers \[1\], which were not recorded .* run run_with_writes with layers=None"):
        interp.decompose(partial)
    assert len(interp.decompose(partial, layer=1)) > 0
    with pytest.raises(ValueError, match=r"where='end' is not supported"):
        interp.stream_norms(writes["gpt2"], where="end")


def test_figures(writes):
    w = writes["gpt2"]
    figs = [
        plots.write_norms(interp.decompose(w, by="head")),
        plots.top_neurons(interp.decompose(w, by="neuron"), k=5),
        plots.stream_norms(interp.stream_norms(w)),
        plots.stream_norms(interp.stream_norms(w, where="all"), max_lines=2),
    ]
    for fig in figs:
        assert isinstance(fig, go.Figure) and fig.layout.title.text
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    bars = figs[0]
    assert [t.name for t in bars.data] == ["embed", "pos_embed", "head", "attn_bias", "mlp"]
    assert any("L1H" in h for t in bars.data for h in t.hovertext if t.name == "head")
    assert len(figs[1].data[0].y) == 5 and all(h.startswith("L") and "N" in h for h in figs[1].data[0].hovertext)
    assert len(figs[2].data) == int(w.mask[0].sum())  # one line per position of row 0
    assert list(figs[2].data[0].x) == ["L0 pre", "L1 pre", "final"]
    with pytest.raises(ValueError, match=r"df lacks the column\(s\) \['norm'\] that write_norms needs"):
        plots.write_norms(interp.decompose(w).drop(columns="norm"))
    with pytest.raises(ValueError, match=r"df has no neuron rows"):
        plots.top_neurons(interp.decompose(w, by="head"))


def test_docstring_examples_run(gpt2):
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(interp.decomposition, globs={"model": gpt2, **vars(interp.decomposition)}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and runner.summarize(verbose=False).attempted > 0
