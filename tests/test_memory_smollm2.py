"""Memory verdicts on SmolLM2-135M, recomputed independently: the per-token removal of the
reported neurons and heads in plain torch on the transformers model (hidden states, the MLP's
and the attention output's inputs caught by forward pre-hooks, eager attention), and every
flagged component erasing on the data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from heads_reference import eager_model

import interp
from interp.heads.data import text_tokens
from interp.memory.head_data import head_removal
from interp.memory.neuron_data import neuron_removal
from interp.memory.verdict import BIN

pytestmark = pytest.mark.slow

#: Agreement of the per-token removal with the plain-torch one. The record is float32 and the
#: ratio divides by the stream's component along the input (neurons) or what the head reads of
#: it (heads); float32 rounding of the stream (eps 6e-8 x about 30 summed writes) relative to that
#: component stays below 1e-5 on the tokens compared, which have |component| >= 1e-2 |x|.
ATOL = 1e-4


@pytest.fixture(scope="module")
def hf(smollm2):
    from interp.gguf import converted_checkpoint

    path, _ = converted_checkpoint(Path(smollm2.source["gguf_file"]), progress=False)
    return eager_model(path)


@pytest.fixture(scope="module")
def toks(smollm2):
    return text_tokens(smollm2, n_rows=2, n_ctx=64)


@pytest.fixture(scope="module")
def caught(hf, toks):
    """Per layer: resid_pre, resid_mid, the MLP activation and the attention's z, and the
    attention patterns, from the transformers model itself."""
    got: dict[str, dict[int, torch.Tensor]] = {"mid": {}, "act": {}, "z": {}}
    hooks = []
    for ly, layer in enumerate(hf.model.layers):
        hooks.append(layer.post_attention_layernorm.register_forward_pre_hook(
            lambda m, a, ly=ly: got["mid"].__setitem__(ly, a[0].detach())))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda m, a, ly=ly: got["act"].__setitem__(ly, a[0].detach())))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a, ly=ly: got["z"].__setitem__(ly, a[0].detach())))
    try:
        with torch.no_grad():
            out = hf(input_ids=toks.tokens, output_hidden_states=True, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    got["pre"] = dict(enumerate(out.hidden_states))
    got["attn"] = dict(enumerate(out.attentions))
    return got


@pytest.fixture(scope="module")
def verdicts(smollm2):
    return interp.neuron_verdicts(smollm2)


@pytest.fixture(scope="module")
def heads(smollm2):
    return interp.find_deleting_heads(smollm2)


def _reported_neurons(verdicts):
    d = verdicts[verdicts["verdict"] == "deleting"].sort_values("removed_median", ascending=False)
    return list(dict.fromkeys([*d["label"].head(3), *verdicts["label"].head(2)]))  # top deleters, most negative


def test_neuron_removal_matches_plain_torch(smollm2, hf, toks, caught, verdicts):
    w = smollm2.run_with_writes(toks)
    mask = toks.mask
    for label in _reported_neurons(verdicts):
        ly, n = (int(v) for v in label[1:].split("N"))
        layer = hf.model.layers[ly]
        ln = layer.post_attention_layernorm.weight.double()
        u = ln * layer.mlp.up_proj.weight[n].double()
        u = u / u.norm()
        x = caught["mid"][ly].double()[mask]
        a = caught["act"][ly][..., n].double()[mask]
        gate = (layer.mlp.gate_proj(layer.post_attention_layernorm(caught["mid"][ly]))[..., n] > 0)[mask]
        p = x @ u
        want = -a * (layer.mlp.down_proj.weight[:, n].double() @ u) / p
        r, fire = neuron_removal(smollm2, w, ly)
        assert torch.equal(fire[:, n].cpu(), gate), label
        ok = gate & (p.abs() >= 1e-2 * x.norm(dim=-1))
        torch.testing.assert_close(r[:, n][ok].cpu(), want[ok], atol=ATOL, rtol=ATOL)


def test_head_removal_and_attention_match_plain_torch(smollm2, hf, toks, caught, heads):
    w = smollm2.run_with_writes(toks)
    mask = toks.mask
    c = smollm2.cfg
    dh = c.d_head
    reported = list(heads["label"].head(4)) + ["L3H1"]  # the flagged first, and a control
    for label in reported:
        ly, h = (int(v) for v in label[1:].split("H"))
        got = head_removal(smollm2, w, ly)
        x = caught["pre"][ly].double()
        norm = x.norm(dim=-1)
        sink = norm >= 10 * norm[mask].median()
        sink[:, 0] = True
        counted = mask & ~sink
        assert torch.equal(got["counted"].cpu(), counted), label
        attn, ln = hf.model.layers[ly].self_attn, hf.model.layers[ly].input_layernorm.weight.double()
        kv = h // (c.n_heads // c.n_kv_heads)
        reads = (attn.v_proj.weight[kv * dh:(kv + 1) * dh].double() * ln).T  # [d, dh]: v = (x / rms) @ reads
        Q = torch.linalg.svd(reads, full_matrices=False)[0]  # what the head reads of x: P x = Q Q^T x
        W_O = attn.o_proj.weight[:, h * dh:(h + 1) * dh].double()  # [d, dh]
        write = caught["z"][ly][..., h * dh:(h + 1) * dh].double() @ W_O.T
        Px = (x @ Q) @ Q.T
        want = (-(write * Px).sum(-1) / Px.pow(2).sum(-1))[counted]
        torch.testing.assert_close(got["total"][:, h].cpu(), want, atol=ATOL, rtol=ATOL)
        A = caught["attn"][ly][:, h].double()
        self_att = torch.diagonal(A, dim1=-2, dim2=-1)[counted]
        torch.testing.assert_close(got["self_attention"][:, h].cpu(), self_att, atol=1e-5, rtol=0)
        row = heads.set_index("label").loc[label]
        assert row["n_queries"] > 0


def test_every_flagged_component_erases_on_data(smollm2, verdicts, heads):
    """Flagged means the median counted token loses at least 30% (and at most 150%): checked on
    the per-token numbers, not on the summary."""
    w = smollm2.run_with_writes(text_tokens(smollm2, n_rows=2, n_ctx=64))
    d = verdicts[verdicts["flagged"]]
    assert len(d) and (d["removed_median"] >= 0.3 - BIN).all() and (d["removed_median"] <= 1.5 + BIN).all()
    assert verdicts.attrs["expected_false_positives"] < 0.2 * len(d)  # the null finds far fewer
    for label in d.sort_values("removed_median", ascending=False)["label"].head(3):
        ly, n = (int(v) for v in label[1:].split("N"))
        r, fire = neuron_removal(smollm2, w, ly)
        assert float(r[:, n][fire[:, n]].median()) >= 0.3, label
    f = heads[heads["flagged"]]
    assert (f["removed_median"] >= 0.3 - BIN).all()
    for label in f["label"].head(3):
        ly, h = (int(v) for v in label[1:].split("H"))
        assert float(head_removal(smollm2, w, ly)["total"][:, h].median()) >= 0.25, label
    # the figures: the three most negative cosines erase; the screen's precision is reported
    top = verdicts.head(3)
    assert (top["removed_median"] >= 0.3).all(), top
    prec = {p["n"]: p["erasing"] for p in verdicts.attrs["screen_precision"]}
    assert prec[10] >= 8
