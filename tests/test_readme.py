"""The README's opening example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quickstart = blocks[0]
    assert "interp.load()" in quickstart
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(quickstart, "README.md quickstart", "exec"), namespace)
    assert (tmp_path / "neurons.html").stat().st_size > 1_000_000  # plotly.js inlined
    assert {"layer", "neuron", "cosine"} <= set(namespace["df"].columns)


@pytest.mark.slow
def test_readme_quickstart_runs_on_smollm2(tmp_path, monkeypatch):
    """The same tour on the real model: only the model and the probe's token budget change."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    tour = blocks[0].replace("interp.load()", 'interp.load("smollm2-135m")').replace("max_tokens=20_000", "max_tokens=2_000")
    assert "smollm2-135m" in tour
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(tour, "README.md quickstart on SmolLM2", "exec"), namespace)
    assert namespace["model"].capture_path == "fast" and max(namespace["model"].reconstruction.values()) <= 1
    assert (tmp_path / "neurons.html").stat().st_size > 1_000_000
