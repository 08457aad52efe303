"""A griffe extension for interp's docstring style, read by the API pages' Google parser:

- sections (``Args:``, ``Returns:``, ``Raises:``, ``Examples:``) follow each other with no blank
  line between them, which griffe's parser requires: a blank line is inserted above each title;
- doctests (``>>>``) stand in module docstrings with no ``Examples:`` title, where Markdown
  would read ``>>>`` as nested quotes: each such block becomes an ``Examples:`` section, drawn as
  code."""

from __future__ import annotations

import re
from typing import Any

import griffe

SECTIONS = ("Args", "Arguments", "Parameters", "Returns", "Yields", "Raises", "Examples", "Attributes", "Warns")
_TITLE = re.compile(rf"(?m)^(?P<prev>[^\n]*\S[^\n]*)\n(?P<title>[ \t]*(?:{'|'.join(SECTIONS)}):[ \t]*)$")


_EXAMPLES_TITLE = re.compile(r"\s*Examples?:\s*")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _under_examples(done: list[str], indent: int) -> bool:
    """Whether the nearest line above that is indented less than ``indent`` is an Examples title."""
    for line in reversed(done):
        if line.strip() and _indent(line) < indent:
            return bool(_EXAMPLES_TITLE.fullmatch(line))
    return False


def titled_doctests(text: str) -> str:
    """``text`` with every doctest block that is not under an ``Examples:`` title put under one."""
    lines, done, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>") and not _under_examples(done, _indent(line)):
            indent, j = _indent(line), i
            while j < len(lines) and lines[j].strip() and _indent(lines[j]) >= indent:
                j += 1
            if done and done[-1].strip():
                done.append("")
            done.append(" " * indent + "Examples:")
            done += ["    " + block for block in lines[i:j]]
            i = j
            continue
        done.append(line)
        i += 1
    return "\n".join(done)


def separate_sections(text: str) -> str:
    """``text`` with a blank line above every section title that directly follows a line."""
    return _TITLE.sub(r"\g<prev>\n\n\g<title>", text)


class SectionBlankLines(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = separate_sections(titled_doctests(obj.docstring.value))
