"""logit_attribution and logit_lens: the DLA-sum identity, targets, the final-norm scale,
agreement with TransformerLens, planted truth, padding, bad inputs, figures."""

from __future__ import annotations

import doctest

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import interp
import interp.readout
from interp.errors import ModelMismatchError
from interp.plots import decomposition as plots
from interp.testing import random_hf_model, random_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b", "x = 1"]
PLANTED = dict(layer=1, neuron=17, token=281)  # " self"


@pytest.fixture(scope="module")
def writes(tiny_models):
    return {f: m.run_with_writes(TEXTS) for f, m in tiny_models.items()}


@pytest.fixture(scope="module")
def raw_models():
    """Unprocessed weights: the final norm keeps its own weight (and, for LayerNorm, bias)."""
    return {f: random_model(f, processing="raw") for f in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def planted():
    """Layer 1 neuron 17 always fires at 20 and writes along the unembedding of " self"."""
    hf = random_hf_model("gpt2")
    ly, n, t = PLANTED["layer"], PLANTED["neuron"], PLANTED["token"]
    with torch.no_grad():
        mlp = hf.transformer.h[ly].mlp
        mlp.c_fc.weight[:, n] = 0.0
        mlp.c_fc.bias[n] = 20.0
        u = hf.transformer.wte.weight[t]
        mlp.c_proj.weight[n] = 2.0 * u / u.norm()
    return interp.load(hf, tokenizer=tiny_tokenizer(300), device="cpu")


def next_token_logits(model, w, df, incorrect=None):
    """The model's own logit (or difference) at each row of a per-position sum."""
    logits = model.logits(TEXTS if w.shape[0] == 2 else TEXTS[:1])
    s = df.groupby(["batch", "pos"])["attribution"].sum()
    b = torch.tensor([i for i, _ in s.index])
    p = torch.tensor([j for _, j in s.index])
    want = logits[b, p, w.tokens[b, p + 1]]
    if incorrect is not None:
        want = want - logits[b, p, incorrect]
    return s.to_numpy(dtype=np.float64), want.double().numpy()


@pytest.mark.parametrize("by", ["layer", "head", "neuron", "component"])
@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_attributions_plus_bias_sum_to_the_models_logit(tiny_models, writes, family, by):
    got, want = next_token_logits(tiny_models[family], writes[family], interp.logit_attribution(writes[family], by=by))
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sum_holds_with_the_final_norms_own_affine(raw_models, family):
    model = raw_models[family]
    w = model.run_with_writes(TEXTS)
    assert w.weights.ln_final_w is not None
    for by in ("head", "component"):
        got, want = next_token_logits(model, w, interp.logit_attribution(w, by=by))
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_targets_token_string_pair_and_per_position(tiny_models, writes):
    model, w = tiny_models["llama"], writes["llama"]
    logits = model.logits(TEXTS)
    tid = model.tokenizer(" a", add_special_tokens=False)["input_ids"][0]
    mask = w.mask

    def sums(df):
        s = df.groupby(["batch", "pos"])["attribution"].sum()
        return s.to_numpy(), torch.tensor([i for i, _ in s.index]), torch.tensor([j for _, j in s.index])

    got, b, p = sums(interp.logit_attribution(w, " a", by="head"))
    assert len(got) == int(mask.sum())  # every real position, the last included
    np.testing.assert_allclose(got, logits[b, p, tid].numpy(), atol=1e-5)
    got, b, p = sums(interp.logit_attribution(w, (" a", 7), by="layer"))
    np.testing.assert_allclose(got, (logits[b, p, tid] - logits[b, p, 7]).numpy(), atol=1e-5)
    per = torch.randint(0, model.cfg.d_vocab, tuple(w.shape), generator=torch.Generator().manual_seed(3))
    df = interp.logit_attribution(w, (per, None), by="neuron")
    got, b, p = sums(df)
    want = logits[b, p, per[b, p]] - logits[b, p, w.tokens[b, p + 1]]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    assert {"target", "incorrect"} <= set(df.columns)
    same = interp.logit_attribution(w, tid, by="head")
    np.testing.assert_allclose(same["attribution"], interp.logit_attribution(w, " a", by="head")["attribution"])


def test_recomputed_scale(writes):
    w = writes["gpt2"]
    frozen = interp.logit_attribution(w, by="head")
    again = interp.logit_attribution(w, by="head", ln_scale="recompute")
    np.testing.assert_allclose(frozen["attribution"], again["attribution"], rtol=1e-4, atol=1e-6)
    # stream entering layer 1: with the recomputed scale the rows sum to the lens logit there
    part = interp.logit_attribution(w, by="head", layer=1, ln_scale="recompute")
    s = part.groupby(["batch", "pos"])["attribution"].sum()
    b, p = torch.tensor([i for i, _ in s.index]), torch.tensor([j for _, j in s.index])
    x = w.resid(1)[b, p]
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + w.meta["eps"]).sqrt()
    lens = (x @ w.weights.W_U + w.weights.b_U).gather(1, w.tokens[b, p + 1][:, None])[:, 0]
    np.testing.assert_allclose(s.to_numpy(), lens.numpy(), atol=1e-5)
    stale = interp.logit_attribution(w, by="head", layer=1).groupby(["batch", "pos"])["attribution"].sum()
    assert np.abs(stale.to_numpy() - lens.numpy()).max() > 1e-3


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_agrees_with_transformer_lens(tiny_models, writes, family):
    from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

    model, w = tiny_models[family], writes[family]
    nxt = torch.zeros_like(w.tokens)
    nxt[:, :-1] = w.tokens[:, 1:]
    valid = w.mask.clone()
    valid[:, :-1] &= w.mask[:, 1:]
    valid[:, -1] = False
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(w.tokens)
        for by, (stack, labels) in {
            "layer": cache.decompose_resid(return_labels=True),
            "head": cache.stack_head_results(layer=-1, return_labels=True),
        }.items():
            theirs = cache.logit_attrs(stack, tokens=nxt)
            ours = interp.logit_attribution(w, by=by)
            for i, label in enumerate(labels):
                name = label if label[0] in "Lep" else "L" + label.removesuffix("_out")
                rows = ours[ours["component"] == name].sort_values(["batch", "pos"])
                assert np.abs(rows["attribution"].to_numpy() - theirs[i][valid].numpy()).max() <= 1e-5
        k = 5
        tl = tl_logit_lens(cache, positions=None, return_type="probs", top_k=k)
        acc = cache.accumulated_resid(apply_ln=True)
        ref = torch.softmax(acc @ model.weights.W_U + model.weights.b_U, dim=-1)
    lens = interp.logit_lens(w, k=k)
    for ly in range(model.cfg.n_layers + 1):
        rows = lens[lens["layer"] == ly].sort_values(["batch", "pos"])
        assert np.abs(np.stack(rows["top_probs"].to_list()) - tl.values[ly][w.mask].numpy()).max() <= 1e-5
        has = rows["next_prob"].notna().to_numpy()
        p_next = ref[ly].gather(-1, nxt[..., None])[..., 0][w.mask].numpy()
        assert np.abs(rows["next_prob"].to_numpy()[has] - p_next[has]).max() <= 1e-5


def test_logit_lens_invariants(tiny_models, writes):
    model, w = tiny_models["neox"], writes["neox"]
    lens = interp.logit_lens(w, k=3)
    n = int(w.mask.sum())
    assert len(lens) == (w.n_layers + 1) * n
    final = lens[lens["layer"] == w.n_layers].sort_values(["batch", "pos"])
    probs = torch.softmax(model.logits(TEXTS), dim=-1)[w.mask]
    np.testing.assert_allclose(final["top_prob"], probs.max(-1).values.numpy(), rtol=1e-5)
    assert final["kl_to_final"].abs().max() < 1e-6
    assert (lens["kl_to_final"] > -1e-6).all()
    has = lens["next_rank"].notna()
    assert (lens.loc[has & (lens["next_rank"] == 0), "top_prob"] == lens.loc[has & (lens["next_rank"] == 0), "next_prob"]).all()
    assert (lens.loc[has, "next_rank"] >= 0).all() and (~has).sum() == 2 * (w.n_layers + 1)  # each row's last token
    assert all(len(t) == 3 for t in lens["top_tokens"]) and (lens["top_token"] == lens["top_tokens"].str[0]).all()
    assert len(interp.logit_lens(w, where="all")) == (2 * w.n_layers + 1) * n
    assert len(interp.logit_lens(w, where="post", chunk_rows=3)) == w.n_layers * n


def test_logit_lens_recomputes_the_scale_of_each_partial_stream(writes):
    """The pitfall: the forward pass's final scale makes early layers look uniform."""
    w = writes["gpt2"]
    lens = interp.logit_lens(w, k=1)
    layer0 = lens[lens["layer"] == 0].sort_values(["batch", "pos"])["top_prob"].to_numpy()
    x = w.resid(0)[w.mask]
    x = x - x.mean(-1, keepdim=True)
    own = torch.softmax((x / (x.pow(2).mean(-1, keepdim=True) + w.meta["eps"]).sqrt()) @ w.weights.W_U + w.weights.b_U, -1)
    stale = torch.softmax((x / w.final_scale[w.mask]) @ w.weights.W_U + w.weights.b_U, -1)
    np.testing.assert_allclose(layer0, own.max(-1).values.numpy(), rtol=1e-5)
    assert np.abs(layer0 - stale.max(-1).values.numpy()).max() > 1e-3


def test_padded_batch(tiny_models, writes):
    w = writes["gpt2"]
    df = interp.logit_attribution(w, by="layer")
    lengths = w.mask.sum(-1)
    assert len(df[["batch", "pos"]].drop_duplicates()) == int((lengths - 1).sum())
    alone = interp.logit_attribution(tiny_models["gpt2"].run_with_writes(TEXTS[1]), by="layer")
    np.testing.assert_allclose(df[df["batch"] == 1]["attribution"], alone["attribution"], atol=1e-6)
    lens = interp.logit_lens(w)
    assert lens.groupby("layer").size().eq(int(w.mask.sum())).all()


def test_planted_neuron_is_found(planted):
    ly, n, t = PLANTED["layer"], PLANTED["neuron"], PLANTED["token"]
    w = planted.run_with_writes(TEXTS)
    top = interp.logit_attribution(w, t, by="component", top_k=1)
    assert (top["component"].astype(str) == f"L{ly}N{n}").all()
    assert (top["attribution"] > 0).all()
    lens = interp.logit_lens(w, k=1)
    target = planted.decode_token(t)
    assert (lens[lens["layer"] == 2]["top_token"] == target).all()
    assert (lens[lens["layer"] == 1]["top_token"] != target).any()
    proj = interp.decompose(w, by="component", directions=target, top_k=None, model=planted)
    col = f"proj_{target}"
    best = proj.loc[proj.groupby(["batch", "pos"])[col].idxmax(), "component"].astype(str)
    assert (best == f"L{ly}N{n}").all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda w: interp.logit_attribution(w, ln_scale="cached"), ValueError, r"ln_scale='cached' is not supported; use one of 'frozen', 'recompute'"),
        (lambda w: interp.logit_attribution(w, by="block"), ValueError, r"by='block' is not supported"),
        (lambda w: interp.logit_attribution(w, 300), ValueError, r"target=300 is outside the vocabulary 0..299"),
        (lambda w: interp.logit_attribution(w, -1), ValueError, r"target=-1 is outside the vocabulary"),
        (lambda w: interp.logit_attribution(w, 2.5), TypeError, r"target=2.5 must be a token id \(int\) or a single-token string"),
        (lambda w: interp.logit_attribution(w, " a b c d"), ValueError, r"target=' a b c d' is \d+ tokens .*, not one"),
        (lambda w: interp.logit_attribution(w, (1, 2, 3)), ValueError, r"target=\(1, 2, 3\) has 3 items; a logit difference takes \(correct, incorrect\)"),
        (lambda w: interp.logit_attribution(w, torch.zeros(3, 4, dtype=torch.long)), ValueError, r"target has shape \(3, 4\) but the writes are \[batch, pos\] = \(2, 19\)"),
        (lambda w: interp.logit_attribution(w, torch.zeros(2, 19)), TypeError, r"target is a torch.float32 tensor; per-position targets must be integer"),
        (lambda w: interp.logit_attribution(w, (5, torch.full((2, 19), 999))), ValueError, r"target\[1\] holds token id 999, outside the vocabulary"),
        (lambda w: interp.logit_attribution(w, top_k=-2), ValueError, r"top_k=-2 must be a positive int"),
        (lambda w: interp.logit_lens(w, k=0), ValueError, r"k=0 must be an int in 1..300"),
        (lambda w: interp.logit_lens(w, where="final"), ValueError, r"where='final' is not supported; use one of 'pre', 'mid', 'post', 'all'"),
        (lambda w: interp.logit_lens([w]), TypeError, r"writes must be a ResidualWrites, got list"),
    ],
)
def test_bad_inputs_raise_clear_errors(writes, call, error, match):
    assert writes["gpt2"].shape == (2, 19)
    with pytest.raises(error, match=match):
        call(writes["gpt2"])


def test_only_bos_and_wrong_model(tiny_models, writes):
    bos = tiny_models["gpt2"].run_with_writes(torch.tensor([[0]]))
    with pytest.raises(ValueError, match=r"target=None asks for the next token, but no position has one"):
        interp.logit_attribution(bos)
    assert len(interp.logit_attribution(bos, 5)) > 0 and len(interp.logit_lens(bos)) == 3
    with pytest.raises(ModelMismatchError, match=r"is not the model these writes were recorded on"):
        interp.logit_attribution(writes["gpt2"], model=tiny_models["neox"])
    with pytest.raises(ModelMismatchError, match=r"pass the model the writes came from, or model=None"):
        interp.logit_lens(writes["llama"], model=tiny_models["gpt2"])


def test_figures(writes):
    w = writes["gpt2"]
    dla = interp.logit_attribution(w)
    heat = plots.head_attribution(dla)
    bars = plots.top_neurons(dla, k=7)
    lens_df = interp.logit_lens(w)
    lens = plots.logit_lens(lens_df, batch=1)
    for fig in (heat, bars, lens):
        assert isinstance(fig, go.Figure) and fig.layout.title.text
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    z = np.asarray(heat.data[0].z)
    want = dla[dla["component"] == "L1H2"]["attribution"].mean()
    assert z.shape == (2, 4) and abs(z[1, 2] - want) < 1e-6 and heat.data[0].hovertext[1][2].startswith("L1H2")
    assert len(bars.data[0].y) == 7 and all("N" in c for c in bars.data[0].y)
    row1 = lens_df[lens_df["batch"] == 1]
    assert list(lens.data[0].x) == ["L0 pre", "L1 pre", "final"]  # one column per stream, a row per position
    final = row1[row1["layer"] == 2].sort_values("pos")
    assert [row[2] for row in lens.data[0].text] == [plots._show(t) for t in final["top_token"]]
    assert (plots._show("\x08"), plots._show("  "), plots._show(" a\n")) == ("<0x08>", "\u00b7\u00b7", "\u00b7a\u21b5")
    np.testing.assert_allclose(np.asarray(lens.data[0].z, dtype=float)[:-1, 2], final["next_prob"].to_numpy()[:-1])
    assert "top" in lens.data[0].hovertext[0][0] and "next" in lens.data[0].hovertext[0][0]
    one = plots.head_attribution(dla, pos=3, batch=0)
    assert "position 3" in one.layout.title.text
    with pytest.raises(ValueError, match=r"batch=4 has no rows; df holds batches \[0, 1\]"):
        plots.logit_lens(lens_df, batch=4)


def test_docstring_examples_run(tiny_models):
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(interp.readout, globs={"model": tiny_models["gpt2"], **vars(interp.readout)}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and runner.summarize(verbose=False).attempted > 0


def test_default_model_line_of_code(request):
    from interp.models import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip("the embedded default model is not built yet")
    model = request.getfixturevalue("default_model")
    line = "    return self._value + other._value\n"
    w = model.run_with_writes(line)
    got, want = next_token_logits_of(model, w, line, interp.logit_attribution(w, by="head"))
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    lens = interp.logit_lens(w, k=1)
    final = lens[lens["layer"] == model.cfg.n_layers]
    probs = torch.softmax(model.logits(line)[0], -1)
    np.testing.assert_allclose(final["top_prob"], probs.max(-1).values.numpy(), rtol=1e-4)
    d = model.cfg.d_model
    parts = interp.decompose(w, by="component", directions=torch.eye(d))
    summed = parts.groupby("pos")[[f"proj_{i}" for i in range(d)]].sum().to_numpy()
    stream = w.resid(w.n_layers)[0].numpy()
    assert np.abs(summed - stream).max() <= 1e-4 * np.abs(stream).max()


def next_token_logits_of(model, w, text, df):
    logits = model.logits(text)[0]
    s = df.groupby("pos")["attribution"].sum()
    p = torch.tensor(s.index.to_numpy())
    return s.to_numpy(dtype=np.float64), logits[p, w.tokens[0, p + 1]].double().numpy()


def test_byte_tokens_read_as_their_bytes(default_model):
    """A byte-level token that is not UTF-8 on its own reads ``<0xC3>``, not decode's U+FFFD,
    and a control character reads ``<0x10>`` in figures: the logit lens showed "\ufffd" and "\x10"."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tok, b2u = default_model.tokenizer, bytes_to_unicode()
    ids = [tok.convert_tokens_to_ids(b2u[b]) for b in "é".encode()]
    assert [tok.decode([i]) for i in ids] == ["\ufffd", "\ufffd"]  # what decode alone gives
    assert [default_model.decode_token(i) for i in ids] == ["<0xC3>", "<0xA9>"]
    assert default_model.decode_token(tok.convert_tokens_to_ids(b2u[0x10])) == "\x10"  # valid UTF-8: kept
    assert plots._show("\x10") == "<0x10>"
    assert default_model.decode_token(tok("def", add_special_tokens=False)["input_ids"][0]) == "def"
