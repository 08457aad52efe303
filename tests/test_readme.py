"""The README's opening example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

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
