"""Every figure of the report is legible in a real browser at 1400 px: headless Chromium draws
the page, and the boxes of the drawn labels (tick labels, axis titles, titles, legends,
colour bars, annotations, text on the data) neither overlap, nor cross the figure's edge, nor
shrink below a readable size, nor spill out of their heatmap cell; no figure leaves a band of
empty space; no table is cut at its box's edge; and no sentence states a count of zero that
contradicts it ("only 0 lie ..."). The check itself fails on figures, tables and sentences
broken on purpose."""

from __future__ import annotations

import os

import plotly.graph_objects as go
import pytest

from interp.plots.style import apply
from interp.report import legibility
from interp.report.document import Section
from interp.report.html import Page, render


@pytest.fixture(scope="module")
def chromium():
    if legibility.chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium was found; CI must install it (apt-get install chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")


def _page(figures: dict[str, go.Figure], tmp_path) -> str:
    section = Section("Figures")
    for title, fig in figures.items():
        section.attempt(title, lambda fig=fig: fig)
    path = tmp_path / "page.html"
    path.write_text(render([section], Page("legibility")))
    return str(path)


def _assert_legible(path, record_property, name: str) -> None:
    """Every figure of the report at ``path`` was drawn and measured, each kind of label the
    check reads occurs, and no label overlaps, is clipped or is too small."""
    n_figures = path.read_text().count('<div class="plot" id="fig-')
    page = legibility.measure_page(path)
    boxes = page["figures"]
    labels, problems = legibility.labels(boxes), legibility.problems(boxes)
    tables, sentences = legibility.table_problems(page["tables"]), legibility.text_problems(path)
    record_property("figures_checked", len(boxes))
    record_property("labels_checked", len(labels))
    print(f"legibility ({name}): {len(boxes)} figures, {len(labels)} labels checked")
    assert len(boxes) == n_figures >= 14  # every figure of the report was drawn and measured
    per_fig = labels.groupby("figure").size()
    assert (per_fig >= 3).all(), per_fig[per_fig < 3]
    assert {"tick", "axis title", "title", "legend", "colorbar tick", "cell"} <= set(labels["kind"])
    assert page["tables"], "no table measured"
    assert problems.empty, "\n" + problems.to_string()
    assert tables.empty, "\n" + tables.to_string()
    assert sentences.empty, "\n" + sentences.to_string()


def test_every_report_figure_is_legible(default_report, chromium, record_property):
    _assert_legible(default_report[0], record_property, "embedded model")


@pytest.mark.slow
def test_every_smollm2_report_figure_is_legible(smollm2_report, chromium, record_property):
    """The same check on the real model's report: 30 layers, 9 heads, a 49k vocabulary, tens of
    flagged neurons; figures sized for the embedded model crowd their labels here."""
    _assert_legible(smollm2_report[0], record_property, "SmolLM2")


def test_the_check_fails_on_broken_figures(chromium, tmp_path):
    long = [f"a_rather_long_category_name_{i}" for i in range(6)]
    clipped = go.Figure(go.Bar(x=[1, 2, 3, 4, 5, 6], y=long, orientation="h"))
    clipped.update_layout(margin=dict(l=10), yaxis=dict(automargin=False), title="clipped y labels")
    crowded = go.Figure(go.Bar(x=[f"L{i}N{i * 37}" for i in range(60)], y=list(range(60))))
    crowded.update_layout(xaxis=dict(tickangle=0, tickmode="array", tickvals=[f"L{i}N{i * 37}" for i in range(60)]),
                          title="sixty labels on one axis")
    title_on_ticks = go.Figure(go.Bar(x=list(range(12)), y=[f"L1N{100 + i}" for i in range(12)], orientation="h"))
    title_on_ticks.update_layout(yaxis=dict(title=dict(text="neuron", standoff=0), automargin=False),
                                 margin=dict(l=56), title="axis title over the tick labels")
    stacked = go.Figure(go.Scatter(x=[0] * 8, y=[i * 0.01 for i in range(8)], mode="markers+text",
                                   text=[f"L1N{i}" for i in range(8)], textposition="top center"))
    stacked.update_layout(title="labels stacked on one another", yaxis=dict(range=[-1, 1]))
    tiny = go.Figure(go.Heatmap(z=[[0.1] * 80] * 3, text=[["token"] * 80] * 3, texttemplate="%{text}"))
    tiny.update_layout(title="cell text shrunk to dots")
    fine = go.Figure(go.Bar(x=["L0H1", "L0H2"], y=[1.0, 2.0]))
    fine.update_layout(title="a legible figure", xaxis_title="head", yaxis_title="score")
    figs = {"clipped": clipped, "crowded": crowded, "title on ticks": title_on_ticks, "stacked": stacked,
            "tiny": tiny, "fine": fine}
    for fig in figs.values():
        apply(fig)
    # the report's template sets automargin; the broken ones turn it off again where it matters
    clipped.update_yaxes(automargin=False)
    title_on_ticks.update_yaxes(automargin=False)
    boxes = legibility.measure(_page(figs, tmp_path))
    found = legibility.problems(boxes)
    kinds = found.groupby("title")["problem"].agg(set).to_dict()
    assert "clipped" in kinds["clipped"]
    assert "overlap" in kinds["crowded"]
    assert "overlap" in kinds["title on ticks"]
    assert any("axis title 'neuron'" in a for a in found[found["title"] == "title on ticks"]["a"].tolist()
               + found[found["title"] == "title on ticks"]["b"].tolist())
    assert "overlap" in kinds["stacked"]
    assert kinds["tiny"] & {"too small", "overlap"}
    assert "fine" not in kinds, found[found["title"] == "fine"]
    # a figure wider than its column is caught too (the report's renderer makes every figure
    # responsive, so this page is written by hand: a 1000 px column holding a 2400 px figure)
    wide = apply(go.Figure(go.Bar(x=["a"], y=[1])))
    wide.update_layout(width=2400, title="wider than the column")
    drawn = wide.to_html(full_html=False, include_plotlyjs=True).replace("width:2400px", "width:100%", 1)
    page = '<html><body><div style="width:1000px">' + drawn + "</div></body></html>"
    assert "too wide" in set(legibility.problems(legibility.measure(page))["problem"])


def test_geometry_of_rotated_boxes():
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    apart = [[20, 0], [30, 0], [30, 10], [20, 10]]
    diamond = [[15, 5], [20, 0], [25, 5], [20, 10]]  # a square turned 45 degrees, touching nothing
    inside = [[4, 4], [6, 4], [6, 6], [4, 6]]
    assert legibility._overlap_px(square, apart) == 0
    assert legibility._overlap_px(square, diamond) == 0
    assert legibility._overlap_px(square, inside) == pytest.approx(2.0)
    box = dict(figure="f", title="t", edge=[0, 0, 100, 100], labels=[
        dict(kind="tick", text="a", corners=square, font=12), dict(kind="tick", text="b", corners=inside, font=12),
        dict(kind="tick", text="c", corners=[[95, 0], [110, 0], [110, 10], [95, 10]], font=6),
    ])
    got = legibility.problems([box]).sort_values("problem")["problem"].tolist()
    assert got == ["clipped", "overlap", "too small"]


def test_the_check_finds_spilled_cells_empty_space_and_cut_tables(chromium, tmp_path):
    """Each new check fails on a page broken on purpose, and passes the same page fixed."""
    words = [["a_long_token_name", "x", "another_long_one"], ["y", "z", "w"]]
    spilled = go.Figure(go.Heatmap(z=[[1, 2, 3], [4, 5, 6]], text=words, texttemplate="%{text}",
                                   textfont=dict(size=13)))
    spilled.update_layout(title="cell text wider than its cell", width=420, height=300)
    fitted = go.Figure(go.Heatmap(z=[[1, 2, 3], [4, 5, 6]], text=[["a", "x", "b"], ["y", "z", "w"]],
                                  texttemplate="%{text}", textfont=dict(size=13)))
    fitted.update_layout(title="cell text that fits", width=420, height=300)
    short = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    short.update_layout(title="a short figure", height=200, xaxis_title="x", yaxis_title="y")
    for fig in (spilled, fitted, short):
        apply(fig)
    html = render([_section({"spilled": spilled, "fitted": fitted, "short": short})], Page("checks"))
    # the figure drawn in a frame much taller than the figure: the blank band the top-examples
    # figures had under them
    html = html.replace('style="height: 200px"', 'style="height: 420px"', 1)
    wide_row = "".join(f"<td>{'a rather long reason that keeps going ' * 3}{i}</td>" for i in range(6))
    html = html.replace("</main>", '<h3>A cut table</h3><div class="table-wrap" style="width: 400px">'
                        f"<table><tr>{wide_row}</tr></table></div></main>", 1)
    page = tmp_path / "page.html"
    page.write_text(html)
    got = legibility.measure_page(page)
    found = legibility.problems(got["figures"])
    kinds = found.groupby("title")["problem"].agg(set).to_dict()
    assert "spills" in kinds.get("spilled", set()), found
    assert "fitted" not in kinds, found[found["title"] == "fitted"]
    assert "empty space" in kinds.get("short", set()), found
    tables = legibility.table_problems(got["tables"])
    assert (tables["problem"] == "cut").any() and tables["title"].str.contains("A cut table").any(), tables


def _section(figures: dict[str, go.Figure]) -> Section:
    section = Section("Figures")
    for title, fig in figures.items():
        section.attempt(title, lambda fig=fig: fig)
    return section


def test_the_check_finds_sentences_with_contradicting_zero_counts():
    broken = ("<html><body><ol><li>361 of 1,024 neurons (35%) point against each other; only 0 lie as far on the "
              "positive side. On data, the 20 most negative remove 15% to 29%: 0 erase it (remove 30%-150%) and "
              "20 erase part of it (5%-30%).</li></ol></body></html>")
    fixed = ("<html><body><ol><li>361 of 1,024 neurons (35%) point against each other; none lie as far on the "
             "positive side. At layer 0 the probe reads 0.50 (survival: 1 intact, 0 erased); p = 0 (exact); "
             "20 erase part of it (5%-30%).</li></ol><pre>only 0 in code</pre></body></html>")
    found = legibility.text_problems(broken)
    assert sorted(found["text"]) == ["0 erase it (remove 30%-150%)", "only 0 lie"], found
    assert legibility.text_problems(fixed).empty, legibility.text_problems(fixed)
