"""Small seeded random models built from configs, for tests, benchmarks and planted-truth
experiments. Nothing here downloads anything.

>>> model = random_model("llama", n_layers=2, d_model=64)   # RMSNorm, gated MLP, GQA
>>> model = random_model("gemma3")   # sandwich norms (gain 1 + w), QK-norm, sliding window, GeGLU
>>> model = random_model("gemma2")   # Gemma 3's blocks without QK-norm, plus logit soft-caps
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import torch

FAMILIES = ("gpt2", "neox", "llama", "gemma3", "olmo2", "gemma2")
#: Families whose logits (and attention scores) are soft-capped, ``cap * tanh(x / cap)``: their
#: logit is not the sum of its writes (``interp.config.soft_cap``).
SOFTCAP_FAMILIES = ("gemma2",)
#: Families whose blocks normalise each sublayer's output before adding it (post-norms).
POST_NORM_FAMILIES = ("gemma3", "olmo2", "gemma2")
#: Gemma 2's caps for the random weights here: their linear readouts ``|z|`` reach about 0.7 and
#: their attention scores about 0.1 (trained Gemma 2 reaches its caps of 30 and 50), so caps of
#: 0.5 and 0.05 bend both by tens of percent where they are largest.
GEMMA2_CAPS = dict(final_logit_softcapping=0.5, attn_logit_softcapping=0.05)
_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "import os\nimport sys\n\n# a comment\nvalue = 'string'\n",
]


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 300) -> Any:
    """A byte-level BPE tokenizer trained in memory on a few lines of Python (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    # TransformerLens re-reads a tokenizer from its directory, so give it one.
    path = tempfile.mkdtemp(prefix="interp-tok-")
    fast.save_pretrained(path)
    return PreTrainedTokenizerFast.from_pretrained(path)


def hf_config(
    family: str = "gpt2",
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_mlp: int | None = None,
    n_kv_heads: int | None = None,
    parallel: bool | None = None,
    d_vocab: int = 300,
    n_ctx: int = 128,
) -> Any:
    """A Hugging Face config for ``family`` in ``FAMILIES``."""
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        Olmo2Config,
    )

    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not supported; use one of {', '.join(FAMILIES)}")
    d_mlp = d_mlp or 4 * d_model
    common = dict(vocab_size=d_vocab, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return GPT2Config(n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_inner=d_mlp, n_positions=n_ctx, **common)
    if family == "neox":
        return GPTNeoXConfig(
            hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
            intermediate_size=d_mlp, max_position_embeddings=n_ctx, rotary_pct=0.25,
            use_parallel_residual=True if parallel is None else parallel, **common,
        )
    # no padding_idx: token 0 is BOS here, and a zeroed BOS embedding would leave position 0 empty
    if family in ("gemma3", "gemma2"):  # query_pre_attn_scalar = d_head; every 2nd layer global, a 6-token window
        d_head = d_model // n_heads
        gemma = dict(
            hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
            num_key_value_heads=n_kv_heads or max(1, n_heads // 2), head_dim=d_head, intermediate_size=d_mlp,
            max_position_embeddings=n_ctx, query_pre_attn_scalar=d_head, sliding_window=6,
            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)],
            pad_token_id=None, tie_word_embeddings=True, **common,
        )
        if family == "gemma3":
            return Gemma3TextConfig(**gemma)
        return Gemma2Config(**gemma, **GEMMA2_CAPS)  # Gemma 3's layout without QK-norm, with the soft-caps
    if family == "olmo2":
        return Olmo2Config(
            hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
            num_key_value_heads=n_kv_heads or n_heads, intermediate_size=d_mlp,
            max_position_embeddings=n_ctx, pad_token_id=None, **common,
        )
    return LlamaConfig(
        hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads or max(1, n_heads // 2), intermediate_size=d_mlp,
        max_position_embeddings=n_ctx, **common,
    )


def random_hf_model(family: str = "gpt2", *, seed: int = 0, norm_noise: float = 0.3, **kw: Any) -> Any:
    """A seeded random Hugging Face causal LM. ``norm_noise`` perturbs every norm's weight and
    bias so that LayerNorm folding is not a no-op."""
    from transformers import AutoModelForCausalLM

    cfg = hf_config(family, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln" in name or name.startswith(("ln_", "transformer.ln_f")):
                p.add_(norm_noise * torch.randn(p.shape, generator=g))
            if name.endswith("bias") and p.dim() == 1 and "norm" not in name and ".ln" not in name:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def random_model(family: str = "gpt2", *, seed: int = 0, processing: str = "compat", dtype: Any = None, **kw: Any):
    """A seeded random ``interp.Model`` of ``family`` (see ``hf_config`` for the sizes)."""
    from interp.load import load

    hf = random_hf_model(family, seed=seed, **kw)
    vocab = hf.config.vocab_size
    return load(hf, tokenizer=tiny_tokenizer(vocab) if vocab >= 260 else None, processing=processing,
                dtype=dtype, device="cpu")
