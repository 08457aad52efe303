"""How the ``interp`` command shows and writes a result table: the terminal view (tokens drawn,
token lists cut short) and ``--table FILE`` / ``--format`` files (csv quoted, json, parquet)."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any


def write_table(df: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)  # a token "\r" unquoted reads back as a line end
    elif suffix == ".json":
        df.to_json(path, orient="records", indent=1, default_handler=str)
    elif suffix == ".parquet":
        from interp.records import PARQUET_ATTRS_CHARS

        big = [k for k, v in df.attrs.items() if isinstance(v, str) and len(v) > PARQUET_ATTRS_CHARS]
        if big:  # a footer this large could not be read back: the table goes, the record stays apart
            logging.getLogger("interp").warning(
                "%s: attrs %s left out (too large for a readable parquet footer); write the examples with "
                "--examples FILE", path, ", ".join(big))
            df = df.copy()
            for k in big:
                del df.attrs[k]
        df.to_parquet(path, index=False)
    else:
        raise ValueError(f"{str(path)!r}: use a .csv, .json or .parquet file")


def listy(df: Any) -> list[str]:
    """Columns holding lists or arrays (e.g. the logit lens's top_tokens)."""
    import numpy as np

    return [c for c in df.columns if df[c].dtype == object and len(df)
            and isinstance(df[c].iloc[0], (list, tuple, np.ndarray))]


def tidy(df: Any) -> Any:
    """Arrays in cells become lists, so csv / json hold ``[0.1, 0.2]`` rather than numpy's repr."""
    cols = listy(df)
    if not cols:
        return df
    return df.assign(**{c: df[c].map(lambda v: v.tolist() if hasattr(v, "tolist") else list(v)) for c in cols})


#: Tokens shown from a list column (e.g. the logit lens's top_tokens) in the terminal.
_LIST_TOKENS = 3


def terminal_view(df: Any) -> Any:
    """The table as the terminal shows it: tokens drawn (``·`` a space, ``↵`` a newline),
    token lists cut to their first three, number lists and a single-valued ``batch`` left
    out (``--format csv`` and ``--table`` keep everything)."""
    import pandas as pd

    from interp.plots._frames import show_token

    out = df
    if "batch" in out.columns and out["batch"].nunique(dropna=False) <= 1:
        out = out.drop(columns="batch")
    for c in listy(out):
        if "token" in c:
            out = out.assign(**{c: out[c].map(lambda v: " ".join(show_token(str(t)) for t in list(v)[:_LIST_TOKENS]))})
        else:
            out = out.drop(columns=c)
    for c in out.columns:
        if (c == "token" or c.endswith("_token")) and not pd.api.types.is_numeric_dtype(out[c]):
            out = out.assign(**{c: out[c].astype(object).map(lambda v: v if v is None or v != v else show_token(str(v)))})
    return out


def print_table(df: Any, rows: int) -> None:
    import pandas as pd

    shown = terminal_view(df.head(rows))
    with pd.option_context("display.width", 120, "display.max_columns", 30, "display.max_colwidth", 30):
        text = shown.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    sys.stdout.write(text + "\n")
    if len(df) > rows:
        sys.stdout.write(f"... {len(df) - rows:,} more rows ({len(df):,} in all; --rows N shows more, "
                         "--format csv or --table FILE gives them all)\n")
