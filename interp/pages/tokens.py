"""Token tables from the weights: what a direction's write does to the logits, and the
token-only OV and QK circuits of a head.

Logits are read through the final norm's gain (folded into ``W_U`` under ``"compat"``;
applied here under ``"raw"``, after centring for LayerNorm); the norm's per-position scale is
a positive number, which changes no ranking, so it is left out. For a soft-capped model
(Gemma 2) the values are changes of the pre-cap logit ``z``; the cap ``cap * tanh(z / cap)``
is monotonic, so the rankings are those of the capped logits. Every product is ``[k,
d_vocab]`` for a handful of directions ``k``, in vocabulary chunks where the embedding is
involved: never ``[d_vocab, d_vocab]`` nor ``[tokens, d_vocab]`` (a 262k vocabulary fits).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor

#: Vocabulary rows read at a time when the embedding is normalised.
CHUNK = 32_768


def unembed(model: Any, d: Tensor) -> Tensor:
    """Logit change ``[k, d_vocab]`` per unit of directions ``d`` ``[k, d_model]``."""
    ww = model.write_weights
    d = d.to(device=ww.W_U.device, dtype=torch.float32)
    if model.cfg.processing == "raw":
        if model.cfg.normalization.startswith("LN"):
            d = d - d.mean(-1, keepdim=True)
        if ww.ln_final_w is not None:
            d = d * ww.ln_final_w.float()
    return d @ ww.W_U.float()


def top_tokens(model: Any, scores: Tensor, k: int, *, largest: bool = True) -> tuple[list[list[str]], Tensor]:
    """The ``k`` best tokens of each row of ``scores`` ``[rows, d_vocab]``: strings, values."""
    vals, ids = scores.topk(k, dim=-1, largest=largest)
    return [[model.decode_token(int(t)) for t in row] for row in ids], vals


def logit_table(model: Any, d: Tensor, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tokens a write along ``d`` ``[d_model]`` promotes and suppresses: rank, token, logit."""
    s = unembed(model, d[None])
    out = []
    for largest in (True, False):
        toks, vals = top_tokens(model, s, k, largest=largest)
        out.append(pd.DataFrame(dict(rank=range(1, len(toks[0]) + 1), token=toks[0], logit=vals[0].tolist())))
    return out[0], out[1]


def _normed(model: Any, E: Tensor) -> Tensor:
    """Embedding rows as the first norm hands them on: centred (LayerNorm) and scaled to RMS 1."""
    E = E.double()
    if model.cfg.normalization.startswith("LN"):
        E = E - E.mean(-1, keepdim=True)
    return E / E.pow(2).mean(-1, keepdim=True).add(model.cfg.eps).sqrt()


def ov_table(model: Any, W: dict[str, Tensor], layer: int, head: int, sources: list[int], k: int) -> pd.DataFrame:
    """For each source token: the tokens whose logits rise most when the head attends to it
    (its normalised embedding through ``W_V W_O``, read through the unembedding)."""
    if not sources:
        return pd.DataFrame(columns=["source_token", "rank", "token", "logit"])
    E = _normed(model, model.weights.W_E[torch.tensor(sources)])
    write = E @ W["W_V"][layer, head].to(E) @ W["W_O"][layer, head].to(E)  # [s, d_model]
    toks, vals = top_tokens(model, unembed(model, write), k)
    rows = [dict(source_token=model.decode_token(s), rank=r + 1, token=t, logit=float(v))
            for s, ts, vs in zip(sources, toks, vals) for r, (t, v) in enumerate(zip(ts, vs))]
    return pd.DataFrame(rows)


def qk_table(model: Any, W: dict[str, Tensor], layer: int, head: int, queries: list[int], k: int,
             keys: Tensor | None = None) -> pd.DataFrame:
    """For each query token: the key tokens with the largest attention score ``e_q W_Q W_K^T
    e_k / sqrt(d_head)`` between normalised embeddings (token-only: positions and rotations left
    out). ``keys``: the candidate key ids (default the whole vocabulary; the pages pass the
    tokens seen in the corpus, since a rare token's normalised embedding, barely trained, can
    score high without ever occurring)."""
    if not queries:
        return pd.DataFrame(columns=["query_token", "rank", "token", "score"])
    Eq = _normed(model, model.weights.W_E[torch.tensor(queries)])
    qk = Eq @ W["W_Q"][layer, head].to(Eq) @ W["W_K"][layer, head].to(Eq).T  # [q, d_model]
    E = model.weights.W_E
    ids = torch.arange(E.shape[0]) if keys is None else keys.cpu()
    scores = torch.cat([qk @ _normed(model, E[ids[i:i + CHUNK].to(E.device)]).T
                        for i in range(0, len(ids), CHUNK)], -1)
    scores = scores / model.cfg.d_head ** 0.5
    vals, at = scores.topk(min(k, len(ids)), dim=-1)
    toks = [[model.decode_token(int(ids[j])) for j in row] for row in at.cpu()]
    rows = [dict(query_token=model.decode_token(q), rank=r + 1, token=t, score=float(v))
            for q, ts, vs in zip(queries, toks, vals) for r, (t, v) in enumerate(zip(ts, vs))]
    return pd.DataFrame(rows)
