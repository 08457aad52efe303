"""Head detectors: how much of each head's attention lands where a kind of head looks.

Every kind is a target ``T[batch, query, key]`` (1 where the kind looks, else 0) and a set
of counted queries ``Q[batch, query]``. A head's score is the attention mass it puts on the
target, averaged over counted queries:

    score = sum_{b, q in Q} sum_k A[b, h, q, k] T[b, q, k] / sum_{b, q in Q} sum_k A[b, h, q, k]

(the denominator is the number of counted queries unless ``exclude_bos`` /
``exclude_current`` zero those keys first, as TransformerLens's ``detect_head`` does).

| kind | target key(s) for query q | counted queries | default data |
|---|---|---|---|
| ``previous_token`` | q - 1 | q >= 1 | held-out text |
| ``induction`` | k <= q whose previous token equals token q (the token after an earlier copy) | those with such a k | repeated random tokens |
| ``duplicate_token`` | k < q with token k equal to token q | those with such a k | repeated random tokens |
| ``bos`` | 0 (the attention sink) | q >= 1 | held-out text |
| ``self`` | q | q >= 1 | held-out text |
| a pattern | the given weights | every real query | held-out text |

Held-out text: ``interp.heads.data.text_tokens`` (the first 128-token window of each of 8
held-out stdlib files). Repeated random tokens: ``interp.heads.data.repeated_tokens`` (16
rows of BOS + S + S, ``len(S)`` uniform in 10..40, S uniform over ordinary token ids).

``baseline``: the score of uniform causal attention (``1 / (q + 1)`` on each key) on the
same queries: what a head that ignores content and position would get. ``flagged``:
``score >= threshold`` (default ``THRESHOLDS[kind]``, 0.4, or 0.6 for ``bos``) and above
the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_bool, check_float, check_indices, check_int
from interp._threads import with_analysis_threads
from interp.heads.data import repeated_tokens, text_tokens
from interp.heads.patterns import as_tokens, for_each_pattern, source
from interp.tokens import Tokens

KINDS = ("previous_token", "induction", "duplicate_token", "bos", "self")
THRESHOLDS = {"previous_token": 0.4, "induction": 0.4, "duplicate_token": 0.4, "bos": 0.6, "self": 0.4,
              "pattern": 0.4}
SYNTHETIC = ("induction", "duplicate_token")
COLUMNS = ["layer", "head", "label", "score", "baseline", "flagged", "kind"]


def _targets(kind: str, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(T [b, q, k] float, Q [b, q] bool)`` for a built-in kind."""
    b, p = tokens.shape
    ar = torch.arange(p)
    causal = ar[None, :] <= ar[:, None]  # [q, k]
    real = mask[:, :, None] & mask[:, None, :] & causal
    T = torch.zeros(b, p, p, dtype=torch.bool)
    Q = mask & (ar >= 1)[None]
    if kind == "previous_token":
        T[:, ar[1:], ar[:-1]] = True
    elif kind == "self":
        T[:, ar, ar] = True
    elif kind == "bos":
        T[:, :, 0] = True
    else:
        same = (tokens[:, :, None] == tokens[:, None, :]) & real & ~torch.eye(p, dtype=torch.bool)[None]
        if kind == "duplicate_token":
            T = same
        else:  # induction: key k whose previous token (k - 1 < q) is a copy of token q
            T[:, :, 1:] = same[:, :, :-1]
        Q = Q & T.any(-1)
    return (T & real).float(), Q


def _custom(pattern: Any, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    b, p = tokens.shape
    T = pattern(tokens) if callable(pattern) else pattern
    if not isinstance(T, Tensor) or T.dim() not in (2, 3) or tuple(T.shape[-2:]) != (p, p) or (
            T.dim() == 3 and T.shape[0] != b):
        shape = tuple(T.shape) if isinstance(T, Tensor) else type(T).__name__
        raise ValueError(f"kind: the detection pattern is {shape}, but the data are {b} rows of {p} tokens; "
                         f"pass a tensor [{p}, {p}] or [{b}, {p}, {p}] (query, key), or a callable that "
                         "returns one for the tokens")
    if T.is_complex() or not torch.isfinite(T.float()).all():
        raise ValueError("kind: the detection pattern holds complex, NaN or inf values; pass finite weights")
    causal = torch.tril(torch.ones(p, p, dtype=torch.bool))
    T = T.float().cpu().expand(b, p, p) * (causal & mask[:, None, :])
    return T, mask.clone()


def _data(model: Any, kind: str, data: Any) -> Tokens:
    if data is not None:
        return as_tokens(model, data, chunk=True) if isinstance(data, (str, list, tuple)) else as_tokens(model, data)
    if kind in SYNTHETIC:
        return repeated_tokens(model)
    return text_tokens(model)


@with_analysis_threads
def head_scores(
    model: Any,
    kind: str | Tensor | Callable[[Tensor], Tensor],
    *,
    data: Any = None,
    layers: Sequence[int] | int | None = None,
    threshold: float | None = None,
    exclude_bos: bool = False,
    exclude_current: bool = False,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Score every head for one kind of attention, best first.

    Args:
        model: an ``interp.Model``.
        kind: ``"previous_token"``, ``"induction"``, ``"duplicate_token"``, ``"bos"``,
            ``"self"``, or a detection pattern: a tensor ``[query, key]`` or ``[batch, query,
            key]`` of weights matching ``data``, or a callable ``tokens [batch, pos] ->`` one.
        data: str, list of str, LongTensor ``[batch, pos]`` or ``Tokens`` (default: per kind,
            see the module docstring). Strings get BOS and are cut into ``n_ctx`` rows.
        layers: layers to score (default all).
        threshold: ``flagged`` cut-off on ``score`` (default ``THRESHOLDS[kind]``).
        exclude_bos / exclude_current: leave key 0 / key q out of every query's attention
            and renormalise (as TransformerLens's ``detect_head``).
        batch_size: rows per forward.
    Returns:
        One row per head, highest score first: layer:int, head:int, label:str ("L1H2"),
        score:float in [0, 1], baseline:float (uniform causal attention), flagged:bool,
        kind:str. ``attrs``: kind, threshold, n_rows, n_queries, data ("given", "text" or
        "repeated"), source (``"checkpoint"`` or ``"bridge"`` patterns).
    Raises:
        ValueError: an unknown kind, a pattern that does not match the data, no query to
            count (e.g. ``induction`` on text without a repeated token).
    Examples:
        >>> import interp
        >>> head_scores(interp.load(), "previous_token").iloc[0]["label"]
        'L0H2'
    """
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    custom = not isinstance(kind, str)
    if custom and not (callable(kind) or isinstance(kind, Tensor)):
        raise TypeError(f"kind={kind!r} must be one of {', '.join(KINDS)} or a detection pattern (a tensor "
                        "[query, key] or a callable tokens -> pattern)")
    if not custom and kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; use one of {', '.join(map(repr, KINDS))} or pass a "
                         "detection pattern tensor [query, key]")
    name = "pattern" if custom else kind
    threshold = THRESHOLDS[name] if threshold is None else check_float("threshold", threshold, minimum=0, maximum=1)
    exclude_bos, exclude_current = check_bool("exclude_bos", exclude_bos), check_bool("exclude_current", exclude_current)
    layers = check_indices("layers", layers, model.cfg.n_layers, "layer")
    batch_size = check_int("batch_size", batch_size)  # numpy ints too; a str or float is a TypeError
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int, e.g. 8")
    if custom and isinstance(kind, Tensor) and data is None:
        raise ValueError("kind is a detection pattern tensor, so pass data= with the tokens it describes")
    toks = _data(model, name, data)
    tokens, mask = toks.tokens.cpu(), toks.mask.cpu()
    T, Q = _custom(kind, tokens, mask) if custom else _targets(kind, tokens, mask)
    if not Q.any():
        raise ValueError(f"kind={name!r}: the data hold no query to score (for induction and duplicate_token, "
                         "no token repeats an earlier one); pass data with repeats, or data=None")
    H = model.cfg.n_heads
    num = {ly: torch.zeros(H, dtype=torch.float64) for ly in layers}
    den = {ly: torch.zeros(H, dtype=torch.float64) for ly in layers}
    p = tokens.shape[1]
    keep = torch.ones(p, p)
    if exclude_bos:
        keep[:, 0] = 0
    if exclude_current:
        keep.fill_diagonal_(0)
    ar = torch.arange(p, dtype=torch.float32)
    uniform = torch.tril(torch.ones(p, p)) / (ar + 1)[:, None] * keep  # [q, k]
    Qf = Q.float()
    base_num = float((uniform * T * Qf[..., None]).sum())
    base_den = float((uniform * Qf[..., None]).sum())
    for a in range(0, tokens.shape[0], batch_size):
        sl = slice(a, a + batch_size)
        t_b, q_b = (T[sl] * Qf[sl, :, None]).to(model.device), Qf[sl].to(model.device)
        k_b = keep.to(model.device)

        def reduce(ly: int, pat: Tensor, t_b: Tensor = t_b, q_b: Tensor = q_b, k_b: Tensor = k_b) -> None:
            pat = pat * k_b
            num[ly] += torch.einsum("bhqk,bqk->h", pat, t_b).double().cpu()
            den[ly] += torch.einsum("bhqk,bq->h", pat, q_b).double().cpu()

        for_each_pattern(model, Tokens(tokens[sl], mask[sl]), layers, reduce)
    baseline = base_num / base_den if base_den > 0 else float("nan")
    rows = []
    for ly in layers:
        score = (num[ly] / den[ly].clamp_min(1e-300)).tolist()
        rows += [(ly, h, f"L{ly}H{h}", score[h]) for h in range(H)]
    df = pd.DataFrame(rows, columns=["layer", "head", "label", "score"])
    df["baseline"] = baseline
    df["flagged"] = (df["score"] >= threshold) & (df["score"] > baseline)
    df["kind"] = name
    df = df.astype({"layer": np.int64, "head": np.int64})
    df = df.sort_values(["score", "layer", "head"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
    df.attrs.update(kind=name, threshold=threshold, n_rows=int(tokens.shape[0]), n_queries=int(Q.sum()),
                    data="given" if data is not None else ("repeated" if name in SYNTHETIC else "text"),
                    source=source(model), exclude_bos=exclude_bos, exclude_current=exclude_current,
                    model_id=model.model_id)
    return df
