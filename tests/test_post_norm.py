"""Post-norm ("sandwich") blocks on tiny random Gemma-3 and OLMo-2 models: interp's per-head
writes, stream, patching and in/out cosines against plain torch hooks on the Hugging Face
model; the frozen scale in the record; and the one-root refusal of a model interp cannot
decompose."""

from __future__ import annotations

import types

import pytest
import torch
from post_norm_truth import head_writes, in_out_cosines, patched_head_metric, streams

import interp
from interp.errors import NonAdditiveModelError
from interp.testing import POST_NORM_FAMILIES, random_hf_model, random_model

TEXT = "def add(a, b):\n    return a + b\n"
CORRUPT = "def add(x, y):\n    return x + y\n"
EPS32 = torch.finfo(torch.float32).eps


def tolerance(n_layers: int) -> float:
    """fp32 rounding: a budget of 64 roundings for every layer the error passes through (the
    calibration's budget, ``interp.capture``), in units of the compared quantity's RMS."""
    return 64 * EPS32 * (n_layers + 1)


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.double()
    return float((got.double() - want).abs().max() / want.pow(2).mean().sqrt().clamp_min(1e-30))


@pytest.fixture(scope="module", params=POST_NORM_FAMILIES)
def pair(request):
    """(interp model, an independent copy of the same Hugging Face model)."""
    return random_model(request.param), random_hf_model(request.param)


def test_model_is_post_norm(pair):
    model, _ = pair
    assert model.cfg.post_norm and model.weights.refusal is None


def test_head_writes_sum_to_the_attention_output_and_equal_interps(pair):
    model, hf = pair
    w = model.run_with_writes(TEXT)
    assert w.post_norm and sorted(w.attn_scale) == list(range(model.cfg.n_layers))
    mine, out = head_writes(hf, w.tokens)
    tol = tolerance(model.cfg.n_layers)
    for ly in range(model.cfg.n_layers):
        assert rel(mine[ly].sum(2), out[ly]) <= tol, ly  # the frozen scale makes the norm linear
        assert rel(w.head_writes(ly), mine[ly]) <= tol, ly
        assert rel(w.attn_write(ly), out[ly]) <= tol, ly


def test_stream_matches_the_models_after_every_layer(pair):
    model, hf = pair
    w = model.run_with_writes([TEXT, CORRUPT])
    want = streams(hf, w.tokens)
    tol = tolerance(model.cfg.n_layers)
    m = w.mask
    for ly, x in enumerate(want):
        assert rel(w.resid(ly)[m], x[m]) <= tol, ly


def test_components_sum_to_the_stream(pair):
    model, _ = pair
    w = model.run_with_writes(TEXT)
    labels, comps = w.components(mlp="neuron")
    torch.testing.assert_close(comps.sum(0), w.resid(model.cfg.n_layers), atol=1e-5, rtol=0)
    dec = interp.decompose(w, by="component")
    assert {"L0H0", "L0N0", "L1_mlp_bias"} <= set(dec["component"])


def test_head_patching_matches_hook_patching(pair):
    model, hf = pair
    clean, corrupt = model.to_tokens(TEXT).tokens, model.to_tokens(CORRUPT).tokens

    def metric(logits):
        return (logits[:, -1, 5] - logits[:, -1, 7]).mean()

    df = interp.activation_patching(model, clean, corrupt, metric=metric, by="head", progress=False)
    scale = max(1.0, abs(df["metric_clean"].iloc[0]), abs(df["metric_corrupt"].iloc[0]))
    for r in df.itertuples():
        want = patched_head_metric(hf, clean, corrupt, r.layer, int(r.head), metric)
        assert abs(r.metric_patched - want) <= 1e-5 * scale, r.component
    assert df["norm_mediated"].abs().max() > 0  # the post-norm's own share of a head's effect


def test_norm_mediated_is_zero_without_post_norms():
    model = random_model("llama")
    df = interp.activation_patching(model, TEXT, CORRUPT, metric=lambda x: x[:, -1, 5].mean(), by="head",
                                    progress=False)
    assert (df["norm_mediated"] == 0).all()


def test_in_out_cosines_include_both_gains(pair):
    model, hf = pair
    df = interp.neuron_in_out_cosines(model)
    for ly in range(model.cfg.n_layers):
        got = torch.tensor(df[df.layer == ly].sort_values("neuron")["cosine"].to_numpy())
        torch.testing.assert_close(got.double(), in_out_cosines(hf, ly), atol=1e-5, rtol=0)


def test_record_with_scales_saves_and_loads(pair, tmp_path):
    model, _ = pair
    w = model.run_with_writes(TEXT)
    w.save(tmp_path / "rec")
    back = interp.ResidualWrites.load(tmp_path / "rec")
    assert back.post_norm
    torch.testing.assert_close(back.resid(model.cfg.n_layers), w.resid(model.cfg.n_layers))
    back = interp.ResidualWrites.load(tmp_path / "rec", model=model)
    torch.testing.assert_close(back.attn_write(1), w.attn_write(1))


def test_a_block_with_unknown_parts_is_refused_by_every_analysis():
    from interp.config import block_structure

    bridge = types.SimpleNamespace(adapter=types.SimpleNamespace(component_mapping={
        "blocks": types.SimpleNamespace(submodules={"ln1": 0, "mixer": 0, "mlp": 0})}))
    post, refusal = block_structure(bridge, False, "m")
    assert not post and "mixer" in refusal
    model = random_model("llama", seed=3)
    model.refuse(refusal)
    calls = {
        "run_with_writes": lambda: model.run_with_writes(TEXT),
        "find_deleting_neurons": lambda: interp.find_deleting_neurons(model),
        "neuron_in_out_cosines": lambda: interp.neuron_in_out_cosines(model),
        "composition_scores": lambda: interp.composition_scores(model, kinds=("Q",)),
        "find_deleting_heads": lambda: interp.find_deleting_heads(model, [TEXT]),
    }
    for name, call in calls.items():
        with pytest.raises(NonAdditiveModelError, match="mixer"):
            call()
        assert name


def test_a_record_that_does_not_sum_refuses_the_model_from_then_on(monkeypatch):
    model = random_model("llama", seed=4)
    from interp import recording as model_module

    def broken(*a, **k):
        raise NonAdditiveModelError("does not sum")

    monkeypatch.setattr(model_module, "check_reconstruction", broken)
    with pytest.raises(NonAdditiveModelError):
        model.run_with_writes(TEXT)
    with pytest.raises(NonAdditiveModelError, match="does not sum"):
        interp.find_deleting_neurons(model)


def test_attribution_norm_mediated_is_the_path_through_the_scale():
    """The frozen-scale estimate equals autograd's on a run whose post-norm scales are detached
    (the norm then acts as the linear map ``g * x / s``): ``norm_mediated`` is the rest."""
    from interp.patching._runner import Runner

    model = random_model("gemma3")
    clean, corrupt = model.to_tokens(TEXT).tokens, model.to_tokens(CORRUPT).tokens

    def metric(logits):
        return (logits[:, -1, 5] - logits[:, -1, 7]).mean()

    df = interp.attribution_patching(model, clean, corrupt, metric=metric, by="head")
    denom = df["metric_clean"].iloc[0] - df["metric_corrupt"].iloc[0]
    runner = Runner(model)
    _, rc = runner.run(clean, capture=[("z", ly) for ly in range(model.cfg.n_layers)])
    for ly in range(model.cfg.n_layers):  # only the head's own block's scale is held
        site = ("z", ly)
        logits, rk = runner.run(corrupt, edits={("attn_scale", ly): [lambda s: s.detach()]}, capture=[site], grad=True)
        (g,) = torch.autograd.grad(metric(logits), [rk[site]])
        for r in df[df.layer == ly].itertuples():
            d = (rc[site] - rk[site].detach())[:, :, r.head]
            direct = float((g[:, :, r.head] * d).sum())
            assert abs((r.approximation - direct) / denom - r.norm_mediated) <= 1e-4 * max(1.0, abs(r.effect)), r.component
    assert df["norm_mediated"].abs().max() > 1e-3
