"""Property tests over random tiny configs (hypothesis): on every architecture the writes
sum to the model's own residual stream, and direct logit attribution sums to the model's
own logit. Plus determinism: the same inputs and seed give identical DataFrames.

Settings: ``EXAMPLES`` examples per run (no deadline, no example database written to the
repository); each example builds a fresh model, so the file stays well under a minute on one
core.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from reference import own_stream, stream_error

import interp
from interp.testing import (
    FAMILIES,
    POST_NORM_FAMILIES,
    SOFTCAP_FAMILIES,
    random_hf_model,
    random_model,
    tiny_tokenizer,
)
from interp.tokens import pad_rows

EXAMPLES = 100
D_VOCAB = 300


@st.composite
def configs(draw) -> dict:
    """A tiny config: family (LayerNorm + learned positions / rotary + parallel-or-not /
    RMSNorm + gated MLP + grouped-query attention / those with sandwich norms (Gemma-3, and
    Gemma-2 with logit soft-caps) or post-norms only (OLMo-2)), depth, heads, head width, MLP width,
    weight processing, seed, and a right-padded batch of token ids."""
    family = draw(st.sampled_from(FAMILIES))
    n_heads = draw(st.sampled_from([1, 2, 4]))
    d_head = draw(st.sampled_from([8, 16]))  # even (rotary); neox rotates a quarter of it
    kw = dict(
        n_layers=draw(st.integers(1, 3)), n_heads=n_heads, d_model=n_heads * d_head,
        d_mlp=draw(st.sampled_from([16, 48, 96])), d_vocab=D_VOCAB, n_ctx=32,
    )
    if family in ("llama", "gemma3", "gemma2"):
        kw["n_kv_heads"] = draw(st.sampled_from([g for g in (1, 2, 4) if n_heads % g == 0]))
    if family == "neox":
        kw["parallel"] = draw(st.booleans())
    ids = st.integers(0, D_VOCAB - 1)
    rows = [draw(st.lists(ids, min_size=2, max_size=10))]  # one row with a next token
    rows += draw(st.lists(st.lists(ids, min_size=1, max_size=10), max_size=2))
    return dict(
        family=family, kw=kw, processing=draw(st.sampled_from(["compat", "raw"])),
        seed=draw(st.integers(0, 2**16)), by=draw(st.sampled_from(["layer", "head", "neuron", "component"])),
        rows=rows,
    )


@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(c=configs())
def test_reconstruction_and_dla_sum_on_random_configs(c):
    hf = random_hf_model(c["family"], seed=c["seed"], **c["kw"])
    try:
        model = interp.load(hf, tokenizer=tiny_tokenizer(), processing=c["processing"], device="cpu")
    except ValueError as e:  # TransformerLens's processing of this checkpoint is not faithful
        assert c["processing"] == "compat" and "load it with processing='raw'" in str(e)
        return
    cfg, kw = model.cfg, c["kw"]
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head) == (kw["n_layers"], kw["n_heads"], kw["d_model"] // kw["n_heads"])
    rms = c["family"] in ("llama", "gemma3", "olmo2", "gemma2")
    assert cfg.gated == rms and (cfg.normalization == "RMS") == rms
    assert cfg.post_norm == (c["family"] in POST_NORM_FAMILIES)
    assert (cfg.logit_softcap is not None) == (c["family"] in SOFTCAP_FAMILIES)
    assert cfg.n_kv_heads == kw.get("n_kv_heads", kw["n_heads"]) and cfg.parallel == kw.get("parallel", False)
    batch = pad_rows(c["rows"], pad_id=model.bos_id)

    model.run_with_writes(batch)  # the first record is verified against TransformerLens
    w = model.run_with_writes(batch)  # then the capture path every later call takes
    mask = w.mask

    # reconstruction: the sum of the writes is the model's own stream at every layer
    ref = own_stream(model, w.tokens)
    assert stream_error(model, w, ref, mask) <= 1
    assert torch.equal(w.resid(cfg.n_layers), w.resid(cfg.n_layers - 1, "post"))

    # DLA: the rows of every position (plus the unembedding bias) sum to the model's logit,
    # which is the checkpoint's own (centred over the vocabulary under "compat"); for a
    # soft-capped model they sum to the pre-cap logit z, and cap * tanh(z / cap) is the logit
    df = interp.logit_attribution(w, by=c["by"])
    got = df.groupby(["batch", "pos"], observed=True)["attribution"].sum()
    has_next = mask[:, :-1] & mask[:, 1:]
    want_index = [tuple(ix) for ix in has_next.nonzero().tolist()]
    assert sorted(got.index.tolist()) == sorted(want_index), "every position with a next token, and only those"
    b, p = (torch.tensor(x) for x in zip(*got.index.tolist()))
    got = torch.tensor(got.to_numpy(), dtype=torch.float64)
    with torch.no_grad():
        own = hf(w.tokens).logits.double()
    if c["processing"] == "compat" and cfg.logit_softcap is None:  # a capped unembedding is not centred
        own = own - own.mean(-1, keepdim=True)
    if cfg.logit_softcap is not None:  # tanh is 1-Lipschitz: the sum's error bound carries over
        got = cfg.logit_softcap * torch.tanh(got / cfg.logit_softcap)
    for logits in (model.logits(w.tokens).double(), own):
        scale = float(logits[b, p].pow(2).mean().sqrt().clamp_min(1.0))
        torch.testing.assert_close(got, logits[b, p, w.tokens[b, p + 1]], atol=1e-4 * scale, rtol=0)

    # deterministic: another record of the same batch gives the identical table
    again = interp.logit_attribution(model.run_with_writes(batch), by=c["by"])
    pd.testing.assert_frame_equal(df, again, check_exact=True)


TEXTS = [
    "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x):\n        self.x = x\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n    else:\n        continue\n",
    "import os\nimport sys\n\nvalue = os.path.join('a', 'b')\nprint(value, sys.argv)\n",
]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_same_inputs_and_seed_give_identical_frames(family):
    """Two models built from the same seed, fed the same inputs, give identical tables from
    every analysis that involves randomness or a reduction order."""
    frames = []
    for _ in range(2):
        model = random_model(family, seed=7, n_layers=2, d_model=32, n_heads=4, d_mlp=64)
        w = model.run_with_writes(TEXTS)
        sub = interp.Subspace.random(model.cfg.d_model, 3, seed=5)
        frames.append(dict(
            id=pd.DataFrame({"model_id": [model.model_id]}),
            decompose=interp.decompose(w, by="component", directions=sub),
            dla=interp.logit_attribution(w, by="neuron", top_k=5),
            lens=interp.logit_lens(w, where="all", k=3),
            norms=interp.stream_norms(w),
            probe=interp.probe_layers(model, TEXTS, max_tokens=150, max_iter=10, seed=3, progress=False),
            writers=interp.writers(sub, w, layer=model.cfg.n_layers),
            neurons=interp.neuron_in_out_cosines(model, null="empirical", seed=11),
            heads=interp.find_deleting_heads(model, n_tokens=64, seed=11),
            evidence=interp.deletion_evidence(model, w, neurons=["L1N3", "L0N5"], heads=["L1H1"]),
        ))
    for name, first in frames[0].items():
        pd.testing.assert_frame_equal(first, frames[1][name], check_exact=True, obj=name)


def test_readers_name_query_heads_under_grouped_query_attention():
    """With 4 query heads sharing 2 key/value heads, every query head has W_Q, W_K and W_V
    rows, and heads of one group share their W_K / W_V numbers (not kv head h as head h)."""
    model = random_model("llama", n_layers=1, d_model=32, n_heads=4, n_kv_heads=2, d_mlp=64)
    df = interp.readers(interp.Subspace.random(32, 3, seed=2), model)
    heads = df[df["kind"] == "head"].set_index(["matrix", "head"])["norm"]
    for matrix in ("W_Q", "W_K", "W_V"):
        assert sorted(heads[matrix].index) == [0, 1, 2, 3], matrix
    for matrix in ("W_K", "W_V"):
        assert heads[(matrix, 0)] == heads[(matrix, 1)] and heads[(matrix, 2)] == heads[(matrix, 3)]
        assert heads[(matrix, 1)] != heads[(matrix, 2)]
