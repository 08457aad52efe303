"""Prediction and suppression neurons (Gurnee et al. 2024, "Universal neurons in GPT2 language
models"): neurons whose output vector, read through the unembedding, raises (prediction) or
lowers (suppression) the logits of a few tokens.

For neuron ``n``, ``y = W_U^T w_out[n]`` (``[d_vocab]``, the final norm's gain included) is its
direct effect on every logit per unit of activation (for a soft-capped model, Gemma 2: on the
pre-cap logit ``z``, whose cap ``cap * tanh(z / cap)`` is applied per position to the whole
readout and so belongs to no single neuron). Its shape over the vocabulary:

- ``vocab_kurtosis`` (``m4 / m2^2``; 3 for a Gaussian): heavy tails, a few tokens singled out;
- ``vocab_skew`` (``m3 / m2^1.5``): positive when the singled-out tokens are raised (prediction),
  negative when lowered (suppression).

**Null (trained weights).** The same moments for ``n_null`` random directions (seeded Gaussian,
norm-free) read through the same ``W_U``: the unembedding's own heavy tails (rare tokens, norm
outliers) give random directions a kurtosis above 3, and the cut must beat that. A neuron is
``prediction`` when ``vocab_kurtosis`` exceeds the null's largest kurtosis and ``vocab_skew``
exceeds the null's largest ``|skew|``; ``suppression`` with ``vocab_skew`` below minus it; else ``none``. This is a
property of the weights (the paper's definition), not a measurement on data.

``y`` is made in blocks of ``chunk`` neurons by a slice of the vocabulary (``vocab_moments``),
about 8 MB each whatever the vocabulary: Gemma 3's 262,144 tokens never make a ``[neurons,
d_vocab]`` matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_indices, check_int
from interp._degenerate import undefined_rows
from interp._threads import with_analysis_threads

COLUMNS = ["layer", "neuron", "label", "kind", "vocab_skew", "vocab_kurtosis", "norm", "top_token", "top_value"]


def _effective_unembed(model: Any) -> Tensor:
    ws = model.write_weights
    W = ws.W_U.float()
    if ws.ln_final_w is not None:
        W = W * ws.ln_final_w.float()[:, None]
    return W


#: Numbers in one ``[rows, columns]`` block of ``y`` (8 MB of float32): small enough to stay in
#: cache between the matmul that makes it and the three passes that read it.
BLOCK = 1 << 21


def vocab_moments(vectors: Tensor, W_U: Tensor, *, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(skew, kurtosis, argmax |y - mean|)`` of ``y = vectors @ W_U`` over the vocabulary, for
    ``vectors [n, d_model]`` and ``W_U [d_model, d_vocab]``.

    ``chunk`` rows at a time, and within them ``BLOCK // chunk`` vocabulary columns at a time:
    ``y`` is never materialised whole (a 262k vocabulary makes it 1 MB per row). ``W_U`` is
    centred over the vocabulary first (its mean taken in float64), so each block of ``y`` is
    already centred; each vector is scaled to unit norm first (the moments' ratios do not depend
    on it, and weights near float32's smallest normal would underflow when cubed); the power sums
    are accumulated in float64."""
    W_U = W_U.float()
    centre = W_U.mean(1, dtype=torch.float64).float()[:, None]  # [d_model, 1]
    n_vocab = W_U.shape[1]
    skew, kurt, arg = [], [], []
    for a in range(0, vectors.shape[0], chunk):
        v = vectors[a:a + chunk].double()
        v = (v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-300)).float()  # skew and
        # kurtosis do not depend on the scale, and a unit vector's powers neither under- nor overflow
        cols = max(64, BLOCK // v.shape[0])
        s2, s3, s4 = (torch.zeros(v.shape[0], dtype=torch.float64) for _ in range(3))
        best = torch.full((v.shape[0],), -1.0)
        where = torch.zeros(v.shape[0], dtype=torch.long)
        for b in range(0, n_vocab, cols):
            y = v @ (W_U[:, b:b + cols] - centre)  # [rows, cols]
            y2 = y * y
            s2 += y2.sum(-1, dtype=torch.float64)
            s3 += (y2 * y).sum(-1, dtype=torch.float64)
            s4 += y2.pow_(2).sum(-1, dtype=torch.float64)
            top, at = y.abs().max(-1)
            better = top > best  # strict: the first column wins a tie, as argmax does
            best, where = torch.where(better, top, best), torch.where(better, at + b, where)
        m2, m3, m4 = s2 / n_vocab, s3 / n_vocab, s4 / n_vocab
        skew.append(m3 / m2.clamp_min(1e-300).pow(1.5))
        kurt.append(m4 / m2.clamp_min(1e-300).pow(2))
        arg.append(where)
    return torch.cat(skew), torch.cat(kurt), torch.cat(arg)


@with_analysis_threads
def prediction_neurons(
    model: Any,
    *,
    layers: Sequence[int] | int | None = None,
    n_null: int = 256,
    chunk: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Every neuron's vocabulary skew and kurtosis, and its kind (prediction / suppression / none).

    Args:
        model: an ``interp.Model``.
        layers: layers to read (default all; the cost is ``n_layers x d_mlp x d_model x d_vocab``).
        n_null: random directions in the null.
        chunk: neurons per block (default: a whole layer; the vocabulary is sliced to keep a
            block at ``BLOCK`` numbers).
        seed: the null's directions.
    Returns:
        One row per neuron, by kurtosis (largest first): layer, neuron, label, kind, vocab_skew,
        vocab_kurtosis (named apart from DataFrame.skew / .kurtosis), norm (``|w_out|``), top_token (the
        repr of the token whose logit it moves most), top_value
        (that logit's change per unit activation, mean removed). ``attrs``: null_kurtosis_max,
        null_skew_max, null_kurtosis_median, n_null, counts.
    Examples:
        >>> import interp
        >>> df = prediction_neurons(interp.load(), layers=-1, n_null=16)
        >>> set(df["kind"]) <= {"prediction", "suppression", "none"}
        True
    """
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    c = model.cfg
    layers = check_indices("layers", layers, c.n_layers, "layer")
    n_null = check_int("n_null", n_null, minimum=2)
    chunk = c.d_mlp if chunk is None else check_int("chunk", chunk, minimum=1)
    seed = check_int("seed", seed)
    W_U = _effective_unembed(model)
    g = torch.Generator().manual_seed(seed)
    null = torch.randn(n_null, c.d_model, generator=g).to(W_U)
    n_skew, n_kurt, _ = vocab_moments(null, W_U, chunk=chunk)
    k_cut, s_cut = float(n_kurt.max()), float(n_skew.abs().max())
    vocab_mean = W_U.mean(1)  # [d_model]: a direction's mean logit change is its dot with it
    parts = []
    for ly in layers:
        W_out = model.weights.mlp_out(ly)
        skew, kurt, arg = vocab_moments(W_out, W_U, chunk=chunk)
        top_val = []
        for a in range(0, len(arg), 4096):
            rows = W_out[a:a + 4096].float()
            col = W_U[:, arg[a:a + 4096]].T  # [c, d]
            mean = rows @ vocab_mean
            top_val.append((rows * col).sum(-1) - mean)
        kind = np.where((kurt > k_cut) & (skew > s_cut), "prediction",
                        np.where((kurt > k_cut) & (skew < -s_cut), "suppression", "none"))
        parts.append(pd.DataFrame(dict(
            layer=ly, neuron=np.arange(c.d_mlp), kind=kind, vocab_skew=skew.numpy(), vocab_kurtosis=kurt.numpy(),
            norm=torch.linalg.vector_norm(W_out.float(), dim=-1).numpy(), top_token=arg.numpy(),
            top_value=torch.cat(top_val).double().numpy())))
    df = pd.concat(parts, ignore_index=True)
    df.insert(2, "label", [f"L{ly}N{n}" for ly, n in zip(df["layer"], df["neuron"])])
    df["top_token"] = [repr(model.decode_token(int(t))) for t in df["top_token"]]  # quoted: "'\n'" stays one cell
    df = df.sort_values(["vocab_kurtosis", "layer", "neuron"], ascending=[False, True, True], kind="stable")
    df = undefined_rows(df.reset_index(drop=True)[COLUMNS], ["vocab_skew", "vocab_kurtosis"], "prediction_neurons",
                        "a neuron's logit effect (w_out through W_U) is the same for every token (constant or zero "
                        "weights): the skew and kurtosis of a constant are 0 / 0")
    df.attrs.update(null_kurtosis_max=k_cut, null_skew_max=s_cut, null_kurtosis_median=float(n_kurt.median()),
                    n_null=n_null, counts={k: int((df["kind"] == k).sum()) for k in ("prediction", "suppression")},
                    null="random directions through the model's own W_U")
    return df
