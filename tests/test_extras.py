"""Intermediates kept on request (run_with_writes(extras=...)) equal TransformerLens's own cache,
travel through save/load, and the TransformerLens hook table in the docs holds on the record."""

from __future__ import annotations

import pytest
import torch

import interp


@pytest.fixture(scope="module")
def rec(default_model):
    toks = interp.repeated_tokens(default_model, batch=2, length=12, seed=1)
    w = default_model.run_with_writes(toks, extras=["pattern", "attn_scores", "q", "k", "v", "mlp_pre", "ln1_scale",
                                                    "ln_final.hook_normalized"])
    return toks, w


def test_extras_equal_transformer_lens_cache(default_model, rec):
    toks, w = rec
    _, cache = default_model.bridge.run_with_cache(toks)
    for name, hook in (("pattern", "attn.hook_pattern"), ("attn_scores", "attn.hook_attn_scores"), ("q", "attn.hook_q"),
                       ("k", "attn.hook_k"), ("v", "attn.hook_v"), ("mlp_pre", "mlp.hook_pre"),
                       ("ln1_scale", "ln1.hook_scale")):
        for ly in range(default_model.cfg.n_layers):
            # the same bridge forward on the same tokens: the same kernels, bit for bit
            assert torch.equal(w.extra(name, ly), cache[f"blocks.{ly}.{hook}"]), (name, ly)
    assert torch.equal(w.extra("ln_final.hook_normalized"), cache["ln_final.hook_normalized"])


def test_the_hook_table_holds(default_model, rec):
    """docs/reference/tl-hooks.md: blocks.L.hook_resid_post is w.resid(L + 1, "pre"), hook_z is w.z[L],
    mlp.hook_post is w.acts[L], hook_attn_out / hook_mlp_out are attn_write / mlp_write."""
    toks, w = rec
    _, cache = default_model.bridge.run_with_cache(toks)
    # the record's sums against the model's own float32 stream: within the reconstruction
    # tolerance, 1e-4 of the stream's RMS (docs/design.md)
    for ly in range(default_model.cfg.n_layers):
        x = cache[f"blocks.{ly}.hook_resid_post"]
        tol = 1e-4 * float(x.pow(2).mean().sqrt())
        torch.testing.assert_close(w.resid(ly + 1, "pre").float(), x, atol=tol, rtol=0)
        torch.testing.assert_close(w.resid(ly, "pre").float(), cache[f"blocks.{ly}.hook_resid_pre"], atol=tol, rtol=0)
        torch.testing.assert_close(w.attn_write(ly).float(), cache[f"blocks.{ly}.hook_attn_out"], atol=tol, rtol=0)
        torch.testing.assert_close(w.mlp_write(ly).float(), cache[f"blocks.{ly}.hook_mlp_out"], atol=tol, rtol=0)
    assert torch.equal(w.tokens, toks)


def test_extras_save_and_load(rec, tmp_path):
    _, w = rec
    back = interp.ResidualWrites.load(w.save(tmp_path / "rec"))
    assert sorted(back.extras) == sorted(w.extras)
    for k in w.extras:
        assert torch.equal(back.extras[k], w.extras[k])
    from safetensors.torch import load_file, save_file

    t = load_file(str(tmp_path / "rec.safetensors"))
    t["extras.pattern.0"] = t["extras.pattern.0"][:1]
    save_file(t, str(tmp_path / "rec.safetensors"))
    with pytest.raises(ValueError, match=r"rec.safetensors.*(different saves|changed after|the extra 'pattern.0')"):
        interp.ResidualWrites.load(tmp_path / "rec")


def test_repeated_tokens(default_model):
    toks = interp.repeated_tokens(default_model, batch=3, length=7, seed=2)
    assert toks.shape == (3, 15) and (toks[:, 0] == default_model.bos_id).all()
    assert torch.equal(toks[:, 1:8], toks[:, 8:]) and (toks[:, 1:] >= 1).all()
    assert torch.equal(toks, interp.repeated_tokens(default_model, batch=3, length=7, seed=2))


@pytest.mark.parametrize("call, match", [
    (lambda m: m.run_with_writes("x = 1", extras=["nope"]), r"extras holds 'nope', which is neither a short name"),
    (lambda m: m.run_with_writes("x = 1", extras=["mlp_pre_linear"]), r"no blocks.0.mlp.hook_pre_linear"),
    (lambda m: m.run_with_writes("x = 1", extras=["blocks.0.attn.hook_result"]), r"w.head_writes\(layer\)"),
    (lambda m: m.run_with_writes("x = 1", extras=[1]), r"extras=\[1\] must be a list of names"),
    (lambda m: m.run_with_writes("x = 1").extra("pattern", 0), r"'pattern.0' was not kept in this record"),
    (lambda m: interp.repeated_tokens(m, length=200), r"length=200 gives rows of 401 tokens"),
])
def test_bad_extras(default_model, call, match):
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        call(default_model)
