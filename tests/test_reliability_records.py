"""What is saved comes back as itself, and only with its own model.

- ``model_id`` covers every weight: models that differ in one tensor (one layer's MLP output
  weights, even one entry) get different ids, and an in-place edit changes the id.
- ``save("rec.1")`` and ``save("rec.2")`` are two records.
- A saved record round-trips exactly and is refused by any other model (a property test).
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interp
from interp.testing import random_hf_model, random_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b\n", "x = [i * i for i in range(3)]", "import os\n", "y = 2"]


def _edited(family: str, edit) -> interp.Model:
    hf = random_hf_model(family, seed=2)
    with torch.no_grad():
        edit(hf)
    return interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")


@pytest.mark.parametrize("family, edit", [
    ("gpt2", lambda hf: hf.transformer.h[1].mlp.c_proj.weight.mul_(1.5)),  # one layer's MLP output weights
    ("gpt2", lambda hf: hf.transformer.h[0].attn.c_attn.weight[3, 7].add_(1e-3)),  # one entry of one tensor
    ("llama", lambda hf: hf.model.layers[1].mlp.down_proj.weight.mul_(-1)),
    ("llama", lambda hf: hf.model.norm.weight[0].add_(0.25)),  # the final norm only
])
def test_models_that_differ_in_one_tensor_have_different_ids(family, edit):
    base = _edited(family, lambda hf: None)
    other = _edited(family, edit)
    assert base.model_id != other.model_id
    assert base.model_id == _edited(family, lambda hf: None).model_id  # and the id is a fingerprint


def test_an_edit_in_place_changes_the_id_and_refuses_old_records(tmp_path):
    model = random_model("gpt2", seed=6)
    w = model.run_with_writes(TEXTS[:2])
    path = w.save(tmp_path / "rec")
    before = model.model_id
    with torch.no_grad():
        model.weights.mlp_out(1)[5].mul_(2.0)  # weight surgery on the model itself
    assert model.model_id != before
    with pytest.raises(interp.ModelMismatchError, match="is not the model these writes were recorded on"):
        interp.ResidualWrites.load(path, model=model)
    with pytest.raises(interp.ModelMismatchError):
        interp.logit_attribution(w, model=model)


def test_records_with_dotted_names_are_distinct_files(tmp_path, gpt2_model):
    a = gpt2_model.run_with_writes(TEXTS[0])
    b = gpt2_model.run_with_writes(TEXTS[1])
    pa, pb = a.save(tmp_path / "rec.1"), b.save(tmp_path / "rec.2")
    assert pa.name == "rec.1.safetensors" and pb.name == "rec.2.safetensors"
    assert (tmp_path / "rec.1.json").is_file() and (tmp_path / "rec.2.json").is_file()
    for name, want in (("rec.1", a), ("rec.2", b), ("rec.1.safetensors", a), ("rec.2.json", b)):
        assert torch.equal(interp.ResidualWrites.load(tmp_path / name).tokens, want.tokens), name
    assert a.save(tmp_path / "plain.safetensors").name == "plain.safetensors"  # the suffix is not doubled


def test_saving_into_a_missing_directory_is_refused_not_created(tmp_path, gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS[0])
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        w.save(tmp_path / "missing" / "rec")
    assert not (tmp_path / "missing").exists()


def test_a_record_without_weights_needs_its_model(tmp_path, gpt2_model):
    w = gpt2_model.run_with_writes(TEXTS[0])
    p = w.save(tmp_path / "light", weights=False)
    with pytest.raises(ValueError, match="saved with weights=False; pass model="):
        interp.ResidualWrites.load(p)
    back = interp.ResidualWrites.load(p, model=gpt2_model)
    torch.testing.assert_close(back.resid(2), w.resid(2), rtol=0, atol=0)


def _exact(a: interp.ResidualWrites, b: interp.ResidualWrites) -> None:
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask) and torch.equal(a.embed, b.embed)
    assert (a.pos_embed is None) == (b.pos_embed is None)
    if a.pos_embed is not None:
        assert torch.equal(a.pos_embed, b.pos_embed)
    assert a.layers == b.layers and torch.equal(a.final_scale, b.final_scale)
    for ly in a.layers:
        assert torch.equal(a.z[ly], b.z[ly]) and torch.equal(a.acts[ly], b.acts[ly])
        assert a.z[ly].dtype == b.z[ly].dtype
    assert a.meta == b.meta
    for name in ("W_O", "b_O", "W_out", "b_out", "W_U", "b_U"):
        assert torch.equal(getattr(a.weights, name).cpu(), getattr(b.weights, name).cpu()), name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    family=st.sampled_from(["gpt2", "neox", "llama"]),
    texts=st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3),
    layers=st.sampled_from([None, [0], [1], [0, 1]]),
    dtype=st.sampled_from([None, torch.bfloat16, torch.float16]),
    weights=st.booleans(),
    name=st.sampled_from(["rec", "rec.1", "run.2024-01-01", "a.b.c", "x.safetensors"]),
)
def test_a_saved_record_round_trips_exactly_and_only_with_its_model(tiny_models, tmp_path_factory, family, texts,
                                                                   layers, dtype, weights, name):
    model = tiny_models[family]
    w = model.run_with_writes(texts, layers=layers, dtype=dtype)
    path = w.save(tmp_path_factory.mktemp("rec") / name, weights=weights)
    back = interp.ResidualWrites.load(path, model=model)
    _exact(w, back)
    if weights:
        _exact(w, interp.ResidualWrites.load(path))
    for other in tiny_models.values():
        if other is model:
            continue
        with pytest.raises(interp.ModelMismatchError):
            interp.ResidualWrites.load(path, model=other)


def test_a_record_is_refused_by_a_model_with_the_same_shapes(tmp_path, gpt2_model):
    """Same family and sizes, other weights (another seed): refused."""
    w = gpt2_model.run_with_writes(TEXTS)
    path = w.save(tmp_path / "rec")
    twin = random_model("gpt2", seed=1)
    assert twin.cfg.d_model == gpt2_model.cfg.d_model and twin.cfg.n_layers == gpt2_model.cfg.n_layers
    with pytest.raises(interp.ModelMismatchError, match=r"model ids \w+ and \w+"):
        interp.ResidualWrites.load(path, model=twin)


def test_tampering_is_found_at_the_load(tmp_path, gpt2_model):
    """An edit to the sidecar that keeps it valid JSON but drops a field fails at load, naming the field."""
    w = gpt2_model.run_with_writes(TEXTS[:1])
    path = w.save(tmp_path / "rec")
    meta = json.loads((tmp_path / "rec.json").read_text())
    del meta["eps"]
    (tmp_path / "rec.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="rec.json lacks the field 'eps'"):
        interp.ResidualWrites.load(path)


def test_model_id_is_cached_and_cheap_after_the_first_call(default_model):
    t0 = time.perf_counter()
    first = default_model.model_id
    t1 = time.perf_counter()
    again = default_model.model_id
    t2 = time.perf_counter()
    assert first == again and len(first) == 16
    assert t2 - t1 < max(0.05, (t1 - t0) / 5)


@pytest.mark.slow
def test_smollm2_model_id_covers_every_weight(smollm2):
    """Every weight of the real model enters the fingerprint: an edit to the last layer's MLP
    output changes it, and undoing it restores it."""
    before = smollm2.model_id
    W = smollm2.weights.mlp_out(smollm2.cfg.n_layers - 1)
    old = W[0, 0].clone()
    with torch.no_grad():
        W[0, 0] = old + 1.0
    try:
        assert smollm2.model_id != before
    finally:
        with torch.no_grad():
            W[0, 0] = old
    assert smollm2.model_id == before


@pytest.mark.slow
def test_a_smollm2_record_round_trips_and_is_refused_by_the_default_model(smollm2, default_model, tmp_path):
    w = smollm2.run_with_writes(["def f(x):\n    return x + 1\n", "a = 1"], layers=[0, 29], dtype=torch.bfloat16)
    path = w.save(tmp_path / "smol.1")
    _exact(w, interp.ResidualWrites.load(path, model=smollm2))
    with pytest.raises(interp.ModelMismatchError, match="is not the model these writes were recorded on"):
        interp.ResidualWrites.load(path, model=default_model)
