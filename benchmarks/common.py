"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def interleaved(fns: dict[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds per function, running the functions round-robin so that machine noise
    falls on all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for f in fns.values():
                f()
        for _ in range(repeats):
            for k, f in fns.items():
                gc.collect()
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpt2_small(seed: int = 0):
    """A GPT-2-small-shaped random model (12 layers, d_model 768, 12 heads, d_mlp 3072), plus
    its raw Hugging Face twin for the plain-forward floor."""
    import copy

    import interp
    from interp.testing import random_hf_model, tiny_tokenizer

    hf = random_hf_model("gpt2", n_layers=12, d_model=768, n_heads=12, n_ctx=1024, d_vocab=50257,
                         norm_noise=0.0, seed=seed)
    model = interp.load(copy.deepcopy(hf), tokenizer=tiny_tokenizer(), device="cpu")
    return model, hf


class Peak:
    """Wall time and peak RSS (sampled every 5 ms) of the block, above the RSS at entry."""

    def __enter__(self) -> Peak:
        import threading

        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._run = True

        def watch() -> None:
            while self._run:
                self.peak = max(self.peak, self._proc.memory_info().rss)
                time.sleep(0.005)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._run = False
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.above_mb = (self.peak - self.base) / 2**20
