"""Deleting heads: attention heads whose OV circuit writes minus what it reads.

A head moves information with its OV circuit ``W_V @ W_O`` (``[d_model, d_model]``, rank
``d_head``). Two weight signatures, both computed without data:

- ``score`` (eigenvalues): ``-sum(Re l) / sum(|l|)`` over the eigenvalues ``l`` of the OV
  circuit, found from the small ``d_head x d_head`` product ``W_O @ W_V``. +1: the head
  writes the negative of what it reads (it erases); -1: it copies; about 0 for random
  weights. ``neg_eig_share``: the share of eigenvalue mass with negative real part.
- ``copy_suppression`` (through the unembedding, after McDougall et al. 2023): for tokens
  ``t``, where the full OV circuit ``W_E[t] @ W_V @ W_O @ W_U`` ranks ``t``'s own logit,
  mapped to ``[-1, 1]``: +1 when every token's own logit is pushed down the most.

The null for ``score`` is Gaussian ``W_V`` and ``W_O`` of the same shapes (Monte Carlo,
seeded); a head is flagged when its ``z`` passes a Bonferroni cut-off over the heads tested
(expected false positives ``false_positives``, default 0.1, normal tail).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_float, check_indices, check_int
from interp.memory.neurons import FALSE_POSITIVES
from interp.memory.null import normal_upper_quantile, ov_eigen_score, ov_score_null


def _head_weights(model: Any, layer: int) -> tuple[Tensor, Tensor]:
    """``W_V [head, d_model, d_head]`` (one per query head, grouped-query K/V expanded) and
    ``W_O [head, d_head, d_model]`` of one layer."""
    W_V, W_O = model.weights.W_V[layer], model.weights.W_O[layer]
    n_heads = W_O.shape[0]
    if W_V.shape[0] != n_heads:  # grouped-query attention: query head h reads kv head h // group
        W_V = W_V.repeat_interleave(n_heads // W_V.shape[0], dim=0)
    return W_V, W_O


def _copy_suppression(W_E: Tensor, W_V: Tensor, W_O: Tensor, W_U: Tensor, tokens: Tensor) -> Tensor:
    """Per head: mean over ``tokens`` of ``1 - 2 q``, ``q`` the share of the vocabulary whose
    OV-circuit logit is below the token's own. ``[head]``."""
    out = torch.zeros(W_O.shape[0], dtype=torch.float64)
    for h in range(W_O.shape[0]):
        right = W_O[h].double() @ W_U.double()  # [d_head, vocab]
        total = 0.0
        for a in range(0, len(tokens), 256):
            tok = tokens[a:a + 256]
            rows = (W_E[tok].double() @ W_V[h].double()) @ right  # [t, vocab]
            own = rows.gather(1, tok[:, None].to(rows.device))
            total += float((1 - 2 * (rows < own).double().mean(1)).sum())
        out[h] = total / len(tokens)
    return out


def find_deleting_heads(
    model: Any,
    *,
    layers: Sequence[int] | int | None = None,
    false_positives: float = FALSE_POSITIVES,
    n_tokens: int = 1024,
    seed: int = 0,
) -> pd.DataFrame:
    """Every head's OV-circuit deletion signature, most deleting first.

    Args:
        model: an ``interp.Model``.
        layers: layers to test (default all; negative indices count from the end).
        false_positives: expected number of heads flagged under the null (sets ``flagged``).
        n_tokens: tokens sampled (seeded) for ``copy_suppression``; all when the vocabulary
            is smaller; 0 skips it (NaN).
    Returns:
        One row per head: layer:int, head:int, label:str ("L1H3"), score:float (eigenvalue
        signature in [-1, 1]), z:float (against the Gaussian null), flagged:bool,
        neg_eig_share:float, copy_suppression:float. ``attrs``: processing, null_mean,
        null_std, z_threshold, false_positives, n_heads.
    Raises:
        IndexOutOfRangeError: a layer out of range.
    Example:
        >>> import interp
        >>> list(find_deleting_heads(interp.load()).columns[:4])
        ['layer', 'head', 'label', 'score']
    """
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    c = model.cfg
    layers = check_indices("layers", layers, c.n_layers, "layer")
    n_total = c.n_heads * len(layers)
    check_float("false_positives", false_positives)
    if not 0 < false_positives < n_total:
        raise ValueError(f"false_positives={false_positives!r} must be a positive number of expected false "
                         f"positives below the {n_total} heads tested, e.g. 0.1")
    n_tokens = check_int("n_tokens", n_tokens)
    if n_tokens < 0:
        raise ValueError(f"n_tokens={n_tokens!r} must be a non-negative int (0 skips copy_suppression)")
    seed = check_int("seed", seed)
    null_mean, null_std = ov_score_null(c.d_model, c.d_head)
    z_star = normal_upper_quantile(false_positives / n_total)
    tokens = None
    if n_tokens:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.arange(c.d_vocab) if c.d_vocab <= n_tokens else torch.randperm(c.d_vocab, generator=g)[:n_tokens]
        tokens = tokens.to(model.device)
    rows = []
    for ly in layers:
        W_V, W_O = _head_weights(model, ly)
        score, neg = ov_eigen_score(W_V, W_O)
        cs = (_copy_suppression(model.weights.W_E, W_V, W_O, model.weights.W_U, tokens)
              if tokens is not None else torch.full((c.n_heads,), float("nan")))
        for h in range(c.n_heads):
            rows.append((ly, h, f"L{ly}H{h}", float(score[h]), float(neg[h]), float(cs[h])))
    df = pd.DataFrame(rows, columns=["layer", "head", "label", "score", "neg_eig_share", "copy_suppression"])
    df.insert(4, "z", (df["score"] - null_mean) / null_std)
    df.insert(5, "flagged", df["z"].to_numpy() >= z_star)
    df = df.astype({"layer": np.int64, "head": np.int64})
    df = df.sort_values(["score", "layer", "head"], ascending=[False, True, True], kind="stable")
    df = df.reset_index(drop=True)
    df.attrs.update(
        processing=c.processing, null="gaussian", null_mean=null_mean, null_std=null_std,
        z_threshold=z_star, false_positives=float(false_positives), n_heads=n_total,
        copy_suppression_tokens=0 if tokens is None else len(tokens),
    )
    return df
