"""The fast record on real weights: ``run_with_writes`` against the plain Hugging Face forward
(SDPA attention) of the same checkpoint, on SmolLM2-135M (30 layers, 9 query / 3 KV heads,
a 49k vocab) and on the GPT-2-small-shaped toy (50k vocab).

Two floors: the full forward (``hf(toks)``, with the unembedding that ``run_with_writes``
skips) and the forward without it (``hf.model(toks)``: every layer and the final norm). Each
shape runs at 1 and 2 torch threads; every ratio is measured interleaved in one run."""

from __future__ import annotations

import torch

from benchmarks.common import gpt2_small, interleaved


def _smollm2():
    import interp

    model = interp.load("smollm2-135m", device="cpu")
    return model, model._fast.hf


def _rows(name, model, hf, shapes, threads, repeats, floors):
    body = getattr(hf, hf.base_model_prefix)
    out = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for shape in shapes:
            toks = torch.randint(0, model.cfg.d_vocab, shape)
            model.run_with_writes(toks)  # verified and calibrated on the first call
            assert model.capture_path == "fast", model.calibration
            fns = {"interp run_with_writes": lambda toks=toks: model.run_with_writes(toks)}
            if "full" in floors:
                fns["plain HF forward (SDPA)"] = lambda toks=toks: hf(toks, use_cache=False)
            fns["HF forward without unembedding"] = lambda toks=toks: body(input_ids=toks, use_cache=False)
            med = interleaved(fns, repeats=repeats)
            t = med["interp run_with_writes"]
            for floor in [k for k in med if k != "interp run_with_writes"]:
                out.append({"figure": f"{name} {shape[0]}x{shape[1]}, {n_threads} thread(s)",
                            "what": f"run_with_writes / {floor}", "ratio": t / med[floor], "seconds": t,
                            "floor_seconds": med[floor], "target": "<= 1.05"})
    return out


def run(repeats: int = 5, toy: bool = True) -> list[dict]:
    old = torch.get_num_threads()
    rows: list[dict] = []
    try:
        model, hf = _smollm2()
        rows += _rows("SmolLM2", model, hf, [(1, 256), (4, 256)], (1, 2), repeats, ("full", "body"))
        rows += _rows("SmolLM2", model, hf, [(1, 768), (1, 1024)], (1,), repeats, ("body",))
        del model, hf
        if toy:
            model, hf = gpt2_small()
            rows += _rows("toy GPT-2-small", model, hf, [(1, 256), (4, 256)], (1, 2), repeats, ("full", "body"))
            rows += _rows("toy GPT-2-small", model, hf, [(1, 768), (1, 1024)], (1,), repeats, ("body",))
    finally:
        torch.set_num_threads(old)
    return rows
