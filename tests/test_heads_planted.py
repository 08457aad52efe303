"""Planted truth: heads built by weight surgery on random models of every family must be
found first by their detectors, and only the planted deleter is called deleting.

The planted model (2 layers, d_model 128, 4 heads of 32) writes a constant direction ``e``,
a token code (24 dims) and, for GPT-2, a sinusoidal position code into the stream. Rotary
models get positional attention from constant queries and keys whose rotary phases peak at
the wanted offset; GPT-2 from its learned positions. Heads:

- L0H0 previous-token head: attends to i - 1 and copies the token code into a second block;
- L1H1 induction head: its query reads the token code, its key the previous-token block, and
  it copies the attended token (raises its logit);
- L1H2 deleter: attends to itself and writes -alpha times what it reads (OV = -alpha P);
- L1H3 copier: attends to itself and writes +alpha times what it reads.
"""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.testing import random_hf_model, tiny_tokenizer

D, H, DH = 128, 4, 32
E, TOK, PREV, POS = 0, slice(8, 32), slice(40, 64), slice(72, 84)
N_TOK = 24
PT, IND, DEL, COPY = (0, 0), (1, 1), (1, 2), (1, 3)


class Surgeon:
    """Set one head's maps on a Hugging Face model in the row-vector convention of
    TransformerLens: ``q = norm(x) @ M_Q`` (``M_Q [d_model, d_head]``), ``write = z @ M_O``."""

    def __init__(self, hf, family):
        self.hf, self.family = hf, family
        cfg = hf.config
        self.kv = getattr(cfg, "num_key_value_heads", None) or H

    def _attn(self, ly):
        if self.family == "gpt2":
            return self.hf.transformer.h[ly].attn
        if self.family == "neox":
            return self.hf.gpt_neox.layers[ly].attention
        return self.hf.model.layers[ly].self_attn

    def set(self, ly, h, which, M):
        """``which`` in q, k, v (``M [d_model, d_head]``; k/v take the kv head) or o (``[d_head, d_model]``)."""
        a = self._attn(ly)
        with torch.no_grad():
            if self.family == "gpt2":
                if which == "o":
                    a.c_proj.weight[h * DH:(h + 1) * DH, :] = M
                else:
                    off = {"q": 0, "k": D, "v": 2 * D}[which] + h * DH
                    a.c_attn.weight[:, off:off + DH] = M
                    a.c_attn.bias[off:off + DH] = 0
            elif self.family == "neox":
                if which == "o":
                    a.dense.weight[:, h * DH:(h + 1) * DH] = M.T
                else:
                    off = h * 3 * DH + {"q": 0, "k": DH, "v": 2 * DH}[which]
                    a.query_key_value.weight[off:off + DH, :] = M.T
                    a.query_key_value.bias[off:off + DH] = 0
            else:
                proj = {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.o_proj}[which]
                if which == "o":
                    proj.weight[:, h * DH:(h + 1) * DH] = M.T
                else:
                    proj.weight[h * DH:(h + 1) * DH, :] = M.T

    def quiet(self, factor=0.1):
        """Scale down every head's output and every MLP's output (the planted heads are set after)."""
        with torch.no_grad():
            for ly in range(2):
                a = self._attn(ly)
                o = {"gpt2": "c_proj", "neox": "dense", "llama": "o_proj"}[self.family]
                getattr(a, o).weight.mul_(factor)
                if self.family == "gpt2":
                    self.hf.transformer.h[ly].mlp.c_proj.weight.mul_(factor)
                elif self.family == "neox":
                    self.hf.gpt_neox.layers[ly].mlp.dense_4h_to_h.weight.mul_(factor)
                else:
                    self.hf.model.layers[ly].mlp.down_proj.weight.mul_(factor)


def _rotary(family):
    """(rotated pairs (i, i + half) usable for position, their angles, content head dims)."""
    if family == "llama":
        theta = [10000 ** (-2 * i / DH) for i in range(DH // 2)]
        return [(i, i + DH // 2) for i in range(5)], theta[:5], [*range(10, 16), *range(26, 32)]
    if family == "neox":
        r = DH // 4
        theta = [10000 ** (-2 * i / r) for i in range(r // 2)]
        return [(i, i + r // 2) for i in range(2)], theta[:2], list(range(r, DH))
    return None, None, list(range(N_TOK))


def _positional(family, offset, scale):
    """``(M_Q, M_K)`` of a head whose query at i attends to key i - offset."""
    M_Q, M_K = torch.zeros(D, DH), torch.zeros(D, DH)
    pairs, theta, _ = _rotary(family)
    if family == "gpt2":  # position code: pair p at dims POS.start + 2p, + 2p + 1, angle i * theta_p
        beta = 15.0
        for p, th in enumerate(GPT2_THETA):
            r = POS.start + 2 * p
            g = math.sqrt(beta * math.sqrt(DH)) / scale
            c, s = math.cos(offset * th), math.sin(offset * th)
            # q_i = code_{i - offset}: rotate the pair by -offset * theta
            M_Q[r, 2 * p], M_Q[r, 2 * p + 1] = g * c, -g * s
            M_Q[r + 1, 2 * p], M_Q[r + 1, 2 * p + 1] = g * s, g * c
            M_K[r, 2 * p], M_K[r + 1, 2 * p + 1] = g, g
        return M_Q, M_K
    beta = 15.0 if family == "llama" else 80.0
    a = math.sqrt(beta * math.sqrt(DH))
    for (i, j), th in zip(pairs, theta):
        M_Q[E, i] = a / scale
        M_K[E, i], M_K[E, j] = a * math.cos(offset * th) / scale, a * math.sin(offset * th) / scale
    return M_Q, M_K


GPT2_THETA = [1.0, 0.56, 0.32, 0.18, 0.1, 0.056]


def planted_model(family):
    kw = dict(n_layers=2, d_model=D, n_heads=H, d_vocab=300, n_ctx=128, norm_noise=0.0)
    if family == "llama":
        kw["n_kv_heads"] = 2
    hf = random_hf_model(family, seed=3, **kw)
    s = Surgeon(hf, family)
    s.quiet()
    g = torch.Generator().manual_seed(11)
    codes = torch.randn(300, N_TOK, generator=g)
    codes = codes / codes.norm(dim=-1, keepdim=True)
    W_E = torch.zeros(300, D)
    W_E[:, E] = 1.0
    W_E[:, TOK] = codes
    with torch.no_grad():
        hf.get_input_embeddings().weight.copy_(W_E)
        hf.get_output_embeddings().weight.copy_(W_E)  # tied in value: the token code is read out as itself
        if family == "gpt2":
            n = torch.arange(128, dtype=torch.float32)[:, None]
            pos = torch.zeros(128, D)
            th = torch.tensor(GPT2_THETA)[None]
            pos[:, POS.start:POS.stop:2], pos[:, POS.start + 1:POS.stop:2] = (n * th).cos(), (n * th).sin()
            hf.transformer.wpe.weight.copy_(pos / math.sqrt(len(GPT2_THETA)))
    # the stream's RMS: |x|^2 = 2 (e + code) in layer 0, + the previous-token code in layer 1
    extra = 1.0 if family == "gpt2" else 0.0
    s0, s1 = math.sqrt(D / (2 + extra)), math.sqrt(D / (3 + extra))
    pos_scale = s0 / math.sqrt(len(GPT2_THETA))
    # L0H0: previous-token head, copies the token code into PREV
    M_Q, M_K = _positional(family, 1, pos_scale if family == "gpt2" else s0)
    s.set(0, PT[1], "q", M_Q)
    s.set(0, PT[1] // (H // s.kv), "k", M_K)
    V = torch.zeros(D, DH)
    V[TOK, :N_TOK] = torch.eye(N_TOK) / s0
    W_O = torch.zeros(DH, D)
    W_O[:N_TOK, PREV] = torch.eye(N_TOK)
    s.set(0, PT[1] // (H // s.kv), "v", V)
    s.set(0, PT[1], "o", W_O)
    # L1H1: induction head (query: token code; key: previous-token code), copies the attended token
    _, _, content = _rotary(family)
    n_c = len(content)
    gain = math.sqrt(40.0 * math.sqrt(DH) * N_TOK / n_c) / s1
    M_Q, M_K = torch.zeros(D, DH), torch.zeros(D, DH)
    for c_i, hd in enumerate(content):
        M_Q[TOK.start + c_i, hd] = gain
        M_K[PREV.start + c_i, hd] = gain
    s.set(1, IND[1], "q", M_Q)
    s.set(1, IND[1] // (H // s.kv), "k", M_K)
    V = torch.zeros(D, DH)
    V[TOK, :N_TOK] = torch.eye(N_TOK) / s1
    W_O = torch.zeros(DH, D)
    W_O[:N_TOK, TOK] = 0.5 * torch.eye(N_TOK)
    s.set(1, IND[1] // (H // s.kv), "v", V)
    s.set(1, IND[1], "o", W_O)
    # L1H2 / L1H3: attend to themselves; OV = -/+ alpha P onto 32 dims of the token and previous codes
    M_Q, M_K = _positional(family, 0, pos_scale * s0 / s1 if family == "gpt2" else s1)
    sel = [*range(TOK.start, TOK.stop), *range(PREV.start, PREV.start + DH - N_TOK)]
    V = torch.zeros(D, DH)
    V[sel, torch.arange(DH)] = 1.0
    for (ly, h), sign in ((DEL, -1.0), (COPY, 1.0)):
        s.set(ly, h, "q", M_Q)
        s.set(ly, h // (H // s.kv), "k", M_K)
        s.set(ly, h // (H // s.kv), "v", V)
        s.set(ly, h, "o", sign * 0.9 / s1 * V.T)
    return interp.load(hf, tokenizer=tiny_tokenizer(300), device="cpu")


@pytest.fixture(scope="module", params=["gpt2", "neox", "llama"])
def planted(request):
    return planted_model(request.param)


def test_previous_token_head_found_first(planted):
    df = interp.head_scores(planted, "previous_token")
    assert df.iloc[0]["label"] == "L0H0" and df.iloc[0]["score"] > 0.8, df.head(3)
    assert df.iloc[0]["flagged"] and df.iloc[1]["score"] < 0.5
    assert df.iloc[0]["score"] > 10 * df.iloc[0]["baseline"]


def test_induction_head_found_first(planted):
    df = interp.head_scores(planted, "induction")
    assert df.iloc[0]["label"] == "L1H1" and df.iloc[0]["score"] > 0.7, df.head(3)
    assert df.iloc[1]["score"] < 0.5
    assert set(df.loc[df["flagged"], "label"]) == {"L1H1"}


def test_self_heads_found_first(planted):
    df = interp.head_scores(planted, "self")
    assert set(df["label"][:2]) == {"L1H2", "L1H3"} and (df["score"][:2] > 0.8).all(), df.head(4)


def test_only_the_planted_deleter_is_deleting(planted):
    df = interp.find_deleting_heads(planted).set_index("label")
    assert df.index[0] == "L1H2" and df.loc["L1H2", "flagged"], df.head(4)
    assert df["flagged"].sum() == 1, df[df["flagged"]]
    row = df.loc["L1H2"]
    assert row["removed_median"] > 0.5 and row["self_attention"] > 0.9 and row["copy_suppression"] > 0.5
    assert row["removed_self"] > 0.5  # what it erases is what it read at its own position
    # the copier attends to itself without erasing: it amplifies; the induction head copies
    assert df.loc["L1H3", "verdict"] == "amplifying" and df.loc["L1H3", "self_attention"] > 0.9
    assert not df.loc["L1H1", "flagged"] and df.loc["L1H1", "copy_suppression"] < -0.5
    assert df.loc["L1H3", "z"] < 0


def test_k_composition_finds_the_induction_circuit(planted):
    df = interp.composition_scores(planted, kinds="K")
    top = df.iloc[0]
    # under grouped-query attention L1H0 reads the same keys as L1H1, so it ties
    readers = {"L1H1", "L1H0"} if planted.cfg.n_kv_heads < planted.cfg.n_heads else {"L1H1"}
    assert top["source"] == "L0H0" and top["target"] in readers, df.head(3)
    assert top["excess"] > 0.05 and top["score"] > 2 * top["baseline"]
    assert df[df["source"] != "L0H0"]["excess"].max() < top["excess"] / 2


def test_icl_score_is_negative_with_an_induction_head(planted):
    toks = interp.heads.data.repeated_tokens(planted, n_rows=8, lengths=[30])
    got = interp.icl_score(planted, toks, early=10, late=50)
    assert got["score"].iloc[0] < -1.0, got
