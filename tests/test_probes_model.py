"""probe_layers, writers, readers and ablation on tiny random models: contracts,
invariants against brute force, error paths, and the caller's model left untouched."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import interp
from interp.probes import Subspace, site_means
from interp.probes.sites import Site, collect

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x):\n        self.x = x\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "import os\nimport sys\n# a comment\nvalue = 'string'\n",
    "x = [1, 2, 3]\ny = {'a': 1}\nprint(x, y)\n",
    "while True:\n    break\n# done\n",
]


def n_hooks(model) -> int:
    points = {id(hp): hp for hp in model.bridge.hook_dict.values()}  # aliases share a hook point
    return sum(len(hp.fwd_hooks) for hp in points.values())


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.bridge.state_dict().items()}


def assert_unchanged(model, before: dict[str, torch.Tensor]) -> None:
    after = model.bridge.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert n_hooks(model) == 0


def test_probe_layers_contract(gpt2_model):
    before = snapshot(gpt2_model)
    df = interp.probe_layers(gpt2_model, TEXTS, label="previous_token", top_k=10, max_iter=30, progress=False)
    assert {"layer", "accuracy", "control_accuracy"} <= set(df.columns)
    assert list(df.columns) == interp.probes.probing.COLUMNS
    assert df["layer"].tolist() == [0, 1, 2] and df["site"].tolist()[-1] == "L2_resid_pre"
    assert df["accuracy"].between(0, 1).all() and df["baseline"].between(0, 1).all()
    assert (df["selectivity"] == df["accuracy"] - df["control_accuracy"]).all()
    assert df["r2"].isna().all()  # categorical label
    assert (df["n_train"] + df["n_test"]).nunique() == 1 and (df["n_test"] > 0).all()
    probe = interp.LinearProbe.from_frame(df)
    assert probe.coef_.shape[:2] == (3, df["n_classes"].iloc[0]) and [s.label for s in probe.sites_] == df["site"].tolist()
    again = interp.probe_layers(gpt2_model, TEXTS, label="previous_token", top_k=10, max_iter=30, progress=False)
    pd.testing.assert_frame_equal(df, again)  # deterministic
    assert_unchanged(gpt2_model, before)


def test_probe_labels_is_probe_layers_from_one_pass(gpt2_model):
    """One label: exactly probe_layers. Several: one collection, each label on the positions
    it labels, the same columns, and a fitted probe per label."""
    kw = dict(max_tokens=120, batch_size=2, progress=False)
    one = interp.probe_layers(gpt2_model, TEXTS, label="previous_token", **kw)
    many = interp.probe_labels(gpt2_model, TEXTS, ["previous_token"], **kw)["previous_token"]
    pd.testing.assert_frame_equal(one, many)
    frames = interp.probe_labels(gpt2_model, TEXTS, ["current_token", "previous_token", "line_start_distance"], **kw)
    assert list(frames) == ["current_token", "previous_token", "line_start_distance"]
    for name, df in frames.items():
        assert list(df.columns) == list(one.columns) and (df["label"] == name).all()
        assert len(df) == len(one) and df["accuracy"].between(0, 1).all()
        assert int(df["n_train"].iloc[0] + df["n_test"].iloc[0]) <= 120
        assert interp.LinearProbe.from_frame(df).sites_ == interp.LinearProbe.from_frame(one).sites_
    assert frames["line_start_distance"]["r2"].notna().all()
    with pytest.raises(TypeError, match="labels='previous_token' must be a sequence"):
        interp.probe_labels(gpt2_model, TEXTS, "previous_token", **kw)
    with pytest.raises(ValueError, match="each once"):
        interp.probe_labels(gpt2_model, TEXTS, ["previous_token", "previous_token"], **kw)


def test_probe_layers_ordinal_and_options(gpt2_model):
    df = interp.probe_layers(
        gpt2_model, TEXTS, label="line_start_distance", where="resid_post", layers=[-1, 0], top_k=8, max_iter=30,
        progress=False,
    )
    assert df["layer"].tolist() == [0, 1] and (df["where"] == "resid_post").all()
    assert df["r2"].notna().all() and df["control_r2"].notna().all()
    assert interp.LinearProbe.from_frame(df).regressor_.task == "regress"
    capped = interp.probe_layers(gpt2_model, TEXTS, label="current_token", layers=0, max_tokens=50, top_k=5,
                                 max_iter=10, progress=False)
    assert (capped["n_train"] + capped["n_test"]).iloc[0] == 50


@pytest.mark.parametrize("where", ["resid_pre", "resid_mid", "resid_post"])
def test_collected_features_are_the_stream(tiny_model, where):
    """Features at a site equal the stream summed from the recorded writes (neox: parallel
    blocks, where resid_mid is resid_pre plus the attention output)."""
    sites = [Site(1, where)] + ([Site(2, "resid_pre")] if where == "resid_pre" else [])
    col = collect(tiny_model, TEXTS[:2], sites, labeler=interp.labels.current_token, exclude_first=False,
                  progress=False)
    w = tiny_model.run_with_writes(TEXTS[:2])
    short = where.split("_")[1]
    want = w.resid(1, short)[w.mask]
    assert torch.allclose(col.X[0], want, atol=1e-4 * want.abs().max())
    assert torch.equal(col.y, w.tokens[w.mask])
    if where == "resid_pre":
        final = w.resid(2, "pre")[w.mask]
        assert torch.allclose(col.X[1], final, atol=1e-4 * final.abs().max())


def test_writers_invariants(tiny_models):
    model = tiny_models["llama"]  # gated MLP, grouped-query attention, RMSNorm
    w = model.run_with_writes(TEXTS[:3])
    sub = Subspace.random(model.cfg.d_model, 5, seed=1, name="r5")
    df = interp.writers(sub, w, layer=model.cfg.n_layers, top_neurons=7)
    assert list(df.columns) == interp.probes.memory_map.WRITER_COLUMNS
    assert df["norm"].is_monotonic_decreasing and df["rank"].tolist() == list(range(1, len(df) + 1))
    layer_rows = df[df["kind"] != "neuron"]
    assert layer_rows["signed_share"].sum() == pytest.approx(1.0, abs=1e-4)
    assert layer_rows["share"].sum() == pytest.approx(1.0, abs=1e-6)
    assert (df["kind"] == "neuron").sum() == 7
    m = w.mask.clone()
    m[:, 0] = False
    B = sub.basis
    by = df.set_index("component")
    # brute force: a head, a neuron, the MLP layer
    hw = w.head_write(1, 2)[m] @ B
    assert by.loc["L1H2", "norm"] == pytest.approx(float(hw.norm(dim=-1).mean()), rel=1e-4)
    assert by.loc["L1H2", "fraction"] == pytest.approx(float(hw.pow(2).sum() / w.head_write(1, 2)[m].pow(2).sum()), rel=1e-4)
    nrow = df[df["kind"] == "neuron"].iloc[0]
    nw = w.neuron_write(int(nrow["layer"]), int(nrow["neuron"]))[m]
    assert nrow["norm"] == pytest.approx(float((nw @ B).norm(dim=-1).mean()), rel=1e-4)
    r = (w.resid(model.cfg.n_layers, "pre")[m] @ B)
    assert nrow["signed_share"] == pytest.approx(float(((nw @ B) * r).sum() / r.pow(2).sum()), rel=1e-3, abs=1e-6)
    mw = w.mlp_write(0)[m] @ B
    assert by.loc["L0_mlp", "norm"] == pytest.approx(float(mw.norm(dim=-1).mean()), rel=1e-4)
    # streaming over batches equals one batch (position-weighted means)
    w1, w2 = model.run_with_writes(TEXTS[:1]), model.run_with_writes(TEXTS[1:3])
    both = interp.writers(sub, iter([w1, w2]), layer=2, top_neurons=0).set_index("component")
    one = interp.writers(sub, model.run_with_writes(TEXTS[:3]), layer=2, top_neurons=0).set_index("component")
    assert both.loc[one.index, "norm"].to_numpy() == pytest.approx(one["norm"].to_numpy(), rel=1e-4)
    assert interp.writers(sub, w, layer=2, top_neurons=0)["kind"].ne("neuron").all()
    # up to the stream entering layer 1: embeddings and layer 0 only, shares against resid_pre[1]
    early = interp.writers(sub, w, layer=1, top_neurons=3)
    assert set(early["layer"].dropna()) == {0} and "L1_mlp" not in set(early["component"])
    assert early[early["kind"] != "neuron"]["signed_share"].sum() == pytest.approx(1.0, abs=1e-4)
    r1 = w.resid(1, "pre")[m] @ B
    l0 = (w.mlp_write(0)[m] @ B)
    assert early.set_index("component").loc["L0_mlp", "signed_share"] == pytest.approx(
        float((l0 * r1).sum() / r1.pow(2).sum()), rel=1e-3)
    with pytest.raises(IndexError, match="layer=7 out of range"):
        interp.writers(sub, w, layer=7)


def test_readers_against_brute_force(gpt2_model):
    sub = Subspace.random(gpt2_model.cfg.d_model, 4, seed=0)
    df = interp.readers(sub, gpt2_model)
    assert list(df.columns) == interp.probes.memory_map.READER_COLUMNS
    row = df[(df["component"] == "L1H3") & (df["matrix"] == "W_K")].iloc[0]
    W = gpt2_model.weights.W_K[1, 3]
    assert row["norm"] == pytest.approx(float((sub.basis.T @ W).norm()), rel=1e-5)
    assert row["ratio"] == pytest.approx(row["fraction"] / row["baseline"])
    assert len(df) == 2 * (3 * 4 + 1) + 1 and df["ratio"].is_monotonic_decreasing
    full = interp.readers(Subspace(torch.eye(gpt2_model.cfg.d_model)), gpt2_model)
    assert full["fraction"].to_numpy() == pytest.approx(1.0)  # the whole stream reads everything


def test_ablate_zero_and_mean(gpt2_model):
    before = snapshot(gpt2_model)
    sub = Subspace.random(gpt2_model.cfg.d_model, 6, seed=2)
    toks = gpt2_model.to_tokens(TEXTS[:2])
    clean = gpt2_model.logits(toks.tokens)
    with interp.ablate(gpt2_model, sub, at=[1, (0, "resid_post")], mode="zero") as m:
        assert m is gpt2_model and n_hooks(gpt2_model) == 2
        col = collect(gpt2_model, toks, [Site(1)], exclude_first=False, progress=False)
        ablated = gpt2_model.logits(toks.tokens)
        again = gpt2_model.logits(toks.tokens)  # inner hook contexts leave the ablation in place
    assert torch.allclose(sub.coords(col.X[0]), torch.zeros(1), atol=1e-4)
    assert not torch.allclose(clean, ablated, atol=1e-4) and torch.equal(ablated, again)
    assert torch.allclose(gpt2_model.logits(toks.tokens), clean)
    means = site_means(gpt2_model, TEXTS, at=1)
    with interp.ablate(gpt2_model, sub, at=1, mode="mean", mean=means):
        col = collect(gpt2_model, toks, [Site(1)], exclude_first=False, progress=False)
    want = sub.coords(means[(1, "resid_pre")])
    assert torch.allclose(sub.coords(col.X[0]), want.expand(col.X.shape[1], -1), atol=1e-4)
    assert_unchanged(gpt2_model, before)


def test_ablate_removes_hooks_when_the_body_raises(gpt2_model):
    sub = Subspace.random(gpt2_model.cfg.d_model, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with interp.ablate(gpt2_model, sub, at=0, mode="zero"):
            raise RuntimeError("boom")
    assert n_hooks(gpt2_model) == 0

    def bad_label(tokens, str_tokens):
        raise RuntimeError("labeler failed")

    with pytest.raises(RuntimeError, match="labeler failed"):
        interp.probe_layers(gpt2_model, TEXTS, label=bad_label, progress=False)
    assert n_hooks(gpt2_model) == 0


def test_ablation_effect_frame(gpt2_model):
    before = snapshot(gpt2_model)
    sub = Subspace(torch.eye(gpt2_model.cfg.d_model), name="everything")
    df = interp.ablation_effect(gpt2_model, TEXTS, sub, at=1, mode="zero", label="current_token", top_k=5,
                                max_iter=20, progress=False)
    assert list(df.columns) == interp.probes.ablation.EFFECT_COLUMNS
    assert df["metric"].tolist() == ["loss", "probe_accuracy", "probe_accuracy"]
    assert (df["delta"] == df["ablated"] - df["clean"]).all()
    probe = df[df["metric"] == "probe_accuracy"]
    assert (probe["ablated"] < probe["clean"]).all()  # the layer-1 stream is gone entirely
    assert df.iloc[0]["delta"] != 0
    assert_unchanged(gpt2_model, before)


def test_errors_name_the_parameter(gpt2_model, tiny_models):
    m = gpt2_model
    sub = Subspace.random(m.cfg.d_model, 2)
    wrong = Subspace.random(m.cfg.d_model + 1, 2, name="wide")
    with pytest.raises(TypeError, match="model must be an interp.Model .from interp.load., got str"):
        interp.probe_layers("gpt2", TEXTS)
    with pytest.raises(TypeError, match="model must be an interp.Model"):
        interp.readers(sub, object())
    with pytest.raises(ValueError, match="where='resid_foo' is not supported; use one of 'resid_pre'"):
        interp.probe_layers(m, TEXTS, where="resid_foo")
    with pytest.raises(IndexError, match=r"layers=\[5\] out of range for where='resid_pre' in a 2-layer model: use 0..2"):
        interp.probe_layers(m, TEXTS, layers=[5])
    with pytest.raises(ValueError, match="out of range for where='resid_post'.*use 0..1"):
        interp.probe_layers(m, TEXTS, where="resid_post", layers=2)
    with pytest.raises(ValueError, match="data holds 1 document; a held-out split by document needs at least 2"):
        interp.probe_layers(m, TEXTS[:1], progress=False)
    with pytest.raises(FileNotFoundError, match=r"pass a list of texts: \[text\]"):
        interp.probe_layers(m, "def f(): pass")
    with pytest.raises(TypeError, match="data of type int is not supported"):
        interp.probe_layers(m, 3)
    with pytest.raises(ValueError, match="label='nope' is not a built-in labeler"):
        interp.probe_layers(m, TEXTS, label="nope")
    with pytest.raises(ValueError, match="max_tokens=0 must be a positive int"):
        interp.probe_layers(m, TEXTS, max_tokens=0)
    with pytest.raises(ValueError, match="subspace 'wide' has d_model=65 but the writes have d_model=64"):
        interp.writers(wrong, m.run_with_writes(TEXTS[0]), layer=1)
    with pytest.raises(ValueError, match="subspace 'wide' has d_model=65 but model 'GPT2LMHeadModel' has d_model=64"):
        interp.readers(wrong, m)
    with pytest.raises(ValueError, match="has d_model=65 but model"):
        with interp.ablate(m, wrong, at=0, mode="zero"):
            pass
    with pytest.raises(ValueError, match=r"mode='mean' needs mean=\.\.\.: the stream's mean at the ablated sites; compute it with"):
        with interp.ablate(m, sub, at=0):
            pass
    with pytest.raises(ValueError, match="mode='shuffle' is not supported"):
        with interp.ablate(m, sub, at=0, mode="shuffle"):
            pass
    with pytest.raises(TypeError, match="each site must be a layer int or a"):
        with interp.ablate(m, sub, at="L0", mode="zero"):
            pass
    with pytest.raises(ValueError, match=r"mean for site \(0, 'resid_pre'\) must be a finite tensor of shape \[64\]"):
        with interp.ablate(m, sub, at=0, mode="mean", mean=torch.full((64,), float("nan"))):
            pass
    with pytest.raises(ValueError, match="resid_mid is not part of a parallel attention"):
        with interp.ablate(tiny_models["neox"], sub, at=(0, "resid_mid"), mode="zero"):
            pass
    with pytest.raises(TypeError, match="subspace must be a Subspace"):
        interp.writers(torch.eye(64), m.run_with_writes(TEXTS[0]), layer=1)
    with pytest.raises(ValueError, match=r"writes lack layers \[0\]"):
        interp.writers(sub, m.run_with_writes(TEXTS[0], layers=[1]), layer=2)
    assert n_hooks(m) == 0
