"""Activation patching: a planted previous-token head carries the metric and nothing else
does; every patched value agrees with plain torch hooks on the Hugging Face model; batching,
conventions, errors, and nothing of the caller's changes."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

import interp
from interp.errors import IndexOutOfRangeError, NotSingleTokenError, PromptMismatchError
from interp.testing import random_hf_model, tiny_tokenizer

CLEAN = torch.tensor([[0, 17, 45, 101, 77, 150, 201, 33]])
X, X_CORRUPT = 150, 123  # the previous token of the last position, and its replacement


def plant_prev_head(hf, head: int = 0, a: float = 2.0, gain: float = 3.0, lm_scale: float = 10.0, seed: int = 3):
    """Llama: make L0H{head} attend to the previous token (a constant stream direction read by
    rotary queries and keys whose phases differ by one position) and copy that token's identity
    into the logits (OV = gain * M^T M on the token part, unembedding = unit token embeddings)."""
    cfg = hf.config
    d, H = cfg.hidden_size, cfg.num_attention_heads
    dh = d // H
    kv = head // (H // cfg.num_key_value_heads)
    g = torch.Generator().manual_seed(seed)
    base = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
    inv = 1.0 / base ** (torch.arange(0, dh, 2).float() / dh)
    with torch.no_grad():
        E = hf.model.embed_tokens.weight
        E[:, 0] = 1.0  # a constant direction every position carries
        hf.model.layers[0].input_layernorm.weight.fill_(1.0)
        att = hf.model.layers[0].self_attn
        q = att.q_proj.weight[head * dh:(head + 1) * dh]
        k = att.k_proj.weight[kv * dh:(kv + 1) * dh]
        q.zero_()
        k.zero_()
        for f in (0, 1):
            q[f, 0] = a
            k[f, 0], k[f + dh // 2, 0] = a * math.cos(float(inv[f])), a * math.sin(float(inv[f]))
        M = torch.linalg.qr(torch.randn(d - 1, dh, generator=g))[0].T
        v = att.v_proj.weight[kv * dh:(kv + 1) * dh]
        v.zero_()
        v[:, 1:] = M
        o = att.o_proj.weight[:, head * dh:(head + 1) * dh]
        o.zero_()
        o[1:, :] = gain * M.T
        U = E[:, 1:].clone()
        hf.lm_head.weight.zero_()
        hf.lm_head.weight[:, 1:] = lm_scale * U / U.norm(dim=-1, keepdim=True)
    return hf


@pytest.fixture(scope="module")
def planted():
    return interp.load(plant_prev_head(random_hf_model("llama")), tokenizer=tiny_tokenizer(), device="cpu")


def _corrupt(clean: torch.Tensor, pos: int, token: int) -> torch.Tensor:
    out = clean.clone()
    out[0, pos] = token
    return out


def test_planted_previous_token_head_carries_the_metric(planted):
    pattern = planted.attention_patterns(CLEAN, layers=[0])[0][0, 0]
    assert (pattern[1:].argmax(-1) == torch.arange(len(CLEAN[0]) - 1)).all()  # it is a previous-token head
    corrupt = _corrupt(CLEAN, -2, X_CORRUPT)
    df = interp.activation_patching(planted, CLEAN, corrupt, answers=(X, X_CORRUPT), progress=False)
    eff = df.set_index("component")["effect"]
    assert df["metric_clean"].iloc[0] - df["metric_corrupt"].iloc[0] > 10
    assert eff["L0H0"] > 0.9
    assert eff.drop("L0H0").abs().max() < 0.05
    # by position: only the last position of the planted head matters
    pos = interp.activation_patching(planted, CLEAN, corrupt, answers=(X, X_CORRUPT), layers=[0],
                                     positions="each", progress=False)
    h0 = pos[pos.component == "L0H0"].set_index("pos")["effect"]
    assert h0.iloc[-1] > 0.9 and h0.iloc[:-1].abs().max() < 0.05


def _hf_patched_metric(model, clean, corrupt, comp, answers):
    """Independent: plain torch hooks on the raw HF model, one component at a time."""
    hf, paths = model._fast.hf, model._fast.paths
    mods = dict(hf.named_modules())
    H, dh = model.cfg.n_heads, model.cfg.d_head
    kind, layer, idx, pos = comp
    p = slice(None) if pos is None else pos
    blocks = model.bridge.adapter.component_mapping["blocks"].name
    if kind in ("head", "neuron"):
        mod = mods[paths["o"][layer] if kind == "head" else paths["mlp_out"][layer]]
        store = {}
        h = mod.register_forward_pre_hook(lambda m, a: store.__setitem__("x", a[0].detach().clone()))
        with torch.no_grad():
            hf(input_ids=clean, use_cache=False)
        h.remove()

        def patch(m, a):
            x = a[0].clone()
            if kind == "head":
                x.view(*x.shape[:-1], H, dh)[:, p, idx] = store["x"].view(*x.shape[:-1], H, dh)[:, p, idx]
            else:
                x[:, p, idx] = store["x"][:, p, idx]
            return (x,)
        h = mod.register_forward_pre_hook(patch)
    else:  # the stream entering a block
        mod = mods[f"{blocks}.{layer}"]
        store = {}

        def grab(m, a, kw):
            store["x"] = (a[0] if a else kw["hidden_states"]).detach().clone()
        h = mod.register_forward_pre_hook(grab, with_kwargs=True)
        with torch.no_grad():
            hf(input_ids=clean, use_cache=False)
        h.remove()

        def patch(m, a, kw):
            x = (a[0] if a else kw["hidden_states"]).clone()
            x[:, p] = store["x"][:, p]
            return ((x, *a[1:]), kw) if a else (a, dict(kw, hidden_states=x))
        h = mod.register_forward_pre_hook(patch, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = hf(input_ids=corrupt, use_cache=False).logits[0, -1]
    finally:
        h.remove()
    return float(logits[answers[0]] - logits[answers[1]])  # the centring constant cancels


def _check_against_hf(model, clean, corrupt, answers, comps, tol=1e-5):
    kinds = {"head": "head", "neuron": "neuron", "resid": "resid"}
    for kind, layer, idx, pos in comps:
        df = interp.activation_patching(model, clean, corrupt, answers=answers, by=kinds[kind], layers=[layer],
                                        positions="all" if pos is None else [pos], progress=False)
        col = {"head": "head", "neuron": "neuron"}.get(kind)
        row = df[df[col] == idx].iloc[0] if col else df.iloc[0]
        want = _hf_patched_metric(model, clean, corrupt, (kind, layer, idx, pos), answers)
        scale = max(1.0, abs(row.metric_clean - row.metric_corrupt))
        assert abs(row.metric_patched - want) <= tol * scale, (kind, layer, idx, pos, row.metric_patched, want)


def test_agrees_with_plain_torch_hooks_on_the_default_model(default_model):
    m = default_model
    clean = m.to_tokens("def f(a):\n    return f(a").tokens
    corrupt = m.to_tokens("def f(a):\n    return f[a").tokens
    ans = (m.to_tokens(")", prepend_bos=False).tokens[0, 0].item(), m.to_tokens("]", prepend_bos=False).tokens[0, 0].item())
    _check_against_hf(m, clean, corrupt, ans, [("head", 0, 1, None), ("head", 1, 2, 10), ("neuron", 1, 438, None),
                                               ("neuron", 0, 7, 9), ("resid", 1, -1, 9)])


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_agrees_with_plain_torch_hooks_on_every_family(tiny_models, family):
    m = tiny_models[family]
    clean = torch.tensor([[0, 5, 9, 40, 41, 7, 99, 12]])
    corrupt = _corrupt(clean, 3, 200)
    _check_against_hf(m, clean, corrupt, (13, 14), [("head", 1, 3, None), ("neuron", 0, 11, 3), ("resid", 1, -1, 5)])


def test_bridge_backend_agrees(default_model):
    from interp.patching._inputs import Component, prepare
    from interp.patching._runner import Runner
    from interp.patching.activation import make_edits

    m = default_model
    prep = prepare(m, "def f(a):\n    return f(a", "def f(a):\n    return f[a", None, (")", "]"))
    comps = [Component("head", 0, 1), Component("neuron", 1, 438), Component("resid", 1, -1, 9),
             Component("attn", 0), Component("mlp", 1, -1, 10)]
    values = {}
    for backend in ("raw", "bridge"):
        r = Runner(m, backend=backend)
        _, rec = r.run(prep.clean, capture=[c.site for c in comps])
        logits, _ = r.run(prep.corrupt.repeat(len(comps), 1), edits=make_edits(comps, rec, 1, r, None))
        values[backend] = prep.metric(logits)
    assert torch.allclose(values["raw"], values["bridge"], atol=1e-4 * values["raw"].abs().max())


def test_batching_changes_nothing_and_resid_patches_are_exact(default_model):
    m = default_model
    clean, corrupt = "def f(a):\n    return f(a", "def f(a):\n    return f[a"
    kw = dict(answers=(")", "]"), by=["resid", "head", "layer"], progress=False)
    one = interp.activation_patching(m, clean, corrupt, batch_size=1, **kw)
    many = interp.activation_patching(m, clean, corrupt, **kw)
    assert one.attrs["n_forwards"] > many.attrs["n_forwards"]
    assert (one["effect"] - many["effect"]).abs().max() < 1e-5
    r = many[many.kind == "resid"].set_index(["layer", "pos"])["effect"]
    assert abs(r[(0, 9)] - 1) < 1e-5  # the only changed token, at the first block: the clean run
    assert r.drop((0, 9)).loc[0].abs().max() < 1e-5  # identical positions: nothing changes
    full = interp.activation_patching(m, clean, corrupt, answers=(")", "]"), by="resid", positions="all",
                                      layers=[1], progress=False)
    assert abs(full["effect"].iloc[0] - 1) < 1e-5


def test_subspace_patch_of_the_whole_stream_is_the_stream_patch(default_model):
    m = default_model
    clean, corrupt = "def f(a):\n    return f(a", "def f(a):\n    return f[a"
    kw = dict(answers=(")", "]"), layers=[1], positions=[9, 10], progress=False)
    whole = interp.activation_patching(m, clean, corrupt, by="subspace", subspace=interp.Subspace(torch.eye(128)), **kw)
    resid = interp.activation_patching(m, clean, corrupt, by="resid", **kw)
    assert (whole["effect"].to_numpy() - resid["effect"].to_numpy()).__abs__().max() < 1e-4
    none = interp.activation_patching(m, clean, corrupt, by="subspace", subspace=interp.Subspace(torch.ones(128)), **kw)
    assert none["effect"].abs().max() < 1e-5  # the mean direction: every norm removes it
    assert whole["component"].iloc[0] == "L1_subspace"


def test_several_prompt_pairs_average_the_metric(planted):
    c2 = CLEAN.clone()
    c2[0, -2] = 160
    k1, k2 = _corrupt(CLEAN, -2, X_CORRUPT), _corrupt(c2, -2, 124)
    both = interp.activation_patching(planted, torch.cat([CLEAN, c2]), torch.cat([k1, k2]),
                                      answers=([X, 160], [X_CORRUPT, 124]), progress=False)
    a = interp.activation_patching(planted, CLEAN, k1, answers=(X, X_CORRUPT), progress=False)
    b = interp.activation_patching(planted, c2, k2, answers=(160, 124), progress=False)
    mean = (a["metric_patched"] + b["metric_patched"]) / 2
    assert (both["metric_patched"] - mean).abs().max() < 1e-4


def test_custom_metric_on_logits(planted):
    corrupt = _corrupt(CLEAN, -2, X_CORRUPT)

    def logprob_x(logits):  # [batch, pos, d_vocab] -> [batch]
        return logits[:, -1].log_softmax(-1)[:, X]

    df = interp.activation_patching(planted, CLEAN, corrupt, metric=logprob_x, progress=False)
    assert df.attrs["metric"] == "logprob_x" and df.set_index("component").loc["L0H0", "effect"] > 0.9
    with pytest.raises(ValueError, match="metric returned shape"):
        interp.activation_patching(planted, CLEAN, corrupt, metric=lambda lg: lg[:, -1], progress=False)


def test_bad_inputs_are_refused(default_model):
    m = default_model
    with pytest.raises(PromptMismatchError, match="clean is 1 prompt"):
        interp.activation_patching(m, "x = [1, 2, 3", "x = (1, 2, 3", answers=("]", ")"))
    with pytest.raises(PromptMismatchError, match="different lengths"):
        interp.activation_patching(m, ["x = 1", "x = 1 + 2"], ["y = 1", "y = 1 + 2"], answers=("\n", " "))
    with pytest.raises(NotSingleTokenError, match="not one"):
        interp.activation_patching(m, "x = f(a", "x = f[a", answers=(")\n    return", "]"))
    with pytest.raises(ValueError, match="by='cells'"):
        interp.activation_patching(m, "x = f(a", "x = f[a", answers=(")", "]"), by="cells")
    with pytest.raises(IndexOutOfRangeError, match="positions"):
        interp.activation_patching(m, "x = f(a", "x = f[a", answers=(")", "]"), positions=[40])
    with pytest.raises(ValueError, match="needs subspace"):
        interp.activation_patching(m, "x = f(a", "x = f[a", answers=(")", "]"), by="subspace")
    with pytest.raises(TypeError, match="answers"):
        interp.activation_patching(m, "x = f(a", "x = f[a", answers=")")
    with pytest.raises(ValueError, match="not a token id"):
        interp.activation_patching(m, "x = f(a", "x = f[a", answers=(10**6, 3))
    with pytest.warns(UserWarning, match="the same on the clean and corrupt"):
        df = interp.activation_patching(m, "x = f(a", "x = f(a", answers=(")", "]"), progress=False)
    assert df["effect"].isna().all()


def _fingerprint(model) -> str:
    h = hashlib.sha256()
    for p in list(model.bridge.parameters()) + list(model._fast.hf.parameters()):
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_nothing_of_the_callers_changes(default_model):
    m = default_model
    clean = m.to_tokens("def f(a):\n    return f(a").tokens
    corrupt = m.to_tokens("def f(a):\n    return f[a").tokens
    kept = (clean.clone(), corrupt.clone())
    before = _fingerprint(m)
    interp.activation_patching(m, clean, corrupt, answers=(")", "]"), by=["head", "resid", "layer"], progress=False)
    interp.attribution_patching(m, clean, corrupt, answers=(")", "]"))
    assert _fingerprint(m) == before
    assert torch.equal(clean, kept[0]) and torch.equal(corrupt, kept[1])
    assert m.active_hooks() == []
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m._fast.hf.modules())
    assert all(p.grad is None for p in list(m.bridge.parameters()) + list(m._fast.hf.parameters()))


def test_threads_sharing_a_model_get_their_own_patches(default_model):
    from concurrent.futures import ThreadPoolExecutor

    m = default_model
    pairs = [("def f(a):\n    return f(a", "def f(a):\n    return f[a", (")", "]")),
             ("def g(b):\n    return g(b", "def g(b):\n    return g[b", (")", "]"))]
    want = [interp.activation_patching(m, c, k, answers=a, by="neuron", layers=[1], progress=False) for c, k, a in pairs]
    rec = m.run_with_writes(pairs[0][0]).resid(2)
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(interp.activation_patching, m, c, k, answers=a, by="neuron", layers=[1], progress=False)
                for c, k, a in pairs] + [pool.submit(lambda: m.run_with_writes(pairs[0][0]).resid(2))]
        got = [j.result() for j in jobs]
    for a, b in zip(want, got[:2]):
        assert (a["metric_patched"] - b["metric_patched"]).abs().max() < 1e-6
    assert torch.allclose(got[2], rec, atol=1e-6)
