"""Attention sinks and massive activations (Sun et al. 2024, "Massive activations in large
language models").

A few tokens (the first position, often delimiters) carry a residual stream whose norm is
orders of magnitude above the median token's, concentrated in a few dimensions, from some
layer on; heads put much of their attention there and read little from it. Measured on data:

- per layer (the stream entering it; ``layer == n_layers``: the final stream), per token: its
  norm over the layer's median token norm (``norm_ratio``), and its largest dimension over the
  median ``|x|`` of all entries (``dim_ratio``, Sun et al.'s criterion for a massive activation);
- a token is **massive** at a layer when ``norm_ratio >= sink_ratio`` (default 10);
- tokens are grouped by where they are: ``"position 0"`` (the first position of a row), or the
  token's text elsewhere; position 0 is always reported, massive or not;
- the attention each layer's heads put on the group (mean over heads and over queries that are
  not themselves sinks), and the head that puts the most.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from interp._checks import check_float, check_int
from interp._degenerate import undefined_rows
from interp._threads import with_analysis_threads
from interp.memory.data import describe, records, require_compat
from interp.memory.head_data import SINK_RATIO
from interp.tokens import Tokens

COLUMNS = ["layer", "sink", "token", "n", "share", "norm", "norm_ratio", "dim", "dim_value", "dim_ratio",
           "attention", "top_head", "top_head_attention", "massive"]


class _Group:
    def __init__(self, H: int):
        self.n = 0
        self.total = 0
        self.norms: list[float] = []
        self.dims: list[int] = []
        self.vals: list[float] = []
        self.dim_ratios: list[float] = []
        self.tokens: dict[str, int] = {}
        self.att = np.zeros(H)
        self.nq = 0
        self.quiet: list[float] = []  # norm ratios of a position 0 that is not massive


@with_analysis_threads
def attention_sinks(
    model: Any,
    data: Any = None,
    *,
    sink_ratio: float = SINK_RATIO,
    max_tokens: int = 1024,
    n_ctx: int = 128,
    batch_size: int = 4,
) -> pd.DataFrame:
    """Massive activations and the attention they draw, layer by layer.

    Args:
        model: an ``interp.Model`` (``processing="compat"``).
        data: records, texts, a token batch or a corpus (default ``max_tokens`` tokens of
            ``"stdlib:val"`` in rows of ``n_ctx``).
        sink_ratio: a token is massive when its stream norm is at least this many times the
            layer's median token norm.
    Returns:
        One row per (layer, sink group), layers in order, position 0 first: layer (the stream
        entering it; ``n_layers``: the final stream), sink ("position 0" or the token's repr),
        token (the most frequent token there), n (massive occurrences), share (of the group's
        occurrences that are massive), norm (median norm of the massive ones; of all, for a
        position 0 that is not massive), norm_ratio (over the layer's median token norm), dim
        (the most frequent largest dimension), dim_value (its median value), dim_ratio (largest
        ``|x_d|`` over the median ``|x|`` of every entry), attention (mean attention the
        layer's heads put on the group, over non-sink queries; NaN for the final stream),
        top_head / top_head_attention, massive (n > 0). ``attrs``: first_layer (per group, the
        first layer where it is massive), median_norm (per layer), n_tokens_data, sink_ratio.
    Examples:
        >>> import interp
        >>> df = attention_sinks(interp.load(), ["def f(x):\\n    return x\\n"] * 4)
        >>> df.iloc[0]["sink"]
        'position 0'
    """
    from interp.heads.patterns import for_each_pattern

    require_compat(model, "attention_sinks")
    sink_ratio = check_float("sink_ratio", sink_ratio, minimum=1, min_open=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    n_ctx = min(check_int("n_ctx", n_ctx, minimum=2), model.cfg.n_ctx)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    c = model.cfg
    L, H = c.n_layers, c.n_heads
    groups: list[dict[str, _Group]] = [{} for _ in range(L + 1)]
    medians: list[list[float]] = [[] for _ in range(L + 1)]
    n_tok = 0
    names: dict[str, int] = {"position 0": 0}
    for w in records(model, data, max_tokens=max_tokens, n_ctx=n_ctx, batch_size=batch_size, progress=False,
                     what="attention_sinks"):
        pats: dict[int, torch.Tensor] = {}
        for_each_pattern(model, Tokens(w.tokens, w.mask), list(range(L)), pats.__setitem__)
        mask = w.mask.cpu()
        n_tok += int(mask.sum())
        strs = w.str_tokens
        ids = torch.full(mask.shape, -1, dtype=torch.long)
        for b in range(mask.shape[0]):
            for p in range(mask.shape[1]):
                if mask[b, p]:
                    key = "position 0" if p == 0 else repr(strs[b][p])  # quoted: whitespace stays visible
                    ids[b, p] = names.setdefault(key, len(names))
        counts = torch.bincount(ids[mask], minlength=len(names))
        stream = w.accumulated_resid().double()  # [L + 1, b, pos, d]
        for ly in range(L + 1):
            x = stream[ly]
            norm = torch.linalg.vector_norm(x, dim=-1)
            med = float(norm[mask].median())
            medians[ly].append(med)
            entry_med = float(x[mask].abs().median())
            massive = (norm >= sink_ratio * med) & mask
            member = massive.clone()
            member[:, 0] = mask[:, 0]  # position 0 is always reported
            counted = mask & ~member
            amax = x.abs().argmax(-1)
            for gid in torch.unique(ids[member]).tolist():
                key = next(k for k, v in names.items() if v == gid)
                g = groups[ly].setdefault(key, _Group(H))
                g.total += int(counts[gid]) if gid < len(counts) else 0
                sel = member & (ids == gid)
                big = sel & massive
                g.n += int(big.sum())
                r = (norm / med)[big if bool(big.any()) else sel]
                (g.norms if bool(big.any()) else g.quiet).extend(r.tolist())
                for b, p in zip(*torch.nonzero(big, as_tuple=True)):
                    d = int(amax[b, p])
                    g.dims.append(d)
                    g.vals.append(float(x[b, p, d]))
                    g.dim_ratios.append(abs(float(x[b, p, d])) / max(entry_med, 1e-300))
                    t = strs[int(b)][int(p)]
                    g.tokens[t] = g.tokens.get(t, 0) + 1
                if ly < L:
                    a = (pats[ly].double() * sel[:, None, None, :]).sum(-1).permute(0, 2, 1)[counted]  # [n, H]
                    g.att += a.sum(0).numpy()
                    g.nq += int(counted.sum())
    rows = []
    first: dict[str, int] = {}
    for ly in range(L + 1):
        med = float(np.median(medians[ly])) if medians[ly] else float("nan")
        items = sorted(groups[ly].items(), key=lambda kv: (kv[0] != "position 0", -kv[1].n, kv[0]))
        for key, g in items:
            if key != "position 0" and g.n == 0:
                continue
            ratios = g.norms or g.quiet
            att = g.att / max(g.nq, 1) if ly < L else np.full(H, np.nan)
            top = int(np.nanargmax(att)) if ly < L else -1
            if g.n and key not in first:
                first[key] = ly
            rows.append(dict(
                layer=ly, sink=key, token=max(g.tokens, key=g.tokens.get) if g.tokens else "",
                n=g.n, share=g.n / max(g.total, 1), norm=float(np.median(ratios)) * med,
                norm_ratio=float(np.median(ratios)),
                dim=int(np.bincount(g.dims).argmax()) if g.dims else -1,
                dim_value=float(np.median(g.vals)) if g.vals else float("nan"),
                dim_ratio=float(np.median(g.dim_ratios)) if g.dim_ratios else float("nan"),
                attention=float(np.nanmean(att)) if ly < L else float("nan"),
                top_head=f"L{ly}H{top}" if ly < L else "", top_head_attention=float(att[top]) if ly < L else float("nan"),
                massive=g.n > 0,
            ))
    df = undefined_rows(pd.DataFrame(rows, columns=COLUMNS), ["norm"], "attention_sinks", "the residual stream is exactly zero (degenerate weights: constant, zero, or no room for a direction such as d_model=1 under LayerNorm): its norms and their ratios are 0 / 0")
    df.attrs.update(first_layer=first, median_norm={ly: float(np.median(m)) for ly, m in enumerate(medians) if m},
                    n_tokens_data=n_tok, sink_ratio=sink_ratio, data=describe(data, max_tokens))
    return df
