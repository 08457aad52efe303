"""Analyses at scale: per-neuron decomposition and attribution at 1,024 positions,
find_deleting_neurons on a 7B-shaped MLP stack, probe_layers against a forward pass."""

from __future__ import annotations

import torch

import interp
from benchmarks.common import Peak, gpt2_small, interleaved


def neuron_decomposition() -> list[dict]:
    """GPT-2-small shape, 1x1024: never builds [pos, d_mlp, d_model] (9 GiB per layer)."""
    model, _ = gpt2_small()
    toks = torch.randint(0, model.cfg.d_vocab, (1, 1024))
    w = model.run_with_writes(toks)
    rows = []
    for name, fn in [
        ("decompose(by='neuron')", lambda: interp.decompose(w, by="neuron")),
        ("decompose(by='neuron', top_k=20)", lambda: interp.decompose(w, by="neuron", top_k=20)),
        ("logit_attribution(by='component')", lambda: interp.logit_attribution(w, by="component")),
    ]:
        with Peak() as p:
            df = fn()
        rows.append({"figure": "per-neuron, 1,024 positions", "what": name, "seconds": p.seconds,
                     "peak_above_mb": p.above_mb, "rows": len(df),
                     "target": "no [pos, d_mlp, d_model]; peak reported"})
        del df
    return rows


def deleting_neurons_7b(layers: int = 32, d_model: int = 4096, d_mlp: int = 11008) -> list[dict]:
    """A random bf16 MLP stack of 7B shape with three planted deleting neurons."""
    from interp.memory import MLPStack

    torch.manual_seed(0)
    W_in = [torch.empty(d_model, d_mlp, dtype=torch.bfloat16).normal_() for _ in range(layers)]
    W_out = [torch.empty(d_mlp, d_model, dtype=torch.bfloat16).normal_() for _ in range(layers)]
    planted = {(0, 100), (layers // 2, 5000), (layers - 1, d_mlp - 1)}
    for ly, n in planted:
        W_out[ly][n] = -0.9 * W_in[ly][:, n]
    with Peak() as p:
        df = interp.find_deleting_neurons(MLPStack(W_in, W_out))
    found = set(zip(df.layer, df.neuron, strict=True))
    return [{"figure": "find_deleting_neurons, 7B-shaped stack", "what": f"{layers} x {d_model} x {d_mlp} bf16",
             "seconds": p.seconds, "peak_above_mb": p.above_mb, "target": "seconds",
             "planted_found": f"{len(found & planted)}/{len(planted)}", "false_positives": len(found - planted)}]


def probes_vs_forward(tokens: int = 100_000) -> list[dict]:
    """probe_layers over every layer against one forward over the same tokens."""
    model, hf = gpt2_small()
    from interp.data import token_batches

    def forward() -> None:
        for b in token_batches(model.tokenizer, "stdlib", n_ctx=256, batch_size=16, max_tokens=tokens,
                               progress=False):
            hf(input_ids=b.tokens)

    def probes() -> None:
        interp.probe_layers(model, "stdlib", label="current_token", max_tokens=tokens, progress=False)

    med = interleaved({"forward": forward, "probe_layers": probes}, repeats=1, warmup=0)
    return [{"figure": "probe_layers, all layers", "what": f"{tokens:,} tokens vs one forward",
             "ratio": med["probe_layers"] / med["forward"], "seconds": med["probe_layers"], "target": "report"}]
