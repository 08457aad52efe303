"""Entropy neurons' mean-ablation effects at the final norm on Gemma-3-270M's shape (d_vocab
262,144, d_model 640, RMSNorm), synthetic tensors (no model is loaded): the per-chunk kernel
``interp.memory.entropy._chunk_effects`` (float32 changes of the logits, float64 sums) against
the float64 computation it replaced (two full log-softmaxes per token and neuron, copied here),
on the same inputs, interleaved in one run; 512 tokens x 16 neurons in chunks of 32 (the
defaults), or fewer tokens with ``--quick``. Target: >= 3x faster. Each side's results are
printed next to the other's largest difference.

``python -m benchmarks --only entropy`` or ``python -m benchmarks.entropy [--quick]``.
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import interleaved


def _stats_float64(z, targets, entropy=True):
    lse = torch.logsumexp(z, -1)
    loss = lse - z.gather(-1, targets[:, None])[:, 0]
    if not entropy:
        return loss, None
    lp = z.sub_(lse[:, None])
    return loss, -(lp.exp() * lp).sum(-1)


def _old_chunk(xc, s, dc, targets, W_U, b, vec_c, bw, eps):
    """The replaced float64 computation for one chunk (RMSNorm, no cap), ``[c, j]`` each."""
    base = xc @ W_U
    loss0, ent0 = _stats_float64(base / s + b, targets)
    out = torch.empty(3, *dc.shape, dtype=torch.float64)
    for j in range(dc.shape[1]):
        y = xc + dc[:, j:j + 1] * vec_c[j]
        s_new = (y.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        num = base + dc[:, j:j + 1] * bw[j]
        lt, et = _stats_float64(num / s_new + b, targets)
        ld, _ = _stats_float64(num.div_(s).add_(b), targets, entropy=False)
        out[0, :, j], out[1, :, j], out[2, :, j] = lt - loss0, ld - loss0, et - ent0
    return out


def _inputs(tokens: int, neurons: int, d_model: int = 640, d_vocab: int = 262_144, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W_U = (torch.randn(d_model, d_vocab, generator=g) * 0.05).double()  # trained Gemma's scale: logits of a few units
    b = torch.zeros(d_vocab, dtype=torch.float64)
    x = torch.randn(tokens, d_model, generator=g, dtype=torch.float64) * 30
    vec = torch.randn(neurons, d_model, generator=g, dtype=torch.float64)
    dc = torch.randn(tokens, neurons, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, d_vocab, (tokens,), generator=g)
    return W_U, b, x, vec, dc, targets


def run(tokens: int = 512, neurons: int = 16, chunk: int = 32, repeats: int = 3) -> list[dict]:
    from interp.memory.entropy import _chunk_effects

    eps = 1e-6
    W_U, b, x, vec, dc, targets = _inputs(tokens, neurons)
    bw = vec @ W_U
    bw32 = bw.float()
    results = {}

    def chunks(fn, key):
        def go():
            parts = []
            for a0 in range(0, tokens, chunk):
                xs = x[a0:a0 + chunk]
                s = (xs.pow(2).mean(-1, keepdim=True) + eps).sqrt()
                parts.append(fn(xs, s, dc[a0:a0 + chunk], targets[a0:a0 + chunk]))
            results[key] = torch.cat(parts, 1)
        return go

    old = chunks(lambda xs, s, d, t: _old_chunk(xs, s, d, t, W_U, b, vec, bw, eps), "old")
    new = chunks(lambda xs, s, d, t: torch.stack(_chunk_effects(xs, s, s, d, t, W_U, b, vec, bw32, None, True)), "new")
    secs = interleaved({"old": old, "new": new}, repeats=repeats, warmup=0)
    diff = (results["old"] - results["new"]).abs().amax(1).amax(-1)  # largest per-token difference per quantity
    size = results["old"].abs().amax(1).amax(-1)
    return [{"figure": "entropy_neurons effects kernel, float64 / new",
             "what": f"{tokens} tokens x {neurons} neurons, d_vocab 262,144, d_model 640, chunk {chunk}",
             "ratio": secs["old"] / secs["new"], "target": ">= 3", "seconds": secs["new"], "old_seconds": secs["old"],
             "max_abs_diff_loss_total_direct_entropy": diff.tolist(), "max_abs_effect": size.tolist()}]


if __name__ == "__main__":
    torch.set_num_threads(1)
    quick = "--quick" in sys.argv
    for row in run(tokens=64 if quick else 512, repeats=1 if quick else 3):
        print(row)
