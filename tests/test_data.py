"""Tests for interp.data: the stdlib corpus, its split, and token batching."""

from __future__ import annotations

import pytest
import torch

from interp.data import TokenBatch, iter_texts, stdlib_files, stdlib_root, token_batches
from interp.models.tokenizer import train_tokenizer

DOCS = [
    "def add(a, b):\n    return a + b\n" * 20,
    "x = 1\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n" * 7,
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(DOCS, vocab_size=300)


def test_split_is_partition_and_about_five_percent():
    train, val, everything = stdlib_files("train"), stdlib_files("val"), stdlib_files("all")
    assert set(train).isdisjoint(val)
    assert set(train) | set(val) == set(everything)
    assert 0.03 <= len(val) / len(everything) <= 0.08
    root = stdlib_root()
    assert [p.relative_to(root).as_posix() for p in everything] == sorted(
        p.relative_to(root).as_posix() for p in everything
    )


def test_split_is_fixed_by_relative_path():
    root = stdlib_root()
    val = {p.relative_to(root).as_posix() for p in stdlib_files("val")}
    train = {p.relative_to(root).as_posix() for p in stdlib_files("train")}
    assert {"traceback.py", "secrets.py", "opcode.py"} <= val
    assert {"os.py", "ast.py", "json/__init__.py"} <= train


def test_excluded_directories():
    root = stdlib_root()
    parts = {part for p in stdlib_files("all") for part in p.relative_to(root).parts[:-1]}
    assert not parts & {"site-packages", "test", "tests", "idle_test"}
    size = sum(p.stat().st_size for p in stdlib_files("all"))
    assert 5e6 < size < 30e6


def test_bad_split_names_parameter():
    with pytest.raises(ValueError, match="split='dev'"):
        stdlib_files("dev")


def test_iter_texts_sources(tmp_path):
    assert list(iter_texts(["a", "b"])) == [("0", "a"), ("1", "b")]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("B")
    (tmp_path / "a.md").write_text("A")
    (tmp_path / "skip.bin").write_text("no")
    assert list(iter_texts(tmp_path)) == [("a.md", "A"), ("sub/b.py", "B")]
    assert list(iter_texts(str(tmp_path / "a.md"))) == [(str(tmp_path / "a.md"), "A")]
    doc_id, text = next(iter_texts("stdlib:val"))
    assert doc_id == stdlib_files("val")[0].relative_to(stdlib_root()).as_posix()
    assert text == stdlib_files("val")[0].read_text(encoding="utf-8", errors="replace")


def test_iter_texts_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_texts(tmp_path / "missing.txt"))
    with pytest.raises(TypeError, match="int"):
        list(iter_texts(3))
    with pytest.raises(TypeError, match=r"source\[1\]"):
        list(iter_texts(["ok", 5]))
    with pytest.raises(ValueError, match="stdlib:dev"):
        list(iter_texts("stdlib:dev"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        list(iter_texts(tmp_path / "empty"))


def test_token_batches_windows_reconstruct_documents(tokenizer):
    batches = list(token_batches(tokenizer, DOCS, n_ctx=16, batch_size=4, min_tokens=1, progress=False))
    assert all(isinstance(b, TokenBatch) for b in batches)
    assert all(b.tokens.shape[1] == 16 and b.mask.dtype == torch.bool for b in batches)
    assert all(len(b) <= 4 for b in batches)
    bos = tokenizer.bos_token_id
    by_doc: dict[str, list[int]] = {}
    for b in batches:
        assert (b.tokens[:, 0] == bos).all() and b.mask[:, 0].all()
        for row, m, doc in zip(b.tokens, b.mask, b.doc_ids, strict=True):
            assert not (m[1:].int().diff() > 0).any(), "mask must be a prefix"
            assert (row[~m] == tokenizer.pad_token_id).all()
            by_doc.setdefault(doc, []).extend(row[m][1:].tolist())
    for i, text in enumerate(DOCS):
        assert by_doc[str(i)] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_token_batches_min_and_max_tokens(tokenizer):
    short = list(token_batches(tokenizer, DOCS, n_ctx=16, batch_size=2, min_tokens=16, progress=False))
    assert all(b.mask.all() for b in short)
    assert "1" not in {d for b in short for d in b.doc_ids}
    capped = list(token_batches(tokenizer, DOCS, n_ctx=16, batch_size=2, max_tokens=40, min_tokens=16, progress=False))
    # never more than max_tokens: two full rows, and the third cut to 8 tokens falls under min_tokens
    assert sum(int(b.mask.sum()) for b in capped) == 32 and len(capped) == 1
    exact = list(token_batches(tokenizer, DOCS, n_ctx=16, batch_size=2, max_tokens=40, progress=False))  # default: every row
    assert sum(int(b.mask.sum()) for b in exact) == 40 and [len(b.mask) for b in exact] == [2, 1]


def test_token_batches_without_bos(tokenizer):
    (batch,) = token_batches(
        tokenizer, ["x = 1\n" * 3], n_ctx=64, batch_size=2, prepend_bos=False, min_tokens=1, progress=False
    )
    assert batch.tokens[0, 0] != tokenizer.bos_token_id


def test_token_batches_errors(tokenizer):
    with pytest.raises(ValueError, match="n_ctx=1"):
        next(token_batches(tokenizer, DOCS, n_ctx=1, batch_size=2))
    with pytest.raises(ValueError, match="batch_size=0"):
        next(token_batches(tokenizer, DOCS, n_ctx=8, batch_size=0))


def test_long_documents_tokenize_piece_by_piece_as_far_as_needed(tokenizer, monkeypatch):
    import interp.data as data

    monkeypatch.setattr(data, "PIECE_CHARS", 2048)
    monkeypatch.setattr(data, "_OVERLAP_CHARS", 256)
    text = "".join(DOCS) * 40  # ~20k characters: ten pieces
    pieces = [i for ids in data._token_ids(tokenizer, text) for i in ids]
    assert pieces == tokenizer(text, add_special_tokens=False)["input_ids"]
    seen: list[int] = []
    real = tokenizer.__call__

    def counting(t, *a, **k):
        seen.append(len(t))
        return real(t, *a, **k)

    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, t, *a, **k: counting(t, *a, **k))
    next(token_batches(tokenizer, [text], n_ctx=16, batch_size=2, max_tokens=20, progress=False))
    assert sum(seen) <= 2048, "the first batch tokenized only the first piece, not the whole document"


def test_empty_and_all_short_corpora(tokenizer):
    from interp.data import DEFAULT_ROW_TOKENS, row_length

    with pytest.raises(ValueError, match=r"source=\[\] holds no texts"):
        next(token_batches(tokenizer, [], n_ctx=16, batch_size=2))
    with pytest.warns(UserWarning, match="yielded no rows.*min_tokens=16"):
        assert list(token_batches(tokenizer, ["x = 1\n"], n_ctx=64, batch_size=2, min_tokens=16, progress=False)) == []
    (short,) = token_batches(tokenizer, ["x = 1\n", "y = 22\n"], n_ctx=64, batch_size=2, progress=False)
    assert short.mask.sum(1).tolist() == [1 + len(tokenizer("x = 1\n", add_special_tokens=False)["input_ids"]),
                                          1 + len(tokenizer("y = 22\n", add_special_tokens=False)["input_ids"])]
    assert short.tokens.shape[1] == max(short.mask.sum(1).tolist())  # as wide as its longest row, not n_ctx
    with pytest.warns(UserWarning, match="yielded no rows"):
        assert list(token_batches(tokenizer, [""], n_ctx=64, batch_size=2, progress=False)) == []
    assert row_length(None, 8192) == DEFAULT_ROW_TOKENS == 256
    assert row_length(None, 128) == 128 and row_length(1024, 512) == 512
