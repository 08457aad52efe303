"""Gemma 2's soft-caps on a tiny random Gemma 2 (``interp.testing``, family ``"gemma2"``), against
plain torch on the Hugging Face module (nothing here goes through interp to make the truth):
direct logit attribution sums to the pre-cap logit ``z`` the checkpoint's ``lm_head`` computes,
``cap * tanh(z / cap)`` is the checkpoint's logit, the logit lens's final layer gives the
checkpoint's probabilities, entropy-neuron effects are those of the capped logits; the caps are
recorded and saved; loading logs nothing. Decoy: the same weights without the final cap give
the same rows and an uncapped logit. (The record, the stream and head patching of this family
are checked against hooks in ``test_post_norm.py``; its attention patterns, with the attention
cap, in ``test_heads_patterns.py``.)

Tolerances. The record's stream agrees with the checkpoint's within the fast path's calibrated
contract, ``rtol`` of each row's largest value (``interp.capture.calibration_tolerance``). A
readout ``z_t = sum_d x_d u_dt / s + b_t`` then errs by at most

    rtol * max|x| * (sum_d |u_dt| / s + |z_t| / s)       (the stream; the scale it implies)
  + 2 gamma(N) * M_t                                    (each side's own rounding)

with ``M_t = sum_d A_d |u_dt| / s + |b_t|``, ``A`` the sum of the absolute terms of every write
(``interp.reconstruction.absolute``), and ``N`` the longest chain of roundings: the ``d_model``
-term dot product, the scale's ``d_model``-term mean of squares, the ``K`` rows summed, and
8 more (root, division, gain, bias). ``cap * tanh(z / cap)`` is 1-Lipschitz in ``z`` and adds
four roundings of at most ``cap`` on each side (division, tanh, product). A log-probability moves
by at most twice the largest logit error, plus ``gamma(d_vocab + 4)`` of the log-sum-exp's terms.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from post_norm_truth import hooked_forward

import interp
from interp.capture import calibration_tolerance
from interp.reconstruction import absolute, gamma
from interp.testing import random_hf_model, random_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"]
U32 = 2.0**-24  # float32 unit roundoff


def capped(z: torch.Tensor, cap: float | None) -> torch.Tensor:
    return z if cap is None else cap * torch.tanh(z / cap)


def hf_readout(hf, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The checkpoint's own forward: the stream entering the final norm ``x``, the pre-cap logits
    ``z`` (``lm_head``'s output, before ``Gemma2ForCausalLM`` caps them) and its logits."""
    got = {}
    hs = [hf.model.norm.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach())),
          hf.lm_head.register_forward_hook(lambda m, a, o: got.__setitem__("z", o.detach()))]
    got["logits"] = hooked_forward(hf, hs, input_ids=tokens, attention_mask=mask.long()).logits.detach()
    return got


def without_final_cap(hf):
    """The decoy: the same weights, the same attention cap, no final-logit cap."""
    from transformers import AutoModelForCausalLM

    cfg = hf.config.to_dict()
    cfg["final_logit_softcapping"] = None
    decoy = AutoModelForCausalLM.from_config(type(hf.config).from_dict(cfg)).eval()
    decoy.load_state_dict(hf.state_dict())
    return decoy


@pytest.fixture(scope="module")
def gemma2():
    """(model, the checkpoint it was built from, an independent copy of it)."""
    hf = random_hf_model("gemma2")
    model = interp.load(hf, tokenizer=tiny_tokenizer(300), device="cpu")
    return model, random_hf_model("gemma2")


@pytest.fixture(scope="module")
def record(gemma2):
    model, hf = gemma2
    model.run_with_writes(TEXTS)  # the first record is verified; the second takes the fast path
    w = model.run_with_writes(TEXTS)
    return w, hf_readout(hf, w.tokens, w.mask)


def readout_bound(w, reader: torch.Tensor, const: torch.Tensor, z: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The module docstring's bound on ``|z_interp - z_checkpoint|`` at every real position,
    ``[n, t]`` for readers ``reader [d_model, t]`` (gain included) and constants ``const [t]``."""
    m = w.mask
    x = w.resid(w.n_layers).double()[m]  # [n, d]
    A = absolute(w).resid(w.n_layers).double()[m]
    s = w.final_scale.double()[m]  # [n, 1]
    U = reader.double().abs()
    rtol = calibration_tolerance(torch.float32, w.n_layers)
    xmax = x.abs().amax(-1, keepdim=True)
    M = A @ U / s + const.double().abs()
    d = x.shape[-1]
    return rtol * xmax * (U.sum(0) + z.double().abs()) / s + 2 * gamma(2 * d + n_rows + 8, U32) * M


def test_caps_are_recorded_and_saved(gemma2, record, tmp_path):
    model, _ = gemma2
    w, _ = record
    assert (model.cfg.logit_softcap, model.cfg.attn_softcap) == (0.5, 0.05)
    assert model.cfg.post_norm and model.weights.refusal is None
    assert w.logit_softcap == 0.5 and w.meta["attn_softcap"] == 0.05
    w.save(tmp_path / "rec")
    back = interp.ResidualWrites.load(tmp_path / "rec")  # no model in memory
    assert back.logit_softcap == 0.5 and back.meta["attn_softcap"] == 0.05
    lens = interp.logit_lens(back, k=2)
    assert lens.attrs["logit_softcap"] == 0.5
    plain = random_model("gemma3")
    assert plain.cfg.logit_softcap is None and plain.cfg.attn_softcap is None


def test_load_logs_no_centring_warning_and_keeps_the_unembedding(caplog):
    hf = random_hf_model("gemma2")
    with caplog.at_level(logging.DEBUG):
        model = interp.load(hf, tokenizer=tiny_tokenizer(300), device="cpu")
    assert not [r for r in caplog.records if "center_unembed" in r.getMessage()]
    # not centred: W_U's rows keep their mean over the vocabulary (folding the final norm's gain
    # scales a row, so a zero mean would stay zero); a centred one, Gemma 3's, has means at rounding
    W_U = model.weights.W_U.double()
    assert W_U.mean(-1).abs().max() > 1e3 * U32 * W_U.abs().max()
    centred = random_model("gemma3").weights.W_U.double()
    assert centred.mean(-1).abs().max() <= 64 * U32 * centred.abs().max()  # the same check can pass


def test_dla_rows_sum_to_the_checkpoints_pre_cap_logit(gemma2, record):
    model, _ = gemma2
    w, truth = record
    df = interp.logit_attribution(w, by="component")
    assert df.attrs["logit_softcap"] == 0.5 and df.attrs["quantity"] == "pre-cap logit z"
    sums = df.groupby(["batch", "pos"])["attribution"].sum()
    b, p = (torch.tensor(v) for v in zip(*sums.index.tolist()))
    nxt = w.tokens[b, p + 1]
    got = torch.tensor(sums.to_numpy(), dtype=torch.float64)
    z = truth["z"][b, p, nxt].double()
    logit = truth["logits"][b, p, nxt].double()
    # bound per row, read from the real positions' [n, vocab] bound
    m_index = torch.cumsum(w.mask.flatten().long(), 0).reshape(w.mask.shape) - 1
    ww = w.weights
    bound = readout_bound(w, ww.W_U, ww.b_U, truth["z"][w.mask], df.groupby(["batch", "pos"]).size().max())
    tol = bound[m_index[b, p], nxt]
    assert ((got - z).abs() <= tol).all(), float(((got - z).abs() / tol).max())
    cap_tol = tol + 8 * U32 * 0.5
    assert ((capped(got, 0.5) - logit).abs() <= cap_tol).all()
    assert ((got - logit).abs() > cap_tol).any()  # the cap bites: the sum alone is not the logit


def test_logit_lens_final_layer_gives_the_checkpoints_probabilities(record):
    w, truth = record
    lens = interp.logit_lens(w, k=3)
    assert lens.attrs["logit_softcap"] == 0.5
    final = lens[lens["layer"] == w.n_layers].sort_values(["batch", "pos"])
    ww = w.weights
    bound = readout_bound(w, ww.W_U, ww.b_U, truth["z"][w.mask], 1)  # the lens sums no rows
    logits = truth["logits"][w.mask].double()
    dlog = 2 * (bound.amax(-1) + 8 * U32 * 0.5) + gamma(logits.shape[-1] + 4, U32) * (logits.abs().amax(-1) + 1)
    probs = torch.softmax(logits, -1)
    top = torch.tensor(np.stack(final["top_probs"].to_list()), dtype=torch.float64)
    want = probs.topk(3, -1).values
    tol = want * (torch.expm1(dlog)[:, None]) + 4 * U32
    assert ((top - want).abs() <= tol).all()
    # decoy: the same readout without the cap gives other probabilities, beyond the tolerance
    uncapped = torch.softmax(truth["z"][w.mask].double(), -1).topk(3, -1).values
    assert ((uncapped - want).abs() > tol).any()


def test_decoy_without_the_final_cap_same_rows_other_logit(gemma2, record):
    model, hf = gemma2
    w, truth = record
    decoy_hf = without_final_cap(hf)
    pair = (5, 7)  # token ids: a logit difference, which the compat centring leaves alone
    for processing in ("raw", "compat"):
        capped_model = model if processing == "compat" else interp.load(
            hf, tokenizer=tiny_tokenizer(300), device="cpu", processing="raw")
        decoy = interp.load(decoy_hf, tokenizer=tiny_tokenizer(300), device="cpu", processing=processing)
        assert decoy.cfg.logit_softcap is None and decoy.cfg.attn_softcap == 0.05
        wc, wd = capped_model.run_with_writes(TEXTS), decoy.run_with_writes(TEXTS)
        target = None if processing == "raw" else pair  # raw: neither unembedding is centred
        rc = interp.logit_attribution(wc, target, by="head")
        rd = interp.logit_attribution(wd, target, by="head")
        assert rd.attrs["logit_softcap"] is None and rd.attrs["quantity"] == "logit"
        assert list(rc["component"]) == list(rd["component"])
        # the same weights and record up to the unembedding: the readout bound of either side
        ww = wd.weights
        bound = readout_bound(wd, ww.W_U, ww.b_U, truth["z"][wd.mask], int(rc.groupby(["batch", "pos"]).size().max()))
        scale = float(bound.max())
        diff = np.abs(rc["attribution"].to_numpy(np.float64) - rd["attribution"].to_numpy(np.float64))
        assert diff.max() <= 2 * scale, (processing, diff.max(), scale)
    # the decoy's rows sum to its own (uncapped; under "compat" centred over the vocabulary)
    # logit; the capped model's logit is far from its sum (the test above)
    own = hf_readout(decoy_hf, w.tokens, w.mask)["logits"]
    own = own - own.mean(-1, keepdim=True)
    sums = interp.logit_attribution(wd, by="component").groupby(["batch", "pos"])["attribution"].sum()
    b, p = (torch.tensor(v) for v in zip(*sums.index.tolist()))
    nxt = w.tokens[b, p + 1]
    err = (torch.tensor(sums.to_numpy(), dtype=torch.float64) - own[b, p, nxt].double()).abs()
    assert float(err.max()) <= scale
    capped_logit = truth["logits"] - truth["logits"].mean(-1, keepdim=True)
    assert float((own[b, p, nxt] - capped_logit[b, p, nxt]).abs().max()) > 100 * scale


@torch.no_grad()
def neuron_effects_by_hand(hf, tokens: torch.Tensor, neurons: list[int], cap: float | None) -> dict[int, dict]:
    """Mean-ablation effects of last-layer neurons at the final norm (``entropy_neurons``'s
    definition), from the checkpoint's own tensors in float64: the neuron's write coefficient is
    its activation over the post-FFN norm's scale; direct: the final scale frozen; total:
    recomputed; losses and entropies of ``capped(z, cap)``."""
    layer = hf.model.layers[-1]
    got = {}
    hs = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("act", a[0].detach())),
          layer.mlp.down_proj.register_forward_hook(lambda m, a, o: got.__setitem__("out", o.detach())),
          hf.model.norm.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach()))]
    hooked_forward(hf, hs, input_ids=tokens)
    post, final = layer.post_feedforward_layernorm, hf.model.norm
    out = got["out"][0, :-1].double()
    s_post = (out.pow(2).mean(-1, keepdim=True) + post.eps).sqrt()
    x = got["x"][0, :-1].double()  # positions with a next token
    targets = tokens[0, 1:]
    g_f = final.weight.double() + 1
    W = hf.lm_head.weight.double()  # [vocab, d]

    def z_of(y, s):
        return (y / s * g_f) @ W.T

    def stats(z):
        lp = torch.log_softmax(capped(z, cap), -1)
        return -lp.gather(-1, targets[:, None])[:, 0], -(lp.exp() * lp).sum(-1)

    s = (x.pow(2).mean(-1, keepdim=True) + final.eps).sqrt()
    loss0, ent0 = stats(z_of(x, s))
    res = {}
    for n in neurons:
        coef = got["act"][0, :-1, n].double() / s_post[:, 0]
        mean = got["act"][0, :, n].double() / (got["out"][0].double().pow(2).mean(-1) + post.eps).sqrt()
        v = layer.mlp.down_proj.weight[:, n].double() * (post.weight.double() + 1)
        y = x + (mean.mean() - coef)[:, None] * v
        lt, et = stats(z_of(y, (y.pow(2).mean(-1, keepdim=True) + final.eps).sqrt()))
        ld, _ = stats(z_of(y, s))
        res[n] = dict(total_effect=float((lt - loss0).abs().mean()), direct_effect=float((ld - loss0).abs().mean()),
                      entropy_change=float((et - ent0).mean()))
    return res


def hand_coef(hf, tokens: torch.Tensor, neurons: list[int]) -> torch.Tensor:
    """Last-layer neurons' write coefficients ``[pos, j]``: activation over the post-FFN norm's scale."""
    layer = hf.model.layers[-1]
    got = {}
    hs = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("act", a[0].detach())),
          layer.mlp.down_proj.register_forward_hook(lambda m, a, o: got.__setitem__("out", o.detach()))]
    hooked_forward(hf, hs, input_ids=tokens)
    s = (got["out"][0].double().pow(2).mean(-1, keepdim=True) + layer.post_feedforward_layernorm.eps).sqrt()
    return got["act"][0][:, neurons].double() / s


def test_entropy_neuron_effects_are_those_of_the_capped_logits(gemma2):
    model, hf = gemma2
    w = model.run_with_writes(" ".join(TEXTS))  # one row, no padding: the mean is over every token
    df = interp.entropy_neurons(model, w, top=2, controls=1)
    assert df.attrs["logit_softcap"] == 0.5
    measured = df[df["role"] != ""]
    neurons = [int(n) for n in measured["neuron"]]
    want = neuron_effects_by_hand(hf, w.tokens, neurons, 0.5)
    decoy = neuron_effects_by_hand(hf, w.tokens, neurons, None)
    # Each loss is 2-Lipschitz in the logits' largest change and an entropy 2 log(d_vocab)-
    # Lipschitz (the sum of |dH/dz_j| = p_j |log p_j + H| is at most 2H); an effect is a
    # difference of two such values. Both sides read out in float64; what differs is the float32
    # input: the record's stream and write coefficients, held to the checkpoint's in
    # test_post_norm, whose elementwise differences go through the readout as they are (an
    # ablated stream x + dc v errs by dx + 2 max|d coef| |v|, its scale by at most the largest of
    # that), and the float32 products that fold the gains into W_U and W_out (one rounding each,
    # relative to M = (|x| + dc |v|) |W_U| / s), plus float64's own rounding of the readout.
    m = w.mask[0, :-1]
    x = w.resid(w.n_layers).double()[0, :-1][m]
    s = w.final_scale.double()[0, :-1][m]
    V = torch.stack([model.weights.mlp_out(-1)[n].double() for n in neurons]).abs().amax(0)
    coef = w.write_acts(-1).double()[0, :, neurons]
    dc = float((coef.mean(0) - coef).abs().max())
    dcoef = float((coef - hand_coef(hf, w.tokens, neurons)).abs().max())
    dx = (x - hf_readout(hf, w.tokens, w.mask)["x"].double()[0, :-1][m]).abs() + 2 * dcoef * V
    U = w.weights.W_U.double().abs()
    M = (x.abs() + dc * V) @ U / s
    u64 = 2.0**-53
    dz = float(((dx @ U) / s + M * dx.amax(-1, keepdim=True) / s + (4 * U32 + 2 * gamma(2 * model.cfg.d_model + 8, u64)) * M).max())
    lip = {"total_effect": 2 * 2, "direct_effect": 2 * 2, "entropy_change": 2 * 2 * math.log(model.cfg.d_vocab)}
    for r in measured.itertuples():
        for col, k in lip.items():
            tol = k * dz
            assert abs(getattr(r, col) - want[r.neuron][col]) <= tol, (r.label, col)
    # the decoy (no cap) is told apart: some effect moves by more than the tolerance
    assert max(abs(want[n][c] - decoy[n][c]) / (lip[c] * dz) for n in neurons for c in lip) > 1
