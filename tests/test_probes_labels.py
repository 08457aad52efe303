"""Labelers: hand-checked labels on hand-made token strings, and error paths."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.probes.labels import IGNORE, check_labels, get_labeler

BOS = "<|endoftext|>"


def ids(row):
    return torch.arange(len(row)).unsqueeze(0)


def test_token_labels():
    t = torch.tensor([[0, 5, 7, 9], [0, 3, 3, 4]])
    assert interp.labels.current_token(t).tolist() == t.tolist()
    assert interp.labels.previous_token(t).tolist() == [[IGNORE, 0, 5, 7], [IGNORE, 0, 3, 3]]
    assert interp.labels.token_k_back(2)(t).tolist() == [[IGNORE, IGNORE, 0, 5], [IGNORE, IGNORE, 0, 3]]
    assert interp.labels.token_k_back(9)(t).eq(IGNORE).all()
    assert interp.labels.position(t).tolist() == [[0, 1, 2, 3]] * 2
    assert get_labeler("token_3_back").name == "token_3_back"
    assert interp.labels.position.kind == "ordinal" and interp.labels.current_token.kind == "categorical"


def test_line_start_distance_is_newline_aware_across_bpe_tokens():
    # "def f():\n    return 1\n\nx = 2": byte-level BPE glues "\n" to the next line's indent
    row = [BOS, "def", " f", "():", "\n   ", " return", " 1", "\n\n", "x", " =", " 2"]
    got = interp.labels.line_start_distance(ids(row), [row])[0].tolist()
    assert got == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3]
    # a row continuing a document starts mid-line: unknown until its first newline
    got = interp.labels.line_start_distance(ids(row), [row], torch.tensor([True]))[0].tolist()
    assert got == [IGNORE] * 4 + [0, 1, 2, 0, 1, 2, 3]


def test_indent_depth():
    row = [BOS, "if", " x", ":", "\n       ", " y", "\n\t", "\tz", "\n", "w"]
    got = interp.labels.indent_depth(ids(row), [row])[0].tolist()
    # line 1 has 8 spaces (depth 2); line 2 two tabs = 16 columns (depth 4); line 3 none
    assert got == [0, 0, 0, 0, 2, 2, 4, 4, 0, 0]
    cont = interp.labels.indent_depth(ids(row), [row], torch.tensor([True]))[0].tolist()
    assert cont[:4] == [IGNORE] * 4 and cont[4:] == got[4:]


def test_in_string_or_comment():
    row = [BOS, "x", " =", " '", "a", "\\'", "b", "'", " #", " c", "\n", '"""', "doc", "\n", "z", '"""', "\n", "y"]
    got = interp.labels.in_string_or_comment(ids(row), [row])[0].tolist()
    #          BOS x  =  '  a  \' b  '  #  c  \n """ doc \n z """ \n y
    assert got == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 0, 1, 1, 1, 1, 1, 0, 0]
    assert interp.labels.in_string_or_comment(ids(row), [row], torch.tensor([True])).eq(IGNORE).all()


def test_labels_from_a_real_tokenizer(gpt2_model):
    text = "def f(x):\n    return x  # done\n"
    toks = gpt2_model.to_tokens(text).tokens
    strs = [[gpt2_model.decode_token(int(t)) for t in toks[0]]]
    dist = interp.labels.line_start_distance(toks, strs)[0]
    newline = torch.tensor(["\n" in s for s in strs[0]])
    assert newline.any() and (dist[newline] == 0).all()
    assert (dist[1:][~newline[1:]] == dist[:-1][~newline[1:]] + 1).all()  # counts up within a line
    depth = interp.labels.indent_depth(toks, strs)[0]
    assert depth[~newline.cumsum(0).bool()].eq(0).all() and depth[newline.cumsum(0) == 1].eq(1).all()


def test_custom_callable_and_kind():
    def parity(tokens, str_tokens):
        return tokens % 2

    lab = get_labeler(parity)
    assert lab.name == "parity" and lab.kind == "categorical"
    assert lab.needs_text and lab(torch.tensor([[3, 4]]), [["a", "b"]]).tolist() == [[1, 0]]
    parity.kind, parity.needs_text = "ordinal", False
    assert get_labeler(parity).kind == "ordinal"
    assert get_labeler(parity)(torch.tensor([[3, 4]])).tolist() == [[1, 0]]


def test_label_errors():
    with pytest.raises(ValueError, match="label='next_token' is not a built-in labeler; use one of"):
        get_labeler("next_token")
    with pytest.raises(TypeError, match="label=3 of type int is not a labeler"):
        get_labeler(3)
    with pytest.raises(ValueError, match="k=-1 must be an int >= 0"):
        interp.labels.token_k_back(-1)
    bad = get_labeler(lambda t, s: t[:, :1])
    with pytest.raises(ValueError, match=r"returned shape \[1, 1\] for tokens of shape \[1, 3\]"):
        check_labels(bad, bad(torch.zeros(1, 3, dtype=torch.long), [["a"] * 3]), (1, 3))
    with pytest.raises(ValueError, match="returned non-integer labels"):
        check_labels(bad, torch.tensor([[0.5]]), (1, 1))
    with pytest.raises(ValueError, match="reads token strings; pass str_tokens"):
        interp.labels.line_start_distance(torch.zeros(1, 3, dtype=torch.long), None)
