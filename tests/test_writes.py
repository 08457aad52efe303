"""The factored write record: reconstruction invariant, accessors, storage options."""

from __future__ import annotations

import pytest
import torch
from reference import own_stream, rel_err

import interp
from interp.testing import random_model

TEXTS = ["def add(a, b):\n    return a + b\n", "x = [i * i for i in range(3)]"]


def test_writes_sum_to_the_stream_at_every_layer(tiny_model):
    w = tiny_model.run_with_writes(TEXTS, verify=False)
    ref = own_stream(tiny_model, w.tokens)
    assert ref, "no reference hooks fired"
    for (layer, where), want in ref.items():
        assert rel_err(w.resid(layer, where), want, w.mask) <= 1e-4, (layer, where)


def test_final_stream_gives_the_models_logits(tiny_model):
    w = tiny_model.run_with_writes(TEXTS)
    x = w.resid(tiny_model.cfg.n_layers)
    if tiny_model.cfg.normalization == "LN":
        x = x - x.mean(-1, keepdim=True)
    x = x / w.final_scale
    if w.weights.ln_final_w is not None:  # a final norm processing could not fold (OLMo-2)
        x = x * w.weights.ln_final_w
    logits = x @ w.weights.W_U + w.weights.b_U
    if w.logit_softcap is not None:  # Gemma 2: the model's logits are the capped readout
        logits = w.logit_softcap * torch.tanh(logits / w.logit_softcap)
    want = tiny_model.logits(TEXTS)
    assert rel_err(logits, want, w.mask) < 1e-4


def test_components_sum_to_resid_and_are_labelled(tiny_model):
    w = tiny_model.run_with_writes(TEXTS[0])
    labels, comps = w.components()
    assert labels[0] == "embed" and f"L0H{tiny_model.cfg.n_heads - 1}" in labels
    assert ("pos_embed" in labels) == (tiny_model.cfg.positional == "standard")
    assert len(labels) == comps.shape[0] == len(set(labels))
    torch.testing.assert_close(comps.sum(0), w.resid(tiny_model.cfg.n_layers), atol=1e-5, rtol=0)
    labels, comps = w.components(layer=1, where="mid", mlp="neuron")
    assert "L0N0" in labels and "L0_mlp_bias" in labels and "L1_mlp" not in labels
    torch.testing.assert_close(comps.sum(0), w.resid(1, "mid"), atol=1e-5, rtol=0)


def test_neuron_and_head_writes_add_up_to_layer_writes(gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS[0])
    heads = sum(w.head_write(0, h) for h in range(gpt2_model.cfg.n_heads))
    torch.testing.assert_close(heads + w.weights.b_O[0], w.attn_write(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.head_writes(0)[:, :, 2], w.head_write(0, 2))
    neurons = sum(w.neuron_write(1, n) for n in range(gpt2_model.cfg.d_mlp))
    torch.testing.assert_close(neurons + w.weights.b_out[1], w.mlp_write(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.neuron_write(-1, -1), w.neuron_write(1, gpt2_model.cfg.d_mlp - 1))


def test_raw_processing_reconstructs_too():
    model = random_model("gpt2", processing="raw")
    assert model.cfg.processing == "raw"
    w = model.run_with_writes(TEXTS, verify=True)
    assert w.processing == "raw" and w.weights.ln_final_w is not None
    compat = random_model("gpt2")
    wc = compat.run_with_writes(TEXTS)
    # Folding LN leaves MLP activations unchanged: the factored record does not depend on it.
    torch.testing.assert_close(w.acts[1], wc.acts[1], atol=1e-5, rtol=1e-4)


def test_padded_batch_keeps_each_row_exact(gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS)
    assert w.mask.sum(-1).tolist() == [len(r) for r in gpt2_model.to_str_tokens(TEXTS)]
    alone = gpt2_model.run_with_writes(TEXTS[1])
    n = alone.shape[1]
    torch.testing.assert_close(w.resid(1, "post")[1, :n], alone.resid(1, "post")[0], atol=1e-5, rtol=0)


def test_storage_dtype_device_layers_and_nbytes(gpt2_model):
    c = gpt2_model.cfg
    w32 = gpt2_model.run_with_writes(TEXTS[0])
    w16 = gpt2_model.run_with_writes(TEXTS[0], dtype=torch.bfloat16, device="cpu")
    assert w16.z[0].dtype == torch.bfloat16 and w16.resid(1).dtype == torch.float32
    b, p = w32.shape
    per_pos = c.n_layers * (c.n_heads * c.d_head + c.d_mlp) + 2 * c.d_model + 1
    assert w32.nbytes == b * p * (per_pos * 4 + 8 + 1)
    assert w16.nbytes < 0.55 * w32.nbytes
    torch.testing.assert_close(w16.resid(1), w32.resid(1), atol=0.05, rtol=0.05)
    part = gpt2_model.run_with_writes(TEXTS[0], layers=[0])
    assert part.layers == [0]
    part.resid(0, "post")
    with pytest.raises(ValueError, match="not recorded"):
        part.resid(1, "post")


def test_save_and_load_without_pickle(tmp_path, gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS)
    path = w.save(tmp_path / "writes")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
    back = interp.ResidualWrites.load(path)
    torch.testing.assert_close(back.resid(2, "pre"), w.resid(2, "pre"))
    assert back.str_tokens == w.str_tokens and back.model_id == w.model_id
    with_model = interp.ResidualWrites.load(path, model=gpt2_model)
    assert with_model.weights is gpt2_model.write_weights
    other = random_model("gpt2", seed=1)
    with pytest.raises(interp.ModelMismatchError, match="not the model"):
        interp.ResidualWrites.load(path, model=other)


def test_non_additive_architecture_is_refused(monkeypatch):
    """A post-norm model read as if its blocks had no post-norms (no scales recorded): its writes
    do not sum to its stream, and the first record says so."""
    from interp import model as model_module

    monkeypatch.setattr(model_module, "block_structure", lambda bridge, parallel, name: (False, None))
    model = random_model("gemma3", seed=5)
    assert not model.cfg.post_norm
    with pytest.raises(interp.NonAdditiveModelError, match="hook_resid_mid"):
        model.run_with_writes("x = 1")
    with pytest.raises(interp.NonAdditiveModelError, match="hook_resid_mid"):  # and every analysis after it
        interp.neuron_in_out_cosines(model)


def test_stream_writes_over_texts_in_batches(gpt2_model):
    texts = ["a = 1\n" * 40, "def f():\n    pass\n" * 30, "import os\n" * 50]
    seen = []
    for w in gpt2_model.stream_writes(texts, batch_size=2, n_ctx=64, progress=False):
        assert w.shape[0] <= 2 and w.shape[1] <= 64
        assert len(w.meta["doc_ids"]) == w.shape[0]
        seen += w.meta["doc_ids"]
    assert set(seen) == {"0", "1", "2"}


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_fast_capture_path_matches_the_bridge(family):
    model = random_model(family, seed=3)
    assert model.capture_path == model.PENDING == "fast (pending first-call verification)"
    first = model.run_with_writes(TEXTS)  # through the bridge, verified, then calibrated
    assert model.capture_path == "fast"
    fast = model.run_with_writes(TEXTS)
    ref = own_stream(model, fast.tokens)
    for (layer, where), want in ref.items():
        assert rel_err(fast.resid(layer, where), want, fast.mask) <= 1e-4, (layer, where)
    m = fast.mask
    for ly in range(model.cfg.n_layers):
        assert rel_err(fast.z[ly], first.z[ly], m) <= 1e-4
        assert rel_err(fast.acts[ly], first.acts[ly], m) <= 1e-4
    assert rel_err(fast.final_scale, first.final_scale, m) <= 1e-4
    assert rel_err(fast.embed, first.embed, m) <= 1e-6


def test_fast_path_off_records_through_the_bridge(tmp_path):
    from interp.testing import random_hf_model, tiny_tokenizer

    model = interp.load(random_hf_model("gpt2"), tokenizer=tiny_tokenizer(), fast=False)
    model.run_with_writes(TEXTS)
    assert model.capture_path == "bridge"
