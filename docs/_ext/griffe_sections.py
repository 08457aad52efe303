"""A griffe extension for interp's docstring style: Google sections (``Args:``, ``Returns:``,
``Raises:``, ``Examples:``) follow each other with no blank line between them, which griffe's
Google parser requires; this inserts that blank line before each section title."""

from __future__ import annotations

import re
from typing import Any

import griffe

SECTIONS = ("Args", "Arguments", "Parameters", "Returns", "Yields", "Raises", "Examples", "Attributes", "Warns")
_TITLE = re.compile(rf"(?m)^(?P<prev>[^\n]*\S[^\n]*)\n(?P<title>[ \t]*(?:{'|'.join(SECTIONS)}):[ \t]*)$")


def separate_sections(text: str) -> str:
    """``text`` with a blank line above every section title that directly follows a line."""
    return _TITLE.sub(r"\g<prev>\n\n\g<title>", text)


class SectionBlankLines(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = separate_sections(obj.docstring.value)
