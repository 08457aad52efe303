"""Truth on a real model: SmolLM2-135M (30 layers, grouped-query attention, SwiGLU, RMSNorm,
tied embeddings), each number checked against a plain-torch computation on the checkpoint's
own Hugging Face module (``model._fast.hf``, never touched by TransformerLens)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import own_stream

import interp
from interp.capture import calibration_tolerance, row_error
from interp.models.synthetic import repeated_tokens
from interp.reconstruction import reconstruction_ratios

pytestmark = pytest.mark.slow

TEXT = (
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
    "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result = result * i\n"
    "    return result\n"
)


@pytest.fixture(scope="module")
def rec(smollm2):
    smollm2.run_with_writes(TEXT)  # the first record is verified against TransformerLens, then calibrated
    return smollm2.run_with_writes(TEXT)


def _hf(model):
    return model._fast.hf


def _eager_patterns(hf, tokens):
    """Attention probabilities from the checkpoint's eager attention: [layer, batch, head, q, k]."""
    old = hf.config._attn_implementation
    hf.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = hf(input_ids=tokens, output_attentions=True)
    finally:
        hf.config._attn_implementation = old
    return torch.stack([a.float() for a in out.attentions])


def test_fast_path_and_parameter_count(smollm2, rec):
    assert smollm2.capture_path == "fast"
    assert smollm2.calibration["mlp"] <= smollm2.calibration["rtol"]
    assert smollm2.n_params == 134_515_008  # the tied embedding once


def test_reconstruction_at_every_layer(smollm2, rec):
    m = rec.mask
    with torch.no_grad():
        hidden = _hf(smollm2)(rec.tokens, output_hidden_states=True).hidden_states
    n = smollm2.cfg.n_layers
    # against the checkpoint's own forward (the path the record comes from): the strict invariant,
    # every element within the worst-case rounding bound of the sum (interp/reconstruction.py)
    ratios = reconstruction_ratios(rec, {f"{ly}.pre": hidden[ly] for ly in range(n)}, torch.float32)
    assert len(ratios) == n and max(ratios.values()) <= 1, ratios
    # against TransformerLens's stream (eager attention on folded weights): the paths' rounding,
    # elementwise in units of each position's largest value
    rtol = calibration_tolerance(torch.float32, n)
    for (ly, where), want in own_stream(smollm2, rec.tokens).items():
        assert row_error(rec.resid(ly, where), want, m) <= rtol, (ly, where)


def test_logit_attribution_sums_to_the_checkpoints_logits(smollm2, rec):
    df = interp.logit_attribution(rec, by="layer")
    got = df.groupby(["batch", "pos"], observed=True)["attribution"].sum()
    b, p = (torch.tensor(x) for x in zip(*got.index.tolist()))
    with torch.no_grad():
        own = _hf(smollm2)(rec.tokens).logits.double()
    own = own - own.mean(-1, keepdim=True)  # compat processing centres the unembedding
    want = own[b, p, rec.tokens[b, p + 1]]
    scale = float(own[b, p].pow(2).mean().sqrt())
    torch.testing.assert_close(torch.tensor(got.to_numpy(), dtype=torch.float64), want, atol=1e-4 * scale, rtol=0)


def test_previous_token_heads(smollm2):
    toks = smollm2.to_tokens([TEXT])
    plain = _eager_patterns(_hf(smollm2), toks.tokens)  # [L, 1, H, q, k]
    want = plain.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))  # [L, H]
    pats = smollm2.attention_patterns(toks)
    got = torch.stack([pats[ly].float().diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
                       for ly in range(smollm2.cfg.n_layers)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    top = want.flatten().topk(3).indices.tolist()
    assert got.flatten().topk(3).indices.tolist() == top
    assert float(want.max()) > 0.5, "a real model has a strong previous-token head"


def test_induction_heads_and_second_copy_loss(smollm2):
    length = 20
    tokens = repeated_tokens(2, length, vocab_size=smollm2.cfg.d_vocab, seed=0, bos_id=smollm2.bos_id)  # BOS + S + S
    plain = _eager_patterns(_hf(smollm2), tokens)
    want = plain.diagonal(offset=1 - length, dim1=-2, dim2=-1)[..., -length:].mean(dim=(1, 3))
    pats = smollm2.attention_patterns(tokens)
    got = torch.stack([pats[ly].float().diagonal(offset=1 - length, dim1=-2, dim2=-1)[..., -length:].mean(dim=(0, 2))
                       for ly in range(smollm2.cfg.n_layers)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.flatten().topk(3).indices.tolist() == want.flatten().topk(3).indices.tolist()
    assert float(want.max()) > 0.3

    def copy_losses(logits):
        nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).double(), tokens[:, 1:].flatten(), reduction="none")
        nll = nll.view(tokens.shape[0], -1)
        return float(nll[:, 1:length].mean()), float(nll[:, length + 1 :].mean())

    with torch.no_grad():
        first, second = copy_losses(_hf(smollm2)(tokens).logits)
    ifirst, isecond = copy_losses(smollm2.logits(tokens))  # centred logits: the same softmax
    assert abs(ifirst - first) < 1e-3 and abs(isecond - second) < 1e-3
    assert first - second > 5.0, (first, second)


def _long_text(n_tokens: int, model) -> torch.Tensor:
    """``[1, n_tokens]`` of real Python source (the standard library's json and difflib)."""
    import difflib
    import inspect
    import json.decoder

    src = (inspect.getsource(json.decoder) + inspect.getsource(difflib))[: 8 * n_tokens]
    toks = model.to_tokens(src).tokens[:, :n_tokens]
    assert toks.shape[1] == n_tokens
    return toks


@pytest.mark.parametrize("case", ["readme", "long", "batch"])
def test_verification_holds_the_rounding_bound_on_real_text(smollm2, case):
    """The README's first call, a 1x1024 prompt and a padded batch: every element of every
    stage within the worst-case rounding bound (CI reruns this under other MKL code paths,
    without oneDNN, and at 1 and 2 threads)."""
    inputs = {
        "readme": lambda: "def add(a, b):\n    return a + b",
        "long": lambda: _long_text(1024, smollm2),
        "batch": lambda: [TEXT, "import os\nprint(os.getcwd())\n", "The capital of France is", "x = [i * i for i in range(10)]"],
    }[case]()
    w = smollm2.run_with_writes(inputs, verify=True)
    worst = max(smollm2.reconstruction.values())
    assert 0 <= worst <= 1, (case, worst)
    assert len(smollm2.reconstruction) == 3 * smollm2.cfg.n_layers and w.shape[0] >= 1
