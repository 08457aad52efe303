"""interp.load: every kind of input, offline behaviour, safe loading, and input validation."""

from __future__ import annotations

import json
import time

import pytest
import torch

import interp
from interp.testing import random_hf_model, tiny_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-2 checkpoint directory, saved as safetensors with its tokenizer."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny-gpt2"
    random_hf_model("gpt2").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_load_local_directory_offline(checkpoint):
    model = interp.load(checkpoint)
    assert model.cfg.n_layers == 2 and model.cfg.processing == "compat"
    assert model.run_with_writes("x = 1").shape == (1, 5)  # BOS, "x", " =", " ", "1"
    raw = interp.load(str(checkpoint), processing="raw")
    assert raw.cfg.processing == "raw" and raw.model_id != model.model_id


def test_load_hf_model_leaves_caller_model_unchanged():
    hf = random_hf_model("llama")
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    modules_before = [n for n, _ in hf.named_modules()]
    model = interp.load(hf, tokenizer=tiny_tokenizer())
    model.run_with_writes("x = 1")
    assert [n for n, _ in hf.named_modules()] == modules_before
    after = hf.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_load_bridge_wraps_it(checkpoint):
    first = interp.load(checkpoint)
    again = interp.load(first.bridge)
    assert again.bridge is first.bridge and again.cfg.processing == "compat"


def test_hub_name_without_network_fails_fast_and_clearly():
    t0 = time.perf_counter()
    with pytest.raises(interp.ModelNotFoundError, match="not in the local Hugging Face cache.*local checkpoint directory"):
        interp.load("EleutherAI/pythia-14m-does-not-exist")
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda p: p / "missing", interp.ModelNotFoundError, "not a directory"),
        (lambda p: (p / "empty").mkdir() or p / "empty", interp.ModelNotFoundError, "no config.json"),
    ],
)
def test_bad_paths(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        interp.load(make(tmp_path))


def test_pickle_checkpoint_is_refused_without_opt_in(tmp_path, checkpoint):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((checkpoint / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(interp.UnsafeCheckpointError, match="allow_pickle=True"):
        interp.load(d)


def test_corrupted_safetensors_is_a_clear_error(tmp_path, checkpoint):
    d = tmp_path / "corrupt"
    d.mkdir()
    for f in checkpoint.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        interp.load(d)


def test_non_causal_checkpoint_is_refused(tmp_path, checkpoint):
    d = tmp_path / "encoder"
    d.mkdir()
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg["architectures"] = ["BertForMaskedLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="not a causal language model"):
        interp.load(d)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"processing": "folded"}, ValueError, "processing='folded' is not supported"),
        ({"dtype": "int8"}, ValueError, "dtype='int8' is not supported"),
    ],
)
def test_bad_options(kwargs, error, match, checkpoint):
    with pytest.raises(error, match=match):
        interp.load(checkpoint, **kwargs)


def test_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="name_or_path must be"):
        interp.load(42)


@pytest.mark.parametrize(
    "inputs, kwargs, error, match",
    [
        ("", {}, ValueError, "empty string"),
        ([], {}, TypeError, "non-empty list"),
        (["ok", 3], {}, TypeError, r"inputs\[1\] is a int"),
        (torch.zeros(1, 4), {}, TypeError, "token ids must be integers"),
        (torch.zeros(1, 2, 3, dtype=torch.long), {}, ValueError, r"shape \(1, 2, 3\)"),
        (torch.tensor([[1, -2]]), {}, ValueError, "token id -2, outside the vocabulary"),
        (torch.tensor([[1, 300]]), {}, ValueError, "token id 300, outside the vocabulary 0..299"),
        (torch.zeros(1, 200, dtype=torch.long), {}, ValueError, "200 tokens long but the model's context is 128"),
        ("x = 1\n" * 200, {}, ValueError, "pass chunk=True"),
        ("x", {"layers": [5]}, ValueError, r"layers=\[5\] out of range for a model with 2 layers"),
        ("x", {"dtype": torch.int8}, ValueError, "dtype=torch.int8 is not supported"),
    ],
)
def test_bad_inputs_to_run_with_writes(gpt2_model, inputs, kwargs, error, match):
    with pytest.raises(error, match=match):
        gpt2_model.run_with_writes(inputs, **kwargs)


def test_chunking_and_bos_defaults(gpt2_model):
    long = gpt2_model.run_with_writes("x = 1\n" * 200, chunk=True)
    assert long.shape[1] == gpt2_model.cfg.n_ctx and long.shape[0] > 1
    assert (long.tokens[:, 0] == gpt2_model.bos_id).all()
    toks = torch.tensor([[5, 6, 7]])
    assert gpt2_model.run_with_writes(toks).tokens.tolist() == [[5, 6, 7]]
    assert gpt2_model.run_with_writes(toks, prepend_bos=True).tokens.tolist() == [[gpt2_model.bos_id, 5, 6, 7]]
    assert gpt2_model.run_with_writes("x", prepend_bos=False).shape == (1, 1)


def test_negative_layer_indices(gpt2_model):
    w = gpt2_model.run_with_writes("x = 1", layers=[-1, 0])
    assert w.layers == [0, 1]
    torch.testing.assert_close(w.resid(-1, "post"), w.resid(1, "post"))


def test_device_map_passes_through_to_accelerate(monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge

    from interp.models import DEFAULT_MODEL_DIR

    seen = {}
    boot = TransformerBridge.boot_transformers

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return boot(*args, **kwargs)

    monkeypatch.setattr(TransformerBridge, "boot_transformers", spy)
    model = interp.load(DEFAULT_MODEL_DIR, device_map={"": "cpu"}, max_memory={"cpu": "2GiB"})
    assert seen["device_map"] == {"": "cpu"} and seen["max_memory"] == {"cpu": "2GiB"}
    assert "hf_model" not in seen  # accelerate places the weights while loading them
    w = model.run_with_writes("x = 1", verify=True)   # verified against the bridge's own stream
    assert model.capture_path == "bridge" and w.shape == (1, 4)
