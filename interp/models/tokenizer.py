"""Byte-level BPE tokenizer for the embedded model, trained on stdlib source.

Examples:
    >>> tok = train_tokenizer("stdlib:train", vocab_size=512)
    >>> tok.decode(tok("def f(x):\\n    return x")["input_ids"])
    'def f(x):\\n    return x'
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from interp.data import iter_texts

SPECIAL_TOKEN = "<|endoftext|>"


def train_tokenizer(source="stdlib:train", *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on a source (see ``interp.data.iter_texts``).

    The vocabulary holds the 256 byte symbols, one special token
    ``<|endoftext|>`` (id 0; used as BOS, EOS and pad) and learned merges.
    Deterministic for a given corpus.
    """
    if vocab_size < 258:
        raise ValueError(f"vocab_size={vocab_size} must be >= 258 (256 bytes + special + 1 merge)")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((text for _, text in iter_texts(source)), trainer=trainer)
    return wrap(bpe)


def wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` around a raw tokenizer, BOS = EOS = pad.

    Calling it prepends BOS (``add_special_tokens=False`` leaves it out), matching
    the training rows, which all start with BOS.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        add_bos_token=True,
        add_eos_token=False,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )


def bytes_per_token(tokenizer: PreTrainedTokenizerFast, source="stdlib:val") -> float:
    """UTF-8 bytes per token over a source: the tokenizer's compression."""
    n_bytes = n_tokens = 0
    for _, text in iter_texts(source):
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    return n_bytes / max(n_tokens, 1)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """Write tokenizer.json and tokenizer_config.json into a directory."""
    tokenizer.save_pretrained(str(out_dir))
