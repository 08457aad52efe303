"""Numerically degenerate but legal weights: say why an answer does not exist.

Constant weights, weights scaled to underflow, zero heads and ``d_model=1`` are legal, and
many quantities are then undefined: a cosine of a zero vector, a share of a zero stream, a
direction in a stream that LayerNorm leaves no room in. An analysis either computes a
meaningful answer or raises a ``ValueError`` that says why it cannot; a row that is undefined
among defined ones stays NaN, counted in one warning (never a frame of NaN without a word).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd


def usable_dims(model: Any) -> int:
    """Directions the stream can carry information in: ``d_model``, less the mean direction that
    LayerNorm removes (``normalization`` "LN"/"LNPre" centre every read)."""
    c = model.cfg
    return c.d_model - (1 if str(c.normalization).startswith("LN") else 0)


def check_usable_dims(model: Any, what: str, minimum: int = 2) -> None:
    """Refuse an analysis that needs ``minimum`` directions of the stream when it has fewer.

    Raises:
        ValueError: names the model's width, its normalization and why the answer is undefined.
    """
    n = usable_dims(model)
    if n < minimum:
        c = model.cfg
        why = (f"LayerNorm subtracts the mean, which leaves {n} of its {c.d_model} dimension(s): every read sees only "
               "the norm's bias" if str(c.normalization).startswith("LN") else f"it has {c.d_model} dimension(s)")
        raise ValueError(f"{what} needs a residual stream with at least {minimum} usable directions, and this model "
                         f"(d_model={c.d_model}, normalization={c.normalization}) has {n}: {why}. The quantity is "
                         "undefined for it; use a model with a wider stream")


def undefined_rows(df: pd.DataFrame, columns: Sequence[str], what: str, why: str, *,
                   refuse_all: bool = True) -> pd.DataFrame:
    """``df`` when its ``columns`` are defined; a warning counting the NaN rows when some are
    undefined; a ``ValueError`` saying ``why`` when every row is (nothing to report), or with
    ``refuse_all=False`` (the frame's other columns stand on their own) a warning then too."""
    if not len(df):
        return df
    bad = df[list(columns)].isna().any(axis=1)
    if bool(bad.all()) and refuse_all:
        raise ValueError(f"{what}: {', '.join(columns)} is undefined for every row, because {why}")
    if bool(bad.any()):
        warnings.warn(f"{what}: {', '.join(columns)} is undefined (NaN) for {int(bad.sum()):,} of {len(df):,} rows, "
                      f"because {why}", UserWarning, stacklevel=3)
    return df
