"""Hostile inputs across the public API, as one table.

Every case must raise a typed error (ValueError, TypeError, KeyError, FileNotFoundError or an
interp error that subclasses one), raised by interp itself rather than deep inside torch or
transformers, within 10 seconds, with a message naming the parameter, the value and the fix.
Afterwards the shared model carries no hooks. Valid edge cases (whitespace-only text, a
BOS-only text, negative indices) are tested below the table.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import shutil
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from safetensors.torch import load_file, save_file

import interp
from interp.errors import (
    CheckpointError,
    ChromiumNotFoundError,
    IndexOutOfRangeError,
    ModelMismatchError,
    UnsafeCheckpointError,
)
from interp.testing import hf_config, random_hf_model, random_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b\n", "x = [i * i for i in range(3)]"]
INTERP_DIR = str(Path(interp.__file__).parent)
TYPED = (ValueError, TypeError, KeyError, FileNotFoundError)


@pytest.fixture(scope="module")
def shared(gpt2_model, tmp_path_factory):
    """What the cases share: the model, its writes, another model, a checkpoint directory."""
    ckpt = tmp_path_factory.mktemp("bad-inputs") / "tiny-gpt2"
    random_hf_model("gpt2").save_pretrained(ckpt)
    tiny_tokenizer().save_pretrained(ckpt)
    writes = gpt2_model.run_with_writes(TEXTS)
    saved = writes.save(tmp_path_factory.mktemp("writes") / "w")
    return dict(model=gpt2_model, writes=writes, other=random_model("gpt2", seed=1), ckpt=ckpt, saved=saved)


@dataclass
class Ctx:
    model: interp.Model
    writes: interp.ResidualWrites
    other: interp.Model
    ckpt: Path
    saved: Path
    tmp: Path
    monkeypatch: Any

    def variant(self, name: str, edit_config=None, edit_weights=None, extra: dict | None = None) -> Path:
        """A copy of the checkpoint with its config or weights edited."""
        d = self.tmp / name
        shutil.copytree(self.ckpt, d)
        if edit_config:
            cfg = json.loads((d / "config.json").read_text())
            edit_config(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        if edit_weights:
            t = load_file(str(d / "model.safetensors"))
            edit_weights(t)
            save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
        for fname, data in (extra or {}).items():
            (d / fname).write_bytes(data)
        return d

    @property
    def sub(self) -> interp.Subspace:
        return interp.Subspace(torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), name="s64")

    @property
    def sub32(self) -> interp.Subspace:
        return interp.Subspace(torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), name="s32")


# ---- helpers the cases call --------------------------------------------------------------
def _only_pickle(c: Ctx) -> Path:
    d = c.tmp / "pickled"
    d.mkdir()
    shutil.copy(c.ckpt / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    return interp.load(d)


def _corrupt(c: Ctx) -> Path:
    d = c.variant("corrupt")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated mid-file
    return interp.load(d)


def _remote_code(c: Ctx):
    def edit(cfg):
        cfg.update(model_type="evil_lm", architectures=["EvilForCausalLM"],
                   auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})

    d = c.variant("remote", edit_config=edit, extra={"modeling_evil.py": b"raise SystemExit('remote code ran')\n"})
    return interp.load(d)


def _no_network(c: Ctx):
    def unreachable(*a, **k):
        raise OSError("Network is unreachable")

    c.monkeypatch.setattr(socket, "create_connection", unreachable)
    return interp.load("EleutherAI/pythia-14m-not-in-any-cache")


def _nan_checkpoint(c: Ctx):
    hf = random_hf_model("gpt2", n_layers=1)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    return interp.load(hf, tokenizer=tiny_tokenizer())


def _nan_after_surgery(c: Ctx):
    model = random_model("gpt2", n_layers=1)
    with torch.no_grad():
        model.weights.mlp_in(0)[0, 0] = float("nan")
    return model.run_with_writes("x = 1")


def _conversion_changes_logits(c: Ctx):
    """A model whose TransformerLens conversion computes something other than the checkpoint
    (simulated: one weight changed after processing)."""
    load_mod = importlib.import_module("interp.load")  # the module, not the function

    finish = load_mod._finish

    def broken(bridge, *a, **k):
        model = finish(bridge, *a, **k)
        with torch.no_grad():
            model.weights.mlp_out(0).mul_(3.0)
        return model

    c.monkeypatch.setattr(load_mod, "_finish", broken)
    return interp.load(random_hf_model("gpt2", n_layers=1), tokenizer=tiny_tokenizer())


def _writes_inside_ablate(c: Ctx):
    with interp.ablate(c.model, c.sub, at=1, mode="zero"):
        return c.model.run_with_writes("x = 1")


def _hooks(c: Ctx, hooks):
    with c.model.hooks(hooks):
        return c.model.logits("x = 1")


def _no_chromium(c: Ctx):
    c.monkeypatch.setenv("BROWSER_PATH", str(c.tmp / "no-such-chromium"))
    c.monkeypatch.setenv("PATH", str(c.tmp))  # no chromium on PATH either
    return interp.export(go.Figure(go.Scatter(x=[1], y=[2])), c.tmp / "fig.png")


def _writes_file(c: Ctx, data: bytes | None, sidecar: str | None = "{}") -> Path:
    p = c.tmp / "rec.safetensors"
    if data is not None:
        p.write_bytes(data)
    if sidecar is not None:
        p.with_suffix(".json").write_text(sidecar)
    return p


def _probe(c: Ctx, data=TEXTS + ["for i in range(3):\n    print(i)\n"], **kw):
    return interp.probe_layers(c.model, data, max_tokens=200, progress=False, **kw)


def _evidence(c: Ctx, data=None, **kw):
    kw = dict(dict(neurons=["L1N3"], heads=[]), **kw)
    return interp.deletion_evidence(c.model, c.writes if data is None else data, progress=False, **kw)


# ---- the table: (id, call, expected type, regex the message must match) ------------------
CASES: list[tuple[str, Any, type[BaseException], str]] = [
    # text and token inputs
    ("empty text", lambda c: c.model.run_with_writes(""), ValueError,
     r"inputs is an empty string; pass at least one character"),
    ("empty text in a batch", lambda c: c.model.run_with_writes(["x = 1", ""]), ValueError,
     r"inputs\[1\] is an empty string"),
    ("BOS-only text, next-token DLA",
     lambda c: interp.logit_attribution(c.model.run_with_writes("<|endoftext|>", prepend_bos=False,
                                                                split_special_tokens=False)), ValueError,
     r"target=None asks for the next token, but no position has one .* pass a longer text or an explicit target"),
    ("text longer than n_ctx", lambda c: c.model.run_with_writes("x = 1\n" * 100), ValueError,
     r"text is \d+ tokens but the model's context is 128; pass chunk=True or a shorter text"),
    ("float token tensor, prepend_bos", lambda c: c.model.run_with_writes(torch.tensor([[1.5, 2.7]]), prepend_bos=True),
     TypeError, r"inputs is a torch.float32 tensor; token ids must be integers \(pass tokens.long\(\)\)"),
    ("3-D token tensor, prepend_bos", lambda c: c.model.run_with_writes(torch.ones(2, 2, 3, dtype=torch.long),
                                                                        prepend_bos=True),
     ValueError, r"inputs has shape \(2, 2, 3\); token ids must be \[batch, pos\] or \[pos\]"),
    ("negative token id", lambda c: c.model.to_tokens(torch.tensor([3, -1])), ValueError,
     r"inputs holds token id -1, outside the vocabulary 0..299; pass ids from this model's tokenizer"),
    ("token id = vocab, prepend_bos", lambda c: c.model.logits(torch.tensor([[300]]), prepend_bos=True), ValueError,
     r"token id 300, outside the vocabulary 0..299"),
    ("ragged nested lists", lambda c: c.model.run_with_writes([[1, 2, 3], [4, 5]]), TypeError,
     r"inputs\[0\] is a list; .* pass token ids as one LongTensor \[batch, pos\] \(right-pad ragged rows"),
    ("Tokens batch with a left-padded mask", lambda c: c.model.run_with_writes(
        interp.Tokens(torch.tensor([[0, 5, 6]]), torch.tensor([[False, True, True]]))), ValueError,
     r"Tokens.mask row 0 has a padded position before a real one; interp needs right padding"),
    ("Tokens batch with an id >= vocab", lambda c: c.model.attention_patterns(
        interp.Tokens(torch.tensor([[5, 999]]), torch.ones(1, 2, dtype=torch.bool))), ValueError,
     r"token id 999, outside the vocabulary 0..299"),
    ("None as inputs", lambda c: c.model.to_tokens(None), TypeError,
     r"inputs must be a str, a non-empty list of str or a LongTensor \[batch, pos\], got NoneType$"),
    ("storage device that does not exist", lambda c: c.model.run_with_writes("x", device="cuda:99"), ValueError,
     r"device='cuda:99' but .*; (pass device='cpu'|use cuda:0)"),
    ("writes recorded under active hooks", _writes_inside_ablate, ValueError,
     r"run_with_writes was called with hooks active .*blocks.1.hook_resid_pre.* call run_with_writes outside"),
    ("hook that is not callable", lambda c: _hooks(c, [("blocks.0.hook_resid_pre", 3)]), TypeError,
     r"fwd_hooks\[0\]=\('blocks.0.hook_resid_pre', 3\) must be a \(hook_name, fn\(tensor, hook\)\) pair"),
    ("unknown hook name", lambda c: _hooks(c, [("blocks.9.hook_resid_pre", lambda t, hook: t)]), KeyError,
     r"'blocks.9.hook_resid_pre' does not exist on this model. Pass TransformerLens hook names"),
    ("checkpoint with a NaN weight", _nan_checkpoint, ValueError,
     r"the checkpoint's own forward pass gives NaN or inf logits; its weights hold NaN or inf: check the checkpoint"),
    ("NaN from weight surgery", _nan_after_surgery, ValueError,
     r"forward pass gives NaN or inf in blocks.0.hook_resid_post; its weights hold NaN or inf: check the checkpoint"),
    # the record's accessors
    ("post-norm scale of an unknown block", lambda c: c.writes.scale(0, "resid"), ValueError,
     r"block='resid' .*attn.*mlp"),
    ("write coefficients of a layer out of range", lambda c: c.writes.write_z(9), IndexOutOfRangeError, r"layer=9"),
    ("bias write of a layer out of range", lambda c: c.writes.bias_write(-9, "attn"), IndexOutOfRangeError, r"layer=-9"),
    ("head out of range", lambda c: c.writes.head_write(0, 4), IndexOutOfRangeError,
     r"head=4 out of range for a model with 4 heads \(use 0..3 or -4..-1\)"),
    ("neuron layer out of range", lambda c: c.writes.neuron_write(-3, 0), IndexOutOfRangeError,
     r"layer=-3 out of range for a model with 2 layers \(use 0..1 or -2..-1\)"),
    ("layers=[] selects nothing", lambda c: c.model.run_with_writes("x", layers=[]), ValueError,
     r"layers=\[\] selects nothing; pass None for all layers"),
    # decompose / logit_attribution / logit_lens
    ("unknown by=", lambda c: interp.decompose(c.writes, by="heads"), ValueError,
     r"by='heads' is not supported; use one of 'layer', 'head', 'neuron', 'component'"),
    ("zero-norm direction", lambda c: interp.decompose(c.writes, directions=torch.zeros(64)), ValueError,
     r"directions contains a zero-norm vector, which has no direction; drop it"),
    ("NaN direction", lambda c: interp.decompose(c.writes, directions={"d": torch.full((64,), float("nan"))}),
     ValueError, r"directions\['d'\] contains NaN or inf; pass finite vectors"),
    ("inf in one of k directions",
     lambda c: interp.decompose(c.writes, directions=torch.cat([torch.ones(1, 64), torch.full((1, 64), float("inf"))])),
     ValueError, r"directions contains NaN or inf"),
    ("direction of the wrong d_model", lambda c: interp.decompose(c.writes, directions=torch.ones(32)), ValueError,
     r"directions has shape \(32,\) but the model's d_model is 64; pass vectors of length 64"),
    ("float layer", lambda c: interp.decompose(c.writes, layer=1.5), TypeError, r"layer=1.5 must be an int layer index"),
    ("target id >= vocab", lambda c: interp.logit_attribution(c.writes, 300), ValueError,
     r"target=300 is outside the vocabulary 0..299; pass a valid token id"),
    ("multi-token target string", lambda c: interp.logit_attribution(c.writes, "return a", model=c.model), ValueError,
     r"target='return a' is \d+ tokens .*, not one; pass a single token"),
    ("unknown ln_scale=", lambda c: interp.logit_attribution(c.writes, ln_scale="live"), ValueError,
     r"ln_scale='live' is not supported; use one of 'frozen', 'recompute'"),
    ("writes of one model, another model",
     lambda c: interp.logit_attribution(c.writes, model=c.other), ModelMismatchError,
     r"model='GPT2LMHeadModel' \(id \w+\) is not the model these writes were recorded on .* pass the model"),
    ("unknown where=", lambda c: interp.logit_lens(c.writes, where="end"), ValueError,
     r"where='end' is not supported; use one of 'pre', 'mid', 'post', 'all'"),
    ("negative chunk_rows", lambda c: interp.logit_lens(c.writes, chunk_rows=-1), ValueError,
     r"chunk_rows=-1 must be a positive int"),
    ("logit lens with another model", lambda c: interp.logit_lens(c.writes, model=c.other), ModelMismatchError,
     r"is not the model these writes were recorded on"),
    # probes
    ("probe layer out of range", lambda c: _probe(c, where="resid_post", layers=[2]), IndexOutOfRangeError,
     r"layers=\[2\] out of range for where='resid_post' in a 2-layer model: use 0..1 or -2..-1"),
    ("unknown probe where=", lambda c: _probe(c, where="pre"), ValueError,
     r"where='pre' is not supported; use one of 'resid_pre', 'resid_mid', 'resid_post'"),
    ("probe device that is not one", lambda c: _probe(c, device="gpu0"), ValueError,
     r"device='gpu0' is not a torch device; use 'cpu', 'cuda'"),
    ("probe seed not an int", lambda c: _probe(c, seed="0"), TypeError, r"seed='0' must be an int"),
    ("one-token documents", lambda c: _probe(c, data=["x"] * 3, label="current_token"), ValueError,
     r"takes a single value on the training documents; a probe needs at least two classes"),
    ("zero-norm subspace", lambda c: interp.Subspace(torch.zeros(2, 64)), ValueError,
     r"directions contains a zero-norm vector"),
    ("NaN subspace", lambda c: interp.Subspace(torch.full((64,), float("nan"))), ValueError,
     r"directions contains NaN or inf"),
    ("random subspace of 2.5 dims", lambda c: interp.Subspace.random(64, 2.5), TypeError, r"k=2.5 must be an int"),
    ("subspace of the wrong d_model, writers", lambda c: interp.writers(c.sub32, c.writes), ValueError,
     r"subspace 's32' has d_model=32 but the writes have d_model=64; build the subspace from this model's stream"),
    ("writers layer out of range", lambda c: interp.writers(c.sub, c.writes, layer=3), IndexOutOfRangeError,
     r"layer=3 out of range for a model with 2 layers"),
    ("readers with arguments swapped", lambda c: interp.readers(c.model, c.sub), TypeError,
     r"model must be an interp.Model \(from interp.load\), got Subspace"),
    # memory
    ("deleting neurons, layer out of range", lambda c: interp.find_deleting_neurons(c.model, layers=2),
     IndexOutOfRangeError, r"layers=\[2\] out of range for a model with 2 layers \(use 0..1 or -2..-1\)"),
    ("unknown null=", lambda c: interp.find_deleting_neurons(c.model, null="bootstrap"), ValueError,
     r"null='bootstrap' is not supported; use one of 'analytic', 'empirical'"),
    ("deleting neurons, seed not an int", lambda c: interp.find_deleting_neurons(c.model, null="empirical", seed="x"),
     TypeError, r"seed='x' must be an int"),
    ("deleting heads, seed not an int", lambda c: interp.find_deleting_heads(c.model, seed=1.5), TypeError,
     r"seed=1.5 must be an int"),
    ("evidence label out of range", lambda c: _evidence(c, neurons=["L5N0"]), IndexOutOfRangeError,
     r"neurons=5 out of range for a model with 2 layers .*; the item is neurons\[0\]='L5N0'"),
    ("evidence head out of range", lambda c: _evidence(c, neurons=[], heads=[(0, 4)]), IndexOutOfRangeError,
     r"heads=4 out of range for a model with 4 heads .*; the item is heads\[0\]=\(0, 4\)"),
    ("evidence, writes of another model", lambda c: interp.deletion_evidence(c.other, c.writes, neurons=["L1N3"],
                                                                              heads=[]),
     ModelMismatchError, r"recorded on 'GPT2LMHeadModel', not on model='GPT2LMHeadModel' \(model ids \w+ and \w+\)"),
    # export
    ("image export with no Chromium", _no_chromium, ChromiumNotFoundError,
     r"BROWSER_PATH='.*no-such-chromium' is not an executable file.*apt-get install chromium"),
    # saved writes
    ("saved writes: missing file", lambda c: interp.ResidualWrites.load(c.tmp / "nope"), FileNotFoundError,
     r"path='.*nope.safetensors' does not exist; pass a file written by writes.save\(\)"),
    ("saved writes: corrupted file", lambda c: interp.ResidualWrites.load(_writes_file(c, b"\x00garbage" * 10)),
     ValueError, r"path='.*rec.safetensors' \(or its rec.json\) is not a readable record .*write it again"),
    ("saved writes: sidecar missing",
     lambda c: interp.ResidualWrites.load(_writes_file(c, c.saved.read_bytes(), sidecar=None)),
     FileNotFoundError, r"has no rec.json beside it; writes.save\(\) writes both files"),
    ("saved writes: another model", lambda c: interp.ResidualWrites.load(c.saved, model=c.other), ModelMismatchError,
     r"model='GPT2LMHeadModel' is not the model these writes were recorded on"),
    # loading
    ("missing local directory", lambda c: interp.load(c.tmp / "missing" / "model"), FileNotFoundError,
     r"name_or_path='.*missing/model' is not a directory; pass a directory holding config.json"),
    ("empty name", lambda c: interp.load(""), ValueError,
     r"name_or_path='' is empty; pass a checkpoint directory, a hub name, or None"),
    ("hub name with no network", _no_network, interp.ModelNotFoundError,
     r"name_or_path='EleutherAI/pythia-14m-not-in-any-cache' is not in the local Hugging Face cache and the hub "
     r"cannot be reached; pass a local checkpoint directory"),
    ("non-causal-LM checkpoint", lambda c: interp.load(c.variant("bert", lambda cfg: cfg.update(
        architectures=["BertForMaskedLM"]))), ValueError, r"holds a BertForMaskedLM, not a causal language model"),
    ("non-causal model in memory", lambda c: interp.load(
        __import__("transformers").GPT2Model(hf_config("gpt2")), tokenizer=tiny_tokenizer()), ValueError,
     r"name_or_path holds a GPT2Model, not a causal language model; interp needs a \*ForCausalLM"),
    ("corrupted safetensors", _corrupt, ValueError,
     r"model.safetensors is not a readable safetensors file .*; re-download or re-save it"),
    ("checkpoint missing a weight", lambda c: interp.load(c.variant(
        "missing-weight", edit_weights=lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))), ValueError,
     r"lacks 1 weight\(s\) its architecture needs \(transformer.h.1.mlp.c_fc.weight\); they would be random"),
    ("checkpoint with a wrong shape", lambda c: interp.load(c.variant(
        "wrong-shape", edit_weights=lambda t: t.update({"transformer.wpe.weight": torch.zeros(5, 64)}))), ValueError,
     r"config.json describes other shapes than the weights hold \(1 tensor\(s\): transformer.wpe.weight: config "
     r"\[128, 64\], weights \[5, 64\]\); fix the sizes in config.json"),
    ("pickle checkpoint without opt-in", _only_pickle, UnsafeCheckpointError,
     r"holds only pickle weights \(pytorch_model.bin\).* pass allow_pickle=True if you trust them"),
    ("remote code without opt-in", _remote_code, UnsafeCheckpointError,
     r"model_type='evil_lm', which runs the checkpoint's own Python code .* pass trust_remote_code=True"),
    ("conversion that changes the logits", _conversion_changes_logits, ValueError,
     r"processing='compat': the model TransformerLens built from this checkpoint computes other logits than "
     r"the checkpoint itself .* load it with processing='raw'"),
    ("load onto a device that does not exist", lambda c: interp.load(c.ckpt, device="cuda:99"), ValueError,
     r"device='cuda:99' but "),
]


# ---- round two: whole families, each fixed at its root ------------------------------------
def _cfg(c: Ctx, name: str, edit=None, raw: str | None = None) -> Path:
    """A checkpoint variant whose config.json is edited (a dict edit) or replaced (raw text)."""
    if raw is None:
        return c.variant(name, edit_config=edit)
    d = c.variant(name)
    (d / "config.json").write_text(raw)
    return d


def _load_cfg(c: Ctx, name: str, edit=None, raw: str | None = None):
    return interp.load(_cfg(c, name, edit, raw))


def _set(**kv):
    return lambda cfg: cfg.update(kv)


def _drop_files(c: Ctx, name: str, *files: str) -> Path:
    d = c.variant(name)
    for f in files:
        (d / f).unlink()
    return d


def _tokenizer_file(c: Ctx, name: str, data: bytes) -> Path:
    d = c.variant(name)
    (d / "tokenizer.json").write_bytes(data)
    return d


def _extra_layer(c: Ctx):
    """Weights of a third layer the config (2 layers) does not use."""
    def add(t):
        for k in [k for k in t if k.startswith("transformer.h.1.")]:
            t[k.replace(".h.1.", ".h.2.")] = t[k].clone()
    return interp.load(c.variant("extra-layer", edit_weights=add))


def _extra_tensor(c: Ctx):
    return interp.load(c.variant("extra-tensor", edit_weights=lambda t: t.update(
        {"transformer.h.0.mlp.c_extra.weight": torch.zeros(4, 4)})))


def _strange_tokenizer(c: Ctx):
    """Another model's tokenizer, whose ids run past this model's vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=0,
                                    eos_token_id=0))
    return interp.load(hf, tokenizer=tiny_tokenizer())


def _record(c: Ctx, name: str, edit_tensors=None, edit_meta=None, drop: str | None = None) -> Path:
    """A copy of the saved record with its tensors or sidecar edited."""
    p = c.tmp / f"{name}.safetensors"
    t = load_file(str(c.saved))
    meta = json.loads(c.saved.with_suffix(".json").read_text())
    if edit_tensors:
        edit_tensors(t)
    if drop:
        t.pop(drop)
    if edit_meta:
        edit_meta(meta)
    save_file({k: v.contiguous().clone() for k, v in t.items()}, str(p))
    p.with_suffix(".json").write_text(json.dumps(meta))
    return p


def _load_record(c: Ctx, name: str, model=False, **kw):
    return interp.ResidualWrites.load(_record(c, name, **kw), model=c.model if model else None)


def _pop(key):
    return lambda m: m.pop(key)


def _writers_mixed(c: Ctx):
    sub = interp.Subspace(torch.eye(64)[:2], name="s")
    return interp.writers(sub, [c.writes, c.other.run_with_writes(TEXTS)], layer=2)


def _evidence_mixed(c: Ctx):
    return interp.deletion_evidence(c.model, [c.writes, c.other.run_with_writes(TEXTS)], neurons=["L1N3"], heads=[],
                                    progress=False)


class _Basis:
    """Anything with a ``.basis`` ``[d_model, k]``, as the analyses accept besides a Subspace."""

    def __init__(self, basis):
        self.basis, self.name, self.site = basis, "duck", None


def _fitted_probe():
    X = torch.randn(60, 64, generator=torch.Generator().manual_seed(0))
    return interp.LinearProbe(max_iter=5).fit(X, (X[:, 0] > 0).long())


def _minus_one_labels():
    X = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(-1, 5, (200,), generator=torch.Generator().manual_seed(1))
    return interp.LinearProbe(top_k=3, max_iter=5).fit(X, y)


LOADING: list[tuple[str, Any, type[BaseException], str]] = [
    ("no tokenizer files", lambda c: interp.load(_drop_files(c, "no-tok", "tokenizer.json", "tokenizer_config.json")),
     CheckpointError, r"holds no tokenizer files .* maps every text to one token\. Save the tokenizer beside the "
     r"weights \(tokenizer.save_pretrained\(dir\)\), or pass tokenizer="),
    ("corrupt tokenizer.json", lambda c: interp.load(_tokenizer_file(c, "bad-tok", b"{not json")), CheckpointError,
     r"its tokenizer files cannot be read \(.*\); re-save the tokenizer"),
    ("tokenizer.json of the wrong shape", lambda c: interp.load(_tokenizer_file(c, "odd-tok", b'{"model": 3}')),
     CheckpointError, r"its tokenizer files cannot be read"),
    ("empty tokenizer.json", lambda c: interp.load(_tokenizer_file(c, "empty-tok", b"")), CheckpointError,
     r"its tokenizer files cannot be read"),
    ("another model's tokenizer", _strange_tokenizer, CheckpointError,
     r"gives token id \d+ but the model's vocabulary is 0..49; it is another model's tokenizer: pass this model's own"),
    ("config declares fewer layers than the weights", lambda c: _load_cfg(c, "fewer", _set(n_layer=1)),
     CheckpointError, r"config.json declares 1 layer\(s\) but the weights hold 2; the weights of layers 1..1 would "
     r"be silently ignored. Fix the layer count in config.json \(to 2\)"),
    ("weights of a layer the config lacks", _extra_layer, CheckpointError,
     r"config.json declares 2 layer\(s\) but the weights hold 3; .* silently ignored"),
    ("a weight the model does not use", _extra_tensor, CheckpointError,
     r"holds 1 weight\(s\) the model its config.json describes does not use \(transformer.h.0.mlp.c_extra.weight\); "
     r"they would be silently ignored"),
    ("a million layers", lambda c: _load_cfg(c, "million", _set(n_layer=10**6)), CheckpointError,
     r"config.json declares 1,000,000 layers but the weights hold 2; the other 999,998 would be random. Fix"),
    ("three layers declared, two held", lambda c: _load_cfg(c, "three", _set(n_layer=3)), CheckpointError,
     r"declares 3 layers but the weights hold 2"),
    ("absurd width", lambda c: _load_cfg(c, "wide", _set(n_embd=10**6)), CheckpointError,
     r"config.json describes other shapes than the weights hold .*transformer.wte.weight: config \[300, 1000000\], "
     r"weights \[300, 64\]"),
    ("absurd vocabulary", lambda c: _load_cfg(c, "vocab", _set(vocab_size=10**9)), CheckpointError,
     r"transformer.wte.weight: config \[1000000000, 64\], weights \[300, 64\]\); fix the sizes in config.json"),
    ("absurd context", lambda c: _load_cfg(c, "ctx", _set(n_positions=10**8)), CheckpointError,
     r"transformer.wpe.weight: config \[100000000, 64\], weights \[128, 64\]"),
    ("absurd MLP width", lambda c: _load_cfg(c, "mlp", _set(n_inner=10**7)), CheckpointError,
     r"transformer.h.0.mlp.c_fc.weight: config \[64, 10000000\], weights \[64, 256\]"),
    ("config is a JSON list", lambda c: _load_cfg(c, "list", raw="[1, 2, 3]"), CheckpointError,
     r"config.json holds a JSON list, not an object of settings; .* re-save the checkpoint"),
    ("config is a JSON string", lambda c: _load_cfg(c, "string", raw='"gpt2"'), CheckpointError,
     r"config.json holds a JSON str, not an object"),
    ("config is JSON null", lambda c: _load_cfg(c, "null", raw="null"), CheckpointError,
     r"config.json holds a JSON NoneType, not an object"),
    ("config is a number", lambda c: _load_cfg(c, "number", raw="3"), CheckpointError,
     r"config.json holds a JSON int, not an object"),
    ("config is not JSON", lambda c: _load_cfg(c, "garbage", raw="{model_type: gpt2"), CheckpointError,
     r"config.json is not valid JSON \(.*\); repair or re-save the checkpoint"),
    ("config is empty", lambda c: _load_cfg(c, "empty", raw=""), CheckpointError, r"config.json is not valid JSON"),
    ("config is not UTF-8", lambda c: interp.load(c.variant("binary", extra={"config.json": b"\xff\xfe\x00garbage"})),
     CheckpointError,
     r"config.json (is not valid JSON|cannot be read)"),
    ("layer count as a string", lambda c: _load_cfg(c, "str-layers", _set(n_layer="2")), CheckpointError,
     r"config.json has n_layer='2' \(str\); a size must be a positive int: fix it in config.json \(e.g. n_layer: 2\)"),
    ("width as a float", lambda c: _load_cfg(c, "float-width", _set(n_embd=64.0)), CheckpointError,
     r"has n_embd=64.0 \(float\); a size must be a positive int"),
    ("heads as a bool", lambda c: _load_cfg(c, "bool-heads", _set(n_head=True)), CheckpointError,
     r"has n_head=True \(bool\); a size must be a positive int"),
    ("vocabulary as a list", lambda c: _load_cfg(c, "list-vocab", _set(vocab_size=[300])), CheckpointError,
     r"has vocab_size=\[300\] \(list\); a size must be a positive int"),
    ("negative heads", lambda c: _load_cfg(c, "neg-heads", _set(n_head=-4)), CheckpointError,
     r"has n_head=-4; a size must be a positive int: fix config.json"),
    ("zero layers", lambda c: _load_cfg(c, "zero-layers", _set(n_layer=0)), CheckpointError,
     r"has n_layer=0; a size must be a positive int"),
    ("negative vocabulary", lambda c: _load_cfg(c, "neg-vocab", _set(vocab_size=-300)), CheckpointError,
     r"has vocab_size=-300; a size must be a positive int"),
    ("negative context", lambda c: _load_cfg(c, "neg-ctx", _set(n_positions=-1)), CheckpointError,
     r"has n_positions=-1; a size must be a positive int"),
    ("heads that do not divide the width", lambda c: _load_cfg(c, "heads5", _set(n_head=5)), CheckpointError,
     r"config.json describes a model transformers cannot build \(.*divisible.*\); fix config.json"),
    ("unknown activation", lambda c: _load_cfg(c, "act", _set(activation_function="nope")), CheckpointError,
     r"describes a model transformers cannot build \(KeyError: 'nope'\); fix config.json"),
    ("architectures not a list", lambda c: _load_cfg(c, "arch", _set(architectures="GPT2LMHeadModel")),
     CheckpointError, r"has architectures='GPT2LMHeadModel'; it must be a list of class names"),
    ("model_type not a string", lambda c: _load_cfg(c, "mtype", _set(model_type=7)), CheckpointError,
     r"has model_type=7; it must be a string such as 'llama'"),
    ("truncated safetensors header", lambda c: interp.load(c.variant("trunc", extra={"model.safetensors": b"\x08"})),
     CheckpointError, r"model.safetensors is not a readable safetensors file .*; re-download or re-save it"),
    ("loader flag given as a string", lambda c: interp.load(c.ckpt, allow_pickle="no"), TypeError,
     r"allow_pickle='no' must be True or False"),
    ("n_devices of zero", lambda c: interp.load(c.ckpt, n_devices=0), ValueError, r"n_devices=0 must be a positive int"),
]

RECORDS: list[tuple[str, Any, type[BaseException], str]] = [
    ("record: z of the wrong width", lambda c: _load_record(c, "z-width", edit_tensors=lambda t: t.update(
        {"z.1": t["z.1"][..., :8]})), ValueError,
     r"z.1 has shape \[2, \d+, 4, 8\] but this model's layer 1 gives \[2, \d+, 4, 16\]; the record is damaged"),
    ("record: z of the wrong width, with the model", lambda c: _load_record(c, "z-width-m", model=True,
                                                                          edit_tensors=lambda t: t.update(
        {"z.0": t["z.0"][:, :, :2]})), ValueError, r"z.0 has shape \[2, \d+, 2, 16\] but this model's layer 0 gives"),
    ("record: acts of the wrong width", lambda c: _load_record(c, "acts-width", edit_tensors=lambda t: t.update(
        {"acts.0": t["acts.0"][..., :100]})), ValueError, r"acts.0 has shape \[2, \d+, 100\] but this model's layer 0"),
    ("record: embed of the wrong width", lambda c: _load_record(c, "embed-width", edit_tensors=lambda t: t.update(
        {"embed": t["embed"][..., :32]})), ValueError,
     r"embed has shape \[2, \d+, 32\] but the record is \[batch, pos, d_model\] = \[2, \d+, 64\]"),
    ("record: one row fewer in z", lambda c: _load_record(c, "z-rows", edit_tensors=lambda t: t.update(
        {"z.1": t["z.1"][:1]})), ValueError, r"z.1 has shape \[1, "),
    ("record: mask of another shape", lambda c: _load_record(c, "mask", edit_tensors=lambda t: t.update(
        {"mask": t["mask"][:, :3]})), ValueError, r"mask is a torch.bool tensor of shape \[2, 3\], not bool \[2, \d+\]"),
    ("record: float tokens", lambda c: _load_record(c, "float-tok", edit_tensors=lambda t: t.update(
        {"tokens": t["tokens"].float()})), ValueError, r"tokens is a torch.float32 tensor .*, not int64 \[batch, pos\]"),
    ("record: final scale of another shape", lambda c: _load_record(c, "scale", edit_tensors=lambda t: t.update(
        {"final_scale": t["final_scale"][..., 0]})), ValueError, r"final_scale has shape \[2, \d+\] but it must be"),
    ("record: a missing z", lambda c: _load_record(c, "no-z", drop="z.1"), ValueError,
     r"layer 1 has acts.1 but no z.1; the record is damaged or was edited: write it again with writes.save\(\)"),
    ("record: a missing acts", lambda c: _load_record(c, "no-acts", drop="acts.0"), ValueError,
     r"layer 0 has z.0 but no acts.0"),
    ("record: a missing weight", lambda c: _load_record(c, "no-WU", drop="weights.W_U"), ValueError,
     r"lacks the tensor\(s\) weights.W_U; the record is truncated: write it again with writes.save\(\), or pass model="),
    ("record: a layer the model lacks", lambda c: _load_record(c, "layer9", edit_tensors=lambda t: t.update(
        {"z.9": t["z.0"], "acts.9": t["acts.0"]})), ValueError,
     r"the tensor '(z|acts).9' names no layer of a 2-layer model"),
    ("record: weights of another width", lambda c: _load_record(c, "WO", edit_tensors=lambda t: t.update(
        {"weights.W_O": t["weights.W_O"][..., :32]})), ValueError,
     r"the record has d_model=64 but the weights' W_O has width 32"),
    ("record: sidecar without model_name", lambda c: _load_record(c, "no-name", edit_meta=_pop("model_name")),
     ValueError, r"no-name.json lacks the field 'model_name'; the record is incomplete: write it again"),
    ("record: sidecar without n_layers", lambda c: _load_record(c, "no-layers", edit_meta=_pop("n_layers")),
     ValueError, r"no-layers.json lacks the field 'n_layers'"),
    ("record: sidecar without d_model", lambda c: _load_record(c, "no-d", edit_meta=_pop("d_model")),
     ValueError, r"no-d.json lacks the field 'd_model'"),
    ("record: sidecar without processing", lambda c: _load_record(c, "no-proc", edit_meta=_pop("processing")),
     ValueError, r"no-proc.json lacks the field 'processing'"),
    ("record: sidecar n_layers as a string", lambda c: _load_record(c, "str-layers", edit_meta=lambda m: m.update(
        n_layers="2")), ValueError, r"has n_layers='2', which is not a valid int; write the record again"),
    ("record: sidecar with an unknown processing", lambda c: _load_record(c, "proc", edit_meta=lambda m: m.update(
        processing="folded")), ValueError, r"has processing='folded'; expected 'compat' or 'raw'"),
    ("record: sidecar n_layers other than the weights", lambda c: _load_record(c, "n3", edit_meta=lambda m: m.update(
        n_layers=3)), ValueError, r"the weights hold W_O \[2, 4, 16, 64\] and W_out \[2, 256, 64\], not the 3 layers"),
    ("record: sidecar is a list", lambda c: interp.ResidualWrites.load(_writes_file(c, c.saved.read_bytes(), "[]")),
     ValueError, r"is not a record written by writes.save\(\) \(lacks model_id in rec.json\)"),
    ("record: str_tokens for other rows", lambda c: _load_record(c, "strtok", edit_meta=lambda m: m.update(
        str_tokens=[["a"]])), ValueError, r"has str_tokens for 1 rows but the record has 2"),
    ("record: tampered with the model's id", lambda c: interp.ResidualWrites.load(_record(c, "id", edit_meta=lambda m: m.update(
        model_id="0" * 16)), model=c.model), ModelMismatchError,
     r"model='GPT2LMHeadModel' is not the model these writes were recorded on .*model ids \w+ and 0{16}\); pass that"),
    ("record: model of another kind", lambda c: interp.ResidualWrites.load(c.saved, model="gpt2"), TypeError,
     r"model must be an interp.Model \(from interp.load\) or None, got str"),
    ("record: path not a path", lambda c: interp.ResidualWrites.load(3), TypeError,
     r"path must be a str or Path of a file written by writes.save\(\), got int"),
    ("save into a missing directory", lambda c: c.writes.save(c.tmp / "no" / "such" / "dir" / "rec"), FileNotFoundError,
     r"the directory '.*no/such/dir' does not exist; create it first \(Path\(.*\).mkdir\(parents=True\)\)"),
    ("save to a directory name", lambda c: c.writes.save(c.tmp / ".."), ValueError,
     r"path='.*\.\.' is a directory; pass a file name for the record inside it"),
    ("save to a directory", lambda c: c.writes.save(c.tmp), ValueError,
     r"path='.*' is a directory; pass a file name for the record inside it, e.g. '.*/rec'"),
    ("save to a number", lambda c: c.writes.save(5), TypeError,
     r"path must be a str or Path naming the record, e.g. 'rec', got int"),
    ("save with weights as a string", lambda c: c.writes.save(c.tmp / "w", weights="yes"), TypeError,
     r"weights='yes' must be True or False"),
    ("records of two models, writers", _writers_mixed, ModelMismatchError,
     r"writes\[0\] and writes\[1\] were recorded on different models .* pass them separately"),
    ("records of two models, deletion_evidence", _evidence_mixed, ModelMismatchError,
     r"recorded on 'GPT2LMHeadModel', not on model='GPT2LMHeadModel' \(model ids"),
    ("records of two models, stream of writers", lambda c: interp.writers(
        interp.Subspace(torch.eye(64)[:1]), iter([c.writes, c.writes, c.other.run_with_writes("x")]), layer=1),
     ModelMismatchError, r"writes\[0\] and writes\[2\] were recorded on different models"),
    ("decompose with the other model", lambda c: interp.decompose(c.writes, model=c.other), ModelMismatchError,
     r"is not the model these writes were recorded on"),
    ("stream norms with the other model", lambda c: interp.stream_norms(c.writes, model=c.other), ModelMismatchError,
     r"is not the model these writes were recorded on"),
]

ARGUMENTS: list[tuple[str, Any, type[BaseException], str]] = [
    ("export(None)", lambda c: interp.export(None, c.tmp / "f.html"), TypeError,
     r"fig must be a plotly.graph_objects.Figure \(or a figure dict\), got NoneType; pass the figure a plot function"),
    ("export a DataFrame", lambda c: interp.export(__import__("pandas").DataFrame({"a": [1]}), c.tmp / "f.html"),
     TypeError, r"fig must be a plotly.graph_objects.Figure .*got DataFrame"),
    ("export a dict that is no figure", lambda c: interp.export({"nope": 1}, c.tmp / "f.html"), TypeError,
     r"fig is a dict that is not a plotly figure"),
    ("complex direction", lambda c: interp.decompose(c.writes, directions=torch.ones(64, dtype=torch.complex64)),
     TypeError, r"directions is a torch.complex64 tensor; directions live in the real residual stream: pass a real"),
    ("bool direction", lambda c: interp.decompose(c.writes, directions=torch.ones(64, dtype=torch.bool)), TypeError,
     r"directions is a torch.bool tensor"),
    ("complex subspace", lambda c: interp.Subspace(torch.ones(2, 64, dtype=torch.complex64)), TypeError,
     r"directions is a torch.complex64 tensor"),
    ("rank-deficient subspace", lambda c: interp.Subspace(torch.ones(3, 64)), ValueError,
     r"directions holds 3 directions but they span only 1 dimension\(s\) \(linearly dependent.*pass independent"),
    ("nearly dependent subspace", lambda c: interp.Subspace(torch.stack([torch.eye(64)[0], torch.eye(64)[0] + 1e-9 *
                                                                         torch.eye(64)[1]])), ValueError,
     r"holds 2 directions but they span only 1 dimension"),
    ("zero-width subspace", lambda c: interp.Subspace.from_basis(torch.zeros(64, 0)), ValueError,
     r"directions has shape \[0, 64\]; pass \[k, d_model\]"),
    ("zero-width basis, evidence", lambda c: _evidence(c, subspace=torch.zeros(64, 0)), ValueError,
     r"subspace.basis has shape \[64, 0\]: a zero-width subspace; pass at least one direction"),
    ("rank-deficient basis, evidence", lambda c: _evidence(c, subspace=torch.ones(64, 2)), ValueError,
     r"subspace.basis holds 2 directions but they span only 1 dimension"),
    ("integer basis of rank 1, evidence", lambda c: _evidence(c, subspace=torch.ones(64, 3, dtype=torch.long)),
     ValueError, r"subspace.basis holds 3 directions but they span only 1"),
    ("complex basis, evidence", lambda c: _evidence(c, subspace=torch.ones(64, 1, dtype=torch.complex64)), TypeError,
     r"subspace.basis is a torch.complex64 tensor"),
    ("rank-deficient duck-typed subspace, ablate", lambda c: interp.ablate(c.model, _Basis(torch.ones(64, 2)), at=1,
                                                                             mode="zero").__enter__(), ValueError,
     r"subspace.basis holds 2 directions but they span only 1 dimension"),
    ("zero-width duck-typed subspace, readers", lambda c: interp.readers(_Basis(torch.zeros(64, 0)), c.model),
     ValueError, r"subspace.basis has shape \[64, 0\]: a zero-width subspace; pass at least one direction"),
    ("rank-deficient duck-typed subspace, writers", lambda c: interp.writers(_Basis(torch.ones(64, 3)), c.writes,
                                                                             layer=1), ValueError,
     r"subspace.basis holds 3 directions but they span only 1"),
    ("subspace name not a string", lambda c: interp.Subspace(torch.eye(64)[:1], name=3), TypeError,
     r"name=3 must be a str"),
    ("LinearProbe label -1 with an OTHER class", lambda c: _minus_one_labels(), ValueError,
     r"y holds the label -1, which LinearProbe reports for OTHER .* shift the labels \(e.g. y \+ 1\), or pass top_k=6"),
    ("n_ctx=0 is not the default", lambda c: next(c.model.stream_writes(TEXTS, n_ctx=0, progress=False)), ValueError,
     r"n_ctx=0 must be an int >= 2 \(or None\)"),
    ("layer as a string", lambda c: c.writes.head_write("1", 0), TypeError,
     r"layer='1' must be an int layer index; pass the number itself, layer=1, not the string '1'"),
    ("layers as a string", lambda c: c.model.run_with_writes("x", layers="01"), TypeError,
     r"layers='01' must be an int, a sequence of ints, or None"),
    ("layers holding a string", lambda c: c.model.run_with_writes("x", layers=[0, "1"]), TypeError,
     r"layers='1' must be an int layer index; pass the number itself"),
    ("layers as a float tensor", lambda c: c.model.run_with_writes("x", layers=torch.tensor([0.5])), TypeError,
     r"layers=0.5 must be an int, a sequence of ints, or None"),
    ("neuron as a float", lambda c: c.writes.neuron_write(0, 2.0), TypeError, r"neuron=2.0 must be an int neuron index"),
    ("decompose layer as a string", lambda c: interp.decompose(c.writes, layer="1"), TypeError,
     r"layer='1' must be an int layer index"),
    ("from_probe site out of range", lambda c: interp.Subspace.from_probe(_fitted_probe(), site=3), ValueError,
     r"site=3 out of range: the probe has 1 site"),
    ("from_probe k beyond the rank", lambda c: interp.Subspace.from_probe(_fitted_probe(), k=5), ValueError,
     r"k=5 must be an int in 1..2 \(the probe's rank bound\)"),
    ("choice given as a bool", lambda c: interp.decompose(c.writes, by=True), ValueError,
     r"by=True is not supported; use one of"),
    ("choice given as a list", lambda c: interp.logit_lens(c.writes, where=["pre"]), ValueError,
     r"where=\['pre'\] is not supported; use one of"),
]

# Each numeric, flag or count argument of the public API, the kind of value it takes, and the
# bad values of that kind. The generated rows cover every member of the family per argument.
BAD_VALUES: dict[str, list[tuple[Any, type[BaseException]]]] = {
    "count": [("8", TypeError), (0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError),
              (float("nan"), TypeError)],
    "count0": [("3", TypeError), (-1, ValueError), (1.5, TypeError)],
    "seed": [("0", TypeError), (1.5, TypeError), (None, TypeError)],
    "ctx": [(0, ValueError), (1, ValueError), (-5, ValueError), ("64", TypeError)],
    "flag": [("no", TypeError), ("False", TypeError), (1, TypeError)],
    "positive": [("0.1", TypeError), (float("nan"), ValueError), (float("inf"), ValueError), (-1, ValueError),
                 (0, ValueError)],
    "fraction": [("0.2", TypeError), (float("nan"), ValueError), (0, ValueError), (1, ValueError), (1.5, ValueError)],
    "energy": [("0.9", TypeError), (float("nan"), ValueError), (0, ValueError), (1.5, ValueError)],
    "cosine": [("low", TypeError), (float("nan"), ValueError), (float("inf"), ValueError), (2, ValueError)],
    "penalty": [("1e-3", TypeError), (float("nan"), ValueError), (float("inf"), ValueError), (-0.1, ValueError)],
    "index": [("0", TypeError), (-1, ValueError), (1.5, TypeError)],
    "real": [("0.3", TypeError), (float("nan"), ValueError), (float("-inf"), ValueError)],
    "share": [("0.05", TypeError), (float("nan"), ValueError), (-0.1, ValueError), (1.5, ValueError)],
}


def _plot(fn: str, c: Ctx, **kw):
    return getattr(interp.plots, fn)(pd.DataFrame(), **kw)


def _stream(c: Ctx, **kw):
    return next(iter(c.model.stream_writes(TEXTS, **dict(dict(progress=False), **kw))))


def _quiet(fn):
    return lambda c, **kw: fn(c, **dict(dict(progress=False), **kw))


API: dict[str, tuple[Any, dict[str, str]]] = {
    "Model.run_with_writes": (lambda c, **kw: c.model.run_with_writes("x = 1", **kw),
                              {"chunk": "flag", "prepend_bos": "flag", "verify": "flag", "split_special_tokens": "flag"}),
    "Model.to_tokens": (lambda c, **kw: c.model.to_tokens("x = 1", **kw),
                        {"chunk": "flag", "prepend_bos": "flag", "split_special_tokens": "flag"}),
    "Model.stream_writes": (_stream, {"batch_size": "count", "n_ctx": "ctx", "max_tokens": "count", "progress": "flag",
                                      "verify": "flag", "split_special_tokens": "flag"}),
    "attention_patterns": (lambda c, **kw: interp.attention_patterns(c.model, "x = 1", **kw),
                           {"chunk": "flag", "prepend_bos": "flag", "split_special_tokens": "flag"}),
    "decompose": (lambda c, **kw: interp.decompose(c.writes, **kw), {"top_k": "count"}),
    "logit_attribution": (lambda c, **kw: interp.logit_attribution(c.writes, **kw), {"top_k": "count"}),
    "logit_lens": (lambda c, **kw: interp.logit_lens(c.writes, **kw), {"k": "count", "chunk_rows": "count"}),
    "probe_layers": (_quiet(lambda c, **kw: interp.probe_layers(c.model, TEXTS, **kw)),
                     {"max_tokens": "count", "top_k": "count", "max_iter": "count", "batch_size": "count",
                      "n_ctx": "ctx", "seed": "seed", "weight_decay": "penalty", "test_size": "fraction",
                      "exclude_first": "flag", "progress": "flag"}),
    "probe_labels": (_quiet(lambda c, **kw: interp.probe_labels(c.model, TEXTS, ["current_token", "previous_token"],
                                                                 **kw)),
                     {"max_tokens": "count", "top_k": "count", "max_iter": "count", "batch_size": "count",
                      "n_ctx": "ctx", "seed": "seed", "weight_decay": "penalty", "test_size": "fraction",
                      "exclude_first": "flag", "progress": "flag"}),
    "ablation_effect": (_quiet(lambda c, **kw: interp.ablation_effect(c.model, TEXTS, c.sub, at=1, **kw)),
                        {"max_tokens": "count", "top_k": "count", "max_iter": "count", "batch_size": "count",
                         "n_ctx": "ctx", "seed": "seed", "test_size": "fraction", "exclude_first": "flag",
                         "progress": "flag"}),
    "deletion_evidence": (_quiet(lambda c, **kw: interp.deletion_evidence(c.model, TEXTS, neurons=["L1N3"], heads=[],
                                                                          **kw)),
                          {"top_writers": "count", "max_tokens": "count", "batch_size": "count", "n_ctx": "ctx",
                           "progress": "flag"}),
    "find_deleting_neurons": (lambda c, **kw: interp.find_deleting_neurons(c.model, **kw),
                              {"threshold": "cosine", "false_positives": "positive", "seed": "seed",
                               "min_removed": "positive", "max_removed": "real", "max_tokens": "count",
                               "batch_size": "count", "n_ctx": "ctx", "progress": "flag"}),
    "neuron_verdicts": (lambda c, **kw: interp.neuron_verdicts(c.model, **kw),
                        {"threshold": "cosine", "false_positives": "positive", "seed": "seed",
                         "min_removed": "positive", "max_removed": "real", "max_tokens": "count",
                         "batch_size": "count", "n_ctx": "ctx", "progress": "flag"}),
    "attention_sinks": (lambda c, **kw: interp.attention_sinks(c.model, **kw),
                        {"sink_ratio": "positive", "max_tokens": "count", "n_ctx": "ctx", "batch_size": "count"}),
    "entropy_neurons": (lambda c, **kw: interp.entropy_neurons(c.model, **kw),
                        {"k": "count", "top": "count0", "controls": "count0", "min_rho_z": "real",
                         "min_mediated": "share", "max_tokens": "count", "n_ctx": "ctx", "batch_size": "count",
                         "chunk": "count", "seed": "seed"}),
    "prediction_neurons": (lambda c, **kw: interp.prediction_neurons(c.model, **kw),
                           {"n_null": "count", "chunk": "count", "seed": "seed"}),
    "neuron_in_out_cosines": (lambda c, **kw: interp.neuron_in_out_cosines(c.model, **kw),
                              {"threshold": "cosine", "false_positives": "positive", "seed": "seed"}),
    "find_deleting_heads": (lambda c, **kw: interp.find_deleting_heads(c.model, **kw),
                            {"n_tokens": "count0", "seed": "seed", "sink_ratio": "positive"}),
    "writers": (lambda c, **kw: interp.writers(c.sub, c.writes, layer=2, **kw),
                {"top_neurons": "count0", "exclude_first": "flag"}),
    "readers": (lambda c, **kw: interp.readers(c.sub, c.model, **kw), {"unembed": "flag"}),
    "export": (lambda c, **kw: interp.export(go.Figure(), c.tmp / "f.html", **kw),
               {"scale": "positive", "width": "count", "height": "count"}),
    "Subspace.random": (lambda c, **kw: interp.Subspace.random(**dict(dict(d_model=64, k=2), **kw)),
                        {"d_model": "count", "k": "count", "seed": "seed"}),
    "Subspace.from_probe": (lambda c, **kw: interp.Subspace.from_probe(_fitted_probe(), **kw),
                            {"site": "seed", "k": "count", "energy": "energy"}),
    "Subspace": (lambda c, **kw: interp.Subspace(torch.eye(64)[:2], **kw), {"drop_dependent": "flag"}),
    "LinearProbe": (lambda c, **kw: interp.LinearProbe(**kw).fit(torch.randn(20, 4), torch.arange(20) % 2),
                    {"top_k": "count", "max_iter": "count", "weight_decay": "penalty", "lr": "positive"}),
    "ResidualWrites.save": (lambda c, **kw: c.writes.save(c.tmp / "w", **kw), {"weights": "flag"}),
    "load": (lambda c, **kw: interp.load(c.ckpt, **kw),
             {"allow_pickle": "flag", "trust_remote_code": "flag", "fast": "flag", "n_devices": "count"}),
    # the analyses of this round: causal evidence and corpus statistics
    "activation_patching": (_quiet(lambda c, **kw: interp.activation_patching(c.model, "a = 1", "a = 2", answers=(5, 6),
                                                                              **kw)),
                            {"batch_size": "count", "progress": "flag"}),
    "deletion_effect": (_quiet(lambda c, **kw: interp.deletion_effect(c.model, "L1N3", TEXTS, **kw)),
                        {"n_controls": "count0", "max_tokens": "count", "batch_size": "count", "n_ctx": "ctx",
                         "test_size": "fraction", "seed": "seed", "progress": "flag"}),
    "neuron_stats": (_quiet(lambda c, **kw: interp.neuron_stats(c.model, TEXTS, **kw)),
                     {"max_tokens": "count", "top_k": "count", "batch_size": "count", "n_ctx": "ctx",
                      "context": "count0", "exclude_first": "flag", "progress": "flag"}),
    "find_deleting_heads (evidence)": (lambda c, **kw: interp.find_deleting_heads(c.model, **kw),
                                       {"min_removed": "positive", "max_removed": "real",
                                        "max_tokens": "count", "n_ctx": "ctx", "batch_size": "count"}),
    "head_scores": (lambda c, **kw: interp.head_scores(c.model, "previous_token", **kw),
                    {"threshold": "share", "exclude_bos": "flag", "exclude_current": "flag", "batch_size": "count"}),
    "icl_score": (lambda c, **kw: interp.icl_score(c.model, **kw),
                  {"early": "count", "late": "count", "n_rows": "count", "batch_size": "count"}),
    "pattern_frame": (lambda c, **kw: interp.pattern_frame(c.model, "x = 1", **kw),
                      {"row": "index", "chunk": "flag", "prepend_bos": "flag", "split_special_tokens": "flag"}),
    "repeated_tokens": (lambda c, **kw: interp.repeated_tokens(c.model, **kw),
                        {"batch": "count", "length": "count", "seed": "seed"}),
    "component_pages": (_quiet(lambda c, **kw: interp.component_pages(c.model, ["L1N3", "L0H1"], TEXTS, **kw)),
                        {"max_tokens": "count", "top_k": "count", "context": "count0", "n_links": "count",
                         "batch_size": "count", "n_ctx": "ctx", "seed": "seed", "progress": "flag"}),
    "generate_tokens": (lambda c, **kw: interp.generate_tokens(c.model, "x = 1", **dict(dict(max_new_tokens=2), **kw)),
                        {"max_new_tokens": "count", "temperature": "penalty", "top_k": "count", "top_p": "share",
                         "seed": "seed", "prepend_bos": "flag"}),
    # figures: options are checked before the table is read, so an empty frame will do
    **{f"plots.{fn}": (functools.partial(_plot, fn), params)
       for fn, params in {
           "write_norms": {"batch": "index"}, "head_attribution": {"batch": "index", "pos": "index"},
           "top_neurons": {"k": "count", "batch": "index"}, "logit_lens": {"batch": "index", "max_streams": "count"},
           "stream_norms": {"batch": "index", "max_lines": "count"}, "deleting_neurons": {"max_points": "count"},
           "deletion_graph": {"min_share": "share", "max_deleters": "count"}, "patching_neurons": {"top": "count"},
           "top_examples": {"max_examples": "count"}, "attention_pattern": {"max_cols": "count"},
           "composition_edges": {"top_k": "count"}, "neuron_verdicts": {"max_points": "count"},
           "prediction_neurons": {"max_points": "count"},
       }.items()},
}
#: Where ``None`` is a valid value of an argument (it then means "the default").
NONE_OK = {"prepend_bos", "verify", "split_special_tokens", "n_ctx", "max_tokens", "top_k", "chunk_rows", "threshold", "width", "height", "k",
           "n_devices", "late", "chunk"}
SKIP = {("Model.to_tokens", "prepend_bos", 1), ("Model.run_with_writes", "prepend_bos", 1),
        ("generate_tokens", "seed", None), ("generate_tokens", "prepend_bos", 1)}


def _call(call, kw, c):
    return call(c, **kw)


def _generated() -> list[tuple[str, Any, type[BaseException], str]]:
    rows = []
    for fn, (call, params) in API.items():
        for param, kind in params.items():
            for value, error in BAD_VALUES[kind]:
                if value is None and param in NONE_OK or (fn, param, value) in SKIP:
                    continue
                shown = re.escape(f"{param}={value!r}")
                if isinstance(value, str) and kind != "flag":
                    fix = r".*must be (an int|a number), not a string; pass (the number itself|a number)"
                elif kind == "flag":
                    fix = r" must be True or False"
                elif isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
                    fix = r".* (is not a finite number; pass a finite|must be an int)"
                else:
                    fix = r".*(must be|pass a number|out of range)"
                rows.append((f"{fn}({param}={value!r})", functools.partial(_call, call, {param: value}), error,
                             shown + fix))
    return rows


GENERATED = _generated()
FAMILY = {"table of round one": CASES, "what is loaded": LOADING, "what is saved": RECORDS,
          "arguments (by hand)": ARGUMENTS, "arguments (per public argument)": GENERATED}
CASES = CASES + LOADING + RECORDS + ARGUMENTS + GENERATED


@pytest.fixture
def ctx(shared, tmp_path, monkeypatch) -> Ctx:
    return Ctx(tmp=tmp_path, monkeypatch=monkeypatch, **shared)


def test_the_table_is_large_and_unique():
    ids = [c[0] for c in CASES]
    counts = {name: len(rows) for name, rows in FAMILY.items()}
    assert len(ids) >= 150 and len(set(ids)) == len(ids), counts
    assert all(n >= 20 for n in counts.values()), counts


def test_every_numeric_or_flag_argument_of_the_api_is_in_the_table():
    """Every public function's int, float and bool options appear in ``API``: a new one that
    is not validated through ``interp._checks`` is caught here, not by a user."""
    import inspect

    funcs = {n: getattr(interp, n) for n in interp.__all__ if inspect.isfunction(getattr(interp, n))}
    for cls, names in ((interp.Model, ("run_with_writes", "to_tokens", "stream_writes")),
                       (interp.ResidualWrites, ("save",)), (interp.Subspace, ("random", "from_probe", "__init__")),
                       (interp.LinearProbe, ("__init__",))):
        for n in names:
            funcs[f"{cls.__name__}.{n}".replace(".__init__", "")] = getattr(cls, n)
    covered = {(fn.split(" ")[0], p) for fn, (_, params) in API.items() for p in params}
    exempt = {("load", "max_memory"), ("load", "device_map"),
              ("entropy_neurons", "layers")}  # layers: check_indices, as every layers= (default -1: the last)
    exempt_plots = {("plots.notebook_renderer", "scale")}  # a renderer setting, passed to kaleido as is
    missing = []
    for fn, f in funcs.items():
        for p in inspect.signature(f).parameters.values():
            if isinstance(p.default, (bool, int, float)) and (fn, p.name) not in covered | exempt:
                missing.append(f"{fn}({p.name})")
    for n in interp.plots.__all__:
        for p in inspect.signature(getattr(interp.plots, n)).parameters.values():
            if type(p.default) in (int, float) and (f"plots.{n}", p.name) not in covered | exempt_plots:
                missing.append(f"plots.{n}({p.name})")
    assert not missing, f"arguments not validated through the table: {missing}"


@pytest.mark.parametrize("call, error, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_typed_error(ctx, call, error, match):
    t0 = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        call(ctx)
    assert time.perf_counter() - t0 < 10, "no hang: a bad input fails within 10 s"
    assert isinstance(info.value, TYPED), f"{type(info.value).__name__} is not one of the typed errors"
    origin = traceback.extract_tb(info.tb)[-1].filename
    assert origin.startswith(INTERP_DIR), f"raised deep inside a dependency ({origin}), not at interp's boundary"
    active = [n for n, hp in ctx.model.bridge.hook_dict.items() if hp.fwd_hooks]
    assert not active, f"hooks left on the model: {active}"


# ---- valid edge cases: these must work, not raise ----------------------------------------
def test_whitespace_only_text_is_valid_code_input(gpt2_model):
    """Whitespace is code to a code model (indentation, blank lines): it is recorded, not refused."""
    w = gpt2_model.run_with_writes(["    ", "\n\n", " \t\n"])
    assert (w.tokens[:, 0] == gpt2_model.bos_id).all() and (w.mask.sum(-1) >= 2).all()
    df = interp.logit_attribution(w, by="layer")
    assert len(df) and df["attribution"].notna().all()


def test_bos_only_text_is_valid(gpt2_model):
    w = gpt2_model.run_with_writes("<|endoftext|>", prepend_bos=False, split_special_tokens=False)
    assert w.tokens.tolist() == [[gpt2_model.bos_id]]
    assert len(interp.decompose(w, by="layer")) == 2 + 2 * gpt2_model.cfg.n_layers  # embed, pos_embed, attn, mlp
    lens = interp.logit_lens(w)
    assert lens["next_token"].isna().all()  # no next token: NA, not a made-up answer


def test_numpy_integers_are_accepted_wherever_an_int_is(gpt2_model):
    import numpy as np

    w = next(gpt2_model.stream_writes([TEXTS[0] * 4], batch_size=np.int64(1), n_ctx=np.int32(16), max_tokens=np.int64(32),
                                      progress=False))
    assert w.shape == (1, 16)
    assert interp.logit_lens(w, k=np.int16(2))["top_tokens"].map(len).eq(2).all()
    assert len(interp.decompose(w, by="layer", top_k=np.int64(1))) == 16
    assert interp.Subspace.random(np.int64(64), np.int64(2), seed=np.int64(3)).k == 2
    assert len(interp.writers(interp.Subspace(torch.eye(64)[:1]), w, layer=np.int64(1), top_neurons=np.int64(2)))
    probe = interp.LinearProbe(top_k=np.int64(2), max_iter=np.int64(5)).fit(torch.randn(30, 4), torch.arange(30) % 3)
    assert len(probe.classes_) == 3  # two kept plus OTHER


def test_a_real_label_minus_one_is_a_class_not_the_other_sentinel():
    """Before: a real label -1 collided with OTHER (-1), and score reported 0.99 while the
    predictions agreed with the labels 0.7% of the time. Now -1 is a class like any other when no
    OTHER class is needed, and score agrees with predict."""
    X = torch.randn(600, 6, generator=torch.Generator().manual_seed(0))
    y = torch.where(X[:, 0] > 0, 1, -1)
    probe = interp.LinearProbe(max_iter=50).fit(X, y)
    acc, agree = float(probe.score(X, y)), float((probe.predict(X) == y).float().mean())
    assert acc == pytest.approx(agree) and acc > 0.95
    assert probe.classes_.tolist() == [-1, 1]


def test_prepend_bos_to_a_token_tensor(gpt2_model):
    toks = gpt2_model.to_tokens(torch.tensor([5, 6]), prepend_bos=True).tokens
    assert toks.tolist() == [[gpt2_model.bos_id, 5, 6]]
    toks = gpt2_model.to_tokens(torch.tensor([[5, 6], [7, 8]], dtype=torch.int32), prepend_bos=True).tokens
    assert toks.dtype == torch.long and toks[:, 0].tolist() == [gpt2_model.bos_id] * 2


def test_negative_and_numpy_indices_mean_what_python_means(gpt2_model):
    import numpy as np

    w = gpt2_model.run_with_writes(TEXTS[0])
    n, h, m = gpt2_model.cfg.n_layers, gpt2_model.cfg.n_heads, gpt2_model.cfg.d_mlp
    torch.testing.assert_close(w.head_write(-1, -1), w.head_write(n - 1, h - 1), rtol=0, atol=0)
    torch.testing.assert_close(w.neuron_write(np.int64(-1), np.int64(m - 1)), w.neuron_write(n - 1, m - 1))
    a = interp.decompose(w, by="layer", layer=-1)
    assert a.equals(interp.decompose(w, by="layer", layer=n - 1))
    neg = interp.find_deleting_neurons(gpt2_model, layers=[-1], threshold=0.0)
    assert neg.equals(interp.find_deleting_neurons(gpt2_model, layers=np.int64(n - 1), threshold=0.0))
    ev = interp.deletion_evidence(gpt2_model, w, neurons=[(-1, -1)], heads=[(-1, -1)])
    assert set(ev["deleter"]) == {f"L{n - 1}N{m - 1}", f"L{n - 1}H{h - 1}"}


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_square_mlp_layernorm_checkpoint_is_never_analysed_wrongly(family):
    """TransformerLens 4's compatibility processing of LayerNorm models whose MLP is square
    (d_mlp == d_model) computes other logits than the checkpoint (10-40% of their RMS). interp
    must then refuse (and name processing='raw'), or give the checkpoint's own logits; 'raw'
    must always load and match."""
    toks = torch.tensor([[5, 17, 33, 2, 9, 120]])
    hf = random_hf_model(family, n_layers=1, d_model=32, n_heads=2, d_mlp=32)
    with torch.no_grad():
        want = hf(toks).logits
    want = want - want.mean(-1, keepdim=True)
    for processing in ("compat", "raw"):
        try:
            model = interp.load(hf, tokenizer=tiny_tokenizer(), processing=processing, device="cpu")
        except ValueError as e:
            assert processing == "compat" and "load it with processing='raw'" in str(e)
            continue
        got = model.logits(toks)
        torch.testing.assert_close(got - got.mean(-1, keepdim=True), want, atol=1e-4, rtol=1e-4)


def test_loading_never_unpickles_without_opt_in(shared, tmp_path, monkeypatch):
    """A safetensors checkpoint and a saved record load with pickle and torch.load disabled;
    a pickle-only checkpoint loads only with allow_pickle=True."""
    import pickle

    hf = random_hf_model("gpt2", n_layers=1)
    pickled = tmp_path / "pickled"
    hf.save_pretrained(pickled)
    tiny_tokenizer().save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(hf.state_dict(), pickled / "pytorch_model.bin")
    assert not list(pickled.glob("*.safetensors")) and list(pickled.glob("*.bin"))

    def refuse(*a, **k):
        raise AssertionError("unpickling was attempted")

    with monkeypatch.context() as mp:
        for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
            mp.setattr(mod, name, refuse)
        model = interp.load(shared["ckpt"])
        back = interp.ResidualWrites.load(shared["saved"])
        with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
            interp.load(pickled)
    assert model.cfg.n_layers == 2 and back.shape == shared["writes"].shape
    opted_in = interp.load(pickled, allow_pickle=True, device="cpu")
    torch.testing.assert_close(opted_in.weights.W_E, interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu").weights.W_E)
