"""Deleting heads: heads whose write removes, on real tokens, what they read of the stream where
they write, judged on data; the OV circuit is the weights-only screen beside it.

**Verdict (data).** Per counted query token (sinks and position 0 excluded,
``interp.memory.head_data``), the removal ``r = -(w . P x) / |P x|^2`` of what the head reads of
the stream (``P``: the column space of its ``W_V``), as a distribution; ``verdict`` from its median
(``interp.memory.verdict``: deleting / partial / coupled / amplifying / none), ``flagged`` when
deleting. Evidence columns: ``self_attention`` (mean attention to the own position over counted
queries), ``sink_attention`` (to sink positions), ``removed_self`` / ``removed_sink`` (medians
of the own-position and sink parts of the write's removal). A head is said to erase what it
read at its own position when ``removed_self`` carries at least half of the median removal.

**Screen (weights).** ``score``: the OV eigenvalue signature ``-sum(Re l) / sum(|l|)`` of
``W_V @ W_O`` (+1: writes minus what it reads), ``z`` against the **cross-head null** (the same
score for mismatched ``W_V``/``W_O`` pairs of the model's own trained heads, median and
1.4826 MAD). ``copy_suppression`` (after McDougall et al. 2023): where the full OV circuit
``W_E[t] W_V W_O W_U`` ranks token ``t``'s own (pre-cap, for a soft-capped model) logit, in ``[-1, 1]`` (+1: pushed down the
most), read through the ``d_head`` bottleneck with a Gaussian approximation over the
vocabulary (no ``[tokens, vocab]`` matrix). Neither decides the verdict.

Limits: the verdict is about the tokens given (default: 1,024 tokens of held-out stdlib text in
rows of 128); a head that erases only in contexts the data lack is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_float, check_indices, check_int
from interp._degenerate import undefined_rows
from interp._threads import with_analysis_threads
from interp.memory.data import describe, records, require_compat
from interp.memory.head_data import SINK_RATIO, measure_heads
from interp.memory.null import ov_eigen_score, ov_score_null
from interp.memory.verdict import MAX_REMOVED, MIN_REMOVED, PARTIAL, VERDICTS, Cuts

COLUMNS = ["layer", "head", "label", "verdict", "flagged", "removed_median", "removed_q10", "removed_q90",
           "erase_share", "self_attention", "sink_attention", "removed_self", "removed_sink", "n_queries",
           "score", "z", "copy_suppression", "neg_eig_share", "reason"]


def _head_weights(model: Any, layer: int) -> tuple[Tensor, Tensor]:
    """``W_V [head, d_model, d_head]`` (one per query head, grouped-query K/V expanded) and
    ``W_O [head, d_head, d_model]`` of one layer."""
    W_V, W_O = model.weights.W_V[layer], model.weights.W_O[layer]
    n_heads = W_O.shape[0]
    if W_V.shape[0] != n_heads:  # grouped-query attention: query head h reads kv head h // group
        W_V = W_V.repeat_interleave(n_heads // W_V.shape[0], dim=0)
    return W_V, W_O


def cross_head_null(model: Any, *, samples: int = 512, seed: int = 0) -> tuple[float, float, int]:
    """Centre and spread of ``ov_eigen_score`` over mismatched (``W_V`` of head i, ``W_O`` of head j)
    pairs of this model, i and j in different layers or kv groups; up to ``samples`` pairs
    (all when fewer, else a seeded sample). Returns ``(median, 1.4826 * MAD, n_pairs)``: a
    normal scale estimate that a few pairs sharing structure do not inflate."""
    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    L, H = c.n_layers, c.n_heads
    li, hi = torch.meshgrid(torch.arange(L), torch.arange(H), indexing="ij")
    li, hi = li.flatten(), hi.flatten()
    kv = li * c.n_kv_heads + hi // group
    pairs = (kv[:, None] != kv[None, :]).nonzero()
    if len(pairs) < 2:  # one layer, one kv group: no mismatched pair; Gaussian weights instead
        mean, std = ov_score_null(c.d_model, c.d_head)
        return mean, std, 0
    if len(pairs) > samples:
        g = torch.Generator().manual_seed(seed)
        pairs = pairs[torch.randperm(len(pairs), generator=g)[:samples]]
    i, j = pairs[:, 0], pairs[:, 1]
    W_V = model.weights.W_V[li[i], kv[i] % c.n_kv_heads]  # [n, d_model, d_head]
    W_O = model.weights.W_O[li[j], hi[j]]
    s = ov_eigen_score(W_V, W_O)[0]
    med = s.median()
    mad = (s - med).abs().median() * 1.4826  # robust: a few structured pairs do not widen the null
    return float(med), float(mad.clamp_min(1e-12)), len(pairs)


def copy_suppression(model: Any, layer: int, tokens: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
    """``[head]``: mean over ``tokens`` of ``1 - 2 Phi(z_t)``, ``z_t`` the standardised own logit of
    token ``t`` in its OV-circuit row (Gaussian approximation of its rank), via ``d_head``."""
    c = model.cfg
    W_V, W_O = model.weights.W_V[layer].float(), model.weights.W_O[layer].float()  # kv heads, query heads
    W_E, W_U = model.weights.W_E, model.weights.W_U
    mu_U, cov_U = (t.float() for t in stats)
    a = torch.einsum("td,kdr->ktr", W_E[tokens].float(), W_V)  # [kv, t, r]: what each kv head reads
    a = a.repeat_interleave(c.n_heads // W_V.shape[0], dim=0)  # [H, t, r]
    b = torch.einsum("hrd,dt->htr", W_O, W_U[:, tokens].float())  # [H, t, r]: the own-logit readout
    own = (a * b).sum(-1)
    mean = a @ (W_O @ mu_U)[:, :, None]  # [H, t, 1]
    C = W_O @ cov_U @ W_O.transpose(-1, -2)  # [H, r, r]
    var = ((a @ C) * a).sum(-1).clamp_min(1e-30)
    z = ((own - mean[..., 0]) / var.sqrt()).double().cpu()
    return (1 - 2 * torch.special.ndtr(z)).mean(-1)


def _unembed_stats(model: Any, *, columns: int = 4096, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Mean ``[d_model]`` and covariance ``[d_model, d_model]`` of ``W_U``'s columns (a seeded
    sample of ``columns`` of them when the vocabulary is larger)."""
    W_U = model.weights.W_U
    if W_U.shape[1] > columns:
        idx = torch.randperm(W_U.shape[1], generator=torch.Generator().manual_seed(seed))[:columns]
        W_U = W_U[:, idx.to(W_U.device)]
    W = W_U.float()
    mu = W.mean(1)
    Wc = W - mu[:, None]
    return mu, Wc @ Wc.T / W.shape[1]


def _reason(r: Any) -> str:
    """The verdict in a few words (kept short: it is a table cell)."""
    what = {"deleting": "erases", "partial": "erases part", "coupled": "overshoots or both ways",
            "amplifying": "amplifies", "none": "no net effect"}[r.verdict]
    if r.verdict in ("deleting", "partial"):
        src = "read at its own position" if r.removed_self >= 0.5 * r.removed_median else "read elsewhere"
        return f"{what} ({r.removed_median:.0%}), {src}"
    if r.verdict == "none" and r.n_queries == 0:
        return "reads nothing of the stream on the data"
    if r.verdict == "none" and r.n_queries < 16:
        return "too few counted queries"
    return f"{what} ({r.removed_median:+.0%})"


@with_analysis_threads
def find_deleting_heads(
    model: Any,
    data: Any = None,
    *,
    layers: Sequence[int] | int | None = None,
    min_removed: float = MIN_REMOVED,
    max_removed: float = MAX_REMOVED,
    sink_ratio: float = SINK_RATIO,
    n_tokens: int = 1024,
    max_tokens: int = 1024,
    n_ctx: int = 128,
    batch_size: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    """Every head, with what its write removes on data; deleting heads first.

    Args:
        model: an ``interp.Model`` with ``processing="compat"``.
        data: what to measure on: ``ResidualWrites`` (or a list), texts, a LongTensor / ``Tokens``
            batch, or a corpus for ``stream_writes``; default ``max_tokens`` tokens of
            ``"stdlib:val"`` in rows of ``n_ctx``.
        layers: layers to test (default all; negative indices count from the end).
        min_removed / max_removed: the verdict's cuts on the median removal.
        sink_ratio: a position whose stream norm is at least this many times the median token's
            is a sink (never a counted query).
        n_tokens: vocabulary tokens sampled (seeded) for ``copy_suppression``; 0 skips it (NaN).
        max_tokens / n_ctx / batch_size: the default data's size.
    Returns:
        One row per head: deleting first, then partial, coupled, amplifying, none, each by
        ``removed_median`` (largest first): layer, head, label ("L1H3"), verdict, flagged
        (verdict == "deleting"), removed_median, removed_q10, removed_q90, erase_share (share of
        counted queries removing at least min_removed), self_attention, sink_attention,
        removed_self, removed_sink, n_queries, score, z (the OV screen), copy_suppression,
        neg_eig_share, reason (short words). ``attrs``: verdicts (counts), null_mean, null_std,
        null_pairs (the screen's cross-head null), n_tokens_data, n_sinks, sink_ratio, cuts, data.
    Raises:
        IndexOutOfRangeError: a layer out of range.
        ValueError: raw processing; data from another model or without every layer.
    Examples:
        >>> import interp
        >>> list(find_deleting_heads(interp.load(), ["def f(x):\\n    return x\\n"] * 4).columns[:4])
        ['layer', 'head', 'label', 'verdict']
    """
    require_compat(model, "find_deleting_heads")
    c = model.cfg
    layers = check_indices("layers", layers, c.n_layers, "layer")
    n_tokens = check_int("n_tokens", n_tokens)
    if n_tokens < 0:
        raise ValueError(f"n_tokens={n_tokens!r} must be a non-negative int (0 skips copy_suppression)")
    seed = check_int("seed", seed)
    min_removed = check_float("min_removed", min_removed, minimum=0, min_open=True)
    max_removed = check_float("max_removed", max_removed)
    if not max_removed > min_removed:
        raise ValueError(f"max_removed={max_removed!r} must exceed min_removed={min_removed!r}, e.g. 1.5")
    sink_ratio = check_float("sink_ratio", sink_ratio, minimum=1, min_open=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    n_ctx = check_int("n_ctx", n_ctx, minimum=2)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    cuts = Cuts(min_removed=min_removed, max_removed=max_removed, partial=min(PARTIAL, min_removed / 2))
    n_ctx = min(n_ctx, c.n_ctx)
    batches = records(model, data, max_tokens=max_tokens, n_ctx=n_ctx, batch_size=batch_size, progress=False,
                      what="find_deleting_heads")
    meas = measure_heads(model, batches, layers, cuts, sink_ratio=sink_ratio)
    if meas.n_tokens == 0:
        raise ValueError(f"data={data!r:.80} yielded no tokens; pass longer texts, tokens or a ResidualWrites")
    null_mean, null_std, null_pairs = cross_head_null(model, seed=seed)
    tokens = None
    if n_tokens:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.arange(c.d_vocab) if c.d_vocab <= n_tokens else torch.randperm(c.d_vocab, generator=g)[:n_tokens]
        tokens = tokens.to(model.device)
        stats = _unembed_stats(model, seed=seed)
    rows = []
    for ly in layers:
        W_V, W_O = _head_weights(model, ly)
        score, neg = ov_eigen_score(W_V, W_O)
        cs = (copy_suppression(model, ly, tokens, stats) if tokens is not None
              else torch.full((c.n_heads,), float("nan")))
        t, o, s = meas.total[ly], meas.own[ly], meas.sink[ly]
        for h in range(c.n_heads):
            rows.append(dict(
                layer=ly, head=h, label=f"L{ly}H{h}", verdict=str(t.verdict[h]), removed_median=t.median[h],
                removed_q10=t.q10[h], removed_q90=t.q90[h], erase_share=t.erase_share[h],
                self_attention=float(meas.self_attention[ly][h]), sink_attention=float(meas.sink_attention[ly][h]),
                removed_self=o.median[h], removed_sink=s.median[h], n_queries=int(t.n[h]),
                score=float(score[h]), neg_eig_share=float(neg[h]), copy_suppression=float(cs[h]),
            ))
    df = pd.DataFrame(rows)
    df["z"] = (df["score"] - null_mean) / null_std
    df["flagged"] = df["verdict"] == "deleting"
    df["reason"] = [_reason(r) for r in df.itertuples()]
    undefined_rows(df, ["removed_median"], "find_deleting_heads",
                   "the part of the stream the head reads is zero on the data (constant or zero weights, or no "
                   "room for a direction such as d_model=1 under LayerNorm): no verdict on data", refuse_all=False)
    df = df.astype({"layer": np.int64, "head": np.int64, "n_queries": np.int64})[COLUMNS]
    df["_order"] = df["verdict"].map({v: i for i, v in enumerate(VERDICTS)})
    df = df.sort_values(["_order", "removed_median", "layer", "head"], ascending=[True, False, True, True],
                        kind="stable", na_position="last").drop(columns="_order").reset_index(drop=True)
    df.attrs.update(
        processing=c.processing, verdicts={v: int((df["verdict"] == v).sum()) for v in VERDICTS},
        null="cross-head" if null_pairs else "gaussian", null_mean=null_mean, null_std=null_std,
        null_pairs=null_pairs, n_heads=len(df), copy_suppression_tokens=0 if tokens is None else len(tokens),
        n_tokens_data=meas.n_tokens, n_queries=meas.n_queries, n_sinks=meas.n_sinks, sink_ratio=sink_ratio,
        min_removed=min_removed, max_removed=max_removed, data=describe(data, max_tokens),
        flagged="verdict 'deleting': the median counted query loses at least min_removed of the stream's part "
                "that the head reads",
    )
    return df
