"""Reading the stream through the final norm and the unembedding.

``logit_attribution`` (direct logit attribution) splits a logit, or a logit difference,
into one additive contribution per write. ``logit_lens`` reads every partial stream as if
it were the last. Both are pure functions of a ``ResidualWrites`` and return long-format
DataFrames, one row per real (not padded) position.

Examples:
    >>> w = model.run_with_writes("def add(a, b):\\n    return a + b")
    >>> dla = logit_attribution(w, by="head")  # the actual next token at every position
    >>> logit = dla.groupby("pos").attribution.sum()  # the logit at each position (pre-cap if capped)
    >>> lens = logit_lens(w, k=3)
    >>> lens.columns[:5].tolist()
    ['layer', 'where', 'batch', 'pos', 'token']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_choice, check_int
from interp._components import (
    Group,
    Table,
    at,
    centres,
    check_top_k,
    check_writes,
    decoder,
    final_norm,
    frame,
    groups,
    has_norm,
    recomputed_scale,
    selected,
    stamp,
    stream_at,
    stream_layer,
    streams,
    token_categorical,
    token_id,
)
from interp.config import soft_cap
from interp.writes import ResidualWrites

LN_SCALE = ("frozen", "recompute")


def logit_attribution(
    writes: ResidualWrites,
    target: Any = None,
    *,
    by: str = "component",
    ln_scale: str = "frozen",
    top_k: int | None = None,
    layer: int | None = None,
    model: Any = None,
) -> pd.DataFrame:
    """Each write's direct contribution to a logit (or a logit difference) at every position.

    A write ``c`` contributes ``norm(c) . W_U[:, t]``, where ``norm`` is the final norm's
    linear part: centring (LayerNorm only), division by the scale, the norm's weight. The
    norm's bias and ``b_U`` form one extra row, ``unembed_bias``; the rows of a position
    then sum to the linear readout ``z`` there (or a difference of two), which is the model's
    own logit except for a soft-capped model (Gemma 2, ``attrs["logit_softcap"]`` not None):
    its logit is ``cap * tanh(z / cap)``, not additive, so the rows are contributions to the
    pre-cap logit ``z``. The cap is monotonic: a larger ``z`` is a larger logit, but the
    logit moves less than ``z`` where ``|z|`` nears the cap. Such a model's unembedding is not
    centred (``interp.load``), so a single logit's rows also carry each write's shift of
    every logit alike; a logit difference ``(correct, incorrect)`` removes it.

    Args:
        writes: from ``model.run_with_writes``; padded positions give no rows.
        target: ``None`` (default): the actual next token at each position (the last
            position of each row has none and gives no rows); a token id or single-token
            string, the same everywhere; a LongTensor ``[batch, pos]`` of per-position ids;
            or a pair ``(correct, incorrect)`` of any of these for the logit difference
            ``correct - incorrect``.
        by: the unit of a row, as in ``decompose``: ``"layer"``, ``"head"``, ``"neuron"`` or
            ``"component"`` (default: every head, bias and neuron).
        ln_scale: ``"frozen"`` (default): divide by the final norm's scale from the forward
            pass, so the attribution is exactly linear and sums to the model's logit.
            ``"recompute"``: the scale of the stream being decomposed, recomputed from the
            writes; the same for the final stream (up to rounding), but with ``layer=`` or
            edited writes the rows then sum to the logit lens's logit at that stream.
        top_k: keep only the ``top_k`` rows of largest ``|attribution|`` per position.
        layer: decompose the stream entering this layer instead of the final stream.
        model: the model the writes came from; checked, and used for token strings.
    Returns:
        One row per (batch, pos, component): the columns of ``decompose`` (component, kind,
        layer, head, neuron, batch, pos, token) plus target (categorical: the correct
        token), ``incorrect`` (only for a pair) and attribution:float. Components also
        include ``unembed_bias`` (kind ``unembed_bias``). ``attrs["logit_softcap"]``: the
        model's final-logit cap (None: the rows sum to the logit itself);
        ``attrs["quantity"]``: ``"logit"`` or ``"pre-cap logit z"``.
    Raises:
        ValueError: a target outside the vocabulary, not a single token, or of the wrong
            shape; no position has a next token; an unknown ``by`` or ``ln_scale``.
    """
    check_writes(writes, model)
    stop = stream_layer(writes, layer)
    check_choice("ln_scale", ln_scale, LN_SCALE)
    top_k = check_top_k(top_k)
    pair = isinstance(target, (tuple, list))
    if pair and len(target) != 2:
        raise ValueError(f"target={target!r} has {len(target)} items; a logit difference takes (correct, incorrect)")
    ids, valid = _targets("target[0]" if pair else "target", target[0] if pair else target, writes, model)
    inc = None
    if pair:
        inc, valid2 = _targets("target[1]", target[1], writes, model)
        valid = valid & valid2
    valid = valid & writes.mask.to(valid.device)
    if not valid.any():
        raise ValueError(
            "target=None asks for the next token, but no position has one (every row is a single "
            "token); pass a longer text or an explicit target"
        )
    if ln_scale == "frozen" and writes.final_scale is None and has_norm(writes):
        raise ValueError("ln_scale='frozen' needs the forward pass's final scale, which these writes lack; "
                         "pass ln_scale='recompute'")
    dev = writes.embed.device
    sel = selected(valid.to(dev))
    t_ids = ids.to(dev)[sel]
    with torch.no_grad():
        u, bias = _readout(writes, t_ids)
        if inc is not None:
            u_inc, b_inc = _readout(writes, inc.to(dev)[sel])
            u, bias = u - u_inc, bias - b_inc
        if has_norm(writes) and centres(writes):
            u = u - u.mean(-1, keepdim=True)  # centring the reader == centring every write
        if ln_scale == "frozen" and has_norm(writes):
            scale = at(writes.final_scale, sel).to(u.dtype)
        else:
            scale = recomputed_scale(writes, stream_at(writes, stop, sel))
        u = u / scale
        table, parts = Table.empty(), []
        for g in groups(writes, by, stop, sel):
            table.add(g)
            parts.append(g.dot(u))
        table.add(Group("unembed_bias", None, ["unembed_bias"]))
        attr = torch.cat(parts + [bias[:, None]], dim=1)
    decode = decoder(writes, model)
    tokens = token_categorical(writes.tokens.to(dev)[sel], decode)
    extra = {"target": token_categorical(t_ids, decode)}
    if inc is not None:
        extra["incorrect"] = token_categorical(inc.to(dev)[sel], decode)
    df = frame(table, sel, tokens, {"attribution": attr}, top_k=top_k, key=attr.abs(), extra=extra)
    cap = writes.logit_softcap
    return stamp(df, writes, by=by, ln_scale=ln_scale, logit_softcap=cap,
                 quantity="logit" if cap is None else "pre-cap logit z")


def _targets(name: str, target: Any, writes: ResidualWrites, model: Any) -> tuple[Tensor, Tensor]:
    """``(ids [batch, pos], valid [batch, pos])`` for one target spec."""
    tokens = writes.tokens
    if target is None:
        ids = torch.zeros_like(tokens)
        ids[:, :-1] = tokens[:, 1:]
        valid = torch.zeros_like(writes.mask)
        valid[:, :-1] = writes.mask[:, 1:]
        return ids, valid
    if isinstance(target, Tensor) and target.dim() > 0:
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"{name} is a {target.dtype} tensor; per-position targets must be integer token ids")
        if tuple(target.shape) != tuple(tokens.shape):
            raise ValueError(
                f"{name} has shape {tuple(target.shape)} but the writes are [batch, pos] = "
                f"{tuple(tokens.shape)}; pass one target id per position"
            )
        d_vocab = writes.weights.W_U.shape[-1]
        bad = (target < 0) | (target >= d_vocab)
        if bad.any():
            raise ValueError(
                f"{name} holds token id {int(target[bad][0])}, outside the vocabulary 0..{d_vocab - 1}; "
                "pass valid token ids"
            )
        return target.long().to(tokens.device), torch.ones_like(writes.mask)
    tid = token_id(name, target, writes, model)
    return torch.full_like(tokens, tid), torch.ones_like(writes.mask)


def _readout(writes: ResidualWrites, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row reader ``[rows, d_model]`` (norm weight times ``W_U`` column) and constant
    ``[rows]`` (norm bias through ``W_U``, plus ``b_U``)."""
    W_U = writes._w(writes.weights.W_U)
    u = W_U[:, ids].T
    const = writes._w(writes.weights.b_U)[ids]
    w, b = writes.weights.ln_final_w, writes.weights.ln_final_b
    if b is not None:
        const = const + writes._w(b) @ W_U[:, ids]
    if w is not None:
        u = u * writes._w(w)
    return u, const


def logit_lens(
    writes: ResidualWrites,
    *,
    where: str = "pre",
    k: int = 5,
    model: Any = None,
    chunk_rows: int | None = None,
) -> pd.DataFrame:
    """What the model would predict if the stream stopped at each layer.

    Each partial stream goes through the final norm with its scale recomputed from that
    stream (the forward pass's final scale would make early layers look uniform), then
    ``W_U`` and ``b_U``, then the model's final-logit soft-cap where it has one
    (``cap * tanh(z / cap)``, Gemma 2; ``interp.config.soft_cap``): the probabilities are those
    the model would give. The cap changes no ranking, only the probabilities.

    Args:
        writes: from ``model.run_with_writes``; padded positions give no rows.
        where: ``"pre"`` (default): entering each layer, plus the final stream as layer
            ``n_layers``; ``"mid"``: after each attention; ``"post"``: after each block;
            ``"all"``: ``pre`` and ``mid`` of every layer, then the final stream.
        k: how many top tokens to list.
        model: the model the writes came from; checked, and used for token strings.
        chunk_rows: positions per chunk of ``[rows, d_vocab]`` logits (default: about 16M
            numbers per chunk).
    Returns:
        One row per (stream, batch, pos): layer:int, where:str, batch:int, pos:int, token
        (categorical), top_token:str and top_prob:float (most probable), top_tokens and
        top_probs (lists of ``k``, most probable first), next_token:str, next_prob:float and
        next_rank (nullable int; 0 = most probable, counting only strictly larger logits)
        for the actual next token (NA at each row's last position), and kl_to_final:float,
        ``KL(final || this stream)`` in nats. ``attrs["logit_softcap"]``: the cap applied
        (None: none).
    """
    check_writes(writes, model)
    d_vocab = writes.weights.W_U.shape[-1]
    k = check_int("k", k)
    if not 1 <= k <= d_vocab:
        raise ValueError(f"k={k!r} must be an int in 1..{d_vocab} (the vocabulary size)")
    check_choice("where", where, ("pre", "mid", "post", "all"))
    chunk_rows = check_int("chunk_rows", chunk_rows, allow_none=True)
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows!r} must be a positive int (positions per chunk) or None")
    dev = writes.embed.device
    sel = selected(writes.mask.to(dev))
    n = len(sel[0])
    nxt, has_next = _targets("target", None, writes, model)
    nxt, has_next = nxt.to(dev)[sel], has_next.to(dev)[sel] & writes.mask.to(dev)[sel]
    W_U, b_U = writes._w(writes.weights.W_U), writes._w(writes.weights.b_U)
    chunk = chunk_rows or max(1, 2**24 // d_vocab)
    cap = writes.logit_softcap
    with torch.no_grad():
        final = stream_at(writes, stream_layer(writes, None), sel)
        labelled = list(streams(writes, where, sel))
        keys = ("top_ids", "top_probs", "next_prob", "next_rank", "kl")
        out: dict[str, list[list[Tensor]]] = {key: [[] for _ in labelled] for key in keys}
        for s in range(0, n, chunk):
            rows = slice(s, s + chunk)
            logp_f = torch.log_softmax(soft_cap(final_norm(writes, final[rows]) @ W_U + b_U, cap), dim=-1)
            t = nxt[rows, None]
            for i, (_, _, x) in enumerate(labelled):
                logp = torch.log_softmax(soft_cap(final_norm(writes, x[rows]) @ W_U + b_U, cap), dim=-1)
                top = torch.topk(logp, k, dim=-1)
                lp_t = logp.gather(1, t)
                out["top_ids"][i].append(top.indices)
                out["top_probs"][i].append(top.values.exp())
                out["next_prob"][i].append(lp_t[:, 0].exp())
                out["next_rank"][i].append((logp > lp_t).sum(-1))
                out["kl"][i].append((logp_f.exp() * (logp_f - logp)).sum(-1))
    n_streams = len(labelled)

    def stack(key: str) -> np.ndarray:  # stream-major: all rows of stream 0, then stream 1, ...
        return torch.cat([torch.cat(parts) for parts in out[key]]).cpu().numpy()

    decode = decoder(writes, model)
    names: dict[int, str] = {}

    def name(i: int) -> str:
        if i not in names:
            names[i] = decode(i) if decode is not None else str(i)
        return names[i]

    top_ids, top_probs = stack("top_ids"), stack("top_probs")
    idx = np.tile(np.arange(n), n_streams)
    hn = has_next.cpu().numpy()[idx]
    next_ids = nxt.cpu().numpy()[idx]
    rank = stack("next_rank").astype(np.int32)
    tokens = token_categorical(writes.tokens.to(dev)[sel], decode)
    top_tokens = [[name(int(i)) for i in row] for row in top_ids]
    return stamp(pd.DataFrame({
        "layer": np.repeat(np.asarray([ly for ly, _, _ in labelled], dtype=np.int32), n),
        "where": np.repeat(np.asarray([wh for _, wh, _ in labelled], dtype=object), n),
        "batch": sel[0].cpu().numpy().astype(np.int32)[idx],
        "pos": sel[1].cpu().numpy().astype(np.int32)[idx],
        "token": tokens.take(idx),
        "top_token": [row[0] for row in top_tokens],
        "top_prob": top_probs[:, 0],
        "top_tokens": top_tokens,
        "top_probs": list(top_probs),
        "next_token": [name(int(i)) if h else None for i, h in zip(next_ids, hn, strict=True)],
        "next_prob": np.where(hn, stack("next_prob"), np.nan),
        "next_rank": pd.arrays.IntegerArray(np.where(hn, rank, 0).astype(np.int32), ~hn),
        "kl_to_final": stack("kl"),
    }), writes, where=where, ln_scale="recompute", logit_softcap=cap)
