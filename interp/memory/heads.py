"""Deleting heads: heads that erase what they read, judged on weights and on data.

A head reads the stream at the positions it attends to and writes ``z @ W_O`` at its own
position. Its OV circuit ``W_V @ W_O`` having negative eigenvalues says it writes minus
*what it reads*; that is erasure only when what it reads is also in the stream where it
writes (it attends to itself, or to a position whose content is present at its own) and the
write then cancels it. So the verdict needs all of:

1. ``z >= z_threshold``: the OV eigenvalue ``score`` beats the **cross-head null**, the same
   score for mismatched pairs (``W_V`` of one head with ``W_O`` of a head of another layer
   or kv group) of the same model's trained weights. It keeps each matrix's spectrum and the
   stream's shared directions and breaks only the pairing (centre and scale: median and
   1.4826 MAD of the pairs' scores), so trained weights can fail to beat it (a Gaussian null of the same shape cannot be failed: trained heads' scores spread
   over tens of its standard deviations). Bonferroni over the heads tested, normal tail.
2. ``read_overlap >= min_overlap``: on data, the cosine between what the head read
   (``z_q``, the attention-weighted values) and the value of its own position
   (``norm(x_q) @ W_V``), averaged over tokens. 1 for a head attending to itself.
3. ``min_removed <= removed_fraction <= max_removed``: on data, ``deletion_evidence``'s
   measured removal (the same formula): of the stream's component along minus the head's
   write, the part the write removes. Negative: it amplifies. Above 1 the write overshoots
   and leaves the opposite component behind; well above (default 1.5) it writes a signal of
   its own rather than erasing one, and is not flagged.
4. not a copying head: ``copy_suppression > -copy_cut``. A head that raises its attended
   token's own logit (``copy_suppression`` near -1, e.g. an induction head) is never flagged.

``copy_suppression`` (after McDougall et al. 2023): for sampled tokens ``t``, where the
full OV circuit ``W_E[t] W_V W_O W_U`` ranks ``t``'s own logit, mapped to ``[-1, 1]`` (+1: every
token's own logit pushed down the most). The rank is read through the ``d_head`` bottleneck
with a Gaussian approximation, ``1 - 2 Phi((own - mean) / std)`` over the vocabulary, the mean
and covariance of ``W_U``'s columns taken once (from 4,096 sampled columns on a larger
vocabulary); no ``[tokens, vocab]`` matrix is formed.

Limits: the data verdict is about the tokens given (default: 512 tokens of held-out stdlib
text); a head that erases only in contexts the data lack is missed, and ``removed_fraction``
measures the stream along the head's own write, not a particular feature (use
``deletion_evidence`` with a subspace for that). Weights-only ``copy_suppression`` ignores
the norms between embedding and head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_float, check_indices, check_int
from interp._threads import with_analysis_threads
from interp.memory.neurons import FALSE_POSITIVES
from interp.memory.null import normal_upper_quantile, ov_eigen_score, ov_score_null
from interp.tokens import Tokens
from interp.writes import ResidualWrites

#: On data, a deleting head removes at least MIN_REMOVED of the component it reads and at most
#: MAX_REMOVED (beyond that it overshoots: it writes the opposite direction back).
MIN_REMOVED, MAX_REMOVED = 0.3, 1.5
COLUMNS = ["layer", "head", "label", "score", "z", "flagged", "removed_fraction", "read_overlap",
           "copy_suppression", "firing_rate", "neg_eig_share", "reason"]


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


def _records(model: Any, data: Any, max_tokens: int, n_ctx: int, batch_size: int):
    from interp.memory.evidence import _batches

    if data is None:
        return model.stream_writes("stdlib:val", batch_size=batch_size, n_ctx=min(n_ctx, model.cfg.n_ctx),
                                   max_tokens=max_tokens, progress=False)
    if isinstance(data, (Tokens, torch.Tensor)):
        return [model.run_with_writes(data)]
    return _batches(model, data, dict(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=False))


class _DataSums:
    """Per-head sums over tokens for ``removed_fraction``, ``firing_rate`` and ``read_overlap``."""

    def __init__(self, layers: Sequence[int], H: int):
        z = lambda: {ly: torch.zeros(H, dtype=torch.float64) for ly in layers}  # noqa: E731
        self.rem_num, self.rem_den, self.fire, self.overlap = z(), z(), z(), z()
        self.n_tok, self.n_read = 0, 0

    def add(self, model: Any, w: ResidualWrites, layers: set[int]) -> None:
        c, ws = model.cfg, model.write_weights
        m = w.mask.to(w.embed.device)
        dt = torch.float64 if c.dtype == torch.float64 else torch.float32
        later = torch.ones_like(m)
        later[:, 0] = False  # position 0 can only read itself
        rd = later[m].to(model.device)
        x = (w.embed + (w.pos_embed if w.pos_embed is not None else 0))[m].to(model.device, dt)
        self.n_tok += x.shape[0]
        self.n_read += int(rd.sum())
        for ly in range(max(layers) + 1):
            z = w.z[ly][m].to(model.device, dt)  # [n, H, r]
            W_O = ws.W_O[ly].to(dt)
            if ly in layers:
                xw = torch.einsum("nd,hrd,nhr->nh", x, W_O, z)  # x . write
                G = W_O @ W_O.transpose(-1, -2)
                norm = torch.einsum("nhr,hrs,nhs->nh", z, G, z).clamp_min(0).sqrt()
                before = -xw / norm.clamp_min(1e-30)  # x . (-write / |write|)
                fire = (norm > 0).to(dt)
                self.rem_num[ly] += (norm * before.sign() * fire).double().sum(0).cpu()
                self.rem_den[ly] += (before.abs() * fire).double().sum(0).cpu()
                self.fire[ly] += (before > 0).double().sum(0).cpu()
                xn = x - x.mean(-1, keepdim=True) if c.normalization.startswith("LN") else x
                xn = xn / (xn.pow(2).mean(-1, keepdim=True) + c.eps).sqrt()
                W_V = model.weights.W_V[ly].to(dt)  # [kv, d_model, d_head]
                v = torch.einsum("nd,kdr->nkr", xn, W_V).repeat_interleave(c.n_heads // W_V.shape[0], dim=1)
                cos = torch.nn.functional.cosine_similarity(z, v, dim=-1, eps=1e-30)  # [n, H]
                self.overlap[ly] += cos[rd].double().sum(0).cpu()
            x = x + z.flatten(1) @ W_O.flatten(0, 1) + ws.b_O[ly].to(dt)
            x = x + w.acts[ly][m].to(model.device, dt) @ ws.W_out[ly].to(dt) + ws.b_out[ly].to(dt)


def _reason(r: Any, z_star: float, min_removed: float, max_removed: float, min_overlap: float,
            copy_cut: float) -> str:
    facts = (f"removed_fraction {r.removed_fraction:.2f}, read_overlap {r.read_overlap:.2f}, OV z {r.z:.1f}, "
             f"copy_suppression {r.copy_suppression:+.2f}")
    if r.flagged:
        return "deleting: " + facts
    why = []
    if r.copy_suppression <= -copy_cut:
        why.append("copies its attended token")
    if r.removed_fraction > max_removed:
        why.append(f"overshoots: writes {r.removed_fraction:.1f}x the component it reads, a write of its own")
    elif not r.removed_fraction >= min_removed:
        why.append("does not erase on the data" if r.removed_fraction < 0.05 else "erases too little on the data")
    if not r.read_overlap >= min_overlap:
        why.append("reads another position's content")
    if not r.z >= z_star:
        why.append("OV circuit within the cross-head null")
    return "not deleting (" + "; ".join(why) + "): " + facts


@with_analysis_threads
def find_deleting_heads(
    model: Any,
    data: Any = None,
    *,
    layers: Sequence[int] | int | None = None,
    false_positives: float = FALSE_POSITIVES,
    min_removed: float = MIN_REMOVED,
    max_removed: float = MAX_REMOVED,
    min_overlap: float = 0.5,
    copy_cut: float = 0.3,
    n_tokens: int = 1024,
    max_tokens: int = 512,
    n_ctx: int = 128,
    batch_size: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    """Every head, with the evidence that it erases what it reads; deleting heads first.

    Args:
        model: an ``interp.Model`` with ``processing="compat"``.
        data: what to measure on: ``ResidualWrites`` (or a list), texts, a LongTensor / ``Tokens``
            batch, or a corpus for ``stream_writes``; default ``max_tokens`` tokens of
            ``"stdlib:val"`` in rows of ``n_ctx``.
        layers: layers to test (default all; negative indices count from the end).
        false_positives: expected heads past ``z_threshold`` under the cross-head null.
        min_removed / max_removed / min_overlap / copy_cut: the verdict's cut-offs (module
            docstring).
        n_tokens: tokens sampled (seeded) for ``copy_suppression``; 0 skips it (NaN, and the
            copying check is then not applied).
        max_tokens / n_ctx / batch_size: the default data's size.
    Returns:
        One row per head, flagged first, then by ``removed_fraction``: layer:int, head:int,
        label:str ("L1H3"), score:float (OV eigenvalue signature in [-1, 1]), z:float
        (against the cross-head null), flagged:bool, removed_fraction:float,
        read_overlap:float, copy_suppression:float, firing_rate:float, neg_eig_share:float,
        reason:str (the verdict in words, with its numbers). ``attrs``: null ("cross-head"),
        null_mean, null_std, null_pairs, z_threshold, false_positives, n_heads, n_tokens_data,
        min_removed, max_removed, min_overlap, copy_cut.
    Raises:
        IndexOutOfRangeError: a layer out of range.
        ValueError: raw processing; data from another model or without every layer.
    Examples:
        >>> import interp
        >>> list(find_deleting_heads(interp.load()).columns[:4])
        ['layer', 'head', 'label', 'score']
    """
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    c = model.cfg
    if c.processing != "compat":
        raise ValueError(f"model has processing={c.processing!r}; find_deleting_heads reads the folded weights "
                         "and the recorded stream in the compat convention: reload with "
                         "interp.load(..., processing='compat')")
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
    min_removed = check_float("min_removed", min_removed)
    max_removed = check_float("max_removed", max_removed)
    if not max_removed > min_removed:
        raise ValueError(f"max_removed={max_removed!r} must exceed min_removed={min_removed!r}, e.g. 1.5")
    min_overlap = check_float("min_overlap", min_overlap, minimum=-1, maximum=1)
    copy_cut = check_float("copy_cut", copy_cut, minimum=0, maximum=1)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    n_ctx = check_int("n_ctx", n_ctx, minimum=2)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    null_mean, null_std, null_pairs = cross_head_null(model, seed=seed)
    z_star = normal_upper_quantile(false_positives / n_total)
    tokens = None
    if n_tokens:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.arange(c.d_vocab) if c.d_vocab <= n_tokens else torch.randperm(c.d_vocab, generator=g)[:n_tokens]
        tokens = tokens.to(model.device)
        stats = _unembed_stats(model, seed=seed)
    sums = _DataSums(layers, c.n_heads)
    for w in _records(model, data, max_tokens, n_ctx, batch_size):
        if not isinstance(w, ResidualWrites):
            raise TypeError(f"data yielded a {type(w).__name__}; pass ResidualWrites, texts, tokens or a corpus")
        if w.model_id != model.model_id:
            from interp.errors import ModelMismatchError

            raise ModelMismatchError(f"data holds writes recorded on {w.meta['model_name']!r}, not on model="
                                     f"{c.name!r}; record them with this model's run_with_writes")
        if w.layers != list(range(c.n_layers)):
            raise ValueError(f"data records layers {w.layers}; find_deleting_heads needs all {c.n_layers}: "
                             "run run_with_writes with layers=None")
        sums.add(model, w, set(layers))
    if sums.n_tok == 0:
        raise ValueError(f"data={data!r:.80} yielded no tokens; pass longer texts, tokens or a ResidualWrites")
    rows = []
    for ly in layers:
        W_V, W_O = _head_weights(model, ly)
        score, neg = ov_eigen_score(W_V, W_O)
        cs = (copy_suppression(model, ly, tokens, stats) if tokens is not None
              else torch.full((c.n_heads,), float("nan")))
        rem = sums.rem_num[ly] / sums.rem_den[ly].clamp_min(1e-300)
        for h in range(c.n_heads):
            rows.append(dict(
                layer=ly, head=h, label=f"L{ly}H{h}", score=float(score[h]), neg_eig_share=float(neg[h]),
                copy_suppression=float(cs[h]), removed_fraction=float(rem[h]) if sums.rem_den[ly][h] > 0 else float("nan"),
                firing_rate=float(sums.fire[ly][h]) / sums.n_tok,
                read_overlap=float(sums.overlap[ly][h]) / max(sums.n_read, 1),
            ))
    df = pd.DataFrame(rows)
    df["z"] = (df["score"] - null_mean) / null_std
    copies = df["copy_suppression"].to_numpy() <= -copy_cut  # NaN: False
    df["flagged"] = ((df["z"].to_numpy() >= z_star) & (df["read_overlap"].to_numpy() >= min_overlap)
                     & (df["removed_fraction"].to_numpy() >= min_removed)
                     & (df["removed_fraction"].to_numpy() <= max_removed) & ~copies)
    df["reason"] = [_reason(r, z_star, min_removed, max_removed, min_overlap, copy_cut) for r in df.itertuples()]
    df = df.astype({"layer": np.int64, "head": np.int64})[COLUMNS]
    df = df.sort_values(["flagged", "removed_fraction", "layer", "head"], ascending=[False, False, True, True],
                        kind="stable", na_position="last").reset_index(drop=True)
    df.attrs.update(
        processing=c.processing, null="cross-head" if null_pairs else "gaussian", null_mean=null_mean, null_std=null_std, null_pairs=null_pairs,
        z_threshold=z_star, false_positives=float(false_positives), n_heads=n_total,
        copy_suppression_tokens=0 if tokens is None else len(tokens), n_tokens_data=sums.n_tok,
        min_removed=min_removed, max_removed=max_removed, min_overlap=min_overlap, copy_cut=copy_cut,
        data="given" if data is not None else f"stdlib:val, {max_tokens} tokens",
    )
    return df

