"""Corpus statistics: ``neuron_stats`` against a plain forward, memory over token counts, and
two processes against one (``torchrun``, gloo, one thread each).

- throughput: the embedded model over stdlib, ``neuron_stats`` and a plain HF forward of the
  same token batches, interleaved in segments (so machine noise falls on both alike);
- memory: peak RSS of ``neuron_stats`` at a small and a large token count, each in its own
  process;
- scaling: tokens per second of the ``neuron_stats`` call in one process and under
  ``torchrun --nproc-per-node 2`` (each rank one thread; the two-process time is the slower
  rank's, all-reduce included).

``python -m benchmarks --only stats`` or ``python -m benchmarks.stats [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RANK_SCRIPT = """
import json, sys, time, torch, interp
from interp.stats import init_distributed, neuron_stats, rank_and_world
torch.set_num_threads(1)
init_distributed()
model = interp.load()
neuron_stats(model, "stdlib:val", max_tokens=2_000, progress=False)  # first record: calibration
rank, world = rank_and_world()
if world > 1:
    torch.distributed.barrier()
t = time.perf_counter()
df = neuron_stats(model, "stdlib", max_tokens=int(sys.argv[1]), progress=False)
seconds = time.perf_counter() - t
with open(f"result{rank}.json", "w") as f:
    json.dump({"rank": rank, "world": world, "seconds": seconds, "tokens": int(df.attrs["n_tokens"])}, f)
"""


def _throughput(tokens: int, segments: int) -> dict:
    """Interleaved segments of ``tokens / segments``: plain forward, then neuron_stats."""
    import torch

    import interp
    from interp.data import token_batches
    from interp.stats import neuron_stats

    torch.set_num_threads(1)
    model = interp.load()
    neuron_stats(model, "stdlib:val", max_tokens=2_000, progress=False)
    hf, n_ctx, bs = model._fast.hf, model.cfg.n_ctx, 8
    seg = tokens // segments
    t_plain = t_stats = 0.0
    n_plain = n_stats = 0
    docs = interp.data.stdlib_files("train")
    for i in range(segments):
        part = [p.read_text(errors="replace") for p in docs[i::segments][:400]]
        t = time.perf_counter()
        with torch.no_grad():
            for b in token_batches(model.tokenizer, part, n_ctx=n_ctx, batch_size=bs, max_tokens=seg, progress=False):
                hf(input_ids=b.tokens)
                n_plain += int(b.mask.sum())
        t_plain += time.perf_counter() - t
        t = time.perf_counter()
        df = neuron_stats(model, part, max_tokens=seg, batch_size=bs, progress=False, exclude_first=False)
        t_stats += time.perf_counter() - t
        n_stats += int(df.attrs["n_tokens"])
    return {"plain_tok_per_s": n_plain / t_plain, "stats_tok_per_s": n_stats / t_stats,
            "plain_tokens": n_plain, "stats_tokens": n_stats}


def _memory(tokens: int) -> dict:
    import torch

    import interp
    from benchmarks.common import Peak
    from interp.stats import neuron_stats

    torch.set_num_threads(1)
    model = interp.load()
    neuron_stats(model, "stdlib:val", max_tokens=2_000, progress=False)
    with Peak() as p:
        df = neuron_stats(model, "stdlib", max_tokens=tokens, progress=False)
    return {"tokens": int(df.attrs["n_tokens"]), "peak_above_mb": p.above_mb, "seconds": p.seconds}


def _child(kind: str, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "benchmarks.stats", kind, *args], capture_output=True, text=True,
                         check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(res.stdout.strip().splitlines()[-1])


def _ranks(tokens: int, nproc: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "rank.py"
        script.write_text(_RANK_SCRIPT)
        env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               str(script), str(tokens)]
        subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, check=True, cwd=d)
        return [json.loads((Path(d) / f"result{r}.json").read_text()) for r in range(nproc)]


def run(tokens: int = 1_000_000, small: int = 100_000, scaling_tokens: int = 300_000) -> list[dict]:
    one = _ranks(scaling_tokens, 1)
    two = _ranks(scaling_tokens, 2)
    thr = _child("throughput", str(tokens), "5")
    big, little = _child("memory", str(tokens)), _child("memory", str(small))
    one_tps = one[0]["tokens"] / one[0]["seconds"]
    two_tps = two[0]["tokens"] / max(r["seconds"] for r in two)  # n_tokens is the all-reduced total
    return [
        {"figure": "neuron_stats throughput", "what": f"{thr['stats_tokens']:,} tokens, vs plain HF forward",
         "ratio": thr["stats_tok_per_s"] / thr["plain_tok_per_s"], "target": ">= 0.8",
         "tokens_per_s": thr["stats_tok_per_s"], "plain_tokens_per_s": thr["plain_tok_per_s"]},
        {"figure": "neuron_stats peak memory", "what": f"{big['tokens']:,} vs {little['tokens']:,} tokens",
         "ratio": big["peak_above_mb"] / max(little["peak_above_mb"], 1.0), "target": "<= 1.1",
         "peak_above_mb": big["peak_above_mb"], "small_peak_above_mb": little["peak_above_mb"]},
        {"figure": "neuron_stats, 2 processes vs 1", "what": f"{scaling_tokens:,} tokens, gloo, 1 thread per rank",
         "ratio": two_tps / one_tps, "target": ">= 1.6", "one_tokens_per_s": one_tps, "two_tokens_per_s": two_tps,
         "seconds": max(r["seconds"] for r in two), "one_seconds": one[0]["seconds"]},
    ]


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "all"
    if kind == "throughput":
        print(json.dumps(_throughput(int(sys.argv[2]), int(sys.argv[3]))))
    elif kind == "memory":
        print(json.dumps(_memory(int(sys.argv[2]))))
    else:
        quick = "--quick" in sys.argv
        rows = run(200_000, 50_000, 100_000) if quick else run()
        for r in rows:
            print(json.dumps(r))
