"""Nothing is lost or mutated: after every public call, including calls that raise (at
validation, inside a hook, inside the ``ablate`` body, in the middle of a forward pass), the
caller's model carries no extra hooks and has the same weights and settings, and the
process-wide torch settings are as they were."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.hook_points import HookPoint

import interp
from interp.testing import FAMILIES, random_hf_model, tiny_tokenizer

TEXTS = ["def add(a, b):\n    return a + b\n", "x = [i * i for i in range(3)]\nprint(x)\n"]
DOCS = [
    "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x):\n        self.x = x\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n    else:\n        continue\n",
    "import os\nimport sys\n\nvalue = os.path.join('a', 'b')\nprint(value, sys.argv)\n",
]
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def _modules(model: interp.Model) -> dict[str, torch.nn.Module]:
    """The bridge and, when present, the fast-capture HF model."""
    out = {"bridge": model.bridge}
    fast = getattr(model, "_fast", None)
    if fast is not None:
        out["fast"] = fast.hf
    return out


def _hooks(root: torch.nn.Module, prefix: str) -> list[str]:
    """Every hook attached anywhere under ``root``: TransformerLens HookPoint hooks and
    plain torch module hooks (each named by its module, kind and handle id)."""
    found = []
    for name, mod in root.named_modules():
        if isinstance(mod, HookPoint) and (mod.fwd_hooks or mod.bwd_hooks):
            found.append(f"{prefix}.{name}: HookPoint hooks")
        for attr in _HOOK_DICTS:
            found += [f"{prefix}.{name}: {attr}[{key}]" for key in getattr(mod, attr, None) or {}]
    return found


def _baseline_ok(hooks: list[str]) -> bool:
    """Before a call: no HookPoint hooks and nothing on the fast-capture model. TransformerLens
    wires its own capture pre-hooks onto each block's norms on the bridge's first forward
    (idempotent); those are the bridge's baseline, and no call may add to them."""
    return not [h for h in hooks if "HookPoint" in h or h.startswith("fast.")
                or not (h.startswith("bridge.blocks.") and "_forward_pre_hooks" in h)]


def snapshot(model: interp.Model) -> dict[str, Any]:
    mods = _modules(model)
    return dict(
        hooks=[h for p, m in mods.items() for h in _hooks(m, p)],
        weights={f"{p}.{k}": v.detach().clone() for p, m in mods.items() for k, v in m.state_dict().items()},
        training={f"{p}.{n}": mod.training for p, m in mods.items() for n, mod in m.named_modules()},
        requires_grad={f"{p}.{n}": t.requires_grad for p, m in mods.items() for n, t in m.named_parameters()},
        cfg=model.cfg,
        settings=_settings(),
    )


def _settings() -> dict[str, Any]:
    return dict(
        threads=torch.get_num_threads(), grad=torch.is_grad_enabled(), inference=torch.is_inference_mode_enabled(),
        default_dtype=torch.get_default_dtype(), deterministic=torch.are_deterministic_algorithms_enabled(),
        rng=torch.get_rng_state(),
    )


def changes(before: dict[str, Any], model: interp.Model) -> list[str]:
    after = snapshot(model)
    out = [f"hook left: {h}" for h in after["hooks"] if h not in before["hooks"]]
    out += [f"hook removed: {h}" for h in before["hooks"] if h not in after["hooks"]]
    if before["weights"].keys() != after["weights"].keys():
        out.append(f"state_dict keys changed: {sorted(before['weights'].keys() ^ after['weights'].keys())[:5]}")
    out += [f"weight changed: {k}" for k, v in before["weights"].items()
            if k in after["weights"] and not (v.dtype == after["weights"][k].dtype
                                              and torch.equal(v, after["weights"][k]))]
    for key in ("training", "requires_grad"):
        out += [f"{key} changed: {k}" for k, v in before[key].items() if after[key].get(k) != v]
    if before["cfg"] != after["cfg"]:
        out.append("cfg changed")
    for k, v in before["settings"].items():
        same = torch.equal(v, after["settings"][k]) if isinstance(v, torch.Tensor) else v == after["settings"][k]
        if not same:
            out.append(f"torch setting changed: {k}")
    return out


@pytest.fixture(scope="module")
def model(gpt2_model) -> interp.Model:
    gpt2_model.run_with_writes(TEXTS)  # verified and calibrated: later records take the fast path
    assert gpt2_model.capture_path == "fast"
    return gpt2_model


@pytest.fixture(scope="module")
def writes(model) -> interp.ResidualWrites:
    return model.run_with_writes(TEXTS)


@pytest.fixture(scope="module")
def sub(model) -> interp.Subspace:
    return interp.Subspace(torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(1)), name="s")


def _labeler_that_fails(tokens, str_tokens):
    raise RuntimeError("labeler failed")


def _hook_that_fails(t, hook):
    raise RuntimeError("hook failed")


def _ablate_body_raises(m, w, s):
    with interp.ablate(m, s, at=1, mode="zero"):
        m.logits("x = 1")
        raise RuntimeError("body failed")


def _hook_raises_under_ablate(m, w, s):
    with interp.ablate(m, s, at=[0, (1, "resid_mid")], mode="zero"), m.hooks([("blocks.1.hook_resid_post",
                                                                               _hook_that_fails)]):
        m.logits("x = 1")


def _fast_forward_raises(m, w, s):
    """An error inside the fast path's forward, after its capture hooks are attached."""
    final_norm = m._fast._module(m._fast.paths["ln_final"])

    def boom(*a, **k):
        raise RuntimeError("forward failed")

    final_norm.forward = boom
    try:
        m.run_with_writes(TEXTS)
    finally:
        del final_norm.forward


def _ablation_effect(m, w, s):
    return interp.ablation_effect(m, DOCS, s, at=1, mode="mean", label="previous_token", max_tokens=120,
                                  max_iter=5, progress=False)


# (id, call(model, writes, subspace), exception it raises or None)
CALLS: list[tuple[str, Any, type[BaseException] | None]] = [
    ("to_tokens", lambda m, w, s: m.to_tokens(TEXTS, chunk=True), None),
    ("logits", lambda m, w, s: m.logits(TEXTS), None),
    ("attention_patterns", lambda m, w, s: m.attention_patterns(TEXTS, layers=[-1]), None),
    ("run_with_writes (fast path)", lambda m, w, s: m.run_with_writes(TEXTS, dtype=torch.bfloat16), None),
    ("run_with_writes (verified, bridge path)", lambda m, w, s: m.run_with_writes(TEXTS, verify=True), None),
    ("stream_writes", lambda m, w, s: list(m.stream_writes(DOCS, batch_size=2, n_ctx=16, progress=False)), None),
    ("decompose", lambda m, w, s: interp.decompose(w, by="component", directions=s, model=m), None),
    ("stream_norms", lambda m, w, s: interp.stream_norms(w, where="all", model=m), None),
    ("logit_attribution", lambda m, w, s: interp.logit_attribution(w, by="head", ln_scale="recompute", model=m),
     None),
    ("logit_lens", lambda m, w, s: interp.logit_lens(w, where="all", model=m), None),
    ("probe_layers", lambda m, w, s: interp.probe_layers(m, DOCS, max_tokens=150, max_iter=5, progress=False),
     None),
    ("writers", lambda m, w, s: interp.writers(s, w, layer=1), None),
    ("readers", lambda m, w, s: interp.readers(s, m), None),
    ("ablate (clean exit)", lambda m, w, s: _run_in_ablate(m, s), None),
    ("site_means", lambda m, w, s: interp.probes.site_means(m, DOCS, at=[1, (0, "resid_post")]), None),
    ("ablation_effect", _ablation_effect, None),
    ("find_deleting_neurons", lambda m, w, s: interp.find_deleting_neurons(m, null="empirical"), None),
    ("neuron_in_out_cosines", lambda m, w, s: interp.neuron_in_out_cosines(m), None),
    ("find_deleting_heads", lambda m, w, s: interp.find_deleting_heads(m, n_tokens=64), None),
    ("deletion_evidence", lambda m, w, s: interp.deletion_evidence(m, TEXTS, neurons=["L1N3"], heads=["L1H0"],
                                                                   subspace=s, progress=False), None),
    ("model.hooks (clean exit)", lambda m, w, s: _run_in_hooks(m), None),
    ("generate (sampled, ablated, patched)", lambda m, w, s: interp.generate_tokens(
        m, TEXTS, max_new_tokens=3, temperature=1.0, seed=0, ablate=["L1H0", "L0N2", "L1_mlp"],
        patch={"L0N3": 1.0}), None),
    ("generate inside ablate", lambda m, w, s: _generate_in_ablate(m, s), None),
    ("run_with_writes (extras)", lambda m, w, s: m.run_with_writes(TEXTS, extras=["pattern", "q", "mlp_pre"]), None),
    ("component_pages", lambda m, w, s: interp.component_pages(m, ["L1N3", "L0H1"], DOCS, max_tokens=100,
                                                               progress=False), None),
    ("raises at validation: generate", lambda m, w, s: interp.generate_tokens(m, "x", ablate=["L9H0"]), ValueError),
    # calls that raise
    ("raises at validation: run_with_writes", lambda m, w, s: m.run_with_writes(""), ValueError),
    ("raises at validation: decompose", lambda m, w, s: interp.decompose(w, by="x"), ValueError),
    ("raises at validation: ablate", lambda m, w, s: _run_in_ablate(m, s, at=9), IndexError),
    ("raises at validation: writes under hooks", lambda m, w, s: _writes_in_ablate(m, s), ValueError),
    ("raises inside a hook", lambda m, w, s: _run_in_hooks(m, _hook_that_fails), RuntimeError),
    ("raises inside a hook, under ablate", _hook_raises_under_ablate, RuntimeError),
    ("raises inside the ablate body", _ablate_body_raises, RuntimeError),
    ("raises inside the fast forward", _fast_forward_raises, RuntimeError),
    ("raises inside a labeler", lambda m, w, s: interp.probe_layers(m, DOCS, label=_labeler_that_fails,
                                                                    progress=False), RuntimeError),
]


def _run_in_ablate(m, s, at=1):
    with interp.ablate(m, s, at=at, mode="zero"):
        return m.logits("x = 1")


def _generate_in_ablate(m, s):
    with interp.ablate(m, s, at=1, mode="zero"):
        return m.generate("x = 1", max_new_tokens=2)


def _writes_in_ablate(m, s):
    with interp.ablate(m, s, at=1, mode="zero"):
        return m.run_with_writes("x = 1")


def _run_in_hooks(m, fn=None):
    seen = []

    def keep(t, hook):
        seen.append(hook.name)

    with m.hooks([("blocks.0.hook_resid_mid", fn or keep)]):
        m.logits("x = 1")
    assert seen, "the hook never fired"


@pytest.mark.parametrize("call, error", [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_call_leaves_model_and_settings_unchanged(model, writes, sub, call, error):
    before = snapshot(model)
    assert _baseline_ok(before["hooks"]), f"hooks before the call: {before['hooks']}"
    if error is None:
        call(model, writes, sub)
    else:
        with pytest.raises(error):
            call(model, writes, sub)
    assert changes(before, model) == []


def test_the_snapshot_sees_hooks_weights_and_settings(model):
    """The checks above can fail: a hook, a weight edit, a mode change and a thread change
    are each reported."""
    before = snapshot(model)
    mlp_out = model._fast._module(model._fast.paths["mlp_out"][0])
    handle = mlp_out.register_forward_pre_hook(lambda mod, args: None)
    try:
        with model.hooks([("blocks.0.hook_resid_pre", lambda t, hook: t)]):
            inside = changes(before, model)
    finally:
        handle.remove()
    assert any("HookPoint" in c for c in inside) and any("_forward_pre_hooks" in c for c in inside)
    param = next(model.bridge.parameters())
    saved, threads = param.detach().clone(), torch.get_num_threads()
    with torch.no_grad():
        param.add_(1.0)
        try:
            model.bridge.train()
            torch.set_num_threads(threads + 1)
            found = changes(before, model)
        finally:
            param.copy_(saved)
            model.bridge.eval()
            torch.set_num_threads(threads)
    assert any(c.startswith("weight changed") for c in found)
    assert any(c.startswith("training changed") for c in found)
    assert "torch setting changed: threads" in found
    assert changes(before, model) == []


def test_thread_pool_in_neuron_scan_restores_the_thread_count(model):
    """find_deleting_neurons scans layers in a thread pool whose workers set one thread each;
    the caller's setting (here 2, not the suite's 1) comes back, also when the scan raises."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = snapshot(model)
        interp.find_deleting_neurons(model, null="empirical")
        with pytest.raises(ValueError, match="false_positives"):
            interp.find_deleting_neurons(model, false_positives=0)
        assert changes(before, model) == []
    finally:
        torch.set_num_threads(saved)


def test_calls_under_no_grad_keep_grad_off(model, writes, sub):
    with torch.no_grad():
        interp.probe_layers(model, DOCS, max_tokens=150, max_iter=5, progress=False)
        interp.decompose(writes, by="layer")
        assert not torch.is_grad_enabled()


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_model_given_to_load_is_unchanged(family):
    """``interp.load(hf_model)`` copies the model: whatever interp then does, the caller's
    HF model keeps its weights, dtype, training mode, requires_grad flags and hooks, and
    shares no storage with the interp model."""
    hf = random_hf_model(family, n_layers=1).train()
    tok = tiny_tokenizer()
    next(hf.parameters()).requires_grad_(False)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    modes = {n: m.training for n, m in hf.named_modules()}
    grads = {n: p.requires_grad for n, p in hf.named_parameters()}
    config = hf.config.to_dict()
    tok_state = (dict(tok.init_kwargs), dict(tok.special_tokens_map), tok.padding_side, len(tok))

    m = interp.load(hf, tokenizer=tok, dtype=torch.float64, processing="raw", device="cpu")
    w = m.run_with_writes(TEXTS)
    interp.logit_attribution(w, by="neuron")
    interp.find_deleting_neurons(m, data=False)  # the screen: the verdict on data needs processing="compat"
    with interp.ablate(m, interp.Subspace.random(m.cfg.d_model, 2), at=0, mode="zero"):
        m.logits("x = 1")

    after = hf.state_dict()
    assert state.keys() == after.keys()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in state.items())
    assert {n: mod.training for n, mod in hf.named_modules()} == modes
    assert {n: p.requires_grad for n, p in hf.named_parameters()} == grads
    assert hf.config.to_dict() == config
    assert _hooks(hf, "hf") == []  # an HF model runs no TransformerLens wiring of its own
    assert (dict(tok.init_kwargs), dict(tok.special_tokens_map), tok.padding_side, len(tok)) == tok_state
    theirs = {t.untyped_storage().data_ptr() for t in hf.state_dict().values()}
    ours = {t.untyped_storage().data_ptr() for mod in _modules(m).values() for t in mod.state_dict().values()}
    assert not theirs & ours, "the interp model shares weight storage with the caller's model"

