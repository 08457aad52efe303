"""``entropy_neurons``'s mean-ablation effects (``interp.memory.entropy._effects``, float32
vocabulary-wide changes with float64 sums) against the float64 computation it replaced, kept
here as the oracle (``_effects_float64``: two full log-softmaxes per token and neuron), on tiny
random Llama (RMSNorm), Gemma 3 (sandwich norms; the write coefficient over a frozen post-norm
scale) and Gemma 2 (final-logit soft-cap 0.5), and on the planted entropy neuron of
``test_memory_managers`` (GPT-2, LayerNorm; a write 20 times the median norm, so its changes of
the logits are of order one).

Tolerance (first order in the unit roundoffs ``u = 2^-24`` of float32 and ``u64 = 2^-53``; the
neglected terms are of order ``u^2`` times the same magnitudes). Per token, with ``base = xc W_U``,
the total change of the readout ``dz = alpha base + beta bw`` (``alpha = 1/s_new - 1/s``,
``beta = dc/s_new``) and the direct one ``dz = gamma bw`` (``gamma = dc/s``):

- each ``dz_v`` is a float32 ``a*x + b*y`` of float32-rounded float64 factors: two roundings of the
  factors and one of the product per term, one of the sum: ``|err| <= 4u (|alpha base_v| + |beta bw_v|)``;
  plus float64's roundings of the scales and readouts on both sides, at most ``2 d_model + 16``
  of them: ``gamma(2 d_model + 16, u64) (|base_v| / s + |dc bw_v| / s_new + |b_v|)``;
- with a cap, ``d = cap tanh(dz/cap) sech^2 / (1 + t0 tanh(dz/cap))``: the cap is 1-Lipschitz, so
  the error of ``dz`` passes at most as it is; its own evaluation rounds ``dz/cap`` (u, through
  a tanh of slope at most 1), ``tanh`` (at most 2 ulp = 4u, glibc's and SLEEF's bound), ``sech^2``,
  the product, the division and ``* cap`` (u each): ``10u |d_v|``, and the denominator's
  ``t0 * tanh`` (its factors 5u + u, the product u) and sum (u): ``+ 7u |t0 td| / (1 + t0 td) |d_v|``.
  Together ``D_v``;
- the loss ``log sum p0 e^d - d_target`` moves by at most ``sum p_v D_v + D_target <= 2 max D`` (its
  gradient is ``p - onehot``); the entropy by at most ``2 log(d_vocab) max D`` (``sum_v |dH/dd_v| =
  sum p_v |log p_v + H| <= 2H``);
- the sums: ``S = sum p0 E``, ``E = expm1(d)`` (4u), ``p0`` rounded (u), the product (u), summed
  in float32 blocks of 8 (``gamma(7) ~ 7u``) whose sums are added in float64 (``V u64`` for any
  order): ``eS = (13u + V u64) sum p0 |E|``; ``A = sum p0 e^d d`` and ``B = sum p0 E lp0`` two
  roundings more: ``(15u + V u64) sum p0 (|E| + e^d) |d|`` and ``(15u + V u64) sum p0 |E| |lp0|``; ``dloss = log1p(S) - d_t`` errs by ``eS / (1 + S)``, ``dH =
  log1p(S) - N / (1 + S)`` (``N = A + B + S H0``) by ``(eS + eA + eB + eS H0 + |S| eH0) / (1 + S)
  + |N| eS / (1 + S)^2``;
- the oracle's own float64 log-sum-exp and entropy of logits up to ``Z`` in size:
  ``4 u64 (2Z + V + 4)`` per loss difference, ``2 (1 + 2Z + log V) u64 (3Z + V + 6) + 2 V u64 log V``
  per entropy difference (``eH0`` is half of it).

A mean of absolute values moves by at most the mean of the per-token errors; ``norm_mediated =
1 - direct/total`` by ``(e_direct + |direct/total| e_total) / (total - e_total)``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_memory_managers import ENTROPY, ENTROPY_DECOY, entropy_model  # noqa: F401 (the planted model)

import interp
from interp.config import soft_cap
from interp.memory import entropy
from interp.memory.entropy import _centre, _effects, _logits_parts, _scale, ablation_inputs
from interp.reconstruction import gamma
from interp.testing import random_model

TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n",
         "import os\nprint(os.getcwd())\n", "x = [i * i for i in range(5)]\n"]
U, U64 = 2.0**-24, 2.0**-53


def _stats(z, targets, cap, entropy=True):
    """The float64 loss and entropy of the replaced implementation (a copy)."""
    z = soft_cap(z, cap)
    lse = torch.logsumexp(z, -1)
    loss = lse - z.gather(-1, targets[:, None])[:, 0]
    if not entropy:
        return loss, None
    lp = z.sub_(lse[:, None])
    return loss, -(lp.exp() * lp).sum(-1)


def _bound(z0, dz, G, cap, loss: bool):
    """Per token: the bound of the module docstring on ``|new - oracle|`` of one loss (``loss``)
    or entropy change. ``z0`` the baseline's linear readout, ``dz`` the exact change of the
    linear readout, ``G`` the magnitudes the float32 ``dz`` rounds, all float64 ``[c, V]``."""
    V = z0.shape[-1]
    g0 = soft_cap(z0, cap)
    lp0 = torch.log_softmax(g0, -1)
    p0 = lp0.exp()
    D = G
    if cap is None:
        d = dz
    else:
        t0, td = torch.tanh(z0 / cap), torch.tanh(dz / cap)
        d = cap * td * (1 - t0**2) / (1 + t0 * td)
        D = D + d.abs() * (10 * U + 7 * U * (t0 * td).abs() / (1 + t0 * td))
    Dm = D.amax(-1)
    Z = torch.maximum(g0.abs().amax(-1), (g0 + d).abs().amax(-1))
    E = torch.expm1(d)
    S = (p0 * E).sum(-1)
    eS = (13 * U + V * U64) * (p0 * E.abs()).sum(-1)
    if loss:
        return 2 * Dm + eS / (1 + S) + 4 * U64 * (2 * Z + V + 4)
    H0 = -(p0 * lp0).sum(-1)
    eA = (15 * U + V * U64) * (p0 * (E.abs() + d.exp()) * d.abs()).sum(-1)
    eB = (15 * U + V * U64) * (p0 * E.abs() * lp0.abs()).sum(-1)
    oracle = 2 * (1 + 2 * Z + math.log(V)) * U64 * (3 * Z + V + 6) + 2 * V * U64 * math.log(V)
    A = (p0 * d.exp() * d).sum(-1)
    B = (p0 * E * lp0).sum(-1)
    N = A + B + S * H0
    ev = (eS + eA + eB + eS * H0 + S.abs() * oracle / 2) / (1 + S) + N.abs() * eS / (1 + S) ** 2
    return 2 * math.log(V) * Dm + ev + oracle


def _effects_float64(model, data, measured, chunk, max_tokens, n_ctx, batch_size):
    """The replaced implementation (a copy of its math), plus the bound summed like each effect."""
    labels = measured["label"].tolist()
    recs, lay, idx, mean_act, W_U, b, vec_c, bw = ablation_inputs(model, data, measured, max_tokens, n_ctx,
                                                                 batch_size)
    cap = model.cfg.logit_softcap
    g64 = gamma(2 * model.cfg.d_model + 16, U64)
    tot = np.zeros((len(labels), 4))
    err = np.zeros((len(labels), 3))  # bounds: total, direct, entropy
    for w in recs:
        x, s_frozen, targets, sel = _logits_parts(model, w)
        a_all = torch.stack([w.write_acts(int(ly))[..., int(n)][sel].double() for ly, n in zip(lay, idx)], -1)
        for a0 in range(0, x.shape[0], chunk):
            xs, tg = x[a0:a0 + chunk], targets[a0:a0 + chunk]
            s = s_frozen[a0:a0 + chunk] if s_frozen is not None else _scale(xs, model)
            xc = _centre(xs, model)
            base = xc @ W_U
            loss0, ent0 = _stats(base / s + b, tg, cap)
            z0 = base / s + b
            dc = torch.as_tensor(mean_act)[None] - a_all[a0:a0 + chunk]
            for j in range(len(labels)):
                y = xc + dc[:, j:j + 1] * vec_c[j]
                s_new = _scale(y, model)
                num = base + dc[:, j:j + 1] * bw[j]
                lt, et = _stats(num / s_new + b, tg, cap)
                ld, _ = _stats(num.clone().div_(s).add_(b), tg, cap, entropy=False)
                tot[j, 0] += float((lt - loss0).abs().sum())
                tot[j, 1] += float((ld - loss0).abs().sum())
                tot[j, 2] += float((et - ent0).sum())
                tot[j, 3] += xs.shape[0]
                alpha, beta, gam = 1 / s_new - 1 / s, dc[:, j:j + 1] / s_new, dc[:, j:j + 1] / s
                r64 = g64 * (base.abs() / s + (beta * bw[j]).abs() + b.abs())
                dzt, dzd = alpha * base + beta * bw[j], gam * bw[j]
                Gt = 4 * U * ((alpha * base).abs() + (beta * bw[j]).abs()) + r64
                Gd = 4 * U * (gam * bw[j]).abs() + r64
                err[j, 0] += float(_bound(z0, dzt, Gt, cap, True).sum())
                err[j, 1] += float(_bound(z0, dzd, Gd, cap, True).sum())
                err[j, 2] += float(_bound(z0, dzt, Gt, cap, False).sum())
    out = {}
    for j, lab in enumerate(labels):
        n = max(tot[j, 3], 1)
        out[lab] = dict(total_effect=tot[j, 0] / n, direct_effect=tot[j, 1] / n, entropy_change=tot[j, 2] / n,
                        mean_act=mean_act[j], tol=dict(total_effect=err[j, 0] / n, direct_effect=err[j, 1] / n,
                                                       entropy_change=err[j, 2] / n))
    return out


def _measured(model, neurons, layer=-1):
    ly = layer % model.cfg.n_layers
    return pd.DataFrame(dict(layer=ly, neuron=neurons, label=[f"L{ly}N{n}" for n in neurons]))


def _check(model, neurons, chunk=5):
    measured = _measured(model, neurons)
    args = (model, TEXTS, measured, chunk, 200, 64, 2)
    got, want = _effects(*args), _effects_float64(*args)
    assert got["_n_tokens"] > chunk  # several chunks, the last one short
    moved = 0.0
    for lab in measured["label"]:
        g, w = got[lab], want[lab]
        assert g["mean_act"] == w["mean_act"]
        for col, tol in w["tol"].items():
            assert abs(g[col] - w[col]) <= tol, (lab, col, g[col], w[col], tol)
            moved = max(moved, abs(w[col]) / tol)
        t, d = w["total_effect"], w["direct_effect"]
        et, ed = w["tol"]["total_effect"], w["tol"]["direct_effect"]
        if t > et:
            tol_m = (ed + abs(d / t) * et) / (t - et)
            assert abs(g["norm_mediated"] - (1 - d / t)) <= tol_m, lab
    return moved


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma2"])
def test_effects_match_the_float64_computation(family, monkeypatch):
    model = random_model(family)
    assert model.cfg.d_vocab > 2 * 124 and model.cfg.d_vocab % 124
    monkeypatch.setattr(entropy, "SLICE", 124)  # several vocabulary slices, the last one short; 124 % 8 != 0
    moved = _check(model, list(range(0, model.cfg.d_mlp, max(1, model.cfg.d_mlp // 6))))
    assert moved > 1e3  # the effects are far larger than the tolerance: the comparison means something


def test_effects_of_a_planted_entropy_neuron_match(request):
    model = request.getfixturevalue("entropy_model")  # test_memory_managers' planted null-space neuron and decoy
    assert _check(model, [ENTROPY, ENTROPY_DECOY, 0, 3], chunk=7) > 1e3
    df = interp.entropy_neurons(model, TEXTS, top=3, controls=4, k=1)
    assert set(df.loc[df["verdict"] == "entropy", "neuron"]) == {ENTROPY}


@pytest.mark.parametrize("n", [5, 8, 1003, 4096])
def test_fsum_is_a_float64_sum_of_float32_blocks(n):
    """``_fsum``: float32 sums of 8 terms (``gamma(7, u)`` of their absolute terms), added in
    float64 (``n u64``), against the float64 sum (``n u64`` of its own)."""
    from interp.memory.entropy import _fsum

    t = torch.randn(3, n, generator=torch.Generator().manual_seed(n)) * 10.0 ** torch.arange(-3, 3).repeat(n)[:n]
    got = _fsum(t, torch.empty(3, max(n // 8, 1)))
    want = t.double().sum(-1)
    assert got.dtype == torch.float64
    assert ((got - want).abs() <= (gamma(7, U) + 2 * gamma(n, U64)) * t.double().abs().sum(-1)).all()
