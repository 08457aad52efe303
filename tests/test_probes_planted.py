"""Truth planted by weight surgery: a GPT-2-style model whose layer-0 head 0 copies the
previous token's identity into a chosen subspace S, and head 1 copies the current token
into another subspace D; a layer-1 head reads S through W_V.

Residual dims: P = 0..31 one-hot position, T = 32..63 token code, S = 64..95, D = 96..127.
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp.testing import random_hf_model, tiny_tokenizer

P, T, S, D = slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 128)
N_CTX = 32


def build_planted_model() -> interp.Model:
    hf = random_hf_model("gpt2", seed=1, d_model=128, n_heads=4, n_ctx=N_CTX, n_layers=2)
    g = torch.Generator().manual_seed(2)
    d = 128
    with torch.no_grad():
        tr = hf.transformer
        tr.wpe.weight.zero_()
        tr.wpe.weight[:, P] = torch.eye(N_CTX)
        codes = torch.randn(hf.config.vocab_size, 32, generator=g)
        codes -= codes.mean(1, keepdim=True)  # zero-mean rows: LayerNorm's centring leaves them alone
        tr.wte.weight.zero_()
        tr.wte.weight[:, T] = codes / codes.norm(dim=1, keepdim=True)
        for blk in tr.h:
            blk.ln_1.weight.fill_(1.0)
            blk.ln_1.bias.zero_()
        W, b = tr.h[0].attn.c_attn.weight, tr.h[0].attn.c_attn.bias  # Conv1D [d, 3d]: q | k | v
        for h, (shift, out) in enumerate([(1, S), (0, D)]):  # head 0: previous token -> S; head 1: current -> D
            q, k, v = (slice(o + 32 * h, o + 32 * h + 32) for o in (0, d, 2 * d))
            for sl in (q, k, v):
                W[:, sl] = 0
                b[sl] = 0
            W[P, q] = 2.0 * torch.eye(N_CTX).roll(-shift, dims=1) * (torch.arange(N_CTX) >= shift)[:, None]
            W[P, k] = torch.eye(N_CTX)
            W[T, v] = torch.eye(32)
            tr.h[0].attn.c_proj.weight[32 * h : 32 * h + 32] = 0
            tr.h[0].attn.c_proj.weight[32 * h : 32 * h + 32, out] = torch.eye(32)
        v1 = slice(2 * d, 2 * d + 32)  # layer 1 head 0 reads S through W_V
        tr.h[1].attn.c_attn.weight[:, v1] = 0
        tr.h[1].attn.c_attn.weight[S, v1] = torch.eye(32)
    return interp.load(hf, tokenizer=tiny_tokenizer(300), device="cpu")


@pytest.fixture(scope="module")
def planted():
    return build_planted_model()


@pytest.fixture(scope="module")
def tokens():
    # random tokens 1..20 (0 is BOS): the previous token is unpredictable from the current one
    return torch.randint(1, 21, (48, N_CTX), generator=torch.Generator().manual_seed(0))


def test_surgery_made_a_previous_token_head(planted, tokens):
    pat = planted.attention_patterns(tokens[:4], layers=[0])[0]
    assert pat[:, 0].diagonal(-1, -2, -1).mean() > 0.99  # head 0 attends to the previous position
    assert pat[:, 1].diagonal(0, -2, -1).mean() > 0.99  # head 1 to the current one


def test_writers_rank_the_planted_head_first(planted, tokens):
    w = planted.run_with_writes(tokens[:16])
    rot = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(3)))[0]
    sub_s = interp.Subspace(rot @ torch.eye(128)[S], name="S")  # any basis of S
    sub_d = interp.Subspace(torch.eye(128)[D], name="D")
    top_s = interp.writers(sub_s, w, layer=2)
    top_d = interp.writers(sub_d, w, layer=2)
    assert top_s.iloc[0]["component"] == "L0H0" and top_d.iloc[0]["component"] == "L0H1"
    first, second = top_s["norm"].iloc[:2]
    assert first > 10 * second
    row = top_s.iloc[0]
    assert row["fraction"] > 0.99 and row["signed_share"] > 0.95 and row["rank"] == 1
    assert interp.writers(sub_s, w, layer=1).iloc[0]["component"] == "L0H0"
    # the planted head writes nothing into D and vice versa
    assert float(top_d.set_index("component").loc["L0H0", "fraction"]) < 0.01


def test_readers_find_the_planted_reader(planted):
    sub_s = interp.Subspace(torch.eye(128)[S], name="S")
    df = interp.readers(sub_s, planted)
    top = df.iloc[0]
    assert (top["component"], top["matrix"]) == ("L1H0", "W_V")
    assert top["ratio"] > 3.5 and top["baseline"] == pytest.approx(0.25)
    assert set(df["matrix"]) == {"W_Q", "W_K", "W_V", "W_in", "W_U"}
    # the unplanted readers read S about as much as a random subspace (ratio near 1)
    assert df["ratio"].iloc[1:].median() == pytest.approx(1.0, abs=0.3)


def test_probes_find_previous_token_only_after_the_head(planted, tokens):
    prev = interp.probe_layers(planted, tokens, label="previous_token", top_k=20, max_iter=60, progress=False)
    cur = interp.probe_layers(planted, tokens, label="current_token", top_k=20, max_iter=60, progress=False)
    assert prev["layer"].tolist() == [0, 1, 2]  # every layer plus the final stream
    assert prev["accuracy"].iloc[0] < prev["baseline"].iloc[0] + 0.1  # not in the embedding
    assert (prev["accuracy"].iloc[1:] > 0.95).all()  # written by L0H0
    assert (cur["accuracy"] > 0.95).all()
    # the control task keys on the current token, which every site holds
    assert (prev["control_accuracy"] > 0.9).all()
    # a subspace built from the layer-1 probe lies in S
    sub = interp.Subspace.from_probe(prev, site=1)
    s_part = sub.basis[S].pow(2).sum() / sub.k
    assert s_part > 0.9


def test_ablating_s_removes_previous_token(planted, tokens):
    sub_s = interp.Subspace(torch.eye(128)[S], name="S")
    df = interp.ablation_effect(
        planted, tokens, sub_s, at=1, mode="mean", label="previous_token", top_k=20, max_iter=60, progress=False,
    )
    probe = df[df["metric"] == "probe_accuracy"].set_index("layer")
    assert probe.index.tolist() == [1, 2]
    assert (probe["clean"] > 0.95).all()
    assert (probe["ablated"] < 0.2).all()  # S held the previous token
    assert (probe["random_ablated"] > 0.8).all()  # a random 32-dim subspace leaves most of it
    loss = df[df["metric"] == "loss"].iloc[0]
    assert pd_isna(loss["layer"]) and loss["clean"] > 0


def pd_isna(x) -> bool:
    import pandas as pd

    return bool(pd.isna(x))
