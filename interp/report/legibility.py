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
from html.parser import HTMLParser
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
    if (t.closest(".heatmap-label")) { return "cell"; }
    if (t.closest(".textpoint") || t.closest(".bartext")) { return "data label"; }
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
      var heatmaps = Array.from(div.querySelectorAll("g.hm"));
      function rect(el) { var r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }
      // what the figure draws besides text: plot areas, legend, colour bars (for empty space)
      var drawn = [];
      div.querySelectorAll("svg.main-svg rect.nsewdrag, svg.main-svg g.legend, svg.main-svg g.colorbar")
        .forEach(function (el) { var r = rect(el); if (r[2] > r[0] && r[3] > r[1]) { drawn.push(r); } });
      div.querySelectorAll("svg.main-svg text").forEach(function (t) {
        if (t.closest(".hoverlayer") || !t.textContent.trim() || !t.getClientRects().length) { return; }
        var style = getComputedStyle(t);
        if (style.visibility === "hidden" || style.display === "none" || Number(style.opacity) === 0) { return; }
        var bb = t.getBBox();
        if (bb.width <= 0 || bb.height <= 0) { return; }
        var m = t.getScreenCTM();
        function pt(x, y) { return [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]; }
        var hm = t.closest("g.hm");
        labels.push({
          kind: kindOf(t), text: t.textContent, group: hm ? heatmaps.indexOf(hm) : -1,
          corners: [pt(bb.x, bb.y), pt(bb.x + bb.width, bb.y), pt(bb.x + bb.width, bb.y + bb.height),
                    pt(bb.x, bb.y + bb.height)],
          font: parseFloat(style.fontSize) * Math.sqrt(Math.abs(m.a * m.d - m.b * m.c)),
        });
      });
      out.push({figure: div.id, title: div.getAttribute("data-title") || div.id,
                edge: [edge.left, edge.top, edge.right, edge.bottom],
                frame: [box.left, box.top, box.right, box.bottom], drawn: drawn, labels: labels});
    });
    // tables: a table wider than the box it scrolls in is cut at the box's right edge
    var tables = [];
    document.querySelectorAll("table").forEach(function (table, i) {
      var wrap = table.parentElement, h = wrap, title = "";
      while (h && !title) {
        var p = h.previousElementSibling;
        while (p && !/^H[1-4]$/.test(p.tagName)) { p = p.previousElementSibling; }
        if (p) { title = p.textContent; } else { h = h.parentElement; }
      }
      var cut = [];
      table.querySelectorAll("td, th").forEach(function (c) {
        if (c.scrollWidth > c.clientWidth + 1) { cut.push(c.textContent.slice(0, 60)); }
      });
      tables.push({table: i, title: title, box: [wrap.clientWidth, wrap.scrollWidth], cut: cut});
    });
    var pre = document.createElement("pre");
    pre.id = "legibility-boxes";
    pre.textContent = JSON.stringify({figures: out, tables: tables});
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
    ``[left, top, right, bottom]`` of the figure's SVG, ``frame`` (the box it is drawn in),
    ``drawn`` (boxes of its plot areas, legend and colour bars) and ``labels``: dicts with
    ``kind`` (tick, axis title, title, legend, legend title, colorbar tick, colorbar title,
    annotation, cell (heatmap cell text), data label, text), ``text``, ``group`` (the heatmap
    a cell belongs to, else -1), ``corners`` (4 ``[x, y]`` page points) and ``font`` (px).
    Raises ``RuntimeError`` without Chromium or when the page gives no boxes.
    """
    return measure_page(page, width=width, timeout=timeout)["figures"]


def measure_page(page: str | Path, *, width: int = WIDTH, timeout: float = 240) -> dict[str, Any]:
    """``{"figures": measure(page), "tables": [...]}`` from one browser run; a table is
    ``{table, title, box: [visible width, content width], cut: [texts of cells that overflow]}``."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no Chromium found; install it (Debian: apt-get install chromium) or set BROWSER_PATH")
    text = _page_text(page)
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


def _page_text(page: str | Path) -> str:
    return Path(page).read_text(encoding="utf-8") if isinstance(page, Path) or (
        isinstance(page, str) and not page.lstrip().startswith("<")) else page


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


def _cell_pitch(centres: list[tuple[float, float]]) -> tuple[float, float]:
    """The (width, height) of one cell of a heatmap from its labels' centres: the smallest
    distance between neighbours in a row (column); inf where no row (column) has two labels."""
    def pitch(pairs: list[tuple[float, float]]) -> float:
        lines: dict[float, list[float]] = {}
        for across, along in pairs:
            lines.setdefault(round(across), []).append(along)
        gaps = [b - a for xs in lines.values() for a, b in zip(sorted(xs), sorted(xs)[1:]) if b - a > 0.5]
        return min(gaps, default=float("inf"))

    return pitch([(y, x) for x, y in centres]), pitch(centres)


def _spills(fig: dict[str, Any], clip_px: float) -> list[dict[str, Any]]:
    """Heatmap cell texts wider or taller than their cell: text that runs into its neighbours."""
    rows = []
    groups: dict[int, list[dict[str, Any]]] = {}
    for lab in fig["labels"]:
        if lab["kind"] == "cell":
            groups.setdefault(lab.get("group", -1), []).append(lab)
    for labs in groups.values():
        spans = [([p[0] for p in lab["corners"]], [p[1] for p in lab["corners"]]) for lab in labs]
        centres = [((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2) for xs, ys in spans]
        cell_w, cell_h = _cell_pitch(centres)
        for lab, (xs, ys) in zip(labs, spans):
            over = max(max(xs) - min(xs) - cell_w, max(ys) - min(ys) - cell_h)
            if over > clip_px:
                rows.append(dict(figure=fig["figure"], title=fig["title"], problem="spills", a=f"cell {lab['text']!r}",
                                 b="", detail=f"{over:.0f} px wider or taller than its cell "
                                              f"({cell_w:.0f} x {cell_h:.0f} px)"))
    return rows


def _empty_space(fig: dict[str, Any], empty_px: float, empty_fraction: float) -> list[dict[str, Any]]:
    """A band of the figure's frame, above or below everything it draws, taller than
    ``empty_px`` and than ``empty_fraction`` of the frame."""
    frame = fig.get("frame")
    boxes = list(fig.get("drawn", [])) + [
        [min(p[0] for p in lab["corners"]), min(p[1] for p in lab["corners"]),
         max(p[0] for p in lab["corners"]), max(p[1] for p in lab["corners"])] for lab in fig["labels"]]
    if frame is None or not boxes:
        return []
    top, bottom = min(b[1] for b in boxes), max(b[3] for b in boxes)
    height = frame[3] - frame[1]
    out = []
    for where, gap in (("below", frame[3] - bottom), ("above", top - frame[1])):
        if gap > max(empty_px, empty_fraction * height):
            out.append(dict(figure=fig["figure"], title=fig["title"], problem="empty space", a=where, b="",
                            detail=f"{gap:.0f} px of {height:.0f} px blank {where} what the figure draws"))
    return out


#: A band this tall (px), and this share of the figure's height, with nothing drawn in it is
#: empty space.
EMPTY_PX = 60.0
EMPTY_FRACTION = 0.2


def problems(boxes: list[dict[str, Any]], *, overlap_px: float = 0.0, clip_px: float = CLIP_PX,
             min_font: float = MIN_FONT_PX, empty_px: float = EMPTY_PX,
             empty_fraction: float = EMPTY_FRACTION) -> pd.DataFrame:
    """Every legibility problem on the measured page, one row each.

    ``problem`` is ``"overlap"`` (two labels' boxes intersect by more than ``overlap_px``
    in every direction; ``a`` and ``b`` name them), ``"clipped"`` (a label reaches past the
    figure's edge by more than ``clip_px``), ``"too small"`` (font under ``min_font`` px),
    ``"too wide"`` (the figure is wider than the element it is drawn in: the page's column),
    ``"spills"`` (a heatmap cell's text is wider or taller than the cell, the pitch of its
    neighbours' labels) or ``"empty space"`` (a band above or below everything the figure
    draws, taller than ``empty_px`` and ``empty_fraction`` of its frame).
    Columns: figure, title, problem, a, b, detail. Empty when every figure is legible.
    """
    rows = []
    for fig in boxes:
        rows += _spills(fig, clip_px)
        rows += _empty_space(fig, empty_px, empty_fraction)
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


def table_problems(tables: list[dict[str, Any]], *, clip_px: float = CLIP_PX) -> pd.DataFrame:
    """Tables a reader sees cut: wider than the box they scroll in (``"cut"``), or with cells
    whose text overflows them (``"spills"``). ``tables``: ``measure_page(page)["tables"]``.
    Columns: table, title, problem, detail."""
    rows = []
    for t in tables:
        shown, full = t["box"]
        if full - shown > clip_px:
            rows.append(dict(table=t["table"], title=t["title"], problem="cut",
                             detail=f"{full} px wide in a {shown} px box: {full - shown} px hidden at the right"))
        for text in t["cut"]:
            rows.append(dict(table=t["table"], title=t["title"], problem="spills", detail=f"cell {text!r}"))
    return pd.DataFrame(rows, columns=["table", "title", "problem", "detail"])


class _Sentences(HTMLParser):
    """The page's prose (headings, paragraphs, list items), without scripts, code and tables."""

    SKIP = {"script", "style", "pre", "code", "table", "svg"}

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.parts = 0, [""]

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.depth += 1
        elif tag in {"p", "li", "h1", "h2", "h3", "h4", "div", "br"}:
            self.parts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.depth = max(0, self.depth - 1)

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts[-1] += data


#: Counts of zero that contradict their sentence: a word that presupposes some ("only 0
#: lie", "all 0"), or an empty set described by numbers ("0 erase it (remove 30%-150%)").
_ZERO = r"(?<![\w.,\-−])0(?![.,]?\d)"
ZERO_COUNT = re.compile(
    rf"\b(?:only|just|all|both|each of|the|of these|of them) {_ZERO} \w+"
    rf"|{_ZERO} (?:[a-z]+ ){{0,3}}[a-z]+ \((?:[^()]*?\d)[^()]*\)",
    re.IGNORECASE,
)


def text_problems(page: str | Path) -> pd.DataFrame:
    """Sentences of the page that state a count of zero in a way that contradicts itself
    (``ZERO_COUNT``): "only 0 lie as far on the positive side", "0 erase it (remove 30%-150%)".
    Such a sentence comes from a template written for a non-zero count; it should say "none"
    or leave the clause out. Columns: problem, text, sentence."""
    parser = _Sentences()
    parser.feed(_page_text(page))
    rows = []
    for part in parser.parts:
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(part.split())):
            for m in ZERO_COUNT.finditer(sentence):
                rows.append(dict(problem="zero count", text=m.group(0), sentence=sentence[:300]))
    return pd.DataFrame(rows, columns=["problem", "text", "sentence"])


__all__ = ["CLIP_PX", "EMPTY_FRACTION", "EMPTY_PX", "MIN_FONT_PX", "WIDTH", "ZERO_COUNT", "chromium", "labels",
           "measure", "measure_page", "problems", "table_problems", "text_problems"]
