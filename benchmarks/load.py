"""Load times of the named real model: the first ``interp.load("smollm2-135m")`` (GGUF
dequantized and cached) and the second (the cached safetensors checkpoint), each in a fresh
process so that nothing is shared but the operating system's file cache."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

SCRIPT = """
import json, time, torch
torch.set_num_threads({threads})
t0 = time.perf_counter()
import interp
t1 = time.perf_counter()
model = interp.load("smollm2-135m", cache_dir={cache!r})
t2 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, quantization=model.cfg.quantization)))
"""


def _one(cache: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(cache=cache, threads=threads)],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(threads: int = 1, repeats: int = 3) -> list[dict]:
    """First load into an empty cache, then ``repeats`` cached loads (median)."""
    with tempfile.TemporaryDirectory() as cache:
        first = _one(cache, threads)
        cached = sorted(_one(cache, threads)["load_s"] for _ in range(repeats))
    return [
        dict(figure="first load (GGUF → safetensors cache)", what="smollm2-135m", seconds=first["load_s"],
             target="≤ 30 s"),
        dict(figure="second load (cached checkpoint)", what="smollm2-135m", seconds=cached[len(cached) // 2],
             target="≤ 3 s"),
        dict(figure="import interp", what="", seconds=first["import_s"], target="reported"),
    ]
