"""Numerics: the reconstruction invariant in every dtype, an fp64 verification path, and
deterministic results."""

from __future__ import annotations

import pytest
import torch
from reference import own_stream, stream_error

import interp
from interp.testing import random_hf_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(3):\n    print(i)"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_reconstruction_holds_within_the_documented_tolerance(family, dtype):
    model = interp.load(random_hf_model(family), tokenizer=tiny_tokenizer(), dtype=dtype)
    assert model.cfg.dtype == dtype
    model.run_with_writes(TEXTS)  # verified (raises NonAdditiveModelError past the tolerance)
    w = model.run_with_writes(TEXTS)  # whichever capture path the model settled on
    ref = own_stream(model, w.tokens)
    for (layer, where) in ref:
        assert w.resid(layer, where).dtype == torch.promote_types(dtype, torch.float32)
    assert stream_error(model, w, ref) <= 1
    assert max(model.reconstruction.values()) <= 1  # the first record, against the rounding bound


def test_fp64_verification_path_holds_the_fp64_bound():
    model = interp.load(random_hf_model("gpt2"), tokenizer=tiny_tokenizer(), dtype=torch.float64)
    w = model.run_with_writes(TEXTS, verify=True)
    assert w.embed.dtype == torch.float64 and w.resid(1).dtype == torch.float64
    assert 0 <= max(model.reconstruction.values()) <= 1


def test_same_inputs_give_identical_records(gpt2_model):
    a = gpt2_model.run_with_writes(TEXTS)
    b = gpt2_model.run_with_writes(TEXTS)
    assert torch.equal(a.tokens, b.tokens)
    for ly in a.layers:
        assert torch.equal(a.z[ly], b.z[ly]) and torch.equal(a.acts[ly], b.acts[ly])
    assert torch.equal(a.resid(2), b.resid(2))


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_a_record_does_not_depend_on_which_batch_came_first(family):
    """The fast path's z shift (the folded value bias) is measured on fixed tokens, not on the
    first batch a model happens to record: two loads give bit-identical records afterwards."""
    hf = random_hf_model(family)
    a, b = (interp.load(hf, tokenizer=tiny_tokenizer()) for _ in range(2))
    a.run_with_writes(TEXTS[0] * 3)
    b.run_with_writes([TEXTS[1], "x = 1\n"])
    assert a.capture_path == b.capture_path == "fast" and a._fast.z_shift is not None
    wa, wb = a.run_with_writes(TEXTS), b.run_with_writes(TEXTS)
    assert all(torch.equal(wa.z[ly], wb.z[ly]) for ly in wa.z)
    c = interp.load(hf, tokenizer=tiny_tokenizer())  # a first call for some layers only: the same path
    first, again = c.run_with_writes(TEXTS, layers=[1]), c.run_with_writes(TEXTS, layers=[1])
    assert c.capture_path == "fast" and list(first.z) == [1]
    assert torch.equal(first.acts[1], again.acts[1]) and torch.equal(first.acts[1], wa.acts[1])


def test_analyses_record_their_conventions(gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS[0])
    for df in (interp.decompose(w, by="head"), interp.logit_attribution(w), interp.logit_lens(w),
               interp.stream_norms(w)):
        assert df.attrs["processing"] == "compat" and df.attrs["model_id"] == gpt2_model.model_id
    assert interp.logit_attribution(w, ln_scale="recompute").attrs["ln_scale"] == "recompute"
