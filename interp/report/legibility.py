"""Can a reader read the figures? Every label's box, read from the SVG a real browser drew.

A page with plotly figures (the report, or any page ``html.render`` builds) is opened in
headless Chromium at a given window width. A script in the page waits until every figure is
drawn, then reads the box of every text element plotly drew: tick labels, axis titles, the
figure title, legend entries, colour-bar ticks and titles, annotations and text drawn on the
data (heatmap cells, point labels). ``problems`` then lists every pair of labels that
overlap, every label the figure's edge clips, and every label drawn too small to read.

>>> boxes = measure("report.html")                  # doctest: +SKIP
>>> problems(boxes)                                 # doctest: +SKIP   (empty when legible)

Boxes are the text's own bounding box (``getBBox``) mapped to the page through its
transform (``getScreenCTM``), so rotated tick labels are checked as rotated rectangles.
"""

from __future__ import annotations

import html as _html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

#: Window width of the check (the report's figures are responsive: they fill the column).
WIDTH = 1400
#: Two label boxes may not share any area; a label may reach this far past the figure's edge
#: (sub-pixel rounding of a title set flush with the edge).
CLIP_PX = 1.0
#: Text drawn smaller than this (CSS pixels) counts as unreadable.
MIN_FONT_PX = 8.0

_MEASURE_JS = r"""
<script>
(function () {
  function kindOf(t) {
    var c = t.getAttribute("class") || "";
    var g = t.parentNode, gc = (g && g.getAttribute && g.getAttribute("class")) || "";
    if (t.closest(".colorbar")) { return /title/.test(c) ? "colorbar title" : "colorbar tick"; }
    if (/(^| )gtitle( |$)/.test(c)) { return "title"; }
    if (/(^| )[xy]\d*title( |$)/.test(c)) { return "axis title"; }
    if (/legendtitletext/.test(c)) { return "legend title"; }
    if (/legendtext/.test(c)) { return "legend"; }
    if (/annotation-text/.test(c)) { return "annotation"; }
    if (/(^| )[xy]\d*tick( |$)/.test(gc)) { return "tick"; }
    if (t.closest(".heatmap-label") || t.closest(".textpoint") || t.closest(".bartext")) { return "data label"; }
    return "text";
  }
  function measure() {
    var out = [];
    document.querySelectorAll("div.js-plotly-plot").forEach(function (div) {
      var svg = div.querySelector("svg.main-svg");
      if (!svg) { return; }
      var edge = svg.getBoundingClientRect();
      var box = (div.parentElement || div).getBoundingClientRect();  // the column it is drawn in
      var labels = [];
      div.querySelectorAll("svg.main-svg text").forEach(function (t) {
        if (t.closest(".hoverlayer") || !t.textContent.trim() || !t.getClientRects().length) { return; }
        var style = getComputedStyle(t);
        if (style.visibility === "hidden" || style.display === "none" || Number(style.opacity) === 0) { return; }
        var bb = t.getBBox();
        if (bb.width <= 0 || bb.height <= 0) { return; }
        var m = t.getScreenCTM();
        function pt(x, y) { return [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]; }
        labels.push({
          kind: kindOf(t), text: t.textContent,
          corners: [pt(bb.x, bb.y), pt(bb.x + bb.width, bb.y), pt(bb.x + bb.width, bb.y + bb.height),
                    pt(bb.x, bb.y + bb.height)],
          font: parseFloat(style.fontSize) * Math.sqrt(Math.abs(m.a * m.d - m.b * m.c)),
        });
      });
      out.push({figure: div.id, title: div.getAttribute("data-title") || div.id,
                edge: [edge.left, edge.top, edge.right, edge.bottom],
                frame: [box.left, box.top, box.right, box.bottom], labels: labels});
    });
    var pre = document.createElement("pre");
    pre.id = "legibility-boxes";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  function ready() {
    var st = document.getElementById("report-status");
    if (!st) { return document.querySelectorAll("div.js-plotly-plot").length > 0; }
    var done = Number(st.getAttribute("data-rendered")) + Number(st.getAttribute("data-errors"));
    return done >= Number(st.getAttribute("data-figures"));
  }
  var tries = 0;
  var timer = setInterval(function () {
    tries += 1;
    if (ready() || tries > 400) { clearInterval(timer); setTimeout(measure, 300); }
  }, 50);
})();
</script>
"""


def chromium() -> str | None:
    """A Chromium binary on PATH (or ``BROWSER_PATH``), else None."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def measure(page: str | Path, *, width: int = WIDTH, timeout: float = 240) -> list[dict[str, Any]]:
    """The drawn label boxes of every figure on ``page`` (an HTML file, or its text).

    Returns one dict per figure: ``figure`` (the div id), ``title``, ``edge``
    ``[left, top, right, bottom]`` of the figure's SVG, and ``labels``: dicts with ``kind``
    (tick, axis title, title, legend, legend title, colorbar tick, colorbar title,
    annotation, data label, text), ``text``, ``corners`` (4 ``[x, y]`` page points) and
    ``font`` (px). Raises ``RuntimeError`` without Chromium or when the page gives no boxes.
    """
    exe = chromium()
    if exe is None:
        raise RuntimeError("no Chromium found; install it (Debian: apt-get install chromium) or set BROWSER_PATH")
    text = Path(page).read_text(encoding="utf-8") if isinstance(page, Path) or (
        isinstance(page, str) and not page.lstrip().startswith("<")) else page
    if "</body>" not in text:
        raise ValueError("page has no </body>; pass a whole HTML document")
    with tempfile.TemporaryDirectory(prefix="interp-legibility-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(text.replace("</body>", _MEASURE_JS + "</body>", 1), encoding="utf-8")
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={width},1000",
            "--virtual-time-budget=60000", "--dump-dom", path.as_uri(),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<pre id="legibility-boxes">(.*?)</pre>', out.stdout, re.S)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"Chromium gave no label boxes (exit {out.returncode}): {out.stderr[-800:]}")
    return json.loads(_html.unescape(m.group(1)))


def labels(boxes: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per drawn label: figure, title, kind, text, font, and its axis-aligned box."""
    rows = []
    for fig in boxes:
        for lab in fig["labels"]:
            xs, ys = [p[0] for p in lab["corners"]], [p[1] for p in lab["corners"]]
            rows.append(dict(figure=fig["figure"], title=fig["title"], kind=lab["kind"], text=lab["text"],
                             font=lab["font"], x0=min(xs), y0=min(ys), x1=max(xs), y1=max(ys)))
    return pd.DataFrame(rows, columns=["figure", "title", "kind", "text", "font", "x0", "y0", "x1", "y1"])


def _axes(poly: list[list[float]]) -> list[tuple[float, float]]:
    out = []
    for i in range(2):  # a rectangle has two edge directions
        (x0, y0), (x1, y1) = poly[i], poly[i + 1]
        dx, dy = x1 - x0, y1 - y0
        n = (dx * dx + dy * dy) ** 0.5 or 1.0
        out.append((-dy / n, dx / n))
    return out


def _overlap_px(a: list[list[float]], b: list[list[float]]) -> float:
    """Smallest overlap of the two rectangles' projections over their edge normals (0: apart)."""
    least = float("inf")
    for ax, ay in _axes(a) + _axes(b):
        pa = [x * ax + y * ay for x, y in a]
        pb = [x * ax + y * ay for x, y in b]
        least = min(least, min(max(pa), max(pb)) - max(min(pa), min(pb)))
        if least <= 0:
            return 0.0
    return least


def problems(boxes: list[dict[str, Any]], *, overlap_px: float = 0.0, clip_px: float = CLIP_PX,
             min_font: float = MIN_FONT_PX) -> pd.DataFrame:
    """Every legibility problem on the measured page, one row each.

    ``problem`` is ``"overlap"`` (two labels' boxes intersect by more than ``overlap_px``
    in every direction; ``a`` and ``b`` name them), ``"clipped"`` (a label reaches past the
    figure's edge by more than ``clip_px``), ``"too small"`` (font under ``min_font`` px) or
    ``"too wide"`` (the figure is wider than the element it is drawn in: the page's column).
    Columns: figure, title, problem, a, b, detail. Empty when every figure is legible.
    """
    rows = []
    for fig in boxes:
        labs = fig["labels"]
        left, top, right, bottom = fig["edge"]
        frame = fig.get("frame")
        if frame is not None and right - frame[2] > clip_px:
            rows.append(dict(figure=fig["figure"], title=fig["title"], problem="too wide", a="figure", b="",
                             detail=f"{right - left:.0f} px wide, {right - frame[2]:.0f} px past its column"))

        def name(lab: dict[str, Any]) -> str:
            return f"{lab['kind']} {lab['text'][:40]!r}"

        for lab in labs:
            xs, ys = [p[0] for p in lab["corners"]], [p[1] for p in lab["corners"]]
            out = max(left - min(xs), top - min(ys), max(xs) - right, max(ys) - bottom)
            if out > clip_px:
                rows.append(dict(figure=fig["figure"], title=fig["title"], problem="clipped", a=name(lab), b="",
                                 detail=f"{out:.0f} px past the figure's edge"))
            if lab["font"] < min_font:
                rows.append(dict(figure=fig["figure"], title=fig["title"], problem="too small", a=name(lab), b="",
                                 detail=f"font {lab['font']:.1f} px"))
        boxes_ = [(min(p[0] for p in lab["corners"]), max(p[0] for p in lab["corners"]),
                   min(p[1] for p in lab["corners"]), max(p[1] for p in lab["corners"])) for lab in labs]
        order = sorted(range(len(labs)), key=lambda i: boxes_[i][0])
        for n, i in enumerate(order):  # sweep along x: only boxes whose x ranges meet can overlap
            for j in order[n + 1:]:
                if boxes_[j][0] >= boxes_[i][1] - overlap_px:
                    break
                if min(boxes_[i][3], boxes_[j][3]) - max(boxes_[i][2], boxes_[j][2]) <= overlap_px:
                    continue
                px = _overlap_px(labs[i]["corners"], labs[j]["corners"])
                if px > overlap_px:
                    rows.append(dict(figure=fig["figure"], title=fig["title"], problem="overlap",
                                     a=name(labs[i]), b=name(labs[j]), detail=f"{px:.1f} px"))
    return pd.DataFrame(rows, columns=["figure", "title", "problem", "a", "b", "detail"])


__all__ = ["CLIP_PX", "MIN_FONT_PX", "WIDTH", "chromium", "labels", "measure", "problems"]
