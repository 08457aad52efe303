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
