"""interp.export: self-contained HTML, static images through kaleido, and clear errors."""

from __future__ import annotations

import os
import re
import sys

import plotly.graph_objects as go
import pytest

import interp
from interp.errors import ChromiumNotFoundError

# `interp.export` is the function; its module holds find_chromium.
export_mod = sys.modules["interp.export"]


def chromium_or_skip() -> str:
    """The browser path; without one the test skips, except under CI, where it fails."""
    path = export_mod.find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium was found; CI must install it (apt-get install chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium); set CI=1 to make this a failure")
    return path


@pytest.fixture
def fig() -> go.Figure:
    return go.Figure(
        go.Bar(x=["L0H1", "L1H3"], y=[0.5, -1.25], hovertext=["L0H1", "L1H3"]),
        layout=dict(title="write norms", xaxis_title="component", yaxis_title="norm"),
    )


def test_html_is_self_contained(fig, tmp_path):
    path = interp.export(fig, tmp_path / "fig.html")
    text = path.read_text()
    assert path == tmp_path / "fig.html"
    # plotly.js inlined, no script fetched from anywhere
    assert "Plotly.newPlot" in text and len(text) > 1_000_000
    assert not re.search(r"<script[^>]+src=[\"']https?:", text)
    assert "L1H3" in text


def test_html_size_options(fig, tmp_path):
    path = interp.export(fig, tmp_path / "fig.htm", width=321, height=234)
    text = path.read_text()
    assert '"width":321' in text and '"height":234' in text
    assert fig.layout.width is None  # the caller's figure is not changed


def test_unknown_suffix_names_parameter_and_choices(fig, tmp_path):
    with pytest.raises(ValueError, match=r"path=.*fig\.jpg.*'\.jpg'.*\.html, \.htm, \.png, \.svg, \.pdf"):
        interp.export(fig, tmp_path / "fig.jpg")
    with pytest.raises(ValueError, match=r"suffix '\(none\)'"):
        interp.export(fig, tmp_path / "fig")


def test_missing_directory_and_bad_figure(fig, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        interp.export(fig, tmp_path / "nope" / "fig.html")
    with pytest.raises(TypeError, match="plotly.graph_objects.Figure"):
        interp.export(object(), tmp_path / "fig.html")
    with pytest.raises(ValueError, match="scale=0"):
        interp.export(fig, tmp_path / "fig.png", scale=0)


def test_no_chromium_gives_how_to_get_one(fig, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "find_chromium", lambda: None)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    with pytest.raises(ChromiumNotFoundError, match=r"apt-get install chromium") as info:
        interp.export(fig, tmp_path / "fig.png")
    msg = str(info.value)
    assert "BROWSER_PATH" in msg and "kaleido_get_chrome" in msg
    assert info.value.__cause__ is None and "Traceback" not in msg
    assert not (tmp_path / "fig.png").exists()
    # it is a RuntimeError too, and HTML still works without a browser
    assert isinstance(info.value, RuntimeError)
    interp.export(fig, tmp_path / "fig.html")


def test_bad_browser_path_is_named(fig, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    assert export_mod.find_chromium() is None
    with pytest.raises(ChromiumNotFoundError, match=r"BROWSER_PATH=.*no-such-chromium.*is not an executable"):
        interp.export(fig, tmp_path / "fig.svg")


def test_browser_path_is_honoured(monkeypatch, tmp_path):
    exe = tmp_path / "my-chromium"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(exe))
    assert export_mod.find_chromium() == str(exe)


MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<svg"}


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_static_export(fig, tmp_path, suffix):
    chromium_or_skip()
    path = interp.export(fig, tmp_path / f"fig{suffix}", width=400, height=300)
    head = path.read_bytes()[:200]
    assert MAGIC[suffix] in head
    if suffix == ".png":  # 400 x 300 CSS pixels at scale 2
        import struct

        w, h = struct.unpack(">II", path.read_bytes()[16:24])
        assert (w, h) == (800, 600)
