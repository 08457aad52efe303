"""Repeated random token sequences: BOS + S + S, the induction task.

Examples:
    >>> rows, mask = repeated_batch(4, vocab_size=512, lengths=[10], generator=torch.Generator().manual_seed(0))
    >>> rows.shape, bool((rows[:, 1:11] == rows[:, 11:21]).all())
    (torch.Size([4, 21]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def repeated_batch(
    batch: int,
    *,
    vocab_size: int,
    lengths: Sequence[int],
    generator: torch.Generator,
    bos_id: int = 0,
    low: int = 1,
    repeats: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of BOS then a random segment repeated ``repeats`` times.

    Each row draws its segment length uniformly from ``lengths`` and its tokens
    uniformly from ``[low, vocab_size)`` (so special ids below ``low`` never occur).
    Rows are right-padded with ``bos_id`` to ``1 + repeats * max(lengths)``.

    Returns:
        tokens: LongTensor [batch, 1 + repeats * max(lengths)]
        mask: BoolTensor, same shape; True on real tokens.
    """
    lengths = torch.as_tensor(list(lengths), dtype=torch.long)
    width = 1 + repeats * int(lengths.max())
    tokens = torch.full((batch, width), bos_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.bool)
    picks = lengths[torch.randint(len(lengths), (batch,), generator=generator)]
    segments = torch.randint(low, vocab_size, (batch, int(lengths.max())), generator=generator)
    for i, n in enumerate(picks.tolist()):
        tokens[i, 1 : 1 + repeats * n] = segments[i, :n].repeat(repeats)
        mask[i, : 1 + repeats * n] = True
    return tokens, mask


def repeated_tokens(
    batch: int, length: int, *, vocab_size: int, seed: int = 0, bos_id: int = 0, low: int = 1
) -> torch.Tensor:
    """BOS + S + S with a fixed segment length: LongTensor [batch, 1 + 2 * length]."""
    tokens, _ = repeated_batch(
        batch,
        vocab_size=vocab_size,
        lengths=[length],
        generator=torch.Generator().manual_seed(seed),
        bos_id=bos_id,
        low=low,
    )
    return tokens


def repeated_tokens_for(model, batch: int = 4, length: int = 20, *, seed: int = 0) -> torch.Tensor:
    """``interp.repeated_tokens``: BOS then a random segment of ``length`` tokens, twice, for
    ``model`` (its BOS id, ids drawn from ``[1, d_vocab)``): LongTensor ``[batch, 1 + 2 * length]``.
    The induction task: ``model.run_with_writes(toks)``, ``interp.head_scores(model,
    "induction", data=toks)``. Seeded; the global RNG is untouched.

    Examples:
        >>> toks = interp.repeated_tokens(interp.load(), batch=2, length=10)
        >>> bool((toks[:, 1:11] == toks[:, 11:]).all())
        True
    """
    from interp._checks import check_int

    batch = check_int("batch", batch, minimum=1)
    length = check_int("length", length, minimum=1)
    seed = check_int("seed", seed)
    n_ctx, d_vocab = model.cfg.n_ctx, model.cfg.d_vocab
    if 1 + 2 * length > n_ctx:
        raise ValueError(f"length={length} gives rows of {1 + 2 * length} tokens but the model's context is {n_ctx}; "
                         f"pass length <= {(n_ctx - 1) // 2}")
    return repeated_tokens(batch, length, vocab_size=d_vocab, seed=seed, bos_id=model.bos_id or 0)
