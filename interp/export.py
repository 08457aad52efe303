"""``export(fig, path)``: write a plotly figure to ``.html`` (self-contained, offline) or to a
static ``.png`` / ``.svg`` / ``.pdf`` through kaleido, which drives a Chromium browser.

The HTML file inlines plotly.js, so it opens with no network. Static export looks for a
browser before starting kaleido, and raises ``ChromiumNotFoundError`` (with the way to get
one) instead of letting kaleido fail deep inside its browser launcher.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import plotly.graph_objects as go

from interp._checks import check_float, check_int
from interp.errors import ChromiumNotFoundError

HTML_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
SUFFIXES = HTML_SUFFIXES + IMAGE_SUFFIXES
#: Executable names searched on PATH, in order (the ones kaleido's launcher knows).
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Environment variable kaleido (through choreographer) reads as an explicit browser path.
BROWSER_ENV = "BROWSER_PATH"

_HOW_TO_GET = (
    "install one (Debian/Ubuntu: `apt-get install chromium`; macOS: `brew install --cask chromium`), "
    "or run `kaleido_get_chrome` to download a private copy for kaleido, or point kaleido at an "
    f"existing Chrome/Chromium with the {BROWSER_ENV} environment variable "
    f"(e.g. {BROWSER_ENV}=/usr/bin/chromium). Export to .html needs no browser"
)


def find_chromium() -> str | None:
    """Path of the Chromium-family browser static export will use, or None.

    Order: the ``BROWSER_PATH`` environment variable (when it names an executable file);
    ``chromium`` / ``chromium-browser`` / ``google-chrome`` on ``PATH``; then the places
    kaleido itself looks (its downloaded copy from ``kaleido_get_chrome``, typical install
    paths).
    """
    env = os.environ.get(BROWSER_ENV)
    if env:
        return env if Path(env).is_file() and os.access(env, os.X_OK) else None
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    try:
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # an optional, best-effort lookup in kaleido's own places
        return None


def _require_chromium() -> str:
    path = find_chromium()
    if path is not None:
        return path
    env = os.environ.get(BROWSER_ENV)
    if env:
        raise ChromiumNotFoundError(
            f"{BROWSER_ENV}={env!r} is not an executable file, so static image export cannot start a "
            f"browser; fix the path or unset it. To get a browser: {_HOW_TO_GET}"
        )
    raise ChromiumNotFoundError(
        "static image export (.png/.svg/.pdf) renders through kaleido, which needs a Chrome or "
        f"Chromium browser, and none was found (looked for {', '.join(BROWSER_NAMES)} on PATH). "
        f"To get one: {_HOW_TO_GET}"
    )


def export(
    fig: go.Figure,
    path: str | os.PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = 2.0,
) -> Path:
    """Write ``fig`` to ``path``; the suffix picks the format.

    Args:
        fig: a ``plotly.graph_objects.Figure`` (or anything ``go.Figure`` accepts).
        path: ``.html``/``.htm``: one self-contained file with plotly.js inlined (about
            4.7 MB; opens offline). ``.png``/``.svg``/``.pdf``: a static image through kaleido
            and a Chromium browser.
        width / height: image size in CSS pixels (default: the figure's own, else 900 x 550).
            For HTML they fix the figure's size; without them it fills the page width.
        scale: pixel density for ``.png`` (2.0: sharp on high-DPI screens).
    Returns:
        The path written.
    Raises:
        ValueError: an unsupported suffix (names ``path`` and the supported ones).
        ChromiumNotFoundError: a static format and no Chromium; says how to get one.
    Examples:
        >>> interp.export(fig, "neurons.html")   # doctest: +SKIP
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"path={str(path)!r} has suffix {suffix or '(none)'!r}, which export does not support; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    if not isinstance(fig, (go.Figure, dict)):  # go.Figure(None) would be an empty figure
        raise TypeError(
            f"fig must be a plotly.graph_objects.Figure (or a figure dict), got {type(fig).__name__}; pass the "
            "figure a plot function returned, e.g. interp.plots.logit_lens(df)"
        )
    if not isinstance(fig, go.Figure):
        try:
            fig = go.Figure(fig)
        except Exception as e:
            raise TypeError(
                f"fig is a dict that is not a plotly figure ({str(e)[:120]}); pass a plotly.graph_objects.Figure"
            ) from e
    scale = check_float("scale", scale, minimum=0, min_open=True)
    width = check_int("width", width, minimum=1, allow_none=True)
    height = check_int("height", height, minimum=1, allow_none=True)
    if not path.parent.exists():
        raise FileNotFoundError(
            f"path={str(path)!r}: the directory {str(path.parent)!r} does not exist; create it first"
        )
    if suffix in HTML_SUFFIXES:
        if width or height:
            fig = go.Figure(fig).update_layout(width=width, height=height)
        fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
        return path
    return _write_image(fig, path, suffix[1:], width=width, height=height, scale=scale)


def _write_image(fig: go.Figure, path: Path, fmt: str, *, width, height, scale) -> Path:
    browser = _require_chromium()
    import kaleido
    from choreographer.errors import BrowserFailedError, ChromeNotFoundError

    layout = fig.layout
    opts = dict(
        format=fmt,
        width=width or layout.width or 900,
        height=height or layout.height or 550,
        scale=scale,
    )
    # mathjax=False: kaleido otherwise adds MathJax from a CDN, which an offline machine
    # cannot fetch. plotly.js comes from the installed plotly package.
    kopts = dict(path=browser, mathjax=False)
    try:
        with warnings.catch_warnings():
            # with kaleido's sync server running (interp.plots.notebook_renderer starts one,
            # with these same options) kopts are not needed and kaleido would warn
            warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
            kaleido.write_fig_sync(fig, path=str(path), opts=opts, kopts=kopts)
    except ChromeNotFoundError as e:
        raise ChromiumNotFoundError(
            f"kaleido could not use the browser at {browser!r} ({e}). To get a working one: {_HOW_TO_GET}"
        ) from None
    except BrowserFailedError as e:
        raise ChromiumNotFoundError(
            f"the browser at {browser!r} failed to start for image export ({e}); check that it runs "
            f"(`{browser} --headless --version`), or point {BROWSER_ENV} at another Chromium"
        ) from None
    if not path.exists() or path.stat().st_size == 0:
        raise RuntimeError(f"kaleido reported success but wrote nothing to {str(path)!r}")
    return path
