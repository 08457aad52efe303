"""Column names shared by every public frame (docs/reference/frames.md): a component is named
by ``layer`` and ``head`` or ``neuron`` (nullable ``Int64`` where a frame holds both kinds),
never by an ``index``."""

from __future__ import annotations

import pandas as pd


def head_and_neuron(df: pd.DataFrame, *, index: str = "index", kind: str = "kind") -> pd.DataFrame:
    """Replace the column ``index`` (a head's or a neuron's number, by ``df[kind]``) by ``head``
    and ``neuron`` at its place: each holds the number on its own kind's rows, <NA> elsewhere."""
    if index not in df.columns:
        return df
    at = list(df.columns).index(index)
    idx = df[index].astype("Int64")
    is_head = df[kind].astype(str).eq("head").to_numpy() if len(df) else []
    df = df.drop(columns=index)
    df.insert(at, "neuron", idx.where(~pd.Series(is_head, index=df.index, dtype=bool)))
    df.insert(at, "head", idx.where(pd.Series(is_head, index=df.index, dtype=bool)))
    return df
