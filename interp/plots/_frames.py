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
#: arrow, a tab as a tab arrow, a carriage return as ``\\r``; other characters that do not
#: print (control characters) as their byte, ``<0x10>``, the spelling ``Model.decode_token``
#: gives a byte token that is not UTF-8 on its own.
WHITESPACE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u21e5", "\r": "\\r"}


def _unprintable(c: str) -> str:
    return "".join(f"<0x{b:02X}>" for b in c.encode("utf-8", errors="surrogatepass"))


def show_token(token: str) -> str:
    """A token as a reader can see it: ``" value"`` -> ``"·value"``, ``"\\n   "`` -> ``"↵···"``,
    ``"\\x10"`` -> ``"<0x10>"``; the empty token is ``"∅"``."""
    out = "".join(WHITESPACE.get(c) or (c if c.isprintable() else _unprintable(c)) for c in str(token))
    return out or "\u2205"


def clip_text(text: str, chars: int) -> str:
    """``text`` cut to at most ``chars`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "\u2026"


#: Width of one character of cell text (px per px of font size): monospace fonts draw 0.6 em;
#: proportional fonts' average glyph is narrower, their widest (W, ·, ↵) no wider than this.
CHAR_EM = 0.62


def cell_chars(cell_px: float, font_px: float, *, pad_px: float = 8.0) -> int:
    """How many characters of ``font_px`` text fit in a cell ``cell_px`` wide (at least 2)."""
    return max(2, int((cell_px - pad_px) / (CHAR_EM * font_px)))
