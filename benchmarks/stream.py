"""Streaming writes over a corpus: throughput against a plain forward, and bounded memory.

Each token count runs in its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def _child(max_tokens: int) -> dict:
    """Stream ``max_tokens`` of stdlib source through the default model twice: once recording
    writes plus a running statistic (mean write norm per component), once as a plain forward."""
    import torch

    import interp
    from benchmarks.common import peak_rss_mb
    from interp.data import token_batches

    model = interp.load()
    n_ctx, bs = model.cfg.n_ctx, 16
    c = model.cfg
    sums = torch.zeros(c.n_layers, c.n_heads + 1)
    count = 0
    t0 = time.perf_counter()
    for w in model.stream_writes("stdlib", batch_size=bs, n_ctx=n_ctx, max_tokens=max_tokens, progress=False):
        m = w.mask
        for ly in range(c.n_layers):
            sums[ly, :-1] += w.head_writes(ly).norm(dim=-1)[m].sum(0)
            sums[ly, -1] += w.mlp_write(ly).norm(dim=-1)[m].sum()
        count += int(m.sum())
    t_writes = time.perf_counter() - t0
    hf = model._fast.hf if model._fast is not None else None
    t0 = time.perf_counter()
    plain = 0
    with torch.no_grad():
        for b in token_batches(model.tokenizer, "stdlib", n_ctx=n_ctx, batch_size=bs, max_tokens=max_tokens,
                               progress=False):
            hf(input_ids=b.tokens)
            plain += int(b.mask.sum())
    t_plain = time.perf_counter() - t0
    return {"tokens": count, "writes_tok_per_s": count / t_writes, "plain_tok_per_s": plain / t_plain,
            "peak_rss_mb": peak_rss_mb()}


def run(small: int = 100_000, large: int = 1_000_000) -> list[dict]:
    out = {}
    for n in (small, large):
        res = subprocess.run([sys.executable, "-m", "benchmarks.stream", str(n)], capture_output=True, text=True,
                             check=True)
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
    big, little = out[large], out[small]
    return [
        {"figure": "stream_writes throughput", "what": f"{big['tokens']:,} tokens, vs plain forward",
         "ratio": big["writes_tok_per_s"] / big["plain_tok_per_s"], "target": ">= 0.8",
         "tokens_per_s": big["writes_tok_per_s"]},
        {"figure": "stream_writes peak RSS", "what": f"{large:,} vs {small:,} tokens",
         "ratio": big["peak_rss_mb"] / little["peak_rss_mb"], "target": "<= 1.1",
         "peak_rss_mb": big["peak_rss_mb"]},
    ]


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]))))
