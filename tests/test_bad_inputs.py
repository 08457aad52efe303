"""Hostile inputs across the public API, as one table.

Every case must raise a typed error (ValueError, TypeError, KeyError, FileNotFoundError or an
interp error that subclasses one), raised by interp itself rather than deep inside torch or
transformers, within 10 seconds, with a message naming the parameter, the value and the fix.
Afterwards the shared model carries no hooks. Valid edge cases (whitespace-only text, a
BOS-only text, negative indices) are tested below the table.
"""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
import torch
from safetensors.torch import load_file, save_file

import interp
from interp.errors import (
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
     lambda c: interp.logit_attribution(c.model.run_with_writes("<|endoftext|>", prepend_bos=False)), ValueError,
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
    ("BOS-only documents", lambda c: _probe(c, data=["<|endoftext|>"] * 3, label="current_token"), ValueError,
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
     r"weights in the checkpoint do not match the shapes its config.json describes"),
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


@pytest.fixture
def ctx(shared, tmp_path, monkeypatch) -> Ctx:
    return Ctx(tmp=tmp_path, monkeypatch=monkeypatch, **shared)


def test_the_table_is_large_and_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


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
    w = gpt2_model.run_with_writes("<|endoftext|>", prepend_bos=False)
    assert w.tokens.tolist() == [[gpt2_model.bos_id]]
    assert len(interp.decompose(w, by="layer")) == 2 + 2 * gpt2_model.cfg.n_layers  # embed, pos_embed, attn, mlp
    lens = interp.logit_lens(w)
    assert lens["next_token"].isna().all()  # no next token: NA, not a made-up answer


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
