"""Entropy neurons (Stolfo et al. 2024, "Confidence regulation neurons in language models").

An entropy neuron has a large output vector that lies in the effective null space of the
unembedding: it changes the stream's norm, and so the final norm's scale and the confidence
of every prediction, with almost no direct effect on the logits.

- **Screen (weights).** ``W_U`` (with the final norm's gain, when it is not folded in) has
  singular directions ``V`` (from the ``d_model x d_model`` Gram matrix ``W_U W_U^T``; the
  vocabulary is never materialised against tokens). ``rho = |V_k^T w_out|^2 / |w_out|^2``, the
  share of the neuron's output vector in the ``k`` bottom singular directions (default
  ``k = max(1, round(0.01 d_model))``, as in the paper); ``null_norm = |V_k^T w_out|``.
  ``rho_z``: rho against the layer's own neurons (median and 1.4826 MAD), a null of the trained
  weights; a random direction has ``rho = k / d_model`` on average.
- **Verdict (data).** For the ``top`` neurons by ``null_norm`` and ``controls`` random neurons of
  the same layers, mean ablation on real tokens (the activation replaced by its mean over the
  data), measured at the final norm: ``total_effect``, the mean absolute change of the
  next-token loss with the final norm's scale recomputed; ``direct_effect``, the same with the
  scale frozen (the path that bypasses the norm); ``norm_mediated = 1 - direct / total``;
  ``entropy_change``, the mean change of the prediction's entropy (total). The effect is the
  write's at the final norm: for a neuron before the last layer, what later blocks do with it is
  not included (the paper's entropy neurons are in the last layer, the default). Where blocks
  have a post-norm, the ablated quantity is the neuron's write coefficient (its activation over
  the block's frozen post-norm scale, ``ResidualWrites.write_acts``).
  ``verdict = "entropy"`` when ``rho_z >= min_rho_z`` and ``norm_mediated >= min_mediated``,
  else ``"none"``; unmeasured neurons: ``"unmeasured"``.

A soft-capped model's (Gemma 2) losses and entropies are those of its capped logits
``cap * tanh(z / cap)`` (``interp.config.soft_cap``); the screen reads the linear ``W_U``, which
the monotonic cap does not change. Logits are made ``chunk`` tokens at a time: ``[chunk, d_vocab]``, never ``[tokens, d_vocab]``.

**Precision.** Per chunk the baseline's readout ``z0 = xc W_U / s + b`` and its (capped) log-softmax
are computed once in float64; per neuron only the *change* of the logits ``d`` is formed, in
float32 ``[chunk, d_vocab]`` arrays (total: ``base (1/s_new - 1/s) + dc bw / s_new``, the scalar
``1/s_new - 1/s`` from ``s^2 - s_new^2`` without cancellation; direct: ``dc bw / s``; through a
cap: ``cap tanh(d/cap) sech^2(z0/cap) / (1 + tanh(z0/cap) tanh(d/cap))``). Then ``dloss =
log1p(sum p0 expm1(d)) - d[target]`` and the entropy's change from the same weights, every sum over
the vocabulary accumulated in float64 (float32 blocks of 8 terms, added in float64), slice by slice
of ``SLICE`` vocabulary columns (which stay in cache across the neurons). Each
per-token change errs by a few float32 roundoffs (``u = 2^-24``) of the magnitudes that form it,
not of the logits: at most ``2 max_v D_v`` for a loss and ``2 log(d_vocab) max_v D_v`` for an
entropy, ``D_v = 4u (|base_v (1/s_new - 1/s)| + |dc bw_v / s_new|)`` (with a cap
``+ (10u + 7u |t0 td| / (1 + t0 td)) |d_v|``, ``t0 td = tanh(z0/cap) tanh(d/cap)``), plus
``13u``-``15u`` of the sums' absolute terms. The derivation, and the check against the float64
computation this replaced, are in ``tests/test_memory_entropy_precision.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_float, check_indices, check_int
from interp._degenerate import check_usable_dims
from interp._threads import with_analysis_threads
from interp.config import soft_cap
from interp.memory.data import describe, records, require_compat

COLUMNS = ["layer", "neuron", "label", "norm", "rho", "rho_z", "null_norm", "role", "verdict", "total_effect",
           "direct_effect", "norm_mediated", "entropy_change", "mean_act"]


def unembed_basis(model: Any) -> tuple[Tensor, Tensor]:
    """Singular values (descending) ``[d_model]`` and left singular vectors ``[d_model, d_model]``
    (columns, same order) of the effective unembedding, from its Gram matrix in float64."""
    ws = model.write_weights
    W = ws.W_U.double()
    if ws.ln_final_w is not None:
        W = W * ws.ln_final_w.double()[:, None]
    gram = torch.zeros(W.shape[0], W.shape[0], dtype=torch.float64)
    for a in range(0, W.shape[1], 16384):  # a 262k vocabulary in pieces of 16k columns
        blk = W[:, a:a + 16384].cpu()
        gram += blk @ blk.T
    if model.cfg.normalization.startswith("LN"):  # the norm removes the mean: only the centred subspace counts
        d = gram.shape[0]
        B = torch.linalg.qr(torch.eye(d, dtype=torch.float64) - 1.0 / d)[0][:, : d - 1]
        evals, evecs = torch.linalg.eigh(B.T @ gram @ B)
        evecs = B @ evecs
    else:
        evals, evecs = torch.linalg.eigh(gram)  # ascending
    return evals.clamp_min(0).sqrt().flip(0), evecs.flip(1)


def _robust_z(v: np.ndarray) -> np.ndarray:
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    return (v - med) / max(mad, 1e-12)


def _logits_parts(model: Any, w: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real tokens with a next token: final stream ``x [n, d]``, the frozen final scale ``s [n, 1]``,
    the targets ``[n]`` and the ``(batch, pos)`` selection."""
    m = w.mask.clone()
    nxt = torch.zeros_like(m)
    nxt[:, :-1] = m[:, 1:]
    sel = m & nxt
    x = w.resid(w.n_layers, "pre").double()[sel]
    s = w.final_scale.double()[sel] if w.final_scale is not None else None
    targets = w.tokens[:, 1:][sel[:, :-1]]
    return x, s, targets, sel


def _centre(x: Tensor, model: Any) -> Tensor:
    return x - x.mean(-1, keepdim=True) if model.cfg.normalization.startswith("LN") else x


def _scale(x: Tensor, model: Any) -> Tensor:
    c = model.cfg
    if not c.normalization.startswith(("LN", "RMS")):
        return torch.ones_like(x[..., :1])
    return (_centre(x, model).pow(2).mean(-1, keepdim=True) + c.eps).sqrt()


def _fsum(t: Tensor, part: Tensor) -> Tensor:
    """Row sums ``[c]`` in float64 of a float32 ``t [c, n]``: ``m = n // 8`` blocks of 8 terms
    (columns ``k + i m``, ``i < 8``) added in float32 into ``part [c, m]`` (error at most
    ``gamma(7, u)`` of their absolute terms), then the partial sums and the ``n % 8`` left over in
    float64: a tenth of the time of ``t.sum(-1, dtype=torch.float64)``."""
    c, n = t.shape
    m = n // 8
    out = torch.sum(t[:, : 8 * m].view(c, 8, m), 1, out=part[:c, :m]).sum(-1, dtype=torch.float64)
    return out + t[:, 8 * m:].sum(-1, dtype=torch.float64) if n % 8 else out


def _baseline(z: Tensor, cap: float | None, bufs: dict[str, Tensor]) -> Tensor:
    """Per ``[c, vocab]`` float64 linear readout ``z`` (overwritten): what each neuron's change is
    measured against, from the model's (capped) logits, into ``bufs``' float32 ``[c, vocab]``
    arrays: ``p0`` and ``lp0`` (probabilities and their logs), with a cap ``t0 = tanh(z / cap)``
    and ``sech2 = 1 - t0^2``. Returns the entropy ``H0 [c]`` (float64)."""
    c = z.shape[0]
    if cap is not None:
        zc = z / cap
        bufs["t0"][:c].copy_(torch.tanh(zc))
        bufs["sech2"][:c].copy_(zc.cosh_().pow_(-2))  # 1 - tanh^2 without cancellation
        z = soft_cap(z, cap)
    lp = z.sub_(torch.logsumexp(z, -1, keepdim=True))
    bufs["lp0"][:c].copy_(lp)
    p = lp.exp()
    bufs["p0"][:c].copy_(p)
    return -torch.linalg.vecdot(p, lp)


def _change(dz: Tensor, t0: Tensor | None, sech2: Tensor | None, cap: float | None, scratch: Tensor) -> Tensor:
    """The change of the model's logits (float32) for a change ``dz`` of the linear readout
    (overwritten): ``dz`` itself, or through the cap without cancellation,
    ``cap (tanh(a + d) - tanh(a)) = cap tanh(d) (1 - tanh(a)^2) / (1 + tanh(a) tanh(d))`` with
    ``t0 = tanh(a)``, ``sech2 = 1 - tanh(a)^2`` (``scratch``: ``dz``'s shape)."""
    if cap is None:
        return dz
    td = dz.div_(cap).tanh_()
    den = torch.mul(td, t0, out=scratch).add_(1)
    return td.mul_(sech2).div_(den).mul_(cap)


def _buffers(c: int, d_vocab: int, cap: float | None) -> dict[str, Tensor]:
    """Float32 scratch for ``_chunk_effects``, reused (fresh ``[c, vocab]`` arrays cost their page
    faults every time): the baseline ``[c, vocab]`` and, per vocabulary slice, ``[c, SLICE]``."""
    names = ["base", "p0", "lp0"] + (["t0", "sech2"] if cap is not None else [])
    out = {k: torch.empty(c, d_vocab) for k in names}
    w = min(SLICE, d_vocab)
    out.update(D=torch.empty(c, w), E=torch.empty(c, w), T=torch.empty(c, w), part=torch.empty(c, max(w // 8, 1)))
    return out


#: Vocabulary columns per slice: a slice's float32 arrays stay in cache across the neurons.
SLICE = 8192


def _chunk_effects(xc: Tensor, s: Tensor, s_lin: Tensor, dc: Tensor, targets: Tensor, W_U: Tensor, b: Tensor,
                   vec_c: Tensor, bw32: Tensor, cap: float | None, normed: bool,
                   bufs: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per token and neuron ``[c, j]`` (float64): the change of the loss with the final scale
    recomputed (total) and frozen (direct), and of the entropy (total), when the (centred) final
    stream ``xc [c, d]`` gains ``dc [c, j]`` times the neurons' centred writes ``vec_c [j, d]``.
    ``s`` is the baseline's scale, ``s_lin`` the one ``xc`` implies (they differ where the scale
    was recorded), ``bw32 = vec_c W_U`` in float32; ``[c, vocab]`` arrays only (``bufs``:
    ``_buffers`` of at least ``c`` rows).

    With the logits' change ``d``, ``E = expm1(d)`` and ``S = sum p0 E`` (the new partition
    function over the old, minus 1): ``dloss = log1p(S) - d[target]`` and ``dH = log1p(S) -
    (sum p0 e^d d + sum p0 E lp0 + S H0) / (1 + S)`` (first order: ``-cov_p0(d, lp0)``), every sum
    in float64 over float32 blocks of 8 (``_fsum``), slice by slice of the vocabulary."""
    c, V = xc.shape[0], W_U.shape[1]
    bufs = _buffers(c, V, cap) if bufs is None else bufs
    base = xc @ W_U  # [c, vocab], float64
    base32 = bufs["base"][:c].copy_(base)
    H0 = _baseline(base.div_(s).add_(b), cap, bufs)
    del base
    p0, lp0 = bufs["p0"][:c], bufs["lp0"][:c]
    t0, sech2 = (bufs["t0"][:c], bufs["sech2"][:c]) if cap is not None else (None, None)
    # the ablated scale s_new = sqrt(s_lin^2 + ds2), and 1/s_new - 1/s without cancellation
    ds2 = ((2 * dc) * (xc @ vec_c.T) + dc.pow(2) * vec_c.pow(2).sum(-1)) / xc.shape[-1] if normed else 0 * dc
    s_new = (s_lin.pow(2) + ds2).sqrt()
    alpha = (((s - s_lin) - ds2 / (s_lin + s_new)) / (s * s_new)).float()  # [c, j]
    beta, gamma = (dc / s_new).float(), (dc / s).float()
    sums = torch.zeros(4, *dc.shape, dtype=torch.float64)  # S, sum p0 E lp0, sum p0 e^d d (total); S (direct)
    part = bufs["part"]
    for v0 in range(0, V, SLICE):
        v1 = min(v0 + SLICE, V)
        w = v1 - v0
        b_, p_, l_ = base32[:, v0:v1], p0[:, v0:v1], lp0[:, v0:v1]
        t_, h_ = (t0[:, v0:v1], sech2[:, v0:v1]) if cap is not None else (None, None)
        D, E, T = bufs["D"][:c, :w], bufs["E"][:c, :w], bufs["T"][:c, :w]
        for j in range(dc.shape[1]):
            d = _change(torch.mul(b_, alpha[:, j:j + 1], out=D).addcmul_(beta[:, j:j + 1], bw32[j, v0:v1]),
                        t_, h_, cap, T)
            pE = torch.special.expm1(d, out=E).mul_(p_)
            sums[0, :, j] += _fsum(pE, part)
            sums[1, :, j] += _fsum(torch.mul(pE, l_, out=T), part)
            sums[2, :, j] += _fsum(pE.add_(p_).mul_(d), part)
            d = _change(torch.mul(bw32[j, v0:v1], gamma[:, j:j + 1], out=D), t_, h_, cap, T)
            sums[3, :, j] += _fsum(torch.special.expm1(d, out=E).mul_(p_), part)
    # the changes at the targets, by the same float32 operations on the gathered columns
    tg = targets[:, None]
    bw_t = bw32[:, targets].T  # [c, j]
    g_t = (t0.gather(-1, tg), sech2.gather(-1, tg)) if cap is not None else (None, None)
    d_tot = _change(torch.mul(base32.gather(-1, tg), alpha).addcmul_(beta, bw_t), *g_t, cap, torch.empty_like(bw_t))
    d_dir = _change(torch.mul(bw_t, gamma), *g_t, cap, torch.empty_like(bw_t))
    S, B, A, Sd = sums
    L = torch.log1p(S)
    return L - d_tot.double(), torch.log1p(Sd) - d_dir.double(), L - (A + B + S * H0[:, None]) / (1 + S)


@with_analysis_threads
def entropy_neurons(
    model: Any,
    data: Any = None,
    *,
    layers: Sequence[int] | int | None = -1,
    k: int | None = None,
    top: int = 8,
    controls: int = 8,
    min_rho_z: float = 5.0,
    min_mediated: float = 0.5,
    max_tokens: int = 512,
    n_ctx: int = 128,
    batch_size: int = 4,
    chunk: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """Neurons that write into the unembedding's null space, and whether their effect on data
    goes through the final norm.

    Args:
        model: an ``interp.Model`` (``processing="compat"``).
        data: records, texts, a token batch or a corpus (default ``max_tokens`` tokens of
            ``"stdlib:val"`` in rows of ``n_ctx``).
        layers: layers to screen (default the last; None: all).
        k: bottom singular directions of ``W_U`` (default ``max(1, round(0.01 * d_model))``).
        top / controls: neurons measured on data: the ``top`` by ``null_norm`` over the layers,
            and ``controls`` random neurons (seeded) of the same layers.
        min_rho_z / min_mediated: the verdict's cuts.
        chunk: tokens per ``[chunk, d_vocab]`` logit block.
    Returns:
        One row per neuron of ``layers``, by ``null_norm`` (largest first): layer, neuron, label,
        norm (``|w_out|``), rho, rho_z, null_norm, role ("candidate", "control" or ""), verdict
        ("entropy", "none", "unmeasured"), total_effect / direct_effect (mean absolute change of
        the loss, nats, scale recomputed / frozen), norm_mediated, entropy_change (mean change of
        the entropy, nats), mean_act. ``attrs``: k, singular_values (the bottom k and the top
        one), expected_rho (k / d_model), n_tokens_data, the cuts.
    Examples:
        >>> import interp
        >>> df = entropy_neurons(interp.load(), ["def f(x):\\n    return x\\n"] * 4, top=2, controls=1)
        >>> df.iloc[0]["role"], df["verdict"].iloc[0] in ("entropy", "none")
        ('candidate', True)
    """
    require_compat(model, "entropy_neurons")
    check_usable_dims(model, "entropy_neurons (the unembedding's bottom singular directions)")
    c = model.cfg
    layers = check_indices("layers", layers, c.n_layers, "layer")
    k = max(1, round(0.01 * c.d_model)) if k is None else check_int("k", k, minimum=1, maximum=c.d_model - 1)
    top = check_int("top", top, minimum=0)
    controls = check_int("controls", controls, minimum=0)
    min_rho_z = check_float("min_rho_z", min_rho_z)
    min_mediated = check_float("min_mediated", min_mediated, minimum=0, maximum=1)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    n_ctx = min(check_int("n_ctx", n_ctx, minimum=2), c.n_ctx)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    chunk = check_int("chunk", chunk, minimum=1)
    seed = check_int("seed", seed)
    sv, U = unembed_basis(model)
    Vk = U[:, -k:]  # bottom k
    parts = []
    for ly in layers:
        W_out = model.weights.mlp_out(ly).double().cpu()
        norm = torch.linalg.vector_norm(W_out, dim=-1)
        null = torch.linalg.vector_norm(W_out @ Vk, dim=-1)
        rho = (null / norm.clamp_min(1e-300)) ** 2
        parts.append(pd.DataFrame(dict(layer=ly, neuron=np.arange(c.d_mlp), norm=norm.numpy(), rho=rho.numpy(),
                                       rho_z=_robust_z(rho.numpy()), null_norm=null.numpy())))
    df = pd.concat(parts, ignore_index=True)
    df.insert(2, "label", [f"L{ly}N{n}" for ly, n in zip(df["layer"], df["neuron"])])
    df = df.sort_values(["null_norm", "layer", "neuron"], ascending=[False, True, True], kind="stable")
    df = df.reset_index(drop=True)
    df["role"] = ""
    df.loc[: top - 1, "role"] = "candidate"
    rest = np.nonzero(df["role"].to_numpy() == "")[0]
    g = torch.Generator().manual_seed(seed)
    pick = rest[torch.randperm(len(rest), generator=g)[:controls].numpy()] if len(rest) else rest
    df.loc[pick, "role"] = "control"
    measured = df[df["role"] != ""]
    effects = _effects(model, data, measured, chunk, max_tokens, n_ctx, batch_size) if len(measured) else {}
    for col in ("total_effect", "direct_effect", "norm_mediated", "entropy_change", "mean_act"):
        df[col] = [effects.get(lab, {}).get(col, float("nan")) for lab in df["label"]]
    ok = (df["rho_z"] >= min_rho_z) & (df["norm_mediated"] >= min_mediated)
    df["verdict"] = np.where(df["role"] == "", "unmeasured", np.where(ok, "entropy", "none"))
    df = df[COLUMNS]
    df.attrs.update(k=k, singular_values={"top": float(sv[0]), "bottom": sv[-k:].tolist()},
                    expected_rho=k / c.d_model, n_tokens_data=effects.get("_n_tokens", 0),
                    min_rho_z=min_rho_z, min_mediated=min_mediated, data=describe(data, max_tokens),
                    effect="mean ablation at the final norm; loss in nats per token", logit_softcap=c.logit_softcap)
    return df


def ablation_inputs(model: Any, data: Any, measured: pd.DataFrame, max_tokens: int, n_ctx: int,
                    batch_size: int) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, Tensor, Tensor, Tensor, Tensor]:
    """What the mean ablation of ``measured`` neurons reads, in float64: ``(records, layers,
    neurons, mean_act [j], W_U [d, vocab] with the final norm's gain, b [vocab] (b_U and the
    norm's bias), vec_c [j, d] (the output vectors, centred for LayerNorm), bw [j, vocab]
    (``vec_c @ W_U``))``. The first of ``_effects``' two passes: the mean activations."""
    ws = model.write_weights
    recs = list(records(model, data, max_tokens=max_tokens, n_ctx=n_ctx, batch_size=batch_size, progress=False,
                        what="entropy_neurons"))
    lay = measured["layer"].to_numpy()
    idx = measured["neuron"].to_numpy()
    acts_sum = np.zeros(len(lay))
    n_real = 0
    for w in recs:
        m = w.mask
        n_real += int(m.sum())
        for j, (ly, n) in enumerate(zip(lay, idx)):
            acts_sum[j] += float(w.write_acts(int(ly))[..., int(n)][m].double().sum())
    mean_act = acts_sum / max(n_real, 1)
    W_U = ws.W_U.double()
    if ws.ln_final_w is not None:
        W_U = W_U * ws.ln_final_w.double()[:, None]
    b = (ws.b_U.double() if ws.b_U is not None else torch.zeros(W_U.shape[1], dtype=torch.float64))
    if ws.ln_final_b is not None:
        b = b + ws.ln_final_b.double() @ ws.W_U.double()
    vec = torch.stack([model.weights.mlp_out(int(ly))[int(n)].double() for ly, n in zip(lay, idx)])  # [j, d]
    vec_c = _centre(vec, model)
    return recs, lay, idx, mean_act, W_U, b, vec_c, vec_c @ W_U  # bw: each write through the unembedding


def _effects(model: Any, data: Any, measured: pd.DataFrame, chunk: int, max_tokens: int, n_ctx: int,
             batch_size: int) -> dict[str, Any]:
    """Mean-ablation effects of ``measured`` neurons (two passes: the mean activation, then the
    effects)."""
    labels = measured["label"].tolist()
    recs, lay, idx, mean_act, W_U, b, vec_c, bw = ablation_inputs(model, data, measured, max_tokens, n_ctx,
                                                                 batch_size)
    cap = model.cfg.logit_softcap  # losses and entropies of the logits the model produces
    bw32 = bw.float()
    normed = model.cfg.normalization.startswith(("LN", "RMS"))
    mean_t = torch.as_tensor(mean_act)[None]
    tot = np.zeros((len(labels), 4))  # |dloss| total, |dloss| direct, dH total, count
    bufs = None
    for w in recs:
        x, s_frozen, targets, sel = _logits_parts(model, w)
        a_all = torch.stack([w.write_acts(int(ly))[..., int(n)][sel].double() for ly, n in zip(lay, idx)], -1)
        if bufs is None or bufs["D"].shape[0] < min(chunk, x.shape[0]):
            bufs = _buffers(min(chunk, x.shape[0]), W_U.shape[1], cap)
        for a0 in range(0, x.shape[0], chunk):
            xs = x[a0:a0 + chunk]
            s_lin = _scale(xs, model)  # [c, 1]
            s = s_frozen[a0:a0 + chunk] if s_frozen is not None else s_lin
            lt, ld, et = _chunk_effects(_centre(xs, model), s, s_lin, mean_t - a_all[a0:a0 + chunk],
                                        targets[a0:a0 + chunk], W_U, b, vec_c, bw32, cap, normed, bufs)
            tot[:, 0] += lt.abs().sum(0).numpy()
            tot[:, 1] += ld.abs().sum(0).numpy()
            tot[:, 2] += et.sum(0).numpy()
            tot[:, 3] += xs.shape[0]
    out: dict[str, Any] = {"_n_tokens": int(tot[0, 3]) if len(labels) else 0}
    for j, lab in enumerate(labels):
        n = max(tot[j, 3], 1)
        total, direct = tot[j, 0] / n, tot[j, 1] / n
        out[lab] = dict(total_effect=total, direct_effect=direct, entropy_change=tot[j, 2] / n, mean_act=mean_act[j],
                        norm_mediated=1 - direct / total if total > 0 else float("nan"))
    return out
