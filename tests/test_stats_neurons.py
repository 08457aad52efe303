"""``neuron_stats`` against a brute-force scan of the Hugging Face model's own MLP
activations (torch hooks on ``model._fast.hf``, no interp record), its top examples and
their context windows, errors, and the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import interp
from interp.capture import hf_module_paths
from interp.data import stdlib_files, token_batches
from interp.stats import TopExamples, neuron_stats, top_examples

K, CONTEXT, BATCH = 5, 3, 4


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [p.read_text(errors="replace")[:1500] for p in stdlib_files("val")[:9]]


def brute_force(model: interp.Model, texts: list[str], n_ctx: int, k: int, context: int) -> dict:
    """Per layer: all activations [n, d_mlp] at non-first real positions, their (doc, row,
    pos) references and context windows, from plain HF forwards with pre-hooks on the MLP
    output projections."""
    hf = model._fast.hf
    mods = dict(hf.named_modules())
    paths = hf_module_paths(model.bridge)["mlp_out"]
    acts: dict[int, list] = {ly: [] for ly in range(model.cfg.n_layers)}
    refs, rows_seen = [], {}
    windows = {ly: [] for ly in acts}
    for b in token_batches(model.tokenizer, texts, n_ctx=n_ctx, batch_size=BATCH, progress=False):
        got: dict[int, torch.Tensor] = {}
        hooks = [mods[p].register_forward_pre_hook(lambda m, a, ly=ly, got=got: got.__setitem__(ly, a[0].detach()))
                 for ly, p in enumerate(paths)]
        try:
            with torch.no_grad():
                hf(input_ids=b.tokens)
        finally:
            for h in hooks:
                h.remove()
        for r, d in enumerate(b.doc_ids):
            row = rows_seen.get(d, 0)
            rows_seen[d] = row + 1
            for p in range(1, int(b.mask[r].sum())):
                refs.append((int(d), row, p, b.tokens[r].tolist(), int(b.mask[r].sum())))
                for ly in acts:
                    acts[ly].append(got[ly][r, p])
                    windows[ly].append(got[ly][r])
    return {"acts": {ly: torch.stack(v) for ly, v in acts.items()}, "refs": refs, "rows": windows}


@pytest.fixture(scope="module")
def both(default_model, texts):
    stats = neuron_stats(default_model, texts, max_tokens=None, top_k=K, batch_size=BATCH, context=CONTEXT,
                         progress=False)
    return stats, brute_force(default_model, texts, default_model.cfg.n_ctx, K, CONTEXT)


def test_frame_matches_brute_force(both, default_model):
    stats, ref = both
    c = default_model.cfg
    assert list(stats.columns) == ["layer", "neuron", "label", "n_tokens", "firing_rate", "mean", "std", "min", "max"]
    assert len(stats) == c.n_layers * c.d_mlp
    n = len(ref["refs"])
    assert (stats["n_tokens"] == n).all()
    for ly in range(c.n_layers):
        a = ref["acts"][ly].double()
        s = stats[stats["layer"] == ly]
        assert s["label"].iloc[7] == f"L{ly}N7"
        fires = np.rint(s["firing_rate"].to_numpy() * n).astype(int)
        assert np.array_equal(fires, (a > 0).sum(0).numpy())  # counts exactly
        for col, want in (("mean", a.mean(0)), ("std", a.std(0, correction=0)), ("min", a.amin(0)),
                          ("max", a.amax(0))):
            got = s[col].to_numpy()
            assert np.allclose(got, want.numpy(), rtol=1e-6, atol=1e-6 * float(a.abs().max())), col


def test_top_examples_match_brute_force(both, default_model):
    stats, ref = both
    ex = top_examples(stats)
    assert len(ex) == len(stats) * K
    for ly in range(default_model.cfg.n_layers):
        a = ref["acts"][ly]
        for neuron in (0, 17, 300, 511):
            order = sorted(range(len(a)), key=lambda i: (-float(a[i, neuron]), ref["refs"][i][:3]))[:K]
            got = ex[(ex["layer"] == ly) & (ex["neuron"] == neuron)].sort_values("rank")
            assert got["rank"].tolist() == list(range(1, K + 1))
            assert [(r.doc_index, r.row, r.pos) for r in got.itertuples()] == [ref["refs"][i][:3] for i in order]
            assert np.allclose(got["activation"], a[order, neuron].numpy(), rtol=0, atol=0)
            for r, i in zip(got.itertuples(), order):
                _, _, p, toks, length = ref["refs"][i]
                lo, hi = max(p - CONTEXT, 0), min(p + CONTEXT + 1, length)
                assert r.tokens == [default_model.decode_token(t) for t in toks[lo:hi]]
                assert np.allclose(r.acts, ref["rows"][ly][i][lo:hi, neuron].numpy(), rtol=0, atol=0)
                assert r.center == p - lo and r.token == r.tokens[r.center]
                assert r.context == "".join(r.tokens)
    assert set(ex["doc"]) <= {str(i) for i in range(9)}


def test_max_tokens_layers_and_first_position(default_model, texts):
    s = neuron_stats(default_model, texts, layers=[-1], max_tokens=777, top_k=2, progress=False)
    assert set(s["layer"]) == {1} and (s["n_tokens"] == 777).all()
    every = neuron_stats(default_model, texts[:2], max_tokens=None, top_k=1, exclude_first=False, progress=False)
    skip = neuron_stats(default_model, texts[:2], max_tokens=None, top_k=1, progress=False)
    rows = sum(1 for _ in token_batches(default_model.tokenizer, texts[:2], n_ctx=default_model.cfg.n_ctx,
                                        batch_size=64, progress=False) for _ in range(1))
    assert every["n_tokens"].iloc[0] > skip["n_tokens"].iloc[0] >= every["n_tokens"].iloc[0] - 64 * rows


def test_examples_survive_frame_operations(both):
    stats, _ = both
    top = stats.sort_values("max", ascending=False).head(3)
    assert isinstance(top.attrs["examples"], str) and isinstance(TopExamples.from_attr(top.attrs["examples"]), TopExamples)
    ex = top_examples(top)
    assert list(ex["label"].unique()) == top["label"].tolist()
    labels = top_examples(stats, ["L1N5", (0, 3)])
    assert set(labels["label"]) == {"L1N5", "L0N3"}


def test_figure_shades_tokens(both):
    stats, _ = both
    label = str(stats.loc[stats["max"].idxmax(), "label"])
    ex = top_examples(stats, [label])
    fig = interp.plots.top_examples(ex)
    assert isinstance(fig, go.Figure)
    heat = fig.data[0]
    assert np.asarray(heat.z).shape[0] == K
    assert np.nanmax(np.asarray(heat.z, dtype=float)) == pytest.approx(ex["activation"].max())
    assert label in fig.layout.title.text
    with pytest.raises(ValueError, match="lacks the column"):
        interp.plots.top_examples(pd.DataFrame({"label": ["x"]}))


def test_bad_inputs(default_model, texts):
    with pytest.raises(interp.IndexOutOfRangeError, match="layers="):
        neuron_stats(default_model, texts, layers=[5], progress=False)
    with pytest.raises(ValueError, match="top_k=0"):
        neuron_stats(default_model, texts, top_k=0, progress=False)
    with pytest.raises(ValueError, match="data=\\[\\] holds no texts"):
        neuron_stats(default_model, [], progress=False)
    with pytest.raises(TypeError, match="data of type int"):
        neuron_stats(default_model, 3, progress=False)
    with pytest.raises(FileNotFoundError, match="neither a corpus name"):
        neuron_stats(default_model, "no such corpus", progress=False)
    with pytest.raises(ValueError, match="no positions to measure"), pytest.warns(UserWarning, match="no rows"):
        neuron_stats(default_model, [""], progress=False)
    assert neuron_stats(default_model, ["x"], progress=False).attrs["n_tokens"] == 1  # a one-token text counts
    with pytest.raises(ValueError, match="carries no examples"):
        top_examples(pd.DataFrame({"layer": [0], "neuron": [0]}))
    s = neuron_stats(default_model, texts[:2], layers=[0], top_k=1, progress=False)
    with pytest.raises(ValueError, match="do not cover"):
        top_examples(s, ["L1N3"])


@pytest.mark.slow
def test_smollm2_neuron_stats_matches_hf(smollm2):
    """On the real model: two layers, a small corpus, against the HF model's own activations."""
    texts = [p.read_text(errors="replace")[:1000] for p in stdlib_files("val")[:3]]
    n_ctx = 256
    stats = neuron_stats(smollm2, texts, layers=[0, 29], max_tokens=None, top_k=3, batch_size=BATCH,
                         n_ctx=n_ctx, context=2, progress=False)
    ref = brute_force(smollm2, texts, n_ctx, 3, 2)
    assert len(stats) == 2 * smollm2.cfg.d_mlp
    for ly in (0, 29):
        a = ref["acts"][ly].double()
        s = stats[stats["layer"] == ly]
        assert (s["n_tokens"] == len(a)).all()
        scale = float(a.abs().max())
        # interp may record through TransformerLens (eager attention) while the reference is HF's
        # SDPA forward: they differ by ~1e-7 of the scale, so only a near-zero activation may flip.
        fires = np.rint(s["firing_rate"].to_numpy() * len(a)).astype(int)
        near_zero = (a.abs() < 1e-5 * scale).sum(0).numpy()
        assert (np.abs(fires - (a > 0).sum(0).numpy()) <= near_zero).all()
        for col, want in (("mean", a.mean(0)), ("std", a.std(0, correction=0)), ("max", a.amax(0))):
            assert np.allclose(s[col].to_numpy(), want.numpy(), rtol=1e-5, atol=1e-6 * scale), col
        ex = top_examples(stats, [(ly, int(a.amax(0).argmax()))])
        assert ex["activation"].iloc[0] == pytest.approx(float(a.amax(0).max()), rel=1e-5)
        assert ex["pos"].iloc[0] == ref["refs"][int(a[:, int(a.amax(0).argmax())].argmax())][2]
