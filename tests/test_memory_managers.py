"""Planted truth for the rest of memory management: a deleting head beside decoys that attend
to themselves without erasing or sit on a sink; a massive first position and the head drawn to
it; an entropy neuron writing into a planted null space of W_U beside a decoy of the same norm;
prediction and suppression neurons beside a random one."""

from __future__ import annotations

import pytest
import torch
from test_heads_planted import COPY, DEL, E, planted_model

import interp
from interp.testing import random_hf_model, tiny_tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "import os\nimport sys\n\npath = os.path.join(sys.prefix, 'lib')\n",
] * 2
SINK_DIM = 100
SINK_HEAD = (1, 0)


def _grab_hf(family):
    """The planted Hugging Face model of ``test_heads_planted`` before it is loaded."""
    got = {}
    real = interp.load

    def grab(hf, **kw):
        got.update(hf=hf, kw=kw)

    interp.load = grab
    try:
        planted_model(family)
    finally:
        interp.load = real
    return got["hf"], got["kw"]


@pytest.fixture(scope="module")
def sink_model():
    """GPT-2 planted heads, plus: position 0 carries a large value in an unused dimension (a
    massive activation), and L1H0 attends to it with the deleter's OV circuit (-0.9 P): it
    erases only at the sink itself."""
    hf, kw = _grab_hf("gpt2")
    d, dh = 128, 32
    with torch.no_grad():
        hf.transformer.wpe.weight[0, SINK_DIM] = 30.0
        a = hf.transformer.h[1].attn
        ly, h = SINK_HEAD
        q_cols = slice(h * dh, (h + 1) * dh)
        k_cols = slice(d + h * dh, d + (h + 1) * dh)
        v_cols = slice(2 * d + h * dh, 2 * d + (h + 1) * dh)
        a.c_attn.weight[:, q_cols] = 0
        a.c_attn.weight[:, k_cols] = 0
        a.c_attn.weight[E, h * dh] = 2.0
        a.c_attn.weight[SINK_DIM, d + h * dh] = 2.0
        a.c_attn.bias[q_cols] = 0
        a.c_attn.bias[k_cols] = 0
        dl, dh_del = DEL
        a.c_attn.weight[:, v_cols] = a.c_attn.weight[:, 2 * d + dh_del * dh: 2 * d + (dh_del + 1) * dh]
        a.c_proj.weight[h * dh:(h + 1) * dh, :] = a.c_proj.weight[dh_del * dh:(dh_del + 1) * dh, :]
    return interp.load(hf, **kw)


def test_deleting_head_found_and_decoys_not(sink_model):
    df = interp.find_deleting_heads(sink_model, TEXTS).set_index("label")
    deleter, copier, sinker = (f"L{ly}H{h}" for ly, h in (DEL, COPY, SINK_HEAD))
    assert set(df.index[df["flagged"]]) == {deleter}, df[["verdict", "removed_median", "self_attention"]]
    assert df.index[0] == deleter and df.loc[deleter, "removed_median"] > 0.7
    assert df.loc[deleter, "self_attention"] > 0.9 and df.loc[deleter, "removed_self"] > 0.7
    # attends to itself without erasing
    assert df.loc[copier, "verdict"] == "amplifying" and df.loc[copier, "self_attention"] > 0.9
    # sits on the sink: its attention goes there, and erasing the sink itself is not counted
    assert df.loc[sinker, "sink_attention"] > 0.9 and df.loc[sinker, "verdict"] != "deleting"
    assert abs(df.loc[sinker, "removed_median"]) < 0.3
    assert "own position" in df.loc[deleter, "reason"]
    assert df.attrs["n_sinks"][1] == df.attrs["n_sinks"][0]  # position 0 of each row, every layer
    fig = interp.plots.deleting_heads(df.reset_index())
    assert "median" in fig.data[0].colorbar.title.text


def test_sinks_planted_and_drawn(sink_model, gpt2_model):
    df = interp.attention_sinks(sink_model, TEXTS)
    p0 = df[df["sink"] == "position 0"].set_index("layer")
    assert p0["massive"].all() and (p0["norm_ratio"] > 10).all() and (p0["dim"] == SINK_DIM).all()
    assert df.attrs["first_layer"]["position 0"] == 0
    assert p0.loc[1, "top_head"] == "L1H0" and p0.loc[1, "top_head_attention"] > 0.9
    plain = interp.attention_sinks(gpt2_model, TEXTS)
    assert not plain[plain["sink"] == "position 0"]["massive"].iloc[0]  # a random model's first token is ordinary
    fig = interp.plots.attention_sinks(df)
    assert fig.layout.yaxis.type == "log"


# ---- entropy neurons ----------------------------------------------------------------------
ENTROPY, ENTROPY_DECOY = 7, 8


@pytest.fixture(scope="module")
def entropy_model():
    """Random GPT-2 whose (tied) unembedding has a null direction ``e`` (centred), a last-layer
    neuron writing ``c e`` and a decoy writing ``c r`` (random, same norm)."""
    hf = random_hf_model("gpt2", norm_noise=0.0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        e = torch.randn(64, generator=g)
        e = e - e.mean()
        e = e / e.norm()
        W_E = hf.transformer.wte.weight
        W_E -= (W_E @ e)[:, None] * e[None]
        hf.transformer.wpe.weight -= (hf.transformer.wpe.weight @ e)[:, None] * e[None]
        r = torch.randn(64, generator=g)
        r = r - r.mean()
        r = r / r.norm()
        w_out = hf.transformer.h[1].mlp.c_proj.weight
        c = 20 * float(w_out.norm(dim=1).median())
        w_out[ENTROPY] = c * e
        w_out[ENTROPY_DECOY] = c * r
    return interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")


def test_entropy_neuron_found_and_decoy_not(entropy_model):
    df = interp.entropy_neurons(entropy_model, TEXTS, top=3, controls=4, k=1)
    by = df.set_index("label")
    ent, decoy = f"L1N{ENTROPY}", f"L1N{ENTROPY_DECOY}"
    assert df.iloc[0]["label"] == ent and by.loc[ent, "rho"] > 0.99
    assert by.loc[ent, "verdict"] == "entropy", by.loc[ent]
    assert by.loc[ent, "direct_effect"] < 0.01 * by.loc[ent, "total_effect"]  # all through the final norm
    assert by.loc[decoy, "rho"] < 0.2 and by.loc[decoy, "verdict"] != "entropy"
    assert set(df.loc[df["verdict"] == "entropy", "label"]) == {ent}
    fig = interp.plots.entropy_neurons(df)
    assert len(fig.data) >= 3


def test_entropy_logits_match_the_model(entropy_model):
    """The base logits the effects are measured from are the model's own."""
    from interp.memory.entropy import _centre, _logits_parts

    w = entropy_model.run_with_writes(TEXTS[:2])
    x, s, targets, sel = _logits_parts(entropy_model, w)
    ws = w.weights
    logits = _centre(x, entropy_model) @ ws.W_U.double() / s + ws.b_U.double()
    ref = entropy_model.logits(TEXTS[:2]).double()[sel]
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


# ---- prediction and suppression neurons ---------------------------------------------------
def test_prediction_and_suppression_found_and_decoy_not(gpt2_model):
    hf = random_hf_model("gpt2")
    with torch.no_grad():
        W_U = hf.lm_head.weight  # [vocab, d] (tied)
        v = W_U[[17, 42, 99]].sum(0)
        w_out = hf.transformer.h[1].mlp.c_proj.weight
        c = 3 * float(w_out.norm(dim=1).median()) / float(v.norm())
        w_out[3] = c * v
        w_out[4] = -c * v
        r = torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
        w_out[5] = r * float((c * v).norm() / r.norm())
    model = interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")
    df = interp.prediction_neurons(model, layers=-1).set_index("label")
    assert df.loc["L1N3", "kind"] == "prediction" and df.loc["L1N4", "kind"] == "suppression"
    assert df.loc["L1N5", "kind"] == "none"
    assert df.loc["L1N3", "vocab_kurtosis"] > df.attrs["null_kurtosis_max"]
    found = set(df.index[df["kind"] != "none"])
    assert found == {"L1N3", "L1N4"}, found
    fig = interp.plots.prediction_neurons(df.reset_index())
    assert any(t.name.startswith("prediction") for t in fig.data)


def test_vocab_moments_blocked_equal_the_whole_readout_in_float64():
    """Blocks of rows and vocabulary slices (a vocabulary not a multiple of the slice, a row
    chunk not dividing the rows) against the moments of the whole ``y`` in float64. The only
    float32 step is the matmul: each ``y`` is off by at most ``e = gamma(d) * |v| . |u|``
    (Higham 3.5, the sum of d products), so the k-th power sum moves by at most
    ``k * sum |y|^(k-1) e`` to first order; skew and kurtosis move by the sums' relative
    changes times their size (x2 for the margin of second-order terms)."""
    from interp.memory import prediction

    g = torch.Generator().manual_seed(0)
    d, vocab = 48, 5000
    W_U = torch.randn(d, vocab, generator=g) * torch.rand(d, 1, generator=g) * 3 + 0.5
    W_U[:, 7] *= 40  # a heavy tail
    v = torch.randn(37, d, generator=g)
    old, prediction.BLOCK = prediction.BLOCK, 64 * 10  # 64-column slices for a 10-row chunk
    try:
        skew, kurt, arg = prediction.vocab_moments(v, W_U, chunk=10)
    finally:
        prediction.BLOCK = old
    y = v.double() @ W_U.double()
    y = y - y.mean(-1, keepdim=True)
    m2, m3, m4 = (y.pow(k).mean(-1) for k in (2, 3, 4))
    u = torch.finfo(torch.float32).eps / 2
    e = (d * u / (1 - d * u)) * (v.double().abs() @ (W_U.double() - W_U.double().mean(1, keepdim=True)).abs())
    dm = {k: k * (y.abs().pow(k - 1) * e).mean(-1) for k in (2, 3, 4)}
    skew_bound = 2 * (dm[3] / m2.pow(1.5) + 1.5 * m3.abs() / m2.pow(2.5) * dm[2])
    kurt_bound = 2 * (dm[4] / m2.pow(2) + 2 * m4 / m2.pow(3) * dm[2])
    assert ((skew.double() - m3 / m2.pow(1.5)).abs() <= skew_bound).all()
    assert ((kurt.double() - m4 / m2.pow(2)).abs() <= kurt_bound).all()
    top = y.abs().max(-1)
    # the argmax is exact wherever the top two are further apart than the readout's rounding
    second = y.abs().topk(2, -1).values[:, 1]
    clear = (top.values - second) > 2 * e.max(-1).values
    assert clear.sum() >= 30 and (arg[clear] == top.indices[clear]).all()


def test_docstring_examples_run():
    import doctest

    import interp.memory.entropy
    import interp.memory.heads
    import interp.memory.neuron_data
    import interp.memory.prediction
    import interp.memory.sinks
    import interp.plots.managers

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for module in (interp.memory.neuron_data, interp.memory.heads, interp.memory.sinks, interp.memory.entropy,
                   interp.memory.prediction, interp.plots.managers):
        for test in finder.find(module, globs=dict(vars(module))):
            runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and runner.summarize(verbose=False).attempted >= 6
