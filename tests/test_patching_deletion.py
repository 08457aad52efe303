"""deletion_effect: ablating a planted deleter makes the direction it erases survive to the
next site by exactly what its weights predict, far beyond random controls; the ablated stream
agrees with plain torch hooks; errors and an unchanged model."""

from __future__ import annotations

import pytest
import torch
from test_memory_surgery import TEXTS, _planted

import interp

DATA = TEXTS * 3


@pytest.fixture(scope="module")
def planted_llama():
    return _planted("llama")


@pytest.fixture(scope="module")
def planted_gpt2():
    return _planted("gpt2")


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_planted_neuron_survives_by_its_weights(planted_llama, mode):
    df = interp.deletion_effect(planted_llama, "L0N10", DATA, n_controls=4, mode=mode, progress=False)
    first = df[df.site == "L1_resid_pre"].set_index("component")
    d = first.loc["L0N10"]
    assert abs(d.change - d.predicted) < 1e-4 * max(1.0, abs(d.predicted))  # nothing else differs there
    assert d.change > 0.05 and d.survival_ablated > d.survival_clean
    controls = first[first.role == "control"]
    assert len(controls) == 4 and (controls["change"] - controls["predicted"]).abs().max() < 1e-4
    assert d.change > 5 * controls["change"].abs().max()
    assert abs(d.control_change - controls["change"].mean()) < 1e-12
    assert df.attrs["mode"] == mode


def test_agrees_with_plain_hooks_and_the_weights(planted_llama):
    """Independent: plain hooks on the HF model (zero L0N10 at down_proj's input), the neuron's
    input direction from the checkpoint's own weights (up_proj row times the norm's weight)."""
    m = planted_llama
    df = interp.deletion_effect(m, "L0N10", DATA[:3], n_controls=0, progress=False)
    d = df[df.site == "L1_resid_pre"].iloc[0]
    hf = m._fast.hf
    layer0 = hf.model.layers[0]
    u = (layer0.mlp.up_proj.weight[10] * layer0.post_attention_layernorm.weight).detach().double()
    u = u / u.norm()
    w_out_u = float(layer0.mlp.down_proj.weight[:, 10].detach().double() @ u)
    sums = dict(c=0.0, a=0.0, den=0.0, pred=0.0)
    for text in DATA[:3]:
        toks = m.to_tokens(text).tokens
        got = {}

        def keep(name, out=False, got=got):
            if out:
                return lambda mod, a, o: got.__setitem__(name, o.detach().clone())
            return lambda mod, a: got.__setitem__(name, a[0].detach().clone())

        hs = [hf.model.layers[1].register_forward_pre_hook(keep("next")),
              layer0.post_attention_layernorm.register_forward_pre_hook(keep("mid")),
              layer0.mlp.gate_proj.register_forward_hook(keep("gate", out=True)),
              layer0.mlp.down_proj.register_forward_pre_hook(keep("act"))]
        with torch.no_grad():
            hf(input_ids=toks, use_cache=False)
            clean = {k: v[0, 1:].double() for k, v in got.items()}

            def zero(mod, a):
                x = a[0].clone()
                x[..., 10] = 0
                return (x,)
            hs.append(layer0.mlp.down_proj.register_forward_pre_hook(zero))
            hf(input_ids=toks, use_cache=False)
        for h in hs:
            h.remove()
        fire = (clean["gate"][:, 10] > 0).double()
        p = clean["mid"] @ u
        sg = torch.sign(p) * fire
        sums["den"] += float((p.abs() * fire).sum())
        sums["c"] += float((sg * (clean["next"] @ u)).sum())
        sums["a"] += float((sg * (got["next"][0, 1:].double() @ u)).sum())
        sums["pred"] += float((sg * -clean["act"][:, 10] * w_out_u).sum())
    assert abs(d.survival_clean - sums["c"] / sums["den"]) < 1e-5
    assert abs(d.survival_ablated - sums["a"] / sums["den"]) < 1e-5
    assert abs(d.predicted - sums["pred"] / sums["den"]) < 1e-5
    assert d.n_tokens > 0


def test_planted_head_in_a_sequential_block(planted_gpt2):
    df = interp.deletion_effect(planted_gpt2, "L1H3", DATA, n_controls=3, progress=False)
    assert list(df[df.role == "deleter"]["site"]) == ["L1_resid_mid", "L2_resid_pre"]
    mid = df[df.site == "L1_resid_mid"].set_index("component")
    d = mid.loc["L1H3"]
    assert abs(d.change - d.predicted) < 1e-4 * max(1.0, abs(d.predicted))
    assert d.survival_clean < 0.5 < d.survival_ablated  # it erased more than half; without it, it is back


def test_probe_and_subspace_columns(default_model):
    texts = [f"def f{i}(a, b):\n    return a + b * {i}\n\n\nx{i} = f{i}(1, 2)\n" for i in range(12)]
    sub = interp.Subspace(default_model.weights.mlp_in(1)[:, 154], name="in154")
    df = interp.deletion_effect(default_model, "L1N154", texts, probe="current_token", subspace=sub,
                                n_controls=2, progress=False)
    for col in ("accuracy_clean", "accuracy_ablated", "accuracy_change", "subspace_clean", "subspace_ablated",
                "control_accuracy_change"):
        assert col in df.columns
    assert df["accuracy_clean"].between(0, 1).all() and df["accuracy_ablated"].between(0, 1).all()
    assert (df["accuracy_clean"] == df["accuracy_clean"].iloc[0]).all()  # one probe, one clean score
    d = df[df.role == "deleter"].iloc[0]
    assert d.subspace_ablated != d.subspace_clean


@pytest.mark.parametrize("max_tokens", [100, 333])
def test_reads_exactly_max_tokens(default_model, max_tokens):
    """The budget is met exactly (the last batch is cut), not overshot by up to a batch."""
    texts = [f"def f{i}(a, b):\n    return a + b * {i}\n\n\nx{i} = f{i}(1, 2)\n" * 4 for i in range(12)]
    df = interp.deletion_effect(default_model, "L1N154", texts, max_tokens=max_tokens, n_controls=1,
                                batch_size=2, progress=False)
    assert df.attrs["n_tokens_read"] == max_tokens
    assert (df["n_tokens"] <= max_tokens).all()


def test_selection_and_errors(default_model):
    m = default_model
    dn = interp.find_deleting_neurons(m)
    a = interp.deletion_effect(m, dn.iloc[0], TEXTS, n_controls=1, progress=False)
    b = interp.deletion_effect(m, dn.head(2), TEXTS, n_controls=1, progress=False)
    assert a["deleter"].unique().tolist() == [dn.iloc[0]["label"]]
    assert b["deleter"].unique().tolist() == dn["label"].head(2).tolist()
    with pytest.raises(ValueError, match="deleter holds .*name components as"):
        interp.deletion_effect(m, "L1X3", TEXTS)
    with pytest.raises(interp.IndexOutOfRangeError):
        interp.deletion_effect(m, "L9N3", TEXTS)
    with pytest.raises(ValueError, match="mode="):
        interp.deletion_effect(m, "L1N3", TEXTS, mode="resample")
    with pytest.raises(TypeError, match="deleter="):
        interp.deletion_effect(m, 3, TEXTS)


def test_unchanged_model(planted_llama):
    m = planted_llama
    before = [p.detach().clone() for p in m._fast.hf.parameters()]
    interp.deletion_effect(m, ["L0N10", "L1H3"], DATA[:3], n_controls=1, mode="mean", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, m._fast.hf.parameters()))
    assert m.active_hooks() == []
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m._fast.hf.modules())
