"""The report's content model: sections made of figures, tables, prose and notes.

A stage builds a ``Section`` and fills it with ``section.attempt(title, fn)``: ``fn``
returns a figure, a table, a string or a list of them; when it raises, the section keeps a
visible "unavailable: <reason>" note instead, and the rest of the report is still built.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

log = logging.getLogger(__name__)


@dataclass
class Figure:
    """A plotly figure with a caption."""

    title: str
    fig: go.Figure
    caption: str = ""


@dataclass
class Table:
    """A DataFrame shown as an HTML table (``max_rows`` first rows)."""

    title: str
    df: pd.DataFrame
    caption: str = ""
    max_rows: int = 20


@dataclass
class Text:
    """A paragraph of prose (plain text; blank lines separate paragraphs)."""

    text: str


@dataclass
class Html:
    """Pre-rendered, trusted HTML (the model card)."""

    title: str
    html: str


@dataclass
class Unavailable:
    """A visible note that a part of the report could not be built, and why."""

    title: str
    reason: str


Block = Figure | Table | Text | Html | Unavailable


def slug(text: str) -> str:
    """An HTML id from a title: lower case, words joined by ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass
class Section:
    """One top-level part of the report (a table-of-contents entry)."""

    title: str
    intro: str = ""
    blocks: list[Block] = field(default_factory=list)
    seconds: float | None = None

    @property
    def id(self) -> str:
        return slug(self.title)

    @property
    def n_unavailable(self) -> int:
        return sum(isinstance(b, Unavailable) for b in self.blocks)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def unavailable(self, title: str, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else describe(error)
        log.warning("report: %s unavailable: %s", title, reason)
        self.blocks.append(Unavailable(title, reason))

    def attempt(self, title: str, fn: Callable[[], Any], caption: str = "", max_rows: int = 20) -> Any:
        """Run ``fn`` and add what it returns under ``title``; on error add a note.

        ``fn`` may return a ``go.Figure``, a ``pd.DataFrame``, a block, or a tuple/list of
        them. Returns what ``fn`` returned, or None when it raised.
        """
        try:
            out = fn()
        except Exception as e:  # the report degrades one part at a time, visibly
            log.debug("report: %s failed\n%s", title, traceback.format_exc())
            self.unavailable(title, e)
            return None
        items = out if isinstance(out, (list, tuple)) else [out]
        for i, item in enumerate(items):
            name = title if i == 0 else f"{title} ({i + 1})"
            if isinstance(item, go.Figure):
                self.blocks.append(Figure(name, item, caption))
            elif isinstance(item, pd.DataFrame):
                self.blocks.append(Table(name, item, caption, max_rows))
            elif isinstance(item, str):
                self.blocks.append(Text(item))
            elif isinstance(item, Block):
                self.blocks.append(item)
            elif item is not None:
                self.unavailable(name, f"produced a {type(item).__name__}, not a figure or table")
        return out


def describe(error: BaseException) -> str:
    """One line naming the exception type and message."""
    msg = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {msg}" if msg else type(error).__name__
