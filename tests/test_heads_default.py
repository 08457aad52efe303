"""Head detectors, composition, deleting heads and the ICL score on the embedded default
model, against independent computations on the checkpoint loaded by transformers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from heads_reference import eager_model, hf_patterns, reference_scores

import interp
from interp.heads.data import repeated_tokens, text_tokens
from interp.memory.heads import _head_weights, _unembed_stats, copy_suppression
from interp.models import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def hf():
    return eager_model(DEFAULT_MODEL_DIR)


@pytest.mark.parametrize("kind", ["previous_token", "induction", "duplicate_token", "bos", "self"])
def test_scores_match_eager_attention(default_model, hf, kind):
    toks = repeated_tokens(default_model) if kind in ("induction", "duplicate_token") else text_tokens(default_model)
    df = interp.head_scores(default_model, kind)
    assert df.attrs["n_rows"] == toks.tokens.shape[0]
    ref = reference_scores(hf_patterns(hf, toks.tokens), toks.tokens, toks.mask, kind)
    got = torch.tensor(df.sort_values(["layer", "head"])["score"].to_numpy()).reshape(ref.shape)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert df.iloc[0]["layer"] * ref.shape[1] + df.iloc[0]["head"] == int(ref.argmax())
    assert df["score"].is_monotonic_decreasing and list(df.columns[:6]) == [
        "layer", "head", "label", "score", "baseline", "flagged"]


def test_model_card_heads(default_model):
    prev = interp.head_scores(default_model, "previous_token")
    assert prev.iloc[0]["label"] == "L0H2" and prev.iloc[0]["score"] > 0.5
    ind = interp.head_scores(default_model, "induction")
    assert ind.iloc[0]["label"] == "L1H2" and ind.iloc[0]["score"] > 0.8
    assert ind.query("layer == 0")["score"].max() < 0.1  # layer 0 cannot do induction alone
    assert (ind.query("layer == 1")["flagged"]).all()


def test_user_pattern_is_the_mean_mass_on_it(default_model):
    toks = text_tokens(default_model, n_rows=2, n_ctx=32)
    p = toks.tokens.shape[1]
    target = torch.zeros(p, p)
    target[torch.arange(1, p), torch.arange(p - 1)] = 1.0  # previous token, but counted at every query
    got = interp.head_scores(default_model, target, data=toks).set_index("label")["score"]
    A = torch.stack(list(interp.attention_patterns(default_model, toks).values()))  # [layer, b, h, q, k]
    want = (A * target).sum(-1).mean((1, 3))  # every query, q = 0 included
    assert abs(got["L0H2"] - float(want[0, 2])) < 1e-6
    excl = interp.head_scores(default_model, target, data=toks, exclude_bos=True).set_index("label")["score"]
    A0 = A.clone()
    A0[..., 0] = 0
    want_ex = (A0 * target).sum((-1, -2)).sum(1) / A0.sum((-1, -2)).sum(1)
    assert abs(excl["L1H1"] - float(want_ex[1, 1])) < 1e-6


def test_bad_kinds_and_patterns(default_model):
    with pytest.raises(ValueError, match="kind='prev'"):
        interp.head_scores(default_model, "prev")
    with pytest.raises(ValueError, match="pass data="):
        interp.head_scores(default_model, torch.eye(4))
    with pytest.raises(ValueError, match="detection pattern is"):
        interp.head_scores(default_model, torch.eye(4), data="x = 1 + 2")
    with pytest.raises(ValueError, match="no query to score"):
        interp.head_scores(default_model, "induction", data=torch.tensor([[0, 5, 6, 7]]))


def test_k_composition_links_previous_token_heads_to_induction_heads(default_model):
    df = interp.composition_scores(default_model)
    k = df[df["kind"] == "K"]
    top = k.head(6)
    assert set(top["source"]) <= {"L0H2", "L0H3", "L0H0"} and set(top["target"]) <= {"L1H1", "L1H2", "L1H3"}
    assert k.iloc[0]["excess"] > k["excess"].median() + 0.03
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities import composition_scores as tl_scores

    w = default_model.weights
    OV = FactoredMatrix(w.W_V[0, 2], w.W_O[0, 2])
    QK = FactoredMatrix(w.W_Q[1, 2], w.W_K[1, 2].T)
    OV1 = FactoredMatrix(w.W_V[1, 2], w.W_O[1, 2])
    row = df.set_index(["kind", "source", "target"])["score"]
    for kind, right in (("Q", QK), ("K", QK.T), ("V", OV1)):
        assert abs(row[(kind, "L0H2", "L1H2")] - float(tl_scores(OV, right))) < 1e-6
    assert 0.05 < df.attrs["baseline"] < 0.2 and len(df) == 3 * 16


def test_neuron_composition_matches_direct_products(default_model):
    nc = interp.neuron_composition(default_model, ["L0N5", "L1N7"])
    w = default_model.weights
    got = nc.set_index(["kind", "source", "target"])["score"]
    v = w.W_out[0, 5].double()
    qk = w.W_Q[1, 3].double() @ w.W_K[1, 3].double().T
    assert abs(got[("K", "L0N5", "L1H3")] - float((v @ qk.T).norm() / (v.norm() * qk.norm()))) < 1e-9
    ov = w.W_V[0, 1].double() @ w.W_O[0, 1].double()
    u = w.W_in[1][:, 7].double()
    assert abs(got[("in", "L0H1", "L1N7")] - float((ov @ u).norm() / (ov.norm() * u.norm()))) < 1e-9
    assert set(nc["kind"]) == {"Q", "K", "V", "in"}
    assert not (nc["source"] == "L1N7").any()  # the last layer's neurons have no later head


def test_copy_suppression_is_the_rank_through_the_bottleneck(default_model):
    toks = torch.arange(default_model.cfg.d_vocab)
    stats = _unembed_stats(default_model)
    W_E, W_U = default_model.weights.W_E.double(), default_model.weights.W_U.double()
    for ly in range(default_model.cfg.n_layers):
        W_V, W_O = _head_weights(default_model, ly)
        approx = copy_suppression(default_model, ly, toks, stats)
        for h in range(default_model.cfg.n_heads):
            rows = (W_E @ W_V[h].double()) @ (W_O[h].double() @ W_U)  # the full [vocab, vocab] table
            own = rows.diagonal()[:, None]
            exact = float((1 - 2 * (rows < own).double().mean(1)).mean())
            assert abs(float(approx[h]) - exact) < 0.02


def test_induction_head_is_not_deleting(default_model):
    df = interp.find_deleting_heads(default_model).set_index("label")
    row = df.loc["L1H2"]
    # judged on data: it does not erase what it reads; its OV screen says it copies
    assert not row["flagged"] and row["verdict"] != "deleting", row
    assert row["copy_suppression"] < -0.5


def test_head_verdicts_summarise_the_per_query_removal(default_model):
    """The frame's medians and attention are the distribution of ``head_removal``'s per-query
    numbers: the medians to the histogram's bin width (their stated resolution), the mean
    attention to float64 summation."""
    from interp.memory.head_data import head_removal
    from interp.memory.verdict import BIN

    texts = ["def f(x):\n    return x + 1\n", "import os\nprint(os.sep)\n"]
    df = interp.find_deleting_heads(default_model, texts).set_index("label")
    w = default_model.run_with_writes(texts)
    per = head_removal(default_model, w, 1)
    for h in range(default_model.cfg.n_heads):
        row = df.loc[f"L1H{h}"]
        total = per["total"][:, h].double()
        assert abs(row["removed_median"] - float(total.median())) <= BIN + 1e-12, (h, row["removed_median"])
        assert row["n_queries"] == total.numel()
        assert abs(row["self_attention"] - float(per["self_attention"][:, h].double().mean())) <= 1e-9


def test_icl_score_against_direct_losses(default_model, hf):
    toks = repeated_tokens(default_model, n_rows=4, lengths=[40])
    got = interp.icl_score(default_model, toks, early=10, late=60)
    with torch.no_grad():
        logits = hf(input_ids=toks.tokens).logits
    loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), toks.tokens[:, 1:], reduction="none")
    want = float((loss[:, 59] - loss[:, 9]).mean())
    assert abs(got["score"].iloc[0] - want) < 1e-5 and want < -2  # the second copy is predicted
    assert got["late"].iloc[0] == 60
    text = interp.icl_score(default_model)
    assert text["late"].iloc[0] == default_model.cfg.n_ctx - 1 and text["n_rows"].iloc[0] == 16


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_composition_is_the_same_under_raw_processing(family):
    """Raw weights: the norm's scale (and LayerNorm's centring) folded by composition_scores
    itself gives what TransformerLens's compat processing gives."""
    from interp.testing import random_model

    a = interp.composition_scores(random_model(family)).set_index(["kind", "source", "target"])["score"]
    b = interp.composition_scores(random_model(family, processing="raw")).set_index(["kind", "source", "target"])
    assert (a - b["score"].loc[a.index]).abs().max() < 1e-6
