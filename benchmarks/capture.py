"""Recording every residual write: time against a plain forward, and bytes per token."""

from __future__ import annotations

import torch

from benchmarks.common import gpt2_small, interleaved

WRITE_HOOKS = ("hook_embed", "hook_pos_embed", "attn.hook_z", "mlp.hook_post", "ln_final.hook_scale")


def _tl_cache_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for t in cache.values() if isinstance(t, torch.Tensor))


def run(repeats: int = 5, shapes=((8, 256), (1, 1024))) -> list[dict]:
    model, hf = gpt2_small()
    c = model.cfg
    rows = []
    for shape in shapes:
        toks = torch.randint(0, c.d_vocab, shape)
        model.run_with_writes(toks)  # first call: verified against TransformerLens, then calibrated
        fns = {
            "plain HF forward": lambda toks=toks: hf(toks),
            "interp run_with_writes": lambda toks=toks: model.run_with_writes(toks),
            "interp run_with_writes (bf16 storage)": lambda toks=toks: model.run_with_writes(toks, dtype=torch.bfloat16),
            "TL run_with_cache, all hooks": lambda toks=toks: model.bridge.run_with_cache(toks),
            "TL run_with_cache, residual-writes filter": lambda toks=toks: model.bridge.run_with_cache(
                toks, names_filter=lambda n: n.endswith(WRITE_HOOKS)
            ),
        }
        med = interleaved(fns, repeats=repeats)
        base = med["plain HF forward"]
        for name, t in med.items():
            rows.append({"figure": f"time {shape[0]}x{shape[1]}", "what": name, "ratio": t / base,
                         "seconds": t, "target": "<= 1.05" if name == "interp run_with_writes" else ""})
    # Bytes per token, against the factored minimum (z + MLP activations + embeddings).
    toks = torch.randint(0, c.d_vocab, (2, 256))
    n_tok = toks.numel()
    minimum = (c.n_layers * (c.n_heads * c.d_head + c.d_mlp) + 2 * c.d_model) * 4
    w32 = model.run_with_writes(toks)
    w16 = model.run_with_writes(toks, dtype=torch.bfloat16)
    _, cache = model.bridge.run_with_cache(toks)
    for name, nbytes, target in [
        ("interp fp32", w32.nbytes, "<= 1.05"),
        ("interp bf16", w16.nbytes, "<= 0.525"),
        ("TL run_with_cache, all hooks", _tl_cache_bytes(cache), ""),
    ]:
        rows.append({"figure": "bytes per token", "what": name, "ratio": nbytes / n_tok / minimum,
                     "bytes_per_token": nbytes / n_tok, "target": target})
    rows.append({"figure": "bytes per token", "what": "factored minimum (fp32)", "ratio": 1.0,
                 "bytes_per_token": float(minimum), "target": ""})
    return rows
