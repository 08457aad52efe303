"""What identifies a model: its fingerprint (``model_id``) and its parameter count."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
import xxhash
from torch import Tensor


def model_id(model: Any) -> str:
    """Fingerprint of the model: a 128-bit xxHash (XXH3) over the config (its name aside) and
    the raw bytes of every parameter and buffer of the bridge, with their names, shapes and
    dtypes, shown as 16 hex digits. Two models that differ in one weight get different ids.
    Cached, and computed again when any tensor is modified in place (torch's per-tensor
    version counter), e.g. by weight surgery. Cost: 0.2-0.3 s for SmolLM2-135M's 650 MB in
    fp32 (SHA-256 took 0.9-1.4 s; a sampled or summed fingerprint would miss single-weight
    edits). XXH3 is not a cryptographic hash: it tells models apart, it does not defend
    against a record forged to collide. The list of tensors is taken once: a parameter
    replaced by a new tensor object (rather than edited in place) is not seen; set
    ``model._fingerprint = None`` after such a replacement."""
    if model._fingerprint is None:
        model._fingerprint = fingerprinted(model.bridge)
    tensors = model._fingerprint
    key = tuple((n, t.data_ptr(), t._version) for n, t in tensors)
    with model._lock:
        if model._model_id is None or model._model_id[0] != key:
            h = xxhash.xxh3_128(repr(dataclasses.replace(model.cfg, name="")).encode())
            for name, t in tensors:
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                t = t.detach().cpu().contiguous()
                if t.numel():
                    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            model._model_id = (key, h.hexdigest()[:16])
        return model._model_id[1]


def n_params(model: Any) -> int:
    """Parameters of the checkpoint, each tensor counted once: tied weights (an unembedding
    that is the embedding) once, and none of TransformerLens's split copies (the Q/K/V it
    cuts from a fused projection). SmolLM2-135M: 134,515,008; the embedded model: 527,872."""
    if model._raw_hf is not None:  # the checkpoint's own module: parameters() yields shared tensors once
        return sum(p.numel() for p in model._raw_hf.parameters())
    hf = model.bridge.original_model
    named = dict(hf.named_parameters())
    fused = {n.split(".qkv.")[0] for n in named if ".qkv." in n}
    split = re.compile(r"^(.*)\.(q|k|v)\._original_component\.")
    n = sum(p.numel() for n, p in named.items() if not ((m := split.match(n)) and m.group(1) in fused))
    if getattr(hf.config, "tie_word_embeddings", False):  # processing unties them: count one
        out, emb = hf.get_output_embeddings(), hf.get_input_embeddings()
        out = getattr(out, "_original_component", out)
        if out is not None and out.weight is not getattr(emb, "weight", None):
            n -= out.weight.numel()
    return n


def fingerprinted(bridge: Any) -> list[tuple[str, Tensor]]:
    """The bridge's parameters and buffers, each tensor once (by storage), with their names."""
    seen: set[int] = set()
    out = []
    for name, t in [*bridge.named_parameters(), *bridge.named_buffers()]:
        if t.data_ptr() in seen and t.numel():
            continue
        seen.add(t.data_ptr())
        out.append((name, t))
    return out
