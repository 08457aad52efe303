"""Numerics: the reconstruction invariant in every dtype, an fp64 verification path, and
deterministic results."""

from __future__ import annotations

import pytest
import torch
from reference import own_stream

import interp
from interp.model import TOLERANCE
from interp.testing import random_hf_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(3):\n    print(i)"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_reconstruction_holds_within_the_documented_tolerance(family, dtype):
    model = interp.load(random_hf_model(family), tokenizer=tiny_tokenizer(), dtype=dtype)
    assert model.cfg.dtype == dtype
    model.run_with_writes(TEXTS)  # verified (raises NonAdditiveModelError past the tolerance)
    w = model.run_with_writes(TEXTS)  # whichever capture path the model settled on
    for name, want in own_stream(model, w.tokens).items():
        layer, where = name
        got = w.resid(layer, where)
        assert got.dtype == torch.promote_types(dtype, torch.float32)
        want = want.to(got.dtype)[w.mask]
        err = (got[w.mask] - want).abs().max() / want.pow(2).mean().sqrt()
        assert err <= TOLERANCE[dtype], (name, float(err))


def test_fp64_verification_path_is_exact_to_1e_9():
    model = interp.load(random_hf_model("gpt2"), tokenizer=tiny_tokenizer(), dtype=torch.float64)
    w = model.run_with_writes(TEXTS, verify=True)
    assert w.embed.dtype == torch.float64 and w.resid(1).dtype == torch.float64
    assert TOLERANCE[torch.float64] <= 1e-9


def test_same_inputs_give_identical_records(gpt2_model):
    a = gpt2_model.run_with_writes(TEXTS)
    b = gpt2_model.run_with_writes(TEXTS)
    assert torch.equal(a.tokens, b.tokens)
    for ly in a.layers:
        assert torch.equal(a.z[ly], b.z[ly]) and torch.equal(a.acts[ly], b.acts[ly])
    assert torch.equal(a.resid(2), b.resid(2))


def test_analyses_record_their_conventions(gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS[0])
    for df in (interp.decompose(w, by="head"), interp.logit_attribution(w), interp.logit_lens(w),
               interp.stream_norms(w)):
        assert df.attrs["processing"] == "compat" and df.attrs["model_id"] == gpt2_model.model_id
    assert interp.logit_attribution(w, ln_scale="recompute").attrs["ln_scale"] == "recompute"
