"""Corpora and token streaming.

The built-in corpus is the running interpreter's own standard library source
(``*.py`` under ``sysconfig.get_paths()["stdlib"]``, without ``site-packages`` and
the ``test`` / ``tests`` / ``idle_test`` directories), so every machine has it.
About 5% of the files are held out for validation, chosen by a hash of the path
relative to the stdlib root, so the split does not depend on the machine.

Examples:
    >>> from interp.data import stdlib_files, token_batches
    >>> len(stdlib_files("val")) < len(stdlib_files("train"))
    True
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from interp._checks import check_bool, check_int
from interp._progress import tqdm
from interp.tokens import SPLIT_SPECIAL_TOKENS, encode

logger = logging.getLogger(__name__)

EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test"})
TEXT_SUFFIXES = (".py", ".txt", ".md")
VAL_FRACTION = 0.05
_SPLITS = ("train", "val", "all")
_STDLIB_SOURCES = ("stdlib", "stdlib:train", "stdlib:val")


def stdlib_root() -> Path:
    """Directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _is_val(relative: str) -> bool:
    """Stable validation membership from a hash of the relative posix path."""
    digest = hashlib.sha256(relative.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < VAL_FRACTION


def stdlib_files(split: str = "all") -> list[Path]:
    """Sorted stdlib ``*.py`` files of one split.

    Args:
        split: ``"train"`` (~95% of files), ``"val"`` (~5%) or ``"all"``.
    Raises:
        ValueError: an unknown split.
    """
    if split not in _SPLITS:
        raise ValueError(f"split={split!r} is not one of {_SPLITS}; use 'train', 'val' or 'all'")
    return list(_stdlib_files(split, stdlib_root()))


@functools.lru_cache(maxsize=8)
def _stdlib_files(split: str, root: Path) -> tuple[Path, ...]:
    """The walk behind ``stdlib_files``, once per process (the installed stdlib does not change
    while it runs; walking it costs about a second)."""
    files = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(relative.parts[:-1]) or not path.is_file():
            continue
        if split == "all" or (split == "val") == _is_val(relative.as_posix()):
            files.append(path)
    return tuple(sorted(files, key=lambda p: p.relative_to(root).as_posix()))


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def iter_texts(source: str | Path | Sequence[str]) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)`` pairs from a source, one document at a time.

    Args:
        source: ``"stdlib"``, ``"stdlib:train"`` or ``"stdlib:val"`` (doc ids are
            paths relative to the stdlib root); a text file (doc id: its path); a
            directory (all ``*.py``, ``*.txt``, ``*.md`` files below it, sorted, doc
            ids relative to it); or a list/tuple of strings (doc ids ``"0"``, ``"1"``, ...).
    Raises:
        TypeError: a source of another type, or a list holding non-strings.
        FileNotFoundError: a path that does not exist.
        ValueError: an unknown ``stdlib:`` split or an empty directory.
    """
    if isinstance(source, (list, tuple)):
        bad = [i for i, s in enumerate(source) if not isinstance(s, str)]
        if bad:
            raise TypeError(
                f"source[{bad[0]}] is {type(source[bad[0]]).__name__}, expected str; pass a list of strings"
            )
        for i, text in enumerate(source):
            yield str(i), text
        return
    if not isinstance(source, (str, Path)):
        raise TypeError(
            f"source={source!r} of type {type(source).__name__} is not supported; pass "
            "'stdlib', 'stdlib:train', 'stdlib:val', a file or directory path, or a list of strings"
        )
    if isinstance(source, str) and source.startswith("stdlib"):
        if source not in _STDLIB_SOURCES:
            raise ValueError(f"source={source!r} is not one of {_STDLIB_SOURCES}")
        split = "all" if source == "stdlib" else source.split(":", 1)[1]
        root = stdlib_root()
        for path in stdlib_files(split):
            yield path.relative_to(root).as_posix(), _read(path)
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"source={str(source)!r} does not exist; pass an existing file or directory, "
            "a list of strings, or 'stdlib'"
        )
    if path.is_file():
        yield str(path), _read(path)
        return
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(
            f"source={str(source)!r} holds no {', '.join(TEXT_SUFFIXES)} files; "
            "point it at a directory with text files"
        )
    for file in files:
        yield file.relative_to(path).as_posix(), _read(file)


@dataclass
class TokenBatch:
    """A batch of token windows, one document per row.

    tokens: LongTensor [batch, width] (``width``: the batch's longest row, at most ``n_ctx``);
        padded positions hold the pad id.
    mask: BoolTensor [batch, width]; True where the token is real (BOS included).
    doc_ids: list[str] of length batch; the document each row came from.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    doc_ids: list[str]

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


#: Tokens per row when the caller gives no ``n_ctx``: long documents are cut into rows of this
#: many tokens (BOS included), never padded to the model's context (8,192 on SmolLM2-135M,
#: whose attention alone would then take gigabytes per batch). See ``row_length``.
DEFAULT_ROW_TOKENS = 256
#: Long documents are tokenized this many characters at a time, so the first batch of a large
#: file costs what its first rows need, not the whole file (see ``_token_ids``).
PIECE_CHARS = 1 << 16
#: Tokens ending within this many characters of a piece's cut are tokenized again with the
#: next piece, so the cut cannot change a token (a pre-token this long would be needed).
_OVERLAP_CHARS = 1024


def row_length(n_ctx: int | None, model_ctx: int) -> int:
    """Tokens per streamed row: ``n_ctx`` when given, else ``DEFAULT_ROW_TOKENS``; never more
    than the model's context ``model_ctx``. Memory per batch then grows with what the call
    asks for, not with the model's context."""
    return min(DEFAULT_ROW_TOKENS if n_ctx is None else int(n_ctx), int(model_ctx))


def _token_ids(tokenizer, text: str, split_special_tokens: bool = SPLIT_SPECIAL_TOKENS) -> Iterator[list[int]]:
    """A document's token ids, piece by piece (``PIECE_CHARS`` characters at a time for a fast
    tokenizer): the same ids as tokenizing the whole text, produced only as far as they are
    consumed. Each piece keeps the tokens that end at least ``_OVERLAP_CHARS`` before its
    cut; the next piece starts at the first token it dropped."""
    if len(text) <= PIECE_CHARS or not getattr(tokenizer, "is_fast", False):
        yield encode(tokenizer, text, split_special_tokens=split_special_tokens)["input_ids"]
        return
    start = 0
    while start < len(text):
        if len(text) - start <= PIECE_CHARS:
            yield encode(tokenizer, text[start:], split_special_tokens=split_special_tokens)["input_ids"]
            return
        enc = encode(tokenizer, text[start : start + PIECE_CHARS], split_special_tokens=split_special_tokens,
                     return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        limit = PIECE_CHARS - _OVERLAP_CHARS
        keep = bisect.bisect_right([end for _, end in offsets], limit)
        if keep == 0 or keep == len(ids):  # a pre-token longer than the overlap: keep the piece whole
            keep = len(ids)
        yield ids[:keep]
        start += offsets[keep][0] if keep < len(ids) else PIECE_CHARS


def _windows(tokenizer, text: str, bos: int | None, n_ctx: int,
             split_special_tokens: bool = SPLIT_SPECIAL_TOKENS) -> Iterator[list[int]]:
    """Rows of one document: BOS (if any) then up to ``n_ctx - 1`` tokens, in order."""
    step = n_ctx - 1 if bos is not None else n_ctx
    buf: list[int] = []
    for ids in _token_ids(tokenizer, text, split_special_tokens):
        buf.extend(ids)
        while len(buf) >= step:
            chunk, buf = buf[:step], buf[step:]
            yield [bos, *chunk] if bos is not None else chunk
    if buf:
        yield [bos, *buf] if bos is not None else buf


def token_batches(
    tokenizer,
    source: str | Path | Sequence[str],
    *,
    n_ctx: int,
    batch_size: int,
    prepend_bos: bool = True,
    max_tokens: int | None = None,
    min_tokens: int = 1,
    progress: bool = True,
    split_special_tokens: bool = SPLIT_SPECIAL_TOKENS,
) -> Iterator[TokenBatch]:
    """Stream a source as batches of token windows, document by document.

    Each document is tokenized and cut into windows of ``n_ctx`` tokens (BOS then
    ``n_ctx - 1`` text tokens when ``prepend_bos``). Every window is used, however short: a
    document shorter than a row is one short row (a 15-token prompt is a 16-token row with
    BOS). A batch is as wide as its longest row (at most ``n_ctx``); shorter rows are
    right-padded with ``mask`` False, so a corpus of short prompts costs what its tokens do.
    Memory holds one document and one batch at a time; long documents are tokenized piece by
    piece as rows are needed (``PIECE_CHARS``), so the first batch of a large file costs what
    it needs, and ``max_tokens`` bounds the work, not the file size. A corpus that gives no row
    at all (every text empty) warns (``UserWarning``); an empty list raises.

    Args:
        tokenizer: a ``transformers.PreTrainedTokenizerFast``.
        source: anything :func:`iter_texts` accepts.
        n_ctx: the widest row (for a model, ``row_length(None, model.cfg.n_ctx)`` gives the
            documented default, ``DEFAULT_ROW_TOKENS``).
        batch_size: rows per batch (the last batch may be smaller).
        prepend_bos: start every row with ``tokenizer.bos_token_id``.
        max_tokens: real tokens in all (the last window is cut short so the count is exactly
            this, unless the corpus runs out first or the remainder is under ``min_tokens``).
        min_tokens: leave out windows with fewer real tokens (default 1: keep every window;
            e.g. ``n_ctx`` for full rows only).
        progress: show a tqdm bar over real tokens.
        split_special_tokens: a special token's string in a text (``"<|endoftext|>"``) is
            tokenized as text (default True); False reads it as the special token.
    Yields:
        TokenBatch with tokens/mask ``[batch, width]``, ``width <= n_ctx``.
    Raises:
        ValueError: a non-positive size, or prepend_bos with a tokenizer lacking BOS.
    """
    for name, value, low in (
        ("n_ctx", n_ctx, 2),
        ("batch_size", batch_size, 1),
        ("min_tokens", min_tokens, 1),
    ):
        value = check_int(name, value)  # numpy ints too; a str or float is a TypeError
        if value < low:
            raise ValueError(f"{name}={value!r} must be an int >= {low}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens!r} must be positive or None")
    split_special_tokens = check_bool("split_special_tokens", split_special_tokens)
    bos = None
    if prepend_bos:
        bos = tokenizer.bos_token_id
        if bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has no bos_token_id; pass prepend_bos=False")
    pad = _pad_id(tokenizer)
    rows: list[list[int]] = []
    row_docs: list[str] = []
    seen = 0
    bar = tqdm(total=max_tokens, unit="tok", desc="tokens", disable=not progress)

    def flush() -> TokenBatch:
        width = max(len(r) for r in rows)  # as wide as the longest row: short prompts are not padded to n_ctx
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        batch = TokenBatch(tokens, mask, list(row_docs))
        rows.clear()
        row_docs.clear()
        return batch

    if isinstance(source, (list, tuple)) and not source:
        raise ValueError("source=[] holds no texts; pass at least one document, a corpus name or a path")
    n_docs, longest, yielded = 0, 0, False
    try:
        for doc_id, text in iter_texts(source):
            n_docs += 1
            for window in _windows(tokenizer, text, bos, n_ctx, split_special_tokens):
                longest = max(longest, len(window))
                if max_tokens is not None:  # the last window is cut so the total is max_tokens exactly
                    window = window[: max_tokens - seen - sum(len(r) for r in rows)]
                if len(window) < min_tokens:
                    if max_tokens is not None and seen + sum(len(r) for r in rows) + min_tokens > max_tokens:
                        break
                    continue
                rows.append(window)
                row_docs.append(doc_id)
                if len(rows) == batch_size:
                    batch = flush()
                    real = int(batch.mask.sum())
                    seen += real
                    bar.update(real)
                    yielded = True
                    yield batch
                    if max_tokens is not None and seen >= max_tokens:
                        return
            if max_tokens is not None and seen + sum(len(r) for r in rows) + min_tokens > max_tokens:
                break  # no room left for another window
        if rows:
            batch = flush()
            bar.update(int(batch.mask.sum()))
            yielded = True
            yield batch
        if not yielded:
            warnings.warn(
                f"source={source!r:.80} yielded no rows: none of its {n_docs} document(s) has a window of "
                f"min_tokens={min_tokens} tokens (the longest has {longest}); pass non-empty documents"
                + (" or a smaller min_tokens" if min_tokens > 1 else ""), UserWarning, stacklevel=2,
            )
    finally:
        bar.close()
