"""Planted truth: neurons and heads made to delete by weight surgery on random models must
be found by the defaults, with no more false positives than the null predicts, and the
evidence on data must show them erasing (and name a planted writer)."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.memory import deletion_summary
from interp.testing import random_hf_model, tiny_tokenizer

DELETERS = [(0, 10), (1, 20), (1, 200)]
AMPLIFIER = (1, 30)  # output = +0.9 x input: must not be flagged
HEADS = [(0, 1), (1, 3)]
TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
]


def _mlp(hf, family, layer):
    """``(W_in [d_model, d_mlp], W_out [d_mlp, d_model])`` as views of the HF parameters."""
    if family == "gpt2":  # Conv1D: weights are [d_in, d_out]
        mlp = hf.transformer.h[layer].mlp
        return mlp.c_fc.weight, mlp.c_proj.weight
    mlp = hf.model.layers[layer].mlp
    return mlp.up_proj.weight.T, mlp.down_proj.weight.T


def plant_neurons(hf, family, neurons, factor=-0.9):
    """Set each neuron's output vector to ``factor`` x its (mean-centred, for LayerNorm)
    input vector."""
    with torch.no_grad():
        for ly, n in neurons:
            w_in, w_out = _mlp(hf, family, ly)
            v = w_in[:, n].clone()
            w_out[n, :] = factor * (v - v.mean() if family == "gpt2" else v)


def plant_heads(hf, family, heads, alpha=0.05):
    """Give each head the OV circuit ``W_V @ W_O = -alpha * (projection onto W_V's span)``."""
    cfg = hf.config
    d, n_heads = cfg.hidden_size, cfg.num_attention_heads
    dh = d // n_heads
    with torch.no_grad():
        for ly, h in heads:
            if family == "gpt2":
                attn = hf.transformer.h[ly].attn
                W_V = attn.c_attn.weight[:, 2 * d + h * dh: 2 * d + (h + 1) * dh]
                attn.c_proj.weight[h * dh:(h + 1) * dh, :] = -alpha * torch.linalg.pinv(W_V)
            else:
                attn = hf.model.layers[ly].self_attn
                kv = h // (n_heads // cfg.num_key_value_heads)
                W_V = attn.v_proj.weight[kv * dh:(kv + 1) * dh, :].T
                attn.o_proj.weight[:, h * dh:(h + 1) * dh] = (-alpha * torch.linalg.pinv(W_V)).T


def plant_writer(hf, head, neuron, scale=10.0):
    """GPT-2: make head ``(0, head)`` write along the input vector of neuron ``(1, neuron)``.
    Compatibility processing folds the head's constant value (LayerNorm bias and b_V through
    W_V) into ``L0_attn_bias``, so the write is made orthogonal to that constant."""
    d = hf.config.hidden_size
    dh = d // hf.config.num_attention_heads
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        v = hf.transformer.h[1].mlp.c_fc.weight[:, neuron].clone()
        v = (v - v.mean()) / (v - v.mean()).norm()
        blk = hf.transformer.h[0]
        cols = slice(2 * d + head * dh, 2 * d + (head + 1) * dh)
        const = blk.ln_1.bias @ blk.attn.c_attn.weight[:, cols] + blk.attn.c_attn.bias[cols]
        r = torch.randn(dh, generator=g)
        r = r - (r @ const) / (const @ const) * const
        blk.attn.c_proj.weight[head * dh:(head + 1) * dh, :] = scale * torch.outer(r / r.norm(), v)


def _planted(family):
    hf = random_hf_model(family)
    plant_neurons(hf, family, DELETERS)
    plant_neurons(hf, family, [AMPLIFIER], factor=0.9)
    plant_heads(hf, family, HEADS)
    if family == "gpt2":
        plant_writer(hf, head=2, neuron=20)
    return interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")


@pytest.fixture(scope="module")
def planted_gpt2():
    return _planted("gpt2")


@pytest.fixture(scope="module")
def planted_llama():
    return _planted("llama")


@pytest.fixture(params=["gpt2", "llama"])
def planted(request, planted_gpt2, planted_llama):
    return planted_gpt2 if request.param == "gpt2" else planted_llama


@pytest.mark.parametrize("null", ["analytic", "empirical"])
def test_the_screen_finds_every_planted_neuron(planted, null):
    """The weights-only screen (no data): flagged is then the cosine past the null threshold."""
    df = interp.find_deleting_neurons(planted, False, null=null)
    assert (df["verdict"] == "unmeasured").all()
    found = set(zip(df["layer"], df["neuron"]))
    assert set(DELETERS) <= found
    assert len(found - set(DELETERS)) <= 1  # the null expects 0.1
    assert set(zip(df["layer"][:3], df["neuron"][:3])) == set(DELETERS)  # most negative first
    assert AMPLIFIER not in found
    assert (df["cosine"] < -0.8).sum() >= 3 and (df["z"] < -5).sum() >= 3
    if planted.cfg.gated:  # the planted relation is with W_in (up), not with the gate
        assert df.set_index("label").loc["L1N20", "cosine_gate"] > -0.5


def test_planted_heads_top_the_ov_score_and_nothing_else_is_deleting(planted):
    """These planted heads attend about uniformly, so they write minus the average of what the
    prefix holds: the OV score finds them, and the verdict (which needs them to read their own
    position's content and to erase it on data) may or may not call them deleting; nothing
    unplanted is."""
    df = interp.find_deleting_heads(planted)
    flagged = set(zip(df.loc[df["flagged"], "layer"], df.loc[df["flagged"], "head"]))
    assert flagged <= set(HEADS)
    by_score = df.sort_values("score", ascending=False)
    assert set(zip(by_score["layer"][:2], by_score["head"][:2])) == set(HEADS)
    top = by_score.iloc[0]
    assert top["score"] > 0.95 and top["neg_eig_share"] > 0.95 and top["z"] > 3
    assert list(df.columns[:5]) == ["layer", "head", "label", "verdict", "flagged"]
    assert df.attrs["null"] in ("cross-head", "gaussian")


def test_copy_suppression_sees_planted_heads_through_tied_embeddings(planted_gpt2):
    df = interp.find_deleting_heads(planted_gpt2).set_index("label")
    # GPT-2 ties W_U to W_E, so -P on W_V's span pushes every token's own logit down
    assert df.loc["L0H1", "copy_suppression"] > 0.9 and df.loc["L1H3", "copy_suppression"] > 0.9
    assert df.drop(["L0H1", "L1H3"])["copy_suppression"].abs().max() < 0.5
    assert interp.find_deleting_heads(planted_gpt2, n_tokens=0)["copy_suppression"].isna().all()


def test_evidence_shows_planted_deleters_erasing(planted):
    neurons = [f"L{ly}N{n}" for ly, n in DELETERS] + ["L1N30", "L1N5"]
    ev = interp.deletion_evidence(planted, TEXTS, neurons=neurons, heads=["L1H3", "L1H2"], progress=False)
    per = ev.drop_duplicates("deleter").set_index("deleter")
    for label in neurons[:3]:
        assert per.loc[label, "removed_fraction"] > 0.02, label
    assert per.loc["L1N30", "removed_fraction"] < -0.02  # the amplifier adds to what it reads
    assert per.loc["L1H3", "removed_fraction"] > 0.4 and per.loc["L1H3", "firing_rate"] > 0.8
    assert per.loc["L1H3", "removed_fraction"] > per.loc["L1H2", "removed_fraction"] + 0.4
    assert (per["n_tokens"] == sum(len(t) for t in planted.to_str_tokens(TEXTS))).all()


def test_evidence_names_the_planted_writer(planted_gpt2):
    ev = interp.deletion_evidence(planted_gpt2, TEXTS, neurons=["L1N20"], heads=[], progress=False)
    assert ev.iloc[0]["writer"] == "L0H2" and ev.iloc[0]["share"] > 0.5
    said = deletion_summary(ev)["erases"].iloc[0]
    assert said.startswith("L1N20 erases what L0H2 (")


def test_default_selection_is_the_flagged_set(planted_gpt2):
    """deletion_evidence's default deleters are the verdicts' own: the neurons and heads that
    erase on data (these planted neurons remove only a few percent, so only the head is)."""
    ev = interp.deletion_evidence(planted_gpt2, TEXTS[:1], progress=False, top_writers=2)
    deleters = ev.drop_duplicates("deleter")
    heads = interp.find_deleting_heads(planted_gpt2).query("flagged")["label"]
    neurons = interp.find_deleting_neurons(planted_gpt2)["label"]
    assert set(heads) and set(heads) <= {f"L{ly}H{h}" for ly, h in HEADS}
    assert set(deleters["deleter"]) == set(neurons) | set(heads)
