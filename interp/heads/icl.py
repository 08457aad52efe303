"""The in-context-learning score of Olsson et al. (2022): the loss at a late token of the
context minus the loss at an early one, averaged over documents. Negative: the model
predicts better with more context (induction heads are the usual reason).

Losses are next-token cross-entropy in nats at token index ``late`` and ``early`` (the
token predicted from the ones before it; index 0 is BOS). Olsson et al. use the 500th and
the 50th token; ``late`` defaults to ``min(500, n_ctx - 1)``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from interp._checks import check_int
from interp._threads import with_analysis_threads
from interp.heads.data import text_tokens
from interp.heads.patterns import as_tokens


def _logits_at(model: Any, tokens: Tensor, positions: list[int]) -> Tensor:
    """Logits ``[batch, len(positions), d_vocab]`` of the checkpoint at those positions (the
    raw copy's own unembedding when the model keeps one, else the bridge's)."""
    hf = getattr(model, "_raw_hf", None)
    idx = torch.tensor(positions, device=model.device)
    if hf is None or model.active_hooks():
        return model._forward(tokens, return_type="logits").index_select(1, idx)
    base = getattr(hf, hf.base_model_prefix, hf) if getattr(hf, "base_model_prefix", "") else hf
    with model._lock, torch.no_grad():
        h = base(input_ids=tokens.to(model.device), use_cache=False).last_hidden_state
        return hf.get_output_embeddings()(h.index_select(1, idx))


@with_analysis_threads
def icl_score(
    model: Any,
    data: Any = None,
    *,
    early: int = 50,
    late: int | None = None,
    n_rows: int = 16,
    batch_size: int = 4,
) -> pd.DataFrame:
    """Loss at token ``late`` minus loss at token ``early`` (Olsson et al.'s ICL score).

    Args:
        model: an ``interp.Model``.
        data: LongTensor ``[batch, pos]``, ``Tokens`` or texts, every row at least ``late + 1``
            real tokens; default: ``n_rows`` held-out stdlib windows of ``late + 1`` tokens.
        early / late: token indices (``0 < early < late < n_ctx``).
    Returns:
        One row: early:int, late:int, loss_early:float, loss_late:float, score:float
        (``loss_late - loss_early``, nats), sem:float (its standard error over rows), n_rows:int.
    Examples:
        >>> float(icl_score(interp.load())["score"].iloc[0]) < 0
        True
    """
    late = min(500, model.cfg.n_ctx - 1) if late is None else late
    late = check_int("late", late, minimum=2, maximum=model.cfg.n_ctx - 1)
    early = check_int("early", early, minimum=1, maximum=late - 1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    toks = text_tokens(model, n_rows=n_rows, n_ctx=late + 1) if data is None else as_tokens(model, data)
    short = int((toks.mask.sum(-1) < late + 1).sum())
    if short:
        raise ValueError(f"data has {short} row(s) shorter than late + 1 = {late + 1} tokens; pass longer rows or "
                         "a smaller late")
    diffs, le, ll = [], [], []
    for a in range(0, toks.tokens.shape[0], batch_size):
        t = toks.tokens[a:a + batch_size]
        logits = _logits_at(model, t, [early - 1, late - 1]).float()
        target = t[:, [early, late]].to(logits.device)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none").cpu()  # [b, 2]
        le.append(loss[:, 0])
        ll.append(loss[:, 1])
    le_t, ll_t = torch.cat(le), torch.cat(ll)
    diffs = ll_t - le_t
    n = len(diffs)
    sem = float(diffs.std() / n ** 0.5) if n > 1 else float("nan")
    df = pd.DataFrame([dict(early=early, late=late, loss_early=float(le_t.mean()), loss_late=float(ll_t.mean()),
                            score=float(diffs.mean()), sem=sem, n_rows=n)])
    df.attrs.update(model_id=model.model_id, data="given" if data is not None else "text")
    return df
