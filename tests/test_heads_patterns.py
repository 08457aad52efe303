"""Attention patterns: masked ``[batch, head, query, key]`` for every family, equal to the
checkpoint's own eager attention and to TransformerLens's hook_pattern."""

from __future__ import annotations

import pytest
import torch
from heads_reference import hf_patterns

import interp
from interp.heads.patterns import source
from interp.testing import random_hf_model

TEXTS = ["def add(a, b):\n    return a + b\n", "x = 1", "for i in range(3):\n    print(i)\n"]


def test_patterns_match_eager_attention_and_transformer_lens(tiny_model):
    model = tiny_model
    toks = model.to_tokens(TEXTS)
    pats = interp.attention_patterns(model, toks)
    assert sorted(pats) == list(range(model.cfg.n_layers)) and source(model) == "checkpoint"
    family = {"GPT2LMHeadModel": "gpt2", "GPTNeoXForCausalLM": "neox", "LlamaForCausalLM": "llama",
              "Gemma3ForCausalLM": "gemma3", "Olmo2ForCausalLM": "olmo2", "Gemma2ForCausalLM": "gemma2"}[model.cfg.name]
    hf = random_hf_model(family).eval()  # the same seed: the same weights, built afresh
    hf.config._attn_implementation = "eager"
    ref = hf_patterns(hf, toks.tokens)
    bridge = model._bridge_patterns(toks.tokens, range(model.cfg.n_layers))
    m = toks.mask
    for ly, p in pats.items():
        assert p.shape == (len(TEXTS), model.cfg.n_heads, toks.tokens.shape[1], toks.tokens.shape[1])
        real = m[:, None, :, None] & m[:, None, None, :]
        torch.testing.assert_close(p[real.expand_as(p)], ref[ly][real.expand_as(p)], atol=1e-6, rtol=0)
        torch.testing.assert_close(p[real.expand_as(p)], bridge[ly].float()[real.expand_as(p)], atol=1e-5, rtol=0)
        assert (p[~m[:, None, :, None].expand_as(p)] == 0).all()  # padding queries are zero
        rows = p.sum(-1)[m[:, None, :].expand(-1, model.cfg.n_heads, -1)]
        torch.testing.assert_close(rows, torch.ones_like(rows))
        assert (p.triu(1) == 0).all()  # causal


def test_grouped_query_patterns_are_per_query_head(tiny_models):
    model = tiny_models["llama"]
    assert model.cfg.n_kv_heads < model.cfg.n_heads
    p = model.attention_patterns("x = 1", layers=[-1])
    assert list(p) == [model.cfg.n_layers - 1] and p[model.cfg.n_layers - 1].shape[1] == model.cfg.n_heads


def test_patterns_inside_hooks_come_from_the_bridge(gpt2_model):
    with gpt2_model.hooks([("blocks.0.hook_resid_pre", lambda t, hook: t)]):
        assert source(gpt2_model) == "bridge"
        inside = interp.attention_patterns(gpt2_model, "x = 1", layers=[0])[0]
    outside = interp.attention_patterns(gpt2_model, "x = 1", layers=[0])[0]
    torch.testing.assert_close(inside, outside, atol=1e-5, rtol=0)
    assert not gpt2_model.active_hooks()


def test_pattern_frame_is_tidy(default_model):
    df = interp.pattern_frame(default_model, "def f(x):\n    return x", layers=[0], heads=[2])
    n = len(df.attrs["tokens"])
    assert len(df) == n * (n + 1) // 2 and (df["key_pos"] <= df["query_pos"]).all()
    assert set(df["label"]) == {"L0H2"}
    torch.testing.assert_close(torch.tensor(df.groupby("query_pos")["weight"].sum().to_numpy()),
                               torch.ones(n), atol=1e-5, rtol=0)
    assert df.loc[(df["query_pos"] == 3) & (df["key_pos"] == 3), "query_token"].item() == df.attrs["tokens"][3]


def test_bad_inputs_are_refused(default_model):
    with pytest.raises(IndexError, match="layers"):
        interp.attention_patterns(default_model, "x", layers=[5])
    with pytest.raises(ValueError, match="row"):
        interp.pattern_frame(default_model, "x = 1", row=3)


def test_docstring_examples_run():
    import doctest

    import interp.heads.composition as composition
    import interp.heads.data as data
    import interp.heads.detectors as detectors
    import interp.heads.icl as icl
    import interp.heads.patterns as patterns
    import interp.plots.heads as plots_heads

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    n = 0
    for mod in (patterns, detectors, composition, data, icl, plots_heads):
        for test in finder.find(mod, globs={"interp": interp, **vars(mod)}):
            n += len(test.examples)
            runner.run(test)
    assert n >= 8 and runner.failures == 0, runner.summarize()
