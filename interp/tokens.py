"""Turning user inputs (a string, a list of strings, a token tensor) into token batches.

User text is text: a literal ``<|endoftext|>`` (or any special token's string) inside a
prompt is tokenized as the characters it is made of, not as the special token, unless the
caller opts in with ``split_special_tokens=False`` (the name and meaning of
``transformers``' own option). An interpretability tool reads what the user wrote; a
special token appearing from pasted text would silently change the model's input (a
document boundary, an attention sink). BOS is added by interp itself (``prepend_bos``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor


@dataclass(frozen=True)
class Tokens:
    """A right-padded token batch.

    tokens: ``[batch, pos]`` ids; mask: ``[batch, pos]`` True on real tokens.
    Right padding keeps every real position exact under causal attention.
    """

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]

    @property
    def lengths(self) -> list[int]:
        return self.mask.sum(-1).tolist()


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> Tokens:
    """Right-pad lists of ids into a ``Tokens`` batch."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = True
    return Tokens(tokens, mask)


#: The default for every public function that tokenizes user text: special-token strings in
#: the text are split into ordinary tokens (``transformers``' ``split_special_tokens=True``).
SPLIT_SPECIAL_TOKENS = True


def encode(tokenizer, text: str, *, split_special_tokens: bool = SPLIT_SPECIAL_TOKENS, **extra) -> dict:
    """``tokenizer(text)`` without added special tokens; a special token's string in ``text``
    stays text unless ``split_special_tokens=False``. ``extra``: e.g. ``return_offsets_mapping``."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=bool(split_special_tokens),
                     verbose=False, **extra)


def encode_texts(
    tokenizer,
    texts: Sequence[str],
    *,
    bos_id: int | None,
    n_ctx: int,
    chunk: bool,
    pad_id: int,
    d_vocab: int | None = None,
    split_special_tokens: bool = SPLIT_SPECIAL_TOKENS,
) -> Tokens:
    """Tokenize strings (no special tokens added by the tokenizer), prepend ``bos_id`` when
    given, and either refuse texts longer than ``n_ctx`` or split them into rows.

    Only the empty string is refused: whitespace-only text is valid input (indentation and
    blank lines are code to a code model), and so is text that is only the BOS string.
    With ``d_vocab``, an id the model has no embedding for (another model's tokenizer) is refused.
    ``split_special_tokens``: see the module docstring (default True: user text is text).
    """
    rows: list[list[int]] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = ""
            if isinstance(text, (int, list, tuple, torch.Tensor)):
                hint = (
                    "; pass token ids as one LongTensor [batch, pos] (right-pad ragged rows and "
                    "pass interp.Tokens(tokens, mask))"
                )
            raise TypeError(
                f"inputs[{i}] is a {type(text).__name__}; a list of inputs must hold only strings{hint}"
            )
        if text == "":
            where = "inputs" if len(texts) == 1 else f"inputs[{i}]"
            raise ValueError(f"{where} is an empty string; pass at least one character of text")
        ids = encode(tokenizer, text, split_special_tokens=split_special_tokens)["input_ids"]
        if d_vocab is not None and ids and max(ids) >= d_vocab:
            raise ValueError(
                f"inputs[{i}] encodes to token id {max(ids)}, outside the model's vocabulary 0..{d_vocab - 1}: "
                "the tokenizer is not this model's; load the model with its own tokenizer (tokenizer=...)"
            )
        prefix = [] if bos_id is None else [bos_id]
        room = n_ctx - len(prefix)
        if len(ids) <= room:
            rows.append(prefix + ids)
        elif chunk:
            rows.extend(prefix + ids[s : s + room] for s in range(0, len(ids), room))
        else:
            where = "text" if len(texts) == 1 else f"inputs[{i}]"
            raise ValueError(
                f"{where} is {len(ids) + len(prefix):,} tokens but the model's context is "
                f"{n_ctx:,}; pass chunk=True or a shorter text"
            )
    return pad_rows(rows, pad_id)


def check_token_tensor(tokens: object, d_vocab: int, n_ctx: int, *, chunk: bool, bos: int | None = None) -> Tokens:
    """Validate a LongTensor ``[batch, pos]`` (or ``[pos]``) of ids; used exactly as given,
    after ``bos`` (when given) is prepended to every row."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"inputs must be a str, a list of str or a LongTensor, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(
            f"inputs is a {tokens.dtype} tensor; token ids must be integers "
            "(pass tokens.long())"
        )
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2:
        raise ValueError(
            f"inputs has shape {tuple(tokens.shape)}; token ids must be [batch, pos] or [pos]"
        )
    if bos is not None:
        tokens = torch.cat([torch.full((tokens.shape[0], 1), bos, dtype=tokens.dtype, device=tokens.device), tokens], 1)
    if tokens.numel() == 0:
        raise ValueError(f"inputs has shape {tuple(tokens.shape)}; pass at least one token")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= d_vocab:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"inputs holds token id {bad}, outside the vocabulary 0..{d_vocab - 1}; "
            "pass ids from this model's tokenizer"
        )
    tokens = tokens.long().cpu()
    if tokens.shape[1] > n_ctx:
        if not chunk:
            raise ValueError(
                f"inputs is {tokens.shape[1]:,} tokens long but the model's context is "
                f"{n_ctx:,}; pass chunk=True or fewer tokens"
            )
        rows = [r[s : s + n_ctx].tolist() for r in tokens for s in range(0, r.shape[0], n_ctx)]
        return pad_rows(rows, pad_id=0)
    return Tokens(tokens, torch.ones_like(tokens, dtype=torch.bool))


def check_tokens(toks: Tokens, d_vocab: int, n_ctx: int) -> Tokens:
    """Validate a ``Tokens`` batch given directly: ids as ``check_token_tensor``, and a bool
    mask of the same shape that is right-padded (left padding would shift real tokens)."""
    width = toks.tokens.shape[-1] if isinstance(toks.tokens, torch.Tensor) and toks.tokens.dim() else 0
    if width > n_ctx:
        raise ValueError(
            f"Tokens has {width:,} positions but the model's context is {n_ctx:,}; split its rows "
            "into windows of at most that many tokens (or pass the ids as a tensor with chunk=True)"
        )
    tokens = check_token_tensor(toks.tokens, d_vocab, n_ctx, chunk=False).tokens
    mask = toks.mask
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape):
        got = f"a {mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(
            f"Tokens.mask is {got}; pass a bool tensor of the tokens' shape {tuple(tokens.shape)} "
            "(True on real tokens)"
        )
    mask = mask.cpu()
    if not mask.any():
        raise ValueError("Tokens.mask is False everywhere; mark the real tokens True")
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        row = int((mask[:, 1:] & ~mask[:, :-1]).any(-1).nonzero()[0])
        raise ValueError(
            f"Tokens.mask row {row} has a padded position before a real one; interp needs right "
            "padding (real tokens first), so that every real position is exact under causal attention"
        )
    return Tokens(tokens, mask)


# ---- one token as text ------------------------------------------------------------------
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable-character table, inverted (the alphabet of
    byte-level BPE vocabularies)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(tokenizer: Any, token: int) -> bytes | None:
    """The bytes a token stands for, where its vocabulary entry says so: a SentencePiece
    byte-fallback piece (``"<0xE2>"``) or a byte-level BPE piece (GPT-2's byte alphabet).
    None for any other kind of piece."""
    piece = tokenizer.convert_ids_to_tokens(int(token))
    if not isinstance(piece, str) or not piece:
        return None
    if m := _BYTE_PIECE.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    table = _byte_of_char()
    if all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return None


def decode_token(tokenizer: Any, token: int) -> str:
    """One token's text: the tokenizer's own ``decode``, except for bytes that are not valid
    UTF-8 on their own (a multi-byte character that the tokenizer cut into several tokens).
    ``decode`` turns each into ``"\ufffd"``, which loses which byte it was; here it is written
    ``<0xE2>`` (the SentencePiece spelling), so ``"\xe2\x80"`` reads ``"<0xE2><0x80>"``.

    Examples:
        >>> decode_token(model.tokenizer, 159)      # the embedded model's byte 0xE2   # doctest: +SKIP
        '<0xE2>'
    """
    text = tokenizer.decode([int(token)])
    if "\ufffd" not in text:
        return text
    raw = token_bytes(tokenizer, token)
    if raw is None:
        return text
    chars = raw.decode("utf-8", errors="surrogateescape")  # an invalid byte b -> the lone surrogate U+DC00 + b
    return "".join(f"<0x{ord(c) - 0xDC00:02X}>" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in chars)
