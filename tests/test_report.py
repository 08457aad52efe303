"""`interp report`: one self-contained HTML file, every section present, every figure drawn
by a real browser with no JavaScript error; a failing part degrades visibly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.report import build_report
from interp.report.document import Html, Section
from interp.report.html import Page, markdown_html, render

SECTIONS = [
    "summary",
    "residual-stream-decomposition",
    "attention-heads",
    "subspace-probes-and-the-shared-memory-map",
    "memory-management",
    "causal-evidence",
    "component-pages",
    "model-card",
    "settings",
]
#: Figures the default report must hold, by their heading id.
FIGURES = [
    "write-norms-per-layer", "head-logit-attribution", "top-neurons", "logit-lens", "stream-norms",
    "probe-accuracy-per-layer", "writers-of-the-previous-token-subspace", "in-out-cosine-of-every-neuron",
    "deleting-heads", "screen-against-verdict",
]
#: Figures built from the round-two analyses (heads, patching, corpus statistics).
NEW_FIGURES = [
    "head-detector-scores", "strongest-composition-edges", "head-patching-of-the-example-s-answer",
    "deletion-effect-of-the-top-deleters",
]
TABLES = [
    "probe-accuracy-per-layer-with-its-baselines", "verdicts-per-layer-against-the-null",
    "ablating-the-previous-token-subspace", "readers-of-the-previous-token-subspace",
]


def chromium_or_skip() -> str:
    """A Chromium binary; without one the test skips, except under CI, where it fails."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no Chromium was found on PATH; CI must install it (apt-get install chromium)")
    pytest.skip("no Chromium on this machine (apt-get install chromium); set CI=1 to make this a failure")


def browser_dom(path: Path, tmp_path: Path) -> str:
    """The DOM of ``path`` after headless Chromium loaded it and ran its scripts."""
    chromium = chromium_or_skip()
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=20000",
        "--dump-dom", path.resolve().as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def status(dom: str) -> dict[str, int]:
    m = re.search(r'<div id="report-status"[^>]*>', dom)
    assert m, "the report's status element is missing from the DOM"
    return {k: int(v) for k, v in re.findall(r'data-(figures|rendered|errors)="(\d+)"', m.group(0))}


def js_errors(dom: str) -> str:
    m = re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.S)
    return m.group(1).strip() if m else ""


# ---- the report on the default model, through the console script (fixture in conftest) ----
def test_report_sections_in_order(default_report):
    path, stdout, stderr = default_report
    text = path.read_text()
    ids = re.findall(r'<section class="top" id="([^"]+)"', text)
    assert ids == SECTIONS
    for anchor in FIGURES + NEW_FIGURES + TABLES:
        assert re.search(f'id="[a-z-]+--{anchor}"', text), anchor
    # every part was built: nothing degraded on the default model
    assert "section unavailable" not in text, re.findall(r"section unavailable: <code>([^<]*)", text)
    # the summary line and a progress bar per stage
    assert f"wrote {path}" in stdout and "MB" in stdout
    for stage in ("load model", "Residual-stream decomposition", "Memory management"):
        assert stage in stderr
    # the model card, the settings used and the time per stage are in the file
    assert "stdlib_lm" in text and "tokens" in text and "Time per stage" in text


def test_summary_links_each_finding_to_its_figure(default_report):
    text = default_report[0].read_text()
    block = re.search(r'<ol class="findings">(.*?)</ol>', text, re.S)
    assert block, "the summary has no findings"
    items = re.findall(r"<li>(.*?)</li>", block.group(1), re.S)
    assert len(items) == 5
    ids = set(re.findall(r'id="([^"]+)"', text))
    for item in items:
        link = re.search(r'href="#([^"]+)"', item)
        assert link and link.group(1) in ids, item  # each finding names the figure it comes from
    # the findings are the report's own numbers, not text written in advance
    assert re.search(r"L0H\d is the strongest previous-token head \(score 0\.\d\d, uniform", block.group(1))
    assert "becomes linearly readable at L1_resid_pre" in block.group(1)


def test_numbers_agree_with_each_other(default_report, default_model):
    """One parameter count (tied weights and the bridge's split Q/K/V counted once), the
    deletion evidence on the tokens the settings say, writers only before the read point."""
    text = default_report[0].read_text()
    card = re.search(r"fp32, ([\d,]+) parameters", text)
    config = re.search(r'<td class="txt">parameters</td><td class="txt">([\d,]+)</td>', text)
    assert card and config and card.group(1) == config.group(1) == "527,872"
    quarter = 4096 // 4
    assert f"Every verdict below is measured on the same {quarter:,} real tokens" in text
    writers = text[text.index('id="subspace-probes-and-the-shared-memory-map--top-writers'):]
    writers = writers[: writers.index("</table>")]
    assert "L1_mlp" not in writers and "L1H" not in writers and "L0H" in writers
    # the model card's table survives its own special token: <|endoftext|> in one cell
    assert "<code>&lt;|endoftext|&gt;</code>" in text


def test_report_is_self_contained(default_report):
    text = default_report[0].read_text()
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=[\"']https?:", text)
    assert not re.search(r"@import\s+url", text)
    assert text.count("Plotly.newPlot(div") == 1  # the one drawing loop
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1  # the bundle, inlined once
    assert 3e6 < len(text.encode()) < 15e6


def test_report_renders_in_browser(default_report, tmp_path):
    path = default_report[0]
    dom = browser_dom(path, tmp_path)
    st = status(dom)
    assert js_errors(dom) == "" and st["errors"] == 0
    assert st["figures"] >= len(FIGURES)
    assert st["rendered"] == st["figures"]
    # every figure div was drawn by plotly (it adds the class and our marker)
    divs = re.findall(r'<div class="([^"]*)" id="fig-\d+"[^>]*>', dom)
    assert len(divs) == st["figures"] and all("js-plotly-plot" in c for c in divs)
    assert dom.count('data-rendered="1"') == st["figures"]
    assert dom.count('class="main-svg"') >= st["figures"]


# ---- the browser check itself can fail -----------------------------------------------
def test_browser_check_sees_errors_and_undrawn_figures(tmp_path):
    good = Section("Figures")
    good.attempt("bar", lambda: go.Figure(go.Bar(x=["L0H1"], y=[1.0])))
    bad = Section("Broken")
    bad.add(Html("script", "<script>throw new Error('planted failure')</script>"))
    # a figure whose spec is not valid JSON cannot be drawn
    page = render([good, bad], Page("t"))
    page = page.replace('<script type="application/json" id="fig-1-spec">{', '<script type="application/json" '
                        'id="fig-1-spec">{oops', 1)
    page_path = tmp_path / "broken.html"
    page_path.write_text(page)
    dom = browser_dom(page_path, tmp_path)
    st = status(dom)
    assert st == {"figures": 1, "rendered": 0, "errors": 2}
    assert "planted failure" in js_errors(dom) and "fig-1" in js_errors(dom)


# ---- degrading and validation, on a tiny random model ---------------------------------
def test_missing_analysis_degrades_visibly(gpt2_model, tmp_path, monkeypatch):
    from interp.report import causal, pages, stages
    from interp.report.resolve import Missing

    def fake_find(name, *fallbacks):
        raise Missing(f"interp.{name} is not available")

    monkeypatch.setattr(stages, "find", fake_find)
    monkeypatch.setattr(causal, "find", fake_find)
    monkeypatch.setattr(pages, "find", fake_find)
    report = build_report(gpt2_model, out=tmp_path / "r.html", tokens=256, data=["x = 1\n"] * 4,
                          progress=False)
    text = report.path.read_text()
    assert report.titles == ["Summary", "Residual-stream decomposition", "Attention heads",
                             "Subspace probes and the shared-memory map", "Memory management", "Causal evidence",
                             "Component pages", "Model card", "Settings"]
    assert "No finding could be computed" in text
    assert "section unavailable: <code>Missing: interp.decompose is not available</code>" in text
    assert "section unavailable: <code>Missing: interp.probe_labels is not available</code>" in text
    summary = report.summary().set_index("section")
    assert summary.loc["Residual-stream decomposition", "unavailable"] >= 4
    assert summary.loc["Settings", "unavailable"] == 0 and summary.loc["Settings", "tables"] == 3
    assert "(no MODEL_CARD.md" in text or "has no model card" in text


def test_every_part_builds_on_each_family(tiny_model, tmp_path):
    import torch

    from interp.testing import _CORPUS

    threads = torch.get_num_threads()
    report = build_report(tiny_model, out=None, tokens=1024, data=_CORPUS * 40, progress=False)
    assert report.path is None and report.html.startswith("<!DOCTYPE html>")
    summary = report.summary().set_index("section")
    assert summary["unavailable"].sum() == 0, [
        (b.title, b.reason) for sec in report.sections for b in sec.blocks if type(b).__name__ == "Unavailable"]
    assert summary.loc["Residual-stream decomposition", "figures"] == 5
    assert summary.loc["Subspace probes and the shared-memory map", "figures"] == 3
    assert summary.loc["Memory management", "figures"] >= 2
    assert torch.get_num_threads() == threads  # the report's single thread is given back
    assert f'data-figures="{summary["figures"].sum()}"' in report.html


def test_options_are_validated(tmp_path, gpt2_model):
    with pytest.raises(ValueError, match=r"tokens=10 is too small"):
        build_report(gpt2_model, out=tmp_path / "r.html", tokens=10)
    with pytest.raises(ValueError, match=r"out=.*r\.txt.*must end in \.html"):
        build_report(gpt2_model, out=tmp_path / "r.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(gpt2_model, out=tmp_path / "r.html", data=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="threads=0"):
        build_report(gpt2_model, out=tmp_path / "r.html", threads=0)


def test_markdown_card():
    md = (
        "# stdlib_lm\n\nA *small* model with `n_layers=2` and **rotary** positions.\n\n"
        "| metric | value |\n|---|---:|\n| loss | 1.5 |\n| BOS | `<\\|endoftext\\|>` |\n\n- one\n- two <b>\n\n"
        "```\nx = 1 < 2\n```\n"
    )
    out = markdown_html(md, heading_offset=2)
    assert "<h3>stdlib_lm</h3>" in out
    assert "<em>small</em>" in out and "<code>n_layers=2</code>" in out and "<strong>rotary</strong>" in out
    assert "<th>metric</th>" in out and '<td style="text-align:right">1.5</td>' in out
    assert "<code>&lt;|endoftext|&gt;</code></td>" in out and out.count("<tr>") == 3  # one cell, not three
    assert "<li>two &lt;b&gt;</li>" in out  # escaped, not markup
    assert "<pre><code>x = 1 &lt; 2\n</code></pre>" in out


@pytest.mark.slow
def test_the_report_on_smollm2(smollm2_report, smollm2):
    """``interp report --model smollm2-135m`` (reduced tokens): every stage available, the
    numbers the model's own (one parameter count, the quantization and licence in the card),
    every finding linked, and the writers only before the read point."""
    path, out, err = smollm2_report
    text = path.read_text()
    assert "section unavailable" not in text.lower(), re.findall(r"unavailable: [^<]{0,200}", text)[:5]
    card = re.search(r"fp32, ([\d,]+) parameters", text)
    assert card and card.group(1) == f"{smollm2.n_params:,}" == "134,515,008"
    assert "Q4_1" in text and "Apache-2.0" in text
    block = re.search(r'<ol class="findings">(.*?)</ol>', text, re.S)
    items = re.findall(r"<li>(.*?)</li>", block.group(1), re.S)
    assert len(items) == 5 and all('href="#' in i for i in items)
    writers = text[text.index('id="subspace-probes-and-the-shared-memory-map--top-writers'):]
    writers = writers[: writers.index("</table>")]
    read_at = int(re.search(r"at L(\d+)_resid_pre", writers[:2000] + text[text.index("Writers of the previous"):][:3000]
                            ).group(1))
    layers = [int(x) for x in re.findall(r'<td class="txt">L(\d+)(?:H\d+|_mlp|_attn|N\d+)</td>', writers)]
    assert layers and max(layers) < read_at, (read_at, layers)


def test_default_tokens_scale_with_the_model(default_model, gpt2_model):
    from interp.report.build import default_tokens

    assert default_tokens(default_model) == 32_768  # 0.5M parameters: the cap
    assert default_tokens(gpt2_model) == 32_768
    fake = type("M", (), {"n_params": 134_515_008})()
    assert default_tokens(fake) == 2_048  # SmolLM2-135M
    assert default_tokens(type("M", (), {"n_params": 7_000_000_000})()) == 256  # the floor


@pytest.mark.parametrize("verdicts", [["deleting", "partial", "none"], ["none", "none", "amplifying"],
                                      ["partial", "partial", "coupled"], ["deleting", "deleting", "deleting"]])
def test_the_memory_finding_counts_verdicts_never_the_screen(verdicts):
    """The summary's counts are the verdicts' own (measured on data), never the screen's; a count
    of zero is never written, and the screen's precision is quoted as measured."""
    from interp.report.summary import _memory

    n = len(verdicts)
    cos = pd.DataFrame({"label": [f"L1N{i}" for i in range(n)], "cosine": [-0.9, -0.8, -0.7][:n],
                        "screen": [True] * n, "verdict": verdicts, "removed_median": [0.8, 0.2, 0.01][:n],
                        "removed_q10": [0.6, 0.1, -0.1][:n], "removed_q90": [0.9, 0.3, 0.1][:n],
                        "flagged": [v == "deleting" for v in verdicts]})
    erasing = int((cos["removed_median"] >= 0.3).sum())
    cos.attrs.update(n_tokens_data=1024, expected_false_positives=0, min_removed=0.3, max_removed=1.5,
                     screen_precision=[dict(n=n, erasing=erasing, deleting=erasing, screen_flags=True)])
    text = _memory({"cosines": cos}).text
    d = verdicts.count("deleting")
    assert (f"{d:,} of {n:,} neurons erase" in text) == (d > 0), text
    assert ("no neuron erases" in text) == (d == 0), text
    assert not re.search(r"(?<![\d.,])0 (erase|amplify|overshoot|lie|of the)", text), text  # no zero counts
    for v, word in (("partial", "erases? part"), ("amplifying", "amplif"), ("coupled", "overshoot")):
        k = verdicts.count(v)
        assert (re.search(rf"(?<![\d.,]){k:,} {word}", text) is not None) == (k > 0), text


def test_the_sink_finding_comes_first_only_where_a_sink_dominates():
    from interp.report.summary import FINDINGS, _sinks

    rows = [dict(layer=ly, sink="position 0", n=8 if ly >= 2 else 0, share=1.0 if ly >= 2 else 0.0,
                 norm=100.0 * ly, norm_ratio=50.0 * ly if ly >= 2 else 2.0, dim=7, attention=0.7 if ly >= 3 else 0.1,
                 massive=ly >= 2) for ly in range(5)]
    sinks = pd.DataFrame(rows)
    f = _sinks({"sinks": sinks})
    assert f.text.startswith("The first position is an attention sink: from layer 2") and "dimension 7" in f.text
    assert "70% of their attention" in f.text and FINDINGS[0] is _sinks
    weak = sinks.assign(attention=0.2)
    assert _sinks({"sinks": weak}) is None  # massive but not drawing most attention: not a leading finding
