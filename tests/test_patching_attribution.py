"""Attribution patching: the gradient estimate matches plain torch autograd on the HF model,
ranks the planted head first, and tracks real patching (measured here)."""

from __future__ import annotations

import pytest
import torch
from test_patching_activation import CLEAN, X_CORRUPT, X, _corrupt, plant_prev_head

import interp
from interp.capture import calibration_tolerance
from interp.testing import random_hf_model, tiny_tokenizer

PAIR = ("def f(a):\n    return f(a", "def f(a):\n    return f[a")


@pytest.fixture(scope="module")
def planted():
    return interp.load(plant_prev_head(random_hf_model("llama")), tokenizer=tiny_tokenizer(), device="cpu")


def _hf_attribution(model, clean, corrupt, answers, layer):
    """Independent: grad of the logit difference w.r.t. one layer's o_proj / down_proj inputs
    on the corrupt run, dotted with clean - corrupt; per head ``[H]`` and per neuron ``[d_mlp]``."""
    hf, paths = model._fast.hf, model._fast.paths
    mods = dict(hf.named_modules())
    H, dh = model.cfg.n_heads, model.cfg.d_head
    o, down = mods[paths["o"][layer]], mods[paths["mlp_out"][layer]]
    got = {}

    def keep(name):
        return lambda m, a: got.__setitem__(name, a[0])

    hs = [o.register_forward_pre_hook(keep("z")), down.register_forward_pre_hook(keep("act"))]
    try:
        with torch.no_grad():
            hf(input_ids=clean, use_cache=False)
        zc, ac = got["z"].clone(), got["act"].clone()
        emb = hf.get_input_embeddings()(corrupt).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = hf(inputs_embeds=emb, use_cache=False).logits[0, -1]
            metric = logits[answers[0]] - logits[answers[1]]
            gz, ga = torch.autograd.grad(metric, [got["z"], got["act"]])
    finally:
        for h in hs:
            h.remove()
    heads = (gz * (zc - got["z"].detach())).view(1, -1, H, dh).sum((0, 1, 3))
    neurons = (ga * (ac - got["act"].detach())).sum((0, 1))
    return heads, neurons, float(metric.detach())


def test_matches_plain_autograd_on_the_default_model(default_model):
    m = default_model
    clean, corrupt = (m.to_tokens(t).tokens for t in PAIR)
    ids = tuple(int(m.to_tokens(a, prepend_bos=False).tokens[0, 0]) for a in (")", "]"))
    att = interp.attribution_patching(m, clean, corrupt, answers=ids)
    for layer in (0, 1):
        heads, neurons, metric = _hf_attribution(m, clean, corrupt, ids, layer)
        a = att[att.layer == layer]
        got_h = torch.tensor(a[a.kind == "head"]["approximation"].to_numpy())
        got_n = torch.tensor(a[a.kind == "neuron"]["approximation"].to_numpy())
        assert torch.allclose(got_h, heads.double(), atol=1e-5 * heads.abs().max())
        assert torch.allclose(got_n, neurons.double(), atol=1e-5 * neurons.abs().max())
    assert (att["metric_patched"] - att["metric_corrupt"] - att["approximation"]).abs().max() < 1e-9
    denom = att["metric_clean"] - att["metric_corrupt"]
    assert (att["effect"] - att["approximation"] / denom).abs().max() < 1e-9
    assert att.attrs["method"] == "attribution" and att.attrs["n_backwards"] == 1


def test_planted_head_ranks_first(planted):
    corrupt = _corrupt(CLEAN, -2, X_CORRUPT)
    att = interp.attribution_patching(planted, CLEAN, corrupt, answers=(X, X_CORRUPT), by="head")
    assert att.sort_values("effect", ascending=False)["component"].iloc[0] == "L0H0"


def test_tracks_real_patching_on_the_default_model(default_model):
    m = default_model
    kw = dict(answers=(")", "]"))
    exact = interp.activation_patching(m, *PAIR, by=["head", "neuron", "resid"], progress=False, **kw)
    approx = interp.attribution_patching(m, *PAIR, by=["head", "neuron", "resid"], **kw)
    assert list(exact["component"]) == list(approx["component"]) and list(exact["pos"]) == list(approx["pos"])
    # a position the corruption does not reach is no patch at all: exactly 0 in both, never noise
    same = (m.to_tokens(PAIR[0]).tokens[0] == m.to_tokens(PAIR[1]).tokens[0]).tolist()
    first_diff = same.index(False)
    early = (exact.kind == "resid") & (exact["pos"] < first_diff)
    assert early.sum() > 0 and (exact.loc[early, "effect"] == 0).all() and (approx.loc[early, "effect"] == 0).all()
    # rank only effects above a forward's rounding: the calibration's budget of roundings per layer
    # (interp.capture) times the metric's magnitude, in units of the clean - corrupt difference
    mag = max(abs(exact["metric_clean"].iloc[0]), abs(exact["metric_corrupt"].iloc[0]))
    noise = calibration_tolerance(torch.float32, m.cfg.n_layers) * mag
    noise /= abs(exact["metric_clean"].iloc[0] - exact["metric_corrupt"].iloc[0])
    for kind, floor in (("neuron", 0.9), ("resid", 0.9)):
        keep = (exact.kind == kind) & (exact["effect"].abs() > noise)
        e, a = exact[keep]["effect"], approx[keep]["effect"]
        assert len(e) >= (10 if kind == "neuron" else 3), (kind, len(e))
        rho = e.rank().corr(a.rank())
        assert rho > floor, (kind, rho)


def test_layer_and_subspace_components(default_model):
    m = default_model
    df = interp.attribution_patching(m, *PAIR, answers=(")", "]"), by=["layer", "subspace"], layers=[1],
                                     positions=[10], subspace=interp.Subspace(torch.eye(128)))
    assert list(df["component"]) == ["L1_attn", "L1_mlp", "L1_subspace"]
    resid = interp.attribution_patching(m, *PAIR, answers=(")", "]"), by="resid", layers=[1], positions=[10])
    # the whole stream as a subspace: the same estimate as the stream itself
    assert abs(df["approximation"].iloc[2] - resid["approximation"].iloc[0]) < 1e-5
