"""Who wrote what into the residual stream: per layer, head and neuron.

``decompose`` takes the stream apart into its writes and measures each one (its norm,
its share of the stream, its projection onto directions or subspaces); ``stream_norms``
follows the accumulated stream's norm through the layers. Both are pure functions of a
``ResidualWrites`` and return long-format DataFrames, one row per real (not padded)
position.

Examples:
    >>> w = model.run_with_writes("def add(a, b):\\n    return a + b")
    >>> df = decompose(w, by="head")
    >>> df.columns[:4].tolist()
    ['component', 'kind', 'layer', 'head']
    >>> top = df.nlargest(5, "norm")[["component", "pos", "token", "norm"]]
    >>> len(stream_norms(w)) == (model.cfg.n_layers + 1) * int(w.mask.sum())
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from interp._components import (
    Table,
    check_top_k,
    check_writes,
    decoder,
    frame,
    groups,
    readers,
    selected,
    stamp,
    stream_at,
    stream_layer,
    streams,
    token_categorical,
)
from interp._degenerate import undefined_rows
from interp.writes import ResidualWrites


def decompose(
    writes: ResidualWrites,
    by: str = "component",
    *,
    directions: Any = None,
    top_k: int | None = None,
    layer: int | None = None,
    model: Any = None,
) -> pd.DataFrame:
    """Split the residual stream into the writes that make it up, and measure each.

    Args:
        writes: from ``model.run_with_writes``; padded positions give no rows.
        by: the unit of a row. ``"layer"``: ``embed``, ``pos_embed``, then per layer
            ``L{l}_attn`` (all heads plus b_O) and ``L{l}_mlp`` (all neurons plus b_out).
            ``"head"``: attention split into ``L{l}H{h}`` plus ``L{l}_attn_bias``; MLPs whole.
            ``"neuron"``: MLPs split into ``L{l}N{n}`` plus ``L{l}_mlp_bias``; attention whole.
            ``"component"`` (default): both splits, every single write. Whatever ``by``,
            the rows of one position sum to the stream.
        directions: what to project each write onto, giving a ``proj_<name>`` column: a
            tensor ``[d_model]`` or ``[k, d_model]`` (unit-normalised; signed component;
            names ``0``, ``1``, ...), a token string (the direction its logit reads from the
            stream, ``ln_final.w * W_U[:, id]``; the pre-cap logit for a soft-capped model), an object with a ``.basis [d_model, k]``
            tensor such as a probe's subspace (norm of the projection onto its span; named
            by its ``.name``), or a list or ``{name: direction}`` dict of these.
        top_k: keep only the ``top_k`` largest-norm rows at each position, largest first.
        layer: take apart the stream entering this layer (``resid_pre``) instead of the
            final stream (``None`` or ``n_layers``).
        model: the model the writes came from; checked, and used for token strings.
    Returns:
        One row per (batch, pos, component) in stream order (or by norm with ``top_k``):
            component (categorical: ``embed``, ``pos_embed``, ``L3_attn``, ``L3H5``,
            ``L3_attn_bias``, ``L3_mlp``, ``L3N120``, ``L3_mlp_bias``), kind (categorical:
            embed, pos_embed, attn, head, attn_bias, mlp, neuron, mlp_bias), layer, head,
            neuron (nullable ints; NA where they do not apply), batch:int (always present),
            pos:int, token (categorical: the token at that position), norm:float (L2 norm of
            the write), frac:float (norm / the stream's norm at that position), and
            ``proj_<name>``:float per direction.
    Raises:
        ValueError: an unknown ``by``; bad directions (zero, NaN, wrong ``d_model``); a
            layer that was not recorded. ModelMismatchError: ``model`` is another model.
    Per-neuron norms and projections are ``|act| * |W_out[n]|`` and ``act * (W_out[n] . u)``:
    no ``[pos, d_mlp, d_model]`` tensor is built.
    """
    check_writes(writes, model)
    stop = stream_layer(writes, layer)
    top_k = check_top_k(top_k)
    rdrs = readers(directions, writes, model)
    sel = selected(writes.mask.to(writes.embed.device))
    rows = len(sel[0])
    table = Table.empty()
    norms, projs = [], {r.name: [] for r in rdrs}
    with torch.no_grad():
        for g in groups(writes, by, stop, sel):
            table.add(g)
            norms.append(g.norms(rows))
            for r, p in zip(rdrs, g.read(rdrs, rows), strict=True):
                projs[r.name].append(p)
        norm = torch.cat(norms, dim=1)
        stream = stream_at(writes, stop, sel).norm(dim=-1, keepdim=True)
        values = {"norm": norm, "frac": norm / stream}
        values.update({f"proj_{k}": torch.cat(v, dim=1) for k, v in projs.items()})
    tokens = token_categorical(writes.tokens.to(sel[0].device)[sel], decoder(writes, model))
    df = frame(table, sel, tokens, values, top_k=top_k, key=norm)
    undefined_rows(df, ["frac"], "decompose", "the residual stream is exactly zero at those positions (degenerate "
                   "weights: constant, zero, or no room for a direction such as d_model=1 under LayerNorm), so a "
                   "write's share of it is 0 / 0")
    return stamp(df, writes, by=by)


def stream_norms(writes: ResidualWrites, *, where: str = "pre", model: Any = None) -> pd.DataFrame:
    """The accumulated stream's L2 norm at every layer and position.

    Shows how the stream grows through the layers, and the first-token (BOS) outlier.

    Args:
        writes: from ``model.run_with_writes``; padded positions give no rows.
        where: ``"pre"`` (default): entering each layer, plus the final stream as layer
            ``n_layers``; ``"mid"``: after each attention; ``"post"``: after each block;
            ``"all"``: ``pre`` and ``mid`` of every layer, then the final stream.
        model: the model the writes came from; checked, and used for token strings.
    Returns:
        One row per (stream, batch, pos): layer:int, where:str, batch:int, pos:int,
        token (categorical), norm:float, rms:float (norm / sqrt(d_model)).
    """
    check_writes(writes, model)
    sel = selected(writes.mask.to(writes.embed.device))
    tokens = token_categorical(writes.tokens.to(sel[0].device)[sel], decoder(writes, model))
    layers, wheres, norms = [], [], []
    with torch.no_grad():
        for ly, wh, x in streams(writes, where, sel):
            layers.append(ly)
            wheres.append(wh)
            norms.append(x.norm(dim=-1).cpu().numpy())
    n = len(sel[0])
    idx = np.tile(np.arange(n), len(layers))
    norm = np.concatenate(norms)
    return stamp(pd.DataFrame({
        "layer": np.repeat(np.asarray(layers, dtype=np.int32), n),
        "where": np.repeat(np.asarray(wheres, dtype=object), n),
        "batch": sel[0].cpu().numpy().astype(np.int32)[idx],
        "pos": sel[1].cpu().numpy().astype(np.int32)[idx],
        "token": tokens.take(idx),
        "norm": norm,
        "rms": norm / np.sqrt(float(writes.meta["d_model"])),
    }), writes, where=where)
