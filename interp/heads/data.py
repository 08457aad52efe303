"""The default inputs of the head detectors: held-out text and repeated random tokens.

- ``text_tokens``: the first full ``n_ctx``-token window (BOS first) of each of ``n_rows``
  held-out stdlib files (``"stdlib:val"``, files in sorted order), every row real text.
- ``repeated_tokens``: BOS + S + S, S uniform over the tokenizer's ordinary tokens (special
  ids left out), each row's length drawn uniformly from ``lengths``, so no single offset
  separates a token from its earlier copy. Right-padded; seeded.

>>> import interp
>>> toks = repeated_tokens(interp.load(), n_rows=2, lengths=range(5, 9))
>>> toks.tokens.shape[0], bool(toks.mask[:, 0].all())
(2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp._checks import check_int
from interp.tokens import Tokens


def text_tokens(model: Any, *, n_rows: int = 8, n_ctx: int = 128, source: Any = "stdlib:val") -> Tokens:
    """``n_rows`` windows of ``n_ctx`` real tokens, one per document, from ``source``."""
    from interp.data import token_batches

    n_rows = check_int("n_rows", n_rows, minimum=1)
    n_ctx = check_int("n_ctx", n_ctx, minimum=2, maximum=model.cfg.n_ctx)
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer, so the default text cannot be encoded; pass data= "
                         "as a LongTensor [batch, pos] or a Tokens batch")
    rows, docs = [], set()
    for batch in token_batches(model.tokenizer, source, n_ctx=n_ctx, batch_size=1, progress=False, min_tokens=n_ctx,
                               split_special_tokens=getattr(model, "split_special_tokens", True)):
        if batch.doc_ids[0] not in docs:
            docs.add(batch.doc_ids[0])
            rows.append(batch.tokens[0])
        if len(rows) == n_rows:
            break
    if not rows:
        raise ValueError(f"source={source!r} holds no document of {n_ctx} tokens; pass a shorter n_ctx or data=")
    tokens = torch.stack(rows)
    return Tokens(tokens, torch.ones_like(tokens, dtype=torch.bool))


def ordinary_ids(model: Any) -> torch.Tensor:
    """Token ids that are neither special nor beyond the tokenizer: what random rows draw from."""
    n = model.cfg.d_vocab
    tok = model.tokenizer
    if tok is not None:
        n = min(n, len(tok))
    keep = torch.ones(n, dtype=torch.bool)
    special = [] if tok is None else [i for i in tok.all_special_ids if i is not None and i < n]
    if model.bos_id is not None and model.bos_id < n:
        special.append(model.bos_id)
    keep[special] = False
    return keep.nonzero().flatten()


def repeated_tokens(model: Any, *, n_rows: int = 16, lengths: Sequence[int] = range(10, 41), seed: int = 0) -> Tokens:
    """Rows of BOS + S + S (no BOS when the model has none): ``Tokens [n_rows, 1 + 2 max(lengths)]``."""
    n_rows = check_int("n_rows", n_rows, minimum=1)
    lengths = [check_int("lengths", n, minimum=2) for n in lengths]
    if not lengths:
        raise ValueError("lengths is empty; pass segment lengths such as range(10, 41)")
    bos = model.bos_id
    head = 0 if bos is None else 1
    if head + 2 * max(lengths) > model.cfg.n_ctx:
        raise ValueError(f"lengths up to {max(lengths)} give rows of {head + 2 * max(lengths)} tokens but the "
                         f"model's context is {model.cfg.n_ctx}; pass shorter lengths")
    ids = ordinary_ids(model)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    width = head + 2 * max(lengths)
    tokens = torch.full((n_rows, width), 0 if bos is None else bos, dtype=torch.long)
    mask = torch.zeros((n_rows, width), dtype=torch.bool)
    picks = torch.tensor(lengths)[torch.randint(len(lengths), (n_rows,), generator=g)]
    for i, n in enumerate(picks.tolist()):
        seg = ids[torch.randint(len(ids), (n,), generator=g)]
        tokens[i, head:head + 2 * n] = seg.repeat(2)
        mask[i, :head + 2 * n] = True
    return Tokens(tokens, mask)
