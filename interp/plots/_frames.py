"""Input checks shared by the figure functions."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def require_columns(df: pd.DataFrame, cols: Sequence[str], fn: str, source: str, *, allow_empty: bool = False) -> None:
    """Raise unless ``df`` is a DataFrame with ``cols`` (and, unless ``allow_empty``, rows).

    ``fn`` names the plot function and ``source`` the analysis whose DataFrame it takes.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame from {source}, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks the column(s) {missing} that {fn} needs; pass the DataFrame from {source}")
    if df.empty and not allow_empty:
        raise ValueError(f"df is empty; {fn} needs at least one row from {source}")
