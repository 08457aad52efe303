"""Neuron and head pages: their numbers recomputed with plain torch on the Hugging Face model,
near-duplicates planted and removed, and the page saved and loaded without a model."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import interp
from interp.pages import Page
from interp.pages.corpus import context_line, dedup

LINE = "url = 'https://example.com/a/very/long/path?query=1'\n"
DOCS = [f"def f{i}(x):\n    {LINE}    return x + {i}\n" * 3 for i in range(6)] + [
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n", "import os\nimport sys\nvalue = 'string'\n"]


@pytest.fixture(scope="module")
def pages(default_model):
    return interp.component_pages(default_model, ["L1N5", "L0H1"], DOCS, max_tokens=2_000, top_k=6, progress=False)


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM

    from interp.models import DEFAULT_MODEL_DIR

    return AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR).eval()


def test_neuron_statistics_match_neuron_stats(default_model, pages):
    page = pages[0]
    stats = interp.neuron_stats(default_model, DOCS, layers=[1], max_tokens=2_000, progress=False)
    row = stats[stats["neuron"] == 5].iloc[0]
    s = page.summary
    assert s["n_tokens"] == row["n_tokens"]
    # the same float32 activations; neuron_stats merges float32 moments batch by batch (Chan), the
    # page sums in float64: they differ by the float32 rounding of a mean over n = 2,000 values,
    # about eps32 * log2(n) * max|x| = 6e-8 * 11 * 3 = 2e-6; 1e-5 leaves room and no more
    assert s["mean"] == pytest.approx(row["mean"], abs=1e-5)
    assert s["max"] == pytest.approx(row["max"], abs=1e-6) and s["min"] == pytest.approx(row["min"], abs=1e-6)
    assert page.top["activation"].iloc[0] == pytest.approx(s["max"], abs=1e-6)
    assert page.bottom["activation"].iloc[0] == pytest.approx(s["min"], abs=1e-6)
    assert page.histogram["n_positions"].sum() == s["n_tokens"]
    assert page.quantiles["value"].is_monotonic_increasing


def test_near_duplicates_count_once(pages):
    """Planted: one URL line in three documents and two tokens of one line, beside two distinct
    lines; the top list keeps the first of each line and counts what it stands for."""
    # (tokens windows of different lengths: the same line read from different positions)
    line = ["url", " =", " 'http", "s://", "ex", "ample", "'", "\n"]
    df = pd.DataFrame(dict(
        activation=[9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
        tokens=[line, ["a", "\n", "b"], line, line, line, ["c", "d"]],
        center=[3, 2, 3, 3, 4, 0],
    ))
    out = dedup(df, 10)
    assert out["activation"].tolist() == [9.0, 8.0, 4.0]
    assert out["n_duplicates"].tolist() == [3, 0, 0] and out["rank"].tolist() == [1, 2, 3]
    assert dedup(df, 2)["activation"].tolist() == [9.0, 8.0]
    # a long line seen through shifting windows: positions within the window of a kept one
    shifted = pd.DataFrame(dict(activation=[3.0, 2.9, 2.8, 1.0], tokens=[["=" * i, "x", "y"] for i in (1, 2, 3, 4)],
                                center=[1, 1, 1, 1], doc_index=[0, 0, 0, 0], row=[0, 0, 0, 1], pos=[10, 11, 19, 11]))
    got = dedup(shifted, 10, window=8)
    assert got["activation"].tolist() == [3.0, 2.8, 1.0] and got["n_duplicates"].tolist() == [1, 0, 0]
    for page in pages:  # and on the real pages, each context line once
        lines = [context_line(t, c) for t, c in zip(page.top["tokens"], page.top["center"])]
        assert len(set(lines)) == len(lines), lines


def test_promoted_tokens_equal_plain_torch(default_model, pages, hf):
    """W_out[n] through the final LayerNorm's gain (its centring: LN removes the mean) and the
    unembedding, on the checkpoint's own weights."""
    mlp = hf.gpt_neox.layers[1].mlp.dense_4h_to_h.weight[:, 5].double()
    d = (mlp - mlp.mean()) * hf.gpt_neox.final_layer_norm.weight.double()
    logits = hf.lm_head.weight.double() @ d
    logits = logits - logits.mean()  # interp's compat logits are centred over the vocabulary
    top = logits.topk(6)
    assert top.values[4] - top.values[5] > 1e-4  # ranks not decided by rounding
    got = [default_model.to_tokens(t, prepend_bos=False).tokens[0, 0].item() for t in pages[0].promoted["token"][:5]]
    assert got == top.indices[:5].tolist()
    # float32 products of 128 terms of size ~0.1: well inside 1e-4
    torch.testing.assert_close(torch.tensor(pages[0].promoted["logit"][:5].tolist(), dtype=torch.float64),
                               top.values[:5], atol=1e-4, rtol=0)


def test_head_write_norms_and_attention_from_the_record(default_model, pages):
    page = pages[1]
    ex = page.top.iloc[0]
    assert page.summary["max_write_norm"] == pytest.approx(float(ex["activation"]), abs=1e-6)
    assert set(page.scores["kind"]) == {"previous_token", "induction", "duplicate_token", "bos", "self"}
    assert 0 < ex["key_weight"] <= 1 and ex["key_offset"] >= 0
    assert len(page.ov) and len(page.qk)


def test_neuron_links_equal_cosines(default_model, pages):
    reads = pages[0].reads_from
    n = reads[reads["kind"] == "neuron"].iloc[0]
    w = default_model.weights
    a, b = w.W_out[n["layer"], n["neuron"]].double(), w.W_in[1][:, 5].double()
    assert n["cosine"] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-9)
    assert reads["direction"].eq("reads_from").all() and (reads["layer"] <= 1).all()


def test_pages_save_load_and_draw(pages, tmp_path):
    for page in pages:
        back = Page.load(page.save(tmp_path / f"{page.label}.json"))
        assert type(back) is type(page) and back.summary == page.summary
        pd.testing.assert_frame_equal(back.promoted if page.kind == "neuron" else back.scores,
                                      page.promoted if page.kind == "neuron" else page.scores, check_dtype=False)
    assert interp.plots.neuron_page(pages[0]).data and interp.plots.head_page(pages[1]).data
    with pytest.raises(TypeError, match="page must be an interp.pages.HeadPage"):
        interp.plots.head_page(pages[0])


@pytest.mark.parametrize("call, match", [
    (lambda m: interp.neuron_page(m, "L1H2", ["x = 1\n"]), r"neuron='L1H2' is not a neuron label"),
    (lambda m: interp.head_page(m, "L0H9", ["x = 1\n"]), r"head=9 out of range|head .*9"),
    (lambda m: interp.component_pages(m, "L1N5", ["x = 1\n"]), r"components='L1N5' must be a non-empty list"),
])
def test_bad_page_arguments(default_model, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(default_model)


def test_head_links_equal_composition_scores(tiny_models):
    """One head's row and column of composition_scores, computed for that head alone."""
    from interp.pages.links import head_links

    for family in ("gpt2", "llama"):
        m = tiny_models[family]
        comp = interp.composition_scores(m)
        reads, writes = head_links(m, 1, 2, 100)
        want = comp[comp["target"] == "L1H2"].set_index(["source", "kind"])["score"]
        got = reads[reads["head"].notna()].set_index(["component", "kind"])["score"]
        # float64 on both sides (composition_scores in float64 for d_model <= 256); its route sums the
        # d_model^2 = 4,096 products of two Gram matrices whose entries cancel: relative error up to
        # d^2 * eps64 * sum|A.B| / <A, B> = 4.5e-13 * (cancellation ratio, under 1e4 for random heads)
        # on the squared score, so rtol 1e-7 on the score holds with a wide margin
        pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, atol=0, rtol=1e-7)
        assert len(writes) == 0  # layer 1 is the last of these two-layer models


def test_given_head_scores_are_reused(default_model, pages):
    given = interp.head_scores(default_model, "bos")
    given = given.assign(score=given["score"] * 0 + 0.5)  # planted: a value no detector gives every head
    page = interp.component_pages(default_model, ["L0H1"], DOCS, max_tokens=300, progress=False,
                                  head_scores={"bos": given})[0]
    scores = page.scores.set_index("kind")["score"]
    assert scores["bos"] == 0.5
    assert scores["induction"] == pages[1].scores.set_index("kind")["score"]["induction"]
