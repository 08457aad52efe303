"""deletion_evidence against independent computations from the write record (resid,
neuron_write, head_write, components), on every architecture family; its errors; and the
model left untouched by every memory function."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.memory import deletion_summary

TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"]


def _weighted_shares(w, u, weight, layer, where):
    """Shares of ``sum(weight * x . u)`` by component, from ``ResidualWrites.components``."""
    labels, stack = w.components(layer=layer, where=where, mlp="neuron")
    proj = (stack * u).sum(-1) if u.dim() == 3 else stack @ u  # [C, b, p]
    num = (proj * weight).flatten(1).sum(1)
    return dict(zip(labels, (num / num.sum()).tolist()))


def test_neuron_evidence_matches_the_record(tiny_model):
    m, c = tiny_model, tiny_model.cfg
    ly, n = 1, 7
    ev = interp.deletion_evidence(m, TEXTS, neurons=[(ly, n)], heads=[], top_writers=10**6, progress=False)
    w = m.run_with_writes(TEXTS)
    mask = w.mask
    x = w.resid(ly, "pre" if c.parallel else "mid")
    u = m.weights.mlp_in(ly)[:, n] / m.weights.mlp_in(ly)[:, n].norm()
    before = x @ u
    after = (x + w.neuron_write(ly, n)) @ u
    act = w.acts[ly][..., n]
    fire = ((x @ m.weights.mlp_gate(ly)[:, n]) > 0 if c.gated else act > 0) & mask
    want_frac = float(-((after - before) * before.sign())[fire].sum() / before.abs()[fire].sum())
    row = ev.iloc[0]
    assert row["n_tokens"] == int(mask.sum())
    assert row["firing_rate"] == pytest.approx(float(fire.sum() / mask.sum()))
    assert row["removed_fraction"] == pytest.approx(want_frac, rel=1e-4, abs=1e-6)
    # writer shares: every earlier component, and nothing else, partitions the projection
    want = _weighted_shares(w, u, act * fire, ly, "pre" if c.parallel else "mid")
    got = dict(zip(ev["writer"], ev["share"]))
    assert abs(got.pop("other")) < 1e-4
    assert set(got) == set(want)
    for label, share in want.items():
        assert got[label] == pytest.approx(share, abs=1e-4), label
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-4)


def test_head_evidence_matches_the_record(tiny_model):
    m = tiny_model
    ly, h = 1, 2
    ev = interp.deletion_evidence(m, TEXTS, neurons=[], heads=[f"L{ly}H{h}"], top_writers=10**6, progress=False)
    w = m.run_with_writes(TEXTS)
    mask = w.mask
    hw = w.head_write(ly, h)
    norm = hw.norm(dim=-1)
    D = -hw / norm[..., None]
    before = (w.resid(ly, "pre") * D).sum(-1)
    row = ev.iloc[0]
    assert row["kind"] == "head" and row["deleter"] == "L1H2"
    assert row["firing_rate"] == pytest.approx(float(((before > 0) & mask).sum() / mask.sum()))
    want_frac = float((norm * before.sign())[mask].sum() / before.abs()[mask].sum())
    assert row["removed_fraction"] == pytest.approx(want_frac, rel=1e-4, abs=1e-6)
    want = _weighted_shares(w, D, norm * mask, ly, "pre")
    got = dict(zip(ev["writer"], ev["share"]))
    assert abs(got.pop("other")) < 1e-4 and set(got) == set(want)
    for label, share in want.items():
        assert got[label] == pytest.approx(share, abs=1e-4), label


def test_writes_stream_and_record_inputs_agree(gpt2_model):
    kw = dict(neurons=["L1N3", "L0N9", (-1, 5)], heads=["L1H0"], progress=False)
    a = interp.deletion_evidence(gpt2_model, TEXTS, **kw)
    b = interp.deletion_evidence(gpt2_model, gpt2_model.run_with_writes(TEXTS), **kw)
    c = interp.deletion_evidence(gpt2_model, [gpt2_model.run_with_writes(t) for t in TEXTS], **kw)
    cols = ["deleter", "writer", "share", "removed_fraction", "firing_rate"]
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(a[cols], b[cols], atol=1e-6)
    pd_testing.assert_frame_equal(a[cols], c[cols], atol=1e-6)
    assert list(a.drop_duplicates("deleter")["deleter"]) == ["L1N3", "L0N9", "L1N5", "L1H0"]
    assert (a.groupby("deleter")["rank"].apply(list).map(len) == 6).all()


def test_subspace_overlap(gpt2_model):
    u = gpt2_model.weights.mlp_in(1)[:, 3]
    other = torch.randn(64, 3)
    other -= torch.outer(u, u @ other) / (u @ u)

    class Sub:
        basis = torch.linalg.qr(torch.cat([u[:, None], torch.randn(64, 1)], 1))[0]

    ev = interp.deletion_evidence(gpt2_model, TEXTS, neurons=["L1N3"], heads=["L1H0"], subspace=Sub(),
                                  progress=False)
    assert ev.set_index("deleter").loc["L1N3", "subspace_overlap"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    ev0 = interp.deletion_evidence(gpt2_model, TEXTS, neurons=["L1N3"], heads=[], subspace=other,
                                   progress=False)
    assert ev0["subspace_overlap"].iloc[0] == pytest.approx(0.0, abs=1e-5)
    assert 0 <= ev.set_index("deleter").loc["L1H0", "subspace_overlap"].iloc[0] <= 1


def test_summary_sentence(gpt2_model):
    ev = interp.deletion_evidence(gpt2_model, TEXTS, neurons=["L1N3"], heads=[], progress=False)
    s = deletion_summary(ev, min_share=0.0, max_writers=2)
    top = ev.iloc[:2]
    assert s["erases"].iloc[0] == (f"L1N3 erases what {top.writer.iloc[0]} ({top.share.iloc[0]:.0%}) and "
                                   f"{top.writer.iloc[1]} ({top.share.iloc[1]:.0%}) wrote")
    with pytest.raises(ValueError, match="lacks the columns"):
        deletion_summary(ev.drop(columns="share"))


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(neurons=["L1X3"]), ValueError, r"neurons has the label 'L1X3'; neuron labels look like 'L3N120'"),
        (dict(neurons=["L1N999"]), interp.IndexOutOfRangeError, r"neurons=999 out of range .* 256 neurons"),
        (dict(neurons=[(5, 0)]), interp.IndexOutOfRangeError, r"neurons=5 out of range .* 2 layers"),
        (dict(neurons="L1N3"), TypeError, r"neurons='L1N3' must be a list of \(layer, neuron\) pairs"),
        (dict(neurons=[(1,)]), TypeError, r"neurons has the item \(1,\); pass \(layer, neuron\) pairs"),
        (dict(heads=["L0H9"]), interp.IndexOutOfRangeError, r"heads=9 out of range .* 4 heads"),
        (dict(top_writers=0), ValueError, r"top_writers=0 must be a positive int"),
        (dict(subspace=torch.randn(32, 2)), ValueError, r"shape \(2, 32\) but the model's d_model is 64"),
    ],
)
def test_evidence_errors(gpt2_model, kw, exc, match):
    kw = dict(dict(neurons=["L1N3"], heads=[]), **kw)
    with pytest.raises(exc, match=match):
        interp.deletion_evidence(gpt2_model, TEXTS, progress=False, **kw)


def test_evidence_refuses_foreign_partial_or_raw_writes(tiny_models, gpt2_model):
    other = tiny_models["neox"].run_with_writes(TEXTS)
    with pytest.raises(interp.ModelMismatchError, match="recorded on 'GPTNeoXForCausalLM', not on model="):
        interp.deletion_evidence(gpt2_model, other, neurons=["L1N3"], heads=[])
    part = gpt2_model.run_with_writes(TEXTS, layers=[0])
    with pytest.raises(ValueError, match=r"records layers \[0\]; deletion_evidence needs all 2"):
        interp.deletion_evidence(gpt2_model, part, neurons=["L1N3"], heads=[])
    raw = interp.testing.random_model("gpt2", processing="raw")
    with pytest.raises(ValueError, match="processing='raw'; deletion_evidence needs 'compat'"):
        interp.deletion_evidence(raw, TEXTS, neurons=["L1N3"], heads=[])


def test_heads_errors(gpt2_model):
    with pytest.raises(interp.IndexOutOfRangeError, match=r"layers=\[-3\] out of range"):
        interp.find_deleting_heads(gpt2_model, layers=[-3])
    with pytest.raises(ValueError, match="max_removed=0.2 must exceed min_removed=0.3"):
        interp.find_deleting_heads(gpt2_model, max_removed=0.2)
    with pytest.raises(ValueError, match="n_tokens=-1 must be a non-negative int"):
        interp.find_deleting_heads(gpt2_model, n_tokens=-1)
    with pytest.raises(TypeError, match="model must be an interp.Model, got dict"):
        interp.find_deleting_heads({})


def _state(model):
    bridge = model.bridge
    hooks = sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in bridge.modules())
    return {k: v.clone() for k, v in bridge.state_dict().items()}, hooks, bridge.training


def test_model_unchanged_by_every_call(tiny_model):
    before, hooks, training = _state(tiny_model)
    interp.find_deleting_neurons(tiny_model)
    interp.neuron_in_out_cosines(tiny_model, null="empirical")
    interp.find_deleting_heads(tiny_model)
    interp.deletion_evidence(tiny_model, TEXTS, neurons=["L1N1"], heads=["L1H1"], progress=False)
    with pytest.raises(interp.IndexOutOfRangeError):
        interp.deletion_evidence(tiny_model, TEXTS, neurons=["L1N1", "L7N1"], progress=False)
    after, hooks2, training2 = _state(tiny_model)
    assert hooks2 == hooks and training2 == training
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_short_texts_are_used_and_an_empty_corpus_raises(gpt2_model, tmp_path):
    ev = interp.deletion_evidence(gpt2_model, ["x = 1"], neurons=["L1N3"], heads=[], progress=False)
    assert ev["n_tokens"].iloc[0] == len(gpt2_model.to_str_tokens("x = 1")[0])
    (tmp_path / "a.py").write_text("")  # an empty file: the corpus holds no token at all
    with pytest.raises(ValueError, match="yielded no tokens"):
        interp.deletion_evidence(gpt2_model, str(tmp_path), neurons=["L1N3"], heads=[], progress=False)
