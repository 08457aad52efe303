"""Generation against a plain Hugging Face forward loop: greedy, batched, sampled, stopped,
and with components ablated (the same ablation written as plain torch hooks)."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.generation import generate_tokens

PROMPTS = ["def add(a, b):", "import os\n", "for i in range(3):\n    x"]
# Two float32 forwards of the same tokens through different code paths (batched, padded, through
# hooks) agree to a few ulp of the logits (|logit| < 30 on this model: 30 * 2**-23 * depth ~ 1e-4).
# A greedy step is decided by float noise only when its top two logits are that close; the tests
# below require every step's margin to exceed 1e-3, so no comparison is decided by rounding.
MARGIN = 1e-3


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM

    from interp.models import DEFAULT_MODEL_DIR

    return AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR).eval()


def _plain_loop(hf, ids: list[int], n: int, hooks=()) -> list[int]:
    """Greedy generation as anyone writes it: full forward, argmax at the last position."""
    handles = [reg(fn) for reg, fn in hooks]
    try:
        out = list(ids)
        with torch.no_grad():
            for _ in range(n):
                logits = hf(torch.tensor([out])).logits[0, -1]
                top = logits.topk(2).values
                assert top[0] - top[1] > MARGIN, "a step decided by rounding: pick another prompt"
                out.append(int(logits.argmax()))
    finally:
        for h in handles:
            h.remove()
    return out[len(ids):]


def test_greedy_equals_the_plain_forward_loop(default_model, hf):
    for p in PROMPTS:
        ids = default_model.to_tokens(p).tokens[0].tolist()
        g = generate_tokens(default_model, p, max_new_tokens=12, stop=[])
        assert g.new_tokens[0] == _plain_loop(hf, ids, 12)
        assert g.stop_reasons == ["max_new_tokens"]
        assert g.completions[0] == default_model.tokenizer.decode(g.new_tokens[0])
        assert default_model.generate(p, max_new_tokens=12, stop=[]) == p + g.completions[0]


def test_batched_equals_one_by_one_greedy_and_sampled(default_model):
    batched = generate_tokens(default_model, PROMPTS, max_new_tokens=10, stop=[])
    sampled = generate_tokens(default_model, PROMPTS, max_new_tokens=10, stop=[], temperature=1.0, top_k=50,
                              top_p=0.95, seed=7)
    for i, p in enumerate(PROMPTS):
        assert batched.new_tokens[i] == generate_tokens(default_model, p, max_new_tokens=10, stop=[]).new_tokens[0]
        one = generate_tokens(default_model, p, max_new_tokens=10, stop=[], temperature=1.0, top_k=50, top_p=0.95,
                              seed=7 + i)
        assert sampled.new_tokens[i] == one.new_tokens[0]
    # sampling differs from greedy, and a seed repeats
    assert sampled.new_tokens != batched.new_tokens
    again = generate_tokens(default_model, PROMPTS, max_new_tokens=10, stop=[], temperature=1.0, top_k=50,
                            top_p=0.95, seed=7)
    assert again.new_tokens == sampled.new_tokens


def test_sampling_keeps_to_top_k(default_model):
    """top_k=1 is greedy whatever the temperature."""
    greedy = generate_tokens(default_model, PROMPTS[0], max_new_tokens=8, stop=[])
    hot = generate_tokens(default_model, PROMPTS[0], max_new_tokens=8, stop=[], temperature=5.0, top_k=1, seed=3)
    assert hot.new_tokens == greedy.new_tokens


def test_ablation_changes_the_text_as_plain_torch_hooks_do(default_model, hf):
    """A neuron, a head and a layer's MLP zero-ablated in interp and by hand on the HF model."""
    p = PROMPTS[0]
    ids = default_model.to_tokens(p).tokens[0].tolist()
    layers = hf.gpt_neox.layers
    H, dh = default_model.cfg.n_heads, default_model.cfg.d_head

    def zero_neuron(mod, args):
        x = args[0].clone()
        x[..., 5] = 0
        return (x,)

    def head_to_value_bias(mod, args):
        # the processed z of a head is its raw z minus its value bias (attention weights sum to
        # 1), so "its write is zero" is raw z = b_V; GPT-NeoX's fused qkv is laid out [head, 3, d_head]
        x = args[0].clone().reshape(*args[0].shape[:-1], H, dh)
        b_v = layers[0].attention.query_key_value.bias.reshape(H, 3, dh)[1, 2]
        x[..., 1, :] = b_v
        return (x.flatten(-2),)

    cases = {
        "L1N5": [(layers[1].mlp.dense_4h_to_h.register_forward_pre_hook, zero_neuron)],
        "L0H1": [(layers[0].attention.dense.register_forward_pre_hook, head_to_value_bias)],
        "L1_mlp": [(layers[1].mlp.register_forward_hook, lambda mod, args, out: torch.zeros_like(out))],
    }
    clean = _plain_loop(hf, ids, 12)
    changed = 0
    for label, hooks in cases.items():
        want = _plain_loop(hf, ids, 12, hooks)
        got = generate_tokens(default_model, p, max_new_tokens=12, stop=[], ablate=[label]).new_tokens[0]
        assert got == want, label
        changed += got != clean
    assert changed >= 2, "the ablations must change the text, or the comparison proves nothing"


def test_patch_sets_a_value_and_subspace_ablation_runs_inside_ablate(default_model):
    p = PROMPTS[0]
    zero = generate_tokens(default_model, p, max_new_tokens=8, stop=[], ablate=["L1N5"]).new_tokens
    assert generate_tokens(default_model, p, max_new_tokens=8, stop=[], patch={"L1N5": 0.0}).new_tokens == zero
    sub = interp.Subspace.random(default_model.cfg.d_model, 96, seed=0)
    with interp.ablate(default_model, sub, at=1, mode="zero"):
        inside = generate_tokens(default_model, p, max_new_tokens=8, stop=[])
        ids = default_model.to_tokens(p).tokens
        for _ in range(8):  # the same ablation, read from model.logits step by step
            ids = torch.cat([ids, default_model.logits(ids)[:, -1:].argmax(-1)], 1)
    assert inside.tokens[0].tolist() == ids[0].tolist()
    assert inside.new_tokens != generate_tokens(default_model, p, max_new_tokens=8, stop=[]).new_tokens
    assert not default_model.active_hooks()


def test_the_record_of_what_was_generated(default_model):
    g = generate_tokens(default_model, PROMPTS, max_new_tokens=6, stop=[])
    w = default_model.run_with_writes(g.batch)
    assert torch.equal(w.tokens, g.tokens) and torch.equal(w.mask, g.mask)
    logits = default_model.logits(g.batch.tokens)
    for i, n in enumerate(g.prompt_lengths):  # the record's text predicts what was generated
        assert logits[i, n - 1:n + 5].argmax(-1).tolist() == g.new_tokens[i]


def test_stop_strings_and_tokens(default_model):
    g = generate_tokens(default_model, PROMPTS[0], max_new_tokens=20, stop=[])
    text = g.completions[0]
    cut = text[2:5]
    s = generate_tokens(default_model, PROMPTS[0], max_new_tokens=20, stop=cut)
    assert s.stop_reasons == ["stop_string"] and s.completions[0] == text[:text.find(cut)]
    t = generate_tokens(default_model, PROMPTS[0], max_new_tokens=20, stop=[g.new_tokens[0][3]])
    assert t.stop_reasons == ["stop_token"] and t.new_tokens[0] == g.new_tokens[0][:4]
    assert t.completions[0] == default_model.tokenizer.decode(g.new_tokens[0][:3])
    frame = t.to_frame()
    assert list(frame.columns) == ["row", "prompt", "completion", "n_prompt_tokens", "n_new_tokens", "stop_reason"]


@pytest.mark.parametrize("kw, match", [
    (dict(ablate=["L9H0"]), r"layer=9 out of range"),
    (dict(ablate=["head 3"]), r"ablate holds 'head 3'; name components as 'L1H2'"),
    (dict(patch={"L0H1": torch.zeros(3)}), r"patch\['L0H1'\] must be a finite float tensor of shape \[32\]"),
    (dict(max_new_tokens=1000), r"max_new_tokens=1000 after a prompt of \d+ tokens exceeds the model's context"),
    (dict(stop=[""]), r"stop holds an empty string"),
])
def test_bad_generation_arguments(default_model, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        generate_tokens(default_model, "x = 1", **kw)


def test_docstring_examples_run(default_model):
    import doctest

    import interp.generation
    import interp.models.synthetic
    import interp.pages.build

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    n = 0
    for mod in (interp.generation, interp.pages.build, interp.models.synthetic):
        for test in finder.find(mod, globs={"interp": interp, "model": default_model, "torch": torch, **vars(mod)}):
            n += len(test.examples)
            runner.run(test)
    assert n >= 12 and runner.failures == 0, runner.summarize()


def test_every_family_greedy_equals_its_hf_loop_and_ablates_as_torch(tiny_model):
    """gpt2 (learned positions), neox (rotary, parallel), llama (GQA, gated), gemma3 and olmo2
    (post-norms): the same seeded HF model generates the same tokens; a head ablated on llama
    matches a plain hook on o_proj."""
    from interp.testing import random_hf_model

    model_type = tiny_model.bridge.original_model.config.model_type
    family = {"gpt_neox": "neox", "gemma3_text": "gemma3"}.get(model_type, model_type)
    hf = random_hf_model(family).eval()
    ids = tiny_model.to_tokens(PROMPTS[0]).tokens[0].tolist()
    got = generate_tokens(tiny_model, PROMPTS[0], max_new_tokens=8, stop=[]).new_tokens[0]
    assert got == _plain_loop(hf, ids, 8)
    if family == "llama":  # no value bias: the head's zero is a zero slice of o_proj's input
        dh = tiny_model.cfg.d_head

        def zero_head(mod, args):
            x = args[0].clone()
            x[..., dh:2 * dh] = 0
            return (x,)

        want = _plain_loop(hf, ids, 8, [(hf.model.layers[1].self_attn.o_proj.register_forward_pre_hook, zero_head)])
        got = generate_tokens(tiny_model, PROMPTS[0], max_new_tokens=8, stop=[], ablate=["L1H1"]).new_tokens[0]
        assert got == want
