"""Deleting heads on data: per query token, how much of what a head reads its write removes,
where it read it, and the attention-sink positions kept apart.

For head ``h`` of layer ``l`` at query ``q``, with ``x`` the stream it reads and writes at
(``resid_pre[l]``), ``w = z @ W_O[h]`` its write and ``P`` the projector onto the directions of
the stream the head reads (the column space of its ``W_V``, the norm's gain folded in: its
value depends on ``x`` only through ``P x``)::

    removed       r = -(w . P x) / |P x|^2
    removed_self      the same with only the own position's term of the write,
                      A[q, q] * (norm(x_q) @ W_V + b_V) @ W_O
    removed_sink      the same with only the sink keys' terms

``r = 1``: the write erases what the head reads of the stream at that token; 0: leaves it;
``< 0``: adds to it. ``removed_self``
says how much of it is the head reading its own position and writing minus it (an erasure of
what it read there); the rest comes from what it read at other positions.

**Sinks.** A position whose stream norm at the head's layer is at least ``sink_ratio`` times
the batch's median token norm (a massive activation; Sun et al. 2024), and position 0 of every
row (the first token can only attend to itself), are sink positions: never counted as queries,
so a sink's outsized norm cannot decide a ratio; the attention they receive is reported
(``sink_attention``) and their part of the write is ``removed_sink``.

Attention comes from ``interp.attention_patterns`` (the checkpoint's eager attention); the
stream and writes from the record, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.memory.verdict import Cuts, Summary, add_tokens, removal_histogram, summarise
from interp.stats.base import Sums
from interp.tokens import Tokens

#: A position is a sink when its stream norm is at least this many times the median token's.
SINK_RATIO = 10.0


@dataclass
class HeadMeasure:
    """Per measured layer ``[n_heads]``: removal summaries (total, own-position part, sink
    part) and the mean attention to the own position and to sinks over counted queries."""

    total: dict[int, Summary]
    own: dict[int, Summary]
    sink: dict[int, Summary]
    self_attention: dict[int, np.ndarray]
    sink_attention: dict[int, np.ndarray]
    n_queries: dict[int, int]
    n_tokens: int
    n_sinks: dict[int, int]


def read_space(W_V: Tensor) -> list[Tensor]:
    """Orthonormal bases ``[d_model, rank]`` of what each head reads (the column space of
    ``W_V [head, d_model, d_head]``), rank cut at ``d_model * eps * s_max``."""
    out = []
    for Wh in W_V.double():
        U, S, _ = torch.linalg.svd(Wh, full_matrices=False)
        keep = S > S.max().clamp_min(1e-300) * Wh.shape[0] * torch.finfo(torch.float64).eps
        out.append(U[:, keep])
    return out


def normed(x: Tensor, normalization: str, eps: float) -> Tensor:
    """The block's input norm without its (folded) gain: ``[..., d_model]``."""
    if normalization.startswith("LN"):
        x = x - x.mean(-1, keepdim=True)
    if normalization.startswith(("LN", "RMS")):
        return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x


def sink_positions(x: Tensor, mask: Tensor, ratio: float) -> Tensor:
    """``[batch, pos]`` bool: position 0 of every row, and real tokens whose norm is at least
    ``ratio`` times the median real token's. ``x``: ``[batch, pos, d_model]``."""
    norm = torch.linalg.vector_norm(x, dim=-1)
    med = norm[mask].median()
    sink = (norm >= ratio * med) & mask
    sink[:, 0] = mask[:, 0]
    return sink


def _layer_ratios(model: Any, w: Any, layers: list[int], sink_ratio: float) -> Any:
    """Yield, per layer of ``layers`` for record ``w``: ``(layer, {"total", "own", "sink"}: r
    [n, H], attention to the own position [n, H], attention to sinks [n, H], counted [b, pos],
    sink [b, pos])``, ``n`` the counted queries in row-major order (float64)."""
    from interp.heads.patterns import for_each_pattern

    c, ws = model.cfg, model.write_weights
    dt, H = torch.float64, c.n_heads
    group = c.n_heads // c.n_kv_heads
    W_V = model.weights.W_V.to(dt)  # [layer, kv, d_model, d_head]
    b_V = model.weights.b_V
    pats: dict[int, Tensor] = {}
    for_each_pattern(model, Tokens(w.tokens, w.mask), layers, pats.__setitem__)
    dev = model.device
    mask = w.mask.to(dev)
    x = (w.embed + (w.pos_embed if w.pos_embed is not None else 0)).to(dev, dt)
    for ly in range(max(layers) + 1):
        z = w.write_z(ly).to(dev, dt)  # [b, pos, H, dh], over the post-norm scale
        s = w.scale(ly, "attn")  # post-norm: every part of a head's write is over its query's scale
        inv = 1 if s is None else 1 / s.to(dev, dt)[..., None]  # [b, q, 1, 1]
        W_O = ws.W_O[ly].to(dt)
        if ly in pats:
            sink = sink_positions(x, mask, sink_ratio)
            counted = mask & ~sink
            A = pats[ly].to(dev, dt)  # [b, H, q, k]
            xn = normed(x, c.normalization, c.eps)
            bv = 0 if b_V is None else b_V[ly].to(dt)
            if b_V is not None and bv.shape[0] != H:  # one per kv head: expand to the query heads
                bv = bv.repeat_interleave(group, 0)
            v = torch.einsum("bpd,kde->bpke", xn, W_V[ly]).repeat_interleave(group, 2) + bv  # [b, k, H, dh]
            diag = torch.diagonal(A, dim1=-2, dim2=-1).permute(0, 2, 1)  # [b, q, H]
            at_sink = A * sink[:, None, None, :].to(dt)
            parts = {"total": z, "own": diag[..., None] * v * inv,
                     "sink": torch.einsum("bhqk,bkhe->bqhe", at_sink, v) * inv}
            bases = read_space(W_V[ly].repeat_interleave(group, 0))
            Px = torch.stack([(x @ Q) @ Q.T for Q in bases], 2)  # [b, q, H, d]: what each head reads of x
            OPx = torch.einsum("hed,bphd->bphe", W_O, Px)  # W_O[h] (P_h x), [b, q, H, dh]
            px2 = Px.pow(2).sum(-1)  # |P_h x|^2
            ratios = {k: (-(p * OPx).sum(-1) / px2)[counted] for k, p in parts.items()}
            yield ly, ratios, diag[counted], at_sink.sum(-1).permute(0, 2, 1)[counted], counted, sink
        x = x + z.flatten(2) @ W_O.flatten(0, 1) + w.bias_write(ly, "attn").to(dev, dt)
        x = x + w.write_acts(ly).to(dev, dt) @ ws.W_out[ly].to(dt) + w.bias_write(ly, "mlp").to(dev, dt)


def head_removal(model: Any, writes: Any, layer: int, *, sink_ratio: float = SINK_RATIO) -> dict[str, Tensor]:
    """Per counted query of ``writes`` (row-major; sinks and position 0 left out) for every head
    of ``layer``: ``total``, ``own``, ``sink`` removals and ``self_attention``,
    ``sink_attention`` (each ``[n, head]``), and ``counted`` ``[batch, pos]``: the numbers whose
    distributions ``find_deleting_heads`` summarises."""
    from interp._checks import check_index

    layer = check_index("layer", layer, model.cfg.n_layers, "layer")
    ly, ratios, diag, at_sink, counted, _ = next(iter(_layer_ratios(model, writes, [layer], sink_ratio)))
    return dict(ratios, self_attention=diag, sink_attention=at_sink, counted=counted)


def measure_heads(model: Any, batches: Any, layers: list[int], cuts: Cuts, *, sink_ratio: float = SINK_RATIO
                  ) -> HeadMeasure:
    """Removal distributions and attention of every head in ``layers`` over ``batches``."""
    c = model.cfg
    H = c.n_heads
    hist = {k: {ly: removal_histogram(H, cuts) for ly in layers} for k in ("total", "own", "sink")}
    sums = Sums(n_tok=(), **{f"nq{ly}": () for ly in layers}, **{f"nsink{ly}": () for ly in layers},
                **{f"self{ly}": (H,) for ly in layers},
                **{f"sinkatt{ly}": (H,) for ly in layers})
    for w in batches:
        sums.n_tok += float(w.mask.sum())
        for ly, ratios, diag, at_sink, counted, sink in _layer_ratios(model, w, layers, sink_ratio):
            sums.tensors[f"nq{ly}"] += float(counted.sum())
            sums.tensors[f"nsink{ly}"] += float(sink.sum())
            for key, r in ratios.items():
                add_tokens(hist[key][ly], r.cpu(), torch.ones_like(r, dtype=torch.bool).cpu())
            sums.tensors[f"self{ly}"] += diag.sum(0).cpu()
            sums.tensors[f"sinkatt{ly}"] += at_sink.sum(0).cpu()
    for k in hist.values():
        for h in k.values():
            h.all_reduce()
    sums.all_reduce()
    nq = {ly: max(float(sums.tensors[f"nq{ly}"]), 1.0) for ly in layers}
    return HeadMeasure(
        total={ly: summarise(h, cuts) for ly, h in hist["total"].items()},
        own={ly: summarise(h, cuts) for ly, h in hist["own"].items()},
        sink={ly: summarise(h, cuts) for ly, h in hist["sink"].items()},
        self_attention={ly: (sums.tensors[f"self{ly}"] / nq[ly]).numpy() for ly in layers},
        sink_attention={ly: (sums.tensors[f"sinkatt{ly}"] / nq[ly]).numpy() for ly in layers},
        n_queries={ly: int(float(sums.tensors[f"nq{ly}"])) for ly in layers}, n_tokens=int(float(sums.n_tok)),
        n_sinks={ly: int(float(sums.tensors[f"nsink{ly}"])) for ly in layers},
    )
