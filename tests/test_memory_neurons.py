"""Deleting neurons from weights: the null, its calibration on random weights, the weight
conventions, chunked cosines, and the errors at the boundary."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.memory import MLPStack, cosine_cdf, cosine_quantile, in_out_cosines
from interp.memory.null import betainc


def _stack(n_layers=4, d=128, m=4096, seed=0, dtype=torch.float32, gated=False):
    g = torch.Generator().manual_seed(seed)
    W_in = torch.randn(n_layers, d, m, generator=g).to(dtype)
    W_out = torch.randn(n_layers, m, d, generator=g).to(dtype)
    W_gate = torch.randn(n_layers, d, m, generator=g).to(dtype) if gated else None
    return MLPStack(W_in, W_out, W_gate)


# ---- the analytic null ---------------------------------------------------------------------
@pytest.mark.parametrize("d", [3, 16, 64])
def test_cosine_cdf_matches_monte_carlo(d):
    g = torch.Generator().manual_seed(d)
    a, b = torch.randn(200_000, d, generator=g, dtype=torch.float64), torch.randn(200_000, d, generator=g,
                                                                                   dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    for c in (-2 / math.sqrt(d), -1 / math.sqrt(d), 0.3):
        p = cosine_cdf(c, d)
        emp = float((cos <= c).double().mean())
        se = math.sqrt(p * (1 - p) / len(cos))
        assert abs(emp - p) < 5 * se + 1e-4, (d, c, emp, p)
    assert cos.std().item() == pytest.approx(1 / math.sqrt(d), rel=0.02)


def test_cosine_quantile_inverts_cdf_in_the_far_tail():
    for p in (1e-2, 1e-5, 1e-8):
        c = cosine_quantile(p, 4095)
        assert cosine_cdf(c, 4095) == pytest.approx(p, rel=1e-6)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)  # I_0.4(2, 3), closed form
    with pytest.raises(ValueError, match="at least 2"):
        cosine_cdf(0.0, 1)


# ---- calibration on random weights ----------------------------------------------------------
def test_flag_count_on_random_weights_matches_the_null():
    stack = _stack()
    n = stack.n_layers * stack.d_mlp
    thr = cosine_quantile(0.01, stack.d_model)  # expected ~164 of 16,384
    df = interp.find_deleting_neurons(stack, threshold=thr)
    expected = df.attrs["expected_false_positives"]
    assert expected == pytest.approx(0.01 * n, rel=1e-6)
    assert abs(len(df) - expected) < 4 * math.sqrt(expected)
    # the default (Bonferroni, 0.1 expected false positives) flags almost nothing
    default = interp.find_deleting_neurons(stack)
    assert default.attrs["expected_false_positives"] == pytest.approx(0.1, rel=1e-6)
    assert len(default) <= 2
    # and the empirical null is calibrated too
    emp = interp.find_deleting_neurons(stack, threshold=thr, null="empirical")
    assert abs(len(emp) - emp.attrs["expected_false_positives"]) < 4 * math.sqrt(expected)
    assert all(abs(s * math.sqrt(stack.d_model) - 1) < 0.05 for s in emp.attrs["null_std"].values())


def test_default_flags_no_more_than_the_null_on_a_random_model(tiny_model):
    """Random weights have no deleters by design; what the verdict flags there is what the
    trained-weights null (the same measurement with the output vectors deranged) expects."""
    df = interp.find_deleting_neurons(tiny_model)
    expected = df.attrs["expected_false_positives"]
    assert len(df) <= expected + 3 * math.sqrt(max(expected, 1)) + 1, (len(df), expected)
    assert list(df.columns[:5]) == ["layer", "neuron", "label", "cosine", "z"]


# ---- the cosines themselves -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cosines_match_a_direct_computation(dtype):
    g = torch.Generator().manual_seed(1)
    W_in, W_out = torch.randn(4096, 600, generator=g).to(dtype), torch.randn(600, 4096, generator=g).to(dtype)
    want = torch.nn.functional.cosine_similarity(W_in.double().T, W_out.double(), dim=1)
    got = in_out_cosines(W_in, W_out)  # 64 neurons per chunk at d_model 4096: ten chunks
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=1e-6)
    shifted = in_out_cosines(W_in, W_out, shift=5)
    want5 = torch.nn.functional.cosine_similarity(W_in.double().T, W_out.double().roll(-5, 0), dim=1)
    assert torch.allclose(shifted.double(), want5, atol=1e-6)


def test_layers_in_parallel_give_the_serial_answer_and_keep_the_thread_setting():
    stack = _stack(n_layers=3, d=256, m=1024, dtype=torch.bfloat16)
    threads = torch.get_num_threads()
    df = interp.neuron_in_out_cosines(stack)
    assert torch.get_num_threads() == threads
    for ly in range(3):
        want = in_out_cosines(stack.W_in[ly], stack.W_out[ly]).double().numpy()
        got = df[df["layer"] == ly].sort_values("neuron")["cosine"].to_numpy()
        assert (got == want).all()


def test_zero_vectors_give_nan_and_nonfinite_weights_raise():
    W_in, W_out = torch.randn(16, 8), torch.randn(8, 16)
    W_out[3] = 0
    c = in_out_cosines(W_in, W_out)
    assert torch.isnan(c[3]) and torch.isfinite(c[torch.arange(8) != 3]).all()
    with pytest.warns(UserWarning, match="1 of 8 neurons have no in/out cosine .*zero"):
        assert 3 not in interp.find_deleting_neurons(MLPStack([W_in], [W_out]), threshold=1.0)["neuron"].tolist()
    W_in[0, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        in_out_cosines(W_in, W_out)


def test_all_cosines_table_sorted_with_attrs(tiny_model):
    df = interp.neuron_in_out_cosines(tiny_model)
    c = tiny_model.cfg
    assert len(df) == c.n_layers * c.d_mlp
    assert df["cosine"].is_monotonic_increasing
    assert df["label"].iloc[0] == f"L{df['layer'].iloc[0]}N{df['neuron'].iloc[0]}"
    assert (df["flagged"] == (df["cosine"] <= df["threshold"])).all()
    centred = c.normalization == "LN"
    assert df.attrs["null_dimensions"] == c.d_model - centred
    assert df["z"].iloc[0] == pytest.approx(df["cosine"].iloc[0] * math.sqrt(c.d_model - centred))
    assert df.attrs["processing"] == "compat" and df.attrs["null"] == "analytic"
    assert ("cosine_gate" in df.columns) == c.gated


def test_gated_columns_and_gate_input():
    stack = _stack(n_layers=1, d=64, m=512, gated=True)
    df = interp.neuron_in_out_cosines(stack)
    assert torch.allclose(torch.tensor(df["cosine"].values), torch.tensor(df["cosine_in"].values))
    gate = interp.neuron_in_out_cosines(stack, input="gate")
    assert (gate["cosine"].values == gate["cosine_gate"].values).all()
    assert gate.attrs["input"] == "gate"


def test_compat_and_raw_conventions_match_their_definitions():
    """compat: LN weight folded into W_in, then both vectors mean-centred; raw: c_fc / c_proj."""
    from interp.testing import random_hf_model, tiny_tokenizer

    hf = random_hf_model("gpt2")
    raw = interp.load(hf, tokenizer=tiny_tokenizer(), processing="raw", device="cpu")
    compat = interp.load(hf, tokenizer=tiny_tokenizer(), device="cpu")
    blk = hf.transformer.h[1]
    w_in, w_out = blk.mlp.c_fc.weight.detach(), blk.mlp.c_proj.weight.detach()
    raw_want = torch.nn.functional.cosine_similarity(w_in.T, w_out, dim=1)
    folded = w_in * blk.ln_2.weight.detach()[:, None]
    folded, centred_out = folded - folded.mean(0), w_out - w_out.mean(1, keepdim=True)
    compat_want = torch.nn.functional.cosine_similarity(folded.T, centred_out, dim=1)
    r = interp.neuron_in_out_cosines(raw, layers=-1).sort_values("neuron")
    k = interp.neuron_in_out_cosines(compat, layers=[-1]).sort_values("neuron")
    assert torch.allclose(torch.tensor(r["cosine"].values, dtype=torch.float32), raw_want, atol=1e-5)
    assert torch.allclose(torch.tensor(k["cosine"].values, dtype=torch.float32), compat_want, atol=1e-5)
    assert (r["cosine"].values - k["cosine"].values).__abs__().max() > 0.02  # the convention matters
    assert r.attrs["processing"] == "raw" and k.attrs["processing"] == "compat"
    assert r.attrs["null_dimensions"] == 64 and k.attrs["null_dimensions"] == 63


# ---- errors at the boundary -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(layers=[2]), interp.IndexOutOfRangeError, r"layers=\[2\] out of range .* -2..-1"),
        (dict(layers=-3), interp.IndexOutOfRangeError, r"layers=\[-3\] out of range"),
        (dict(layers=[]), ValueError, r"layers=\[\] selects nothing"),
        (dict(null="bootstrap"), ValueError, r"null='bootstrap' is not supported; use one of 'analytic'"),
        (dict(input="gate"), ValueError, r"input='gate' needs a gated MLP"),
        (dict(input="up"), ValueError, r"input='up' is not supported"),
        (dict(threshold=-1.5), ValueError, r"threshold=-1.5 must be a cosine in \[-1, 1\]"),
        (dict(threshold="low"), TypeError, r"threshold='low' must be a number, not a string"),
        (dict(false_positives=0), ValueError, r"false_positives=0 must be a positive number"),
    ],
)
def test_bad_options_raise_named_errors(gpt2_model, kw, exc, match):
    with pytest.raises(exc, match=match):
        interp.find_deleting_neurons(gpt2_model, **kw)


def test_bad_models_and_stacks_raise():
    with pytest.raises(TypeError, match="model must be an interp.Model or an interp.memory.MLPStack, got str"):
        interp.find_deleting_neurons("gpt2")
    with pytest.raises(ValueError, match=r"W_out\[0\] has shape \(8, 32\), expected \(8, 16\)"):
        MLPStack([torch.randn(16, 8)], [torch.randn(8, 32)])
    with pytest.raises(ValueError, match=r"W_in is a tensor of shape \(16, 8\); pass one 2-D tensor per layer"):
        MLPStack(torch.randn(16, 8), torch.randn(8, 16))
    with pytest.raises(ValueError, match="W_in is int; pass one 2-D tensor per layer"):
        MLPStack(3, [torch.randn(8, 16)])
    with pytest.raises(ValueError, match="W_in has 2 layers and W_out 1"):
        MLPStack([torch.randn(16, 8)] * 2, [torch.randn(8, 16)])


def test_negative_layers_select_from_the_end(gpt2_model):
    a = interp.neuron_in_out_cosines(gpt2_model, layers=[-1])
    b = interp.neuron_in_out_cosines(gpt2_model, layers=[1])
    assert set(a["layer"]) == {1} and a["cosine"].tolist() == b["cosine"].tolist()
