"""One corpus pass for the pages of a few components: every activation of each, its moments,
its top and bottom examples with context windows (``interp.stats.TopK``), and a uniform sample
for quantile examples (a ``TopK`` over random priorities: a mergeable reservoir).

A neuron's activation is the record's ``acts[L][..., n]`` (after the nonlinearity and, in a
gated MLP, after the gate: signed). A head's is the norm of its write ``|z @ W_O|`` at the
query position; its payload also holds the key it attends to most and that weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._labels import Component
from interp._progress import tqdm
from interp.stats.distributed import shard_records
from interp.stats.moments import Moments
from interp.stats.neurons import _keys
from interp.stats.topk import EMPTY_KEY, TopK
from interp.tokens import Tokens

EXAMPLE_COLUMNS = ["rank", "activation", "doc", "doc_index", "row", "pos", "token", "context", "tokens", "acts",
                   "center", "key_token", "key_offset", "key_weight"]


#: A component measured on the corpus (kind "neuron" or "head"): the one component record.
Feature = Component


@dataclass
class Scan:
    """What one pass over the corpus gathered for each feature (column ``j`` of each tensor)."""

    features: list[Feature]
    values: Tensor  # [n_tokens, F] every activation, float32
    moments: Moments
    top: TopK
    bottom: TopK  # of the negated activations
    sample: TopK  # a uniform sample (random priorities)
    doc_names: dict[int, str] = field(default_factory=dict)
    context: int = 8
    decode: Any = None
    seen: Tensor | None = None  # ids of every token read, ascending

    def examples(self, j: int, which: str, k: int | None = None) -> pd.DataFrame:
        """Long frame of feature ``j``'s ``which`` ("top", "bottom", "sample") examples."""
        top = {"top": self.top, "bottom": self.bottom, "sample": self.sample}[which]
        sign = -1.0 if which == "bottom" else 1.0
        keys = top.keys[j].tolist()
        tok = self.decode or str
        rows = []
        for r, key in enumerate(keys[: k or len(keys)]):
            if key == EMPTY_KEY:
                break
            ctx_t = top.payload["tokens"][j, r].tolist()
            ctx_a = top.payload["acts"][j, r].tolist()
            valid = [i for i, t in enumerate(ctx_t) if t >= 0]
            toks = [tok(ctx_t[i]) for i in valid]
            kt = int(top.payload["key_token"][j, r])
            rows.append(dict(
                rank=r + 1, activation=float(ctx_a[self.context]) if which == "sample" else sign * float(top.values[j, r]),
                doc=self.doc_names.get(key >> 32, str(key >> 32)), doc_index=key >> 32, row=(key >> 16) & 0xFFFF,
                pos=key & 0xFFFF, token=tok(ctx_t[self.context]), context="".join(toks), tokens=toks,
                acts=[ctx_a[i] for i in valid], center=valid.index(self.context),
                key_token=tok(kt) if kt >= 0 else None, key_offset=int(top.payload["key_offset"][j, r]),
                key_weight=float(top.payload["key_weight"][j, r]),
            ))
        return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def context_line(tokens: list[str], center: int) -> str:
    """The text of the line that holds token ``center`` within its window: the dedup key
    (the same line in two documents, or two tokens of one line, count once)."""
    left = "".join(tokens[:center]).rsplit("\n", 1)[-1]
    right = "".join(tokens[center + 1:]).split("\n", 1)[0]
    return (left + tokens[center] + right).strip()


def dedup(df: pd.DataFrame, k: int, window: int | None = None) -> pd.DataFrame:
    """The first ``k`` rows that are not near-duplicates of an earlier one: the same context line
    (any document), or, with ``window``, a position within ``window`` tokens of a kept example in
    the same row of the same document (a long line seen through shifting windows). ``n_duplicates``
    counts the rows each kept one stands for."""
    if df.empty:
        return df.assign(n_duplicates=pd.Series(dtype="int64"))
    line = [context_line(t, c) for t, c in zip(df["tokens"], df["center"])]
    where = list(zip(df["doc_index"], df["row"], df["pos"])) if window is not None and "pos" in df else None
    kept: list[int] = []
    count: dict[int, int] = {}
    for i, key in enumerate(line):
        owner = next((j for j in kept if line[j] == key or where is not None and where[j][:2] == where[i][:2]
                      and abs(int(where[j][2]) - int(where[i][2])) <= window), None)
        if owner is None:
            kept.append(i)
            count[i] = 0
        else:
            count[owner] += 1
    keep = kept[:k]
    out = df.iloc[keep].copy()
    out["n_duplicates"] = [count[i] for i in keep]
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reset_index(drop=True)


def scan(model: Any, data: Any, features: list[Feature], *, max_tokens: int, batch_size: int, n_ctx: int | None,
         top_k: int, context: int, n_samples: int, seed: int, progress: bool) -> Scan:
    """Stream ``data`` once and gather every feature's statistics (see the module docstring)."""
    F, W = len(features), 2 * context + 1
    layers = sorted({f.layer for f in features})
    head_layers = sorted({f.layer for f in features if f.kind == "head"})
    payload = {"tokens": ((W,), torch.int32, -1), "acts": ((W,), torch.float32, float("nan")),
               "key_token": ((), torch.int64, -1), "key_offset": ((), torch.int64, -1),
               "key_weight": ((), torch.float32, float("nan"))}
    top = TopK(F, top_k, payload_shapes=payload)
    bottom = TopK(F, top_k, payload_shapes=payload)
    sample = TopK(F, n_samples, payload_shapes=payload)
    mom = Moments((F,))
    offsets = torch.arange(-context, context + 1)
    gen = torch.Generator().manual_seed(seed)
    values: list[Tensor] = []
    names: dict[int, str] = {}
    ids: set[int] = set()
    seen = 0
    bar = tqdm(total=max_tokens, unit="tok", desc="component pages", disable=not progress)
    try:
        for w in shard_records(model, data, batch_size=batch_size, n_ctx=n_ctx, layers=layers):
            mask = w.mask.clone().cpu()
            mask[:, 0] = False  # BOS: the attention sink, not an example
            flat = mask.reshape(-1).nonzero()[:, 0][: max_tokens - seen]
            if not len(flat):
                continue
            B, P = mask.shape
            rows, pos = flat // P, flat % P
            keys = _keys(w.meta["doc_index"], w.meta["row_in_doc"], P, "cpu").reshape(-1)[flat]
            names.update(zip(w.meta["doc_index"], w.meta["doc_ids"]))
            ids.update(w.tokens.cpu()[mask].unique().tolist())
            full = torch.stack([_activation(w, f) for f in features], -1).cpu()  # [B, P, F]
            kpos = torch.full((B, P, F), -1, dtype=torch.long)
            kw = torch.full((B, P, F), float("nan"))
            if head_layers:
                pats = model.attention_patterns(Tokens(w.tokens, w.mask), layers=head_layers)
                for j, f in enumerate(features):
                    if f.kind == "head":
                        wmax, kmax = pats[f.layer][:, f.index].float().cpu().max(-1)  # [B, P]
                        kpos[..., j], kw[..., j] = kmax, wmax
            tokens, real = w.tokens.cpu(), w.mask.cpu()

            def window(feat: Tensor, smp: Tensor, full: Tensor = full, kpos: Tensor = kpos, kw: Tensor = kw,
                       tokens: Tensor = tokens, real: Tensor = real, rows: Tensor = rows, pos: Tensor = pos,
                       P: int = P) -> dict:
                r, p = rows[smp], pos[smp]
                pw = p.unsqueeze(-1) + offsets
                pc = pw.clamp(0, P - 1)
                ok = (pw >= 0) & (pw < P) & real[r.unsqueeze(-1), pc]
                kp = kpos[r, p, feat]
                return {"tokens": torch.where(ok, tokens[r.unsqueeze(-1), pc], -1).int(),
                        "acts": torch.where(ok, full[r.unsqueeze(-1), pc, feat.unsqueeze(-1)], float("nan")),
                        "key_token": torch.where(kp >= 0, tokens[r, kp.clamp_min(0)], -1),
                        "key_offset": torch.where(kp >= 0, p - kp, -1), "key_weight": kw[r, p, feat]}

            x = full.reshape(B * P, F)[flat]
            values.append(x)
            mom.update(x.double())
            top.update(x, keys, window)
            bottom.update(-x, keys, window)
            sample.update(torch.rand(x.shape, generator=gen), keys, window)
            seen += len(flat)
            bar.update(len(flat))
            if seen >= max_tokens:
                break
    finally:
        bar.close()
    if not seen:
        raise ValueError("data gave no positions to measure (every row held only BOS); pass longer texts")
    decode = model.decode_token if model.tokenizer is not None else None
    return Scan(features, torch.cat(values), mom, top, bottom, sample, names, context, decode,
                torch.tensor(sorted(ids), dtype=torch.long))


def _activation(w: Any, f: Feature) -> Tensor:
    """``[batch, pos]``: a neuron's activation or a head's write norm."""
    if f.kind == "neuron":
        return w.acts[f.layer][..., f.index].float()
    return w.head_write(f.layer, f.index).norm(dim=-1).float()
