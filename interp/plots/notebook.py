"""Figures in notebooks that every viewer can see: the interactive figure plus a static PNG.

In a Jupyter kernel plotly's default renderer is ``plotly_mimetype``: the output holds the
figure's JSON only, which JupyterLab, Notebook 7 and VS Code draw, and which a viewer
without plotly.js (GitHub's notebook view, nbviewer, a plain HTML export) shows as nothing.
``notebook_renderer()`` makes every figure shown afterwards carry a second representation:

- with a Chromium browser (found as ``interp.export`` finds it): an ``image/png`` drawn by
  kaleido, offline (no MathJax, plotly.js from the installed package), through kaleido's
  sync server, so the browser starts once per kernel (about 2 s) and each figure then
  takes about 0.2 s. Frontends that draw plotly show the interactive figure; others the PNG.
- without one: plotly's ``notebook`` renderer, ``text/html`` with plotly.js embedded in
  the notebook once (classic notebooks and HTML exports draw it offline; GitHub does not,
  as it strips scripts).

Examples:
    >>> import interp
    >>> interp.plots.notebook_renderer(static=False)   # doctest: +SKIP
    'plotly_mimetype+notebook'
"""

from __future__ import annotations

import base64
import threading
import warnings
from typing import Any

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

from interp._checks import check_float

#: The renderer registered with ``plotly.io.renderers``: the PNG part of the bundle.
PNG_RENDERER = "interp_png"
#: Size of the PNG when the figure sets none (the size ``interp.export`` uses).
DEFAULT_WIDTH, DEFAULT_HEIGHT = 900, 550


class StaticPngRenderer(MimetypeRenderer):
    """A plotly renderer whose bundle is ``{"image/png": ...}``, drawn by kaleido in ``browser``.

    A figure that cannot be drawn (the browser fails) gets no PNG and one warning per kernel;
    the figure's other representations are still shown.
    """

    def __init__(self, browser: str, *, scale: float = 1.0):
        self.browser = browser
        self.scale = scale
        self._lock = threading.Lock()
        self._warned = False

    def _size(self, fig: dict[str, Any], key: str, default: int) -> int:
        layout = fig.get("layout", {})
        return int(layout.get(key) or layout.get("template", {}).get("layout", {}).get(key) or default)

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, str]:
        import kaleido

        opts = dict(format="png", width=self._size(fig_dict, "width", DEFAULT_WIDTH),
                    height=self._size(fig_dict, "height", DEFAULT_HEIGHT), scale=self.scale)
        try:
            with self._lock:
                # one browser for the kernel's life (kaleido closes it at exit); an already
                # running server (started by the caller) is used as it is
                kaleido.start_sync_server(path=self.browser, mathjax=False, silence_warnings=True)
                png = kaleido.calc_fig_sync(fig_dict, opts=opts)
        except Exception as e:  # a display must never raise: keep the interactive figure
            if not self._warned:
                self._warned = True
                warnings.warn(f"no static PNG for this figure: kaleido failed in {self.browser!r} ({e})",
                              RuntimeWarning, stacklevel=2)
            return {}
        return {"image/png": base64.b64encode(png).decode("ascii")}


def notebook_renderer(*, static: bool | None = None, scale: float = 1.0) -> str:
    """Set plotly's default renderer so that each figure also carries a static fallback.

    Call it once at the top of a notebook; it changes only ``plotly.io.renderers.default``
    (set it back to ``"plotly_mimetype"`` to undo).

    Args:
        static: ``True``: a PNG (raises when no Chromium is found); ``False``: plotly's
            ``notebook`` HTML; ``None`` (default): the PNG when a Chromium is found, else the HTML.
        scale: pixel density of the PNG (1.0 keeps notebooks small; 2.0 is sharp on high-DPI screens).
    Returns:
        The renderer now the default: ``"plotly_mimetype+interp_png"`` or
        ``"plotly_mimetype+notebook"``.
    Raises:
        ChromiumNotFoundError: ``static=True`` and no browser (says how to get one).
    """
    from interp.export import _require_chromium, find_chromium

    if static not in (None, True, False):
        raise TypeError(f"static={static!r} must be True, False or None (None: PNG when a browser is found)")
    scale = check_float("scale", scale, minimum=0, min_open=True)
    browser = _require_chromium() if static else (find_chromium() if static is None else None)
    if browser is None:
        name = "plotly_mimetype+notebook"
    else:
        pio.renderers[PNG_RENDERER] = StaticPngRenderer(browser, scale=scale)
        name = f"plotly_mimetype+{PNG_RENDERER}"
    pio.renderers.default = name
    return name
