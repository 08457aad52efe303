"""Input checks and token display shared by the figure functions (and the CLI's tables)."""

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


#: How whitespace is drawn in token labels: a space as a middle dot, a newline as a return
#: arrow, a tab as a tab arrow; other control characters as escapes (``\\x08``).
WHITESPACE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u21e5", "\r": "\\r"}


def show_token(token: str) -> str:
    """A token as a reader can see it: ``" value"`` -> ``"·value"``, ``"\\n   "`` -> ``"↵···"``;
    the empty token is ``"∅"``."""
    out = "".join(WHITESPACE.get(c) or (c if c.isprintable() else repr(c)[1:-1]) for c in str(token))
    return out or "\u2205"
