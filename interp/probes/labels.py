"""Labelers: what a probe should read out of the residual stream at each position.

A labeler maps ``(tokens [batch, pos], str_tokens [batch][pos])`` to integer labels
``[batch, pos]``, with ``IGNORE`` (-100) where a position has no label. Built-ins:

- ``current_token``: the token id at the position.
- ``previous_token``: the token id one position back (``IGNORE`` at position 0).
- ``token_k_back(k)``: the token id ``k`` positions back.
- ``position``: the absolute position in the row (BOS is position 0).
- ``line_start_distance``: tokens since the start of the line. A token containing a
  newline starts a new line and gets 0 (byte-level BPE merges ``"\\n"`` with the next
  line's indentation), the token after it 1, and so on. A row that starts a document
  counts its first token (usually BOS) as a line start.
- ``indent_depth``: the current line's leading whitespace in columns (tabs to the next
  multiple of 8, as Python does), divided by 4 and rounded down.
- ``in_string_or_comment``: 0 in code, 1 inside a string literal (quotes included), 2
  inside a ``#`` comment, judged by the token's last character.

Rows that continue a document from an earlier row start mid-text, so the line-based
labelers give ``IGNORE`` up to the row's first newline, and ``in_string_or_comment``
gives ``IGNORE`` for the whole row (a string may have opened before the row began).
``probe_layers`` tells them which rows continue a document.

Any callable ``fn(tokens, str_tokens) -> labels`` works as a labeler; give it an attribute
``kind = "ordinal"`` to get a regression probe as well, and ``needs_text = False`` when it
does not read ``str_tokens`` (saves decoding).

Examples:
    >>> import torch
    >>> previous_token(torch.tensor([[0, 5, 7]]), None)
    tensor([[-100,    0,    5]])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

IGNORE = -100
KINDS = ("categorical", "ordinal")

StrTokens = Sequence[Sequence[str]] | None
LabelFn = Callable[[Tensor, StrTokens, Tensor], Tensor]


@dataclass(frozen=True)
class Labeler:
    """A named labeler.

    Attributes:
        name: shown in DataFrames (``label`` column).
        fn: ``fn(tokens, str_tokens, continues) -> labels``; ``continues`` is a bool
            ``[batch]``, True for rows that continue a document from an earlier row.
        kind: ``"categorical"`` (classification over the top-K labels) or ``"ordinal"``
            (a regression probe as well).
        needs_text: whether ``fn`` reads ``str_tokens``.
    """

    name: str
    fn: LabelFn
    kind: str = "categorical"
    needs_text: bool = False

    def __call__(
        self, tokens: Int[Tensor, "batch pos"], str_tokens: StrTokens = None, continues: Tensor | None = None
    ) -> Int[Tensor, "batch pos"]:
        if continues is None:
            continues = torch.zeros(tokens.shape[0], dtype=torch.bool)
        if self.needs_text and str_tokens is None:
            raise ValueError(f"label={self.name!r} reads token strings; pass str_tokens")
        return self.fn(tokens, str_tokens, continues)


def _current(tokens: Tensor, str_tokens: StrTokens, continues: Tensor) -> Tensor:
    return tokens.long().clone()


def token_k_back(k: int) -> Labeler:
    """The token id ``k`` positions back (``IGNORE`` for the first ``k`` positions)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k={k!r} must be an int >= 0 (0 is the current token)")

    def fn(tokens: Tensor, str_tokens: StrTokens, continues: Tensor) -> Tensor:
        out = torch.full_like(tokens, IGNORE, dtype=torch.long)
        if k < tokens.shape[1]:
            out[:, k:] = tokens[:, : tokens.shape[1] - k]
        return out

    return Labeler("current_token" if k == 0 else "previous_token" if k == 1 else f"token_{k}_back", fn)


def _position(tokens: Tensor, str_tokens: StrTokens, continues: Tensor) -> Tensor:
    return torch.arange(tokens.shape[1]).expand(tokens.shape).clone()


def _lines(row: Sequence[str]) -> list[int]:
    """Line index of each token: the number of newlines up to and including its text."""
    out, n = [], 0
    for s in row:
        n += s.count("\n")
        out.append(n)
    return out


def _line_start(tokens: Tensor, str_tokens: StrTokens, continues: Tensor) -> Tensor:
    out = torch.full(tokens.shape, IGNORE, dtype=torch.long)
    for b, row in enumerate(str_tokens):
        lines = _lines(row[: tokens.shape[1]])
        start = 0
        for p, line in enumerate(lines):
            if p > 0 and line != lines[p - 1]:
                start = p
            if line > 0 or not continues[b]:
                out[b, p] = p - start
    return out


def _indent_width(line: str) -> int:
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width = (width // 8 + 1) * 8
        elif ch in "\f\r":
            continue
        else:
            break
    return width


def _indent(tokens: Tensor, str_tokens: StrTokens, continues: Tensor) -> Tensor:
    out = torch.full(tokens.shape, IGNORE, dtype=torch.long)
    for b, row in enumerate(str_tokens):
        row = row[: tokens.shape[1]]
        depth = [_indent_width(s) // 4 for s in "".join(row).split("\n")]
        for p, line in enumerate(_lines(row)):
            if line > 0 or not continues[b]:
                out[b, p] = depth[line]
    return out


_QUOTE = re.compile(r"'''|\"\"\"|'|\"")


def _string_comment_states(text: str) -> list[int]:
    """Per character: 0 code, 1 string (quotes included), 2 comment (``#`` to line end)."""
    states = [0] * len(text)
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            states[i:j] = [2] * (j - i)
            i = j
        elif ch in "'\"":
            quote = _QUOTE.match(text, i).group()
            j = i + len(quote)
            while j < n:
                if text[j] == "\\":
                    j += 2
                elif text.startswith(quote, j):
                    j += len(quote)
                    break
                elif text[j] == "\n" and len(quote) == 1:
                    break  # an unterminated one-line string ends at the newline
                else:
                    j += 1
            j = min(j, n)
            states[i:j] = [1] * (j - i)
            i = j
        else:
            i += 1
    return states


def _in_string_or_comment(tokens: Tensor, str_tokens: StrTokens, continues: Tensor) -> Tensor:
    out = torch.full(tokens.shape, IGNORE, dtype=torch.long)
    for b, row in enumerate(str_tokens):
        if continues[b]:
            continue
        row = row[: tokens.shape[1]]
        states = _string_comment_states("".join(row))
        end = 0
        for p, s in enumerate(row):
            end += len(s)
            out[b, p] = states[end - 1] if s else (out[b, p - 1] if p else 0)
    return out


current_token = Labeler("current_token", _current)
previous_token = token_k_back(1)
position = Labeler("position", _position, kind="ordinal")
line_start_distance = Labeler("line_start_distance", _line_start, kind="ordinal", needs_text=True)
indent_depth = Labeler("indent_depth", _indent, kind="ordinal", needs_text=True)
in_string_or_comment = Labeler("in_string_or_comment", _in_string_or_comment, needs_text=True)

BUILTIN = {
    lab.name: lab
    for lab in (current_token, previous_token, position, line_start_distance, indent_depth, in_string_or_comment)
}
_K_BACK = re.compile(r"token_(\d+)_back")


def get_labeler(label: Any) -> Labeler:
    """Resolve ``label``: a built-in name (or ``"token_<k>_back"``), a ``Labeler``, or any
    callable ``fn(tokens, str_tokens) -> labels`` (its ``kind`` and ``needs_text`` attributes,
    if any, are kept; ``needs_text`` defaults to True)."""
    if isinstance(label, Labeler):
        return label
    if isinstance(label, str):
        if label in BUILTIN:
            return BUILTIN[label]
        m = _K_BACK.fullmatch(label)
        if m:
            return token_k_back(int(m.group(1)))
        names = ", ".join(repr(n) for n in BUILTIN)
        raise ValueError(f"label={label!r} is not a built-in labeler; use one of {names}, 'token_<k>_back', or a callable")
    if callable(label):
        kind = getattr(label, "kind", "categorical")
        if kind not in KINDS:
            raise ValueError(f"label.kind={kind!r} is not supported; use 'categorical' or 'ordinal'")
        name = getattr(label, "__name__", type(label).__name__)
        needs_text = bool(getattr(label, "needs_text", True))
        return Labeler(name, lambda t, s, c: label(t, s), kind=kind, needs_text=needs_text)
    raise TypeError(
        f"label={label!r} of type {type(label).__name__} is not a labeler; pass a built-in name "
        "such as 'previous_token' or a callable fn(tokens, str_tokens) -> labels"
    )


def check_labels(labeler: Labeler, labels: Any, shape: tuple[int, int]) -> Tensor:
    """Validate a labeler's output: integer-valued, shape ``[batch, pos]``."""
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"label={labeler.name!r} returned {type(labels).__name__}; return a tensor of shape {list(shape)}"
            ) from e
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"label={labeler.name!r} returned shape {list(labels.shape)} for tokens of shape {list(shape)}; "
            "return one label per token, with -100 where there is none"
        )
    if labels.is_floating_point():
        finite = torch.isfinite(labels)
        if not finite.all() or (labels[finite] != labels[finite].round()).any():
            raise ValueError(
                f"label={labeler.name!r} returned non-integer labels; return integer classes "
                "(or rounded ordinal values), with -100 where there is none"
            )
    elif labels.is_complex():
        raise TypeError(f"label={labeler.name!r} returned complex labels; return integer classes")
    return labels.long().cpu()
