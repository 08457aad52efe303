"""``build_report``: run every analysis on one model and write one HTML file.

Stages run in order, each with its own progress bar: load the model, decompose the
stream, probe its subspaces, find its memory-management components, then the model card
and the settings. A stage (or one figure in it) that fails leaves a visible "section
unavailable: <reason>" note; the rest of the report is still written.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp._progress import tqdm
from interp._threads import check_thread_count, choose_threads
from interp.report.document import Section, Text

log = logging.getLogger(__name__)

#: The line of code the per-token figures (logit lens, attributions) are drawn on.
DEFAULT_EXAMPLE = (
    "def mean(values):\n"
    "    total = 0\n"
    "    for value in values:\n"
    "        total += value\n"
    "    return total / len(values)\n"
)


@dataclass
class ReportSettings:
    """Everything that decides the report's numbers; printed in its Settings section.

    model: what ``interp.load`` got (None: the embedded default model).
    data: corpus for the data-based stages (``interp.data.iter_texts`` sources).
    tokens: real tokens streamed by the probes and the ablation (the writers map, deletion
        evidence and examples use a quarter, the deletion effect an eighth). None: ``default_tokens(model)``, a budget scaled to the
        model's size (32,768 on the embedded model, 2,048 on SmolLM2-135M).
    example: the text the per-position figures are drawn on.
    n_ctx: window length for streamed data (None: the model's context).
    batch_size: rows per streamed batch.
    top_k: rows kept in top-k tables and bar charts.
    seed: seed for probe splits and control labels.
    threads: torch CPU threads while the report runs (restored after). None: the library's
        policy, ``interp._threads.choose_threads`` (``$INTERP_NUM_THREADS``, else one thread for
        models under 20M parameters, whose small operations run fastest on one, else torch's own).
    """

    model: str | None = None
    data: Any = "stdlib:val"
    tokens: int | None = None
    example: str = DEFAULT_EXAMPLE
    n_ctx: int | None = 128
    batch_size: int = 16
    top_k: int = 20
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        if self.tokens is not None and (not isinstance(self.tokens, int) or isinstance(self.tokens, bool)
                                        or self.tokens < 256):
            raise ValueError(f"tokens={self.tokens!r} is too small; pass an int >= 256, or None for a budget "
                             "scaled to the model")
        if self.n_ctx is not None and (not isinstance(self.n_ctx, int) or self.n_ctx < 8):
            raise ValueError(f"n_ctx={self.n_ctx!r} must be an int >= 8 or None (the model's context)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive int")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k={self.top_k!r} must be a positive int")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads={self.threads!r} must be a positive int or None (automatic)")
        if self.threads is not None:
            check_thread_count(f"threads={self.threads!r}", self.threads, "(or None: automatic)")
        if not isinstance(self.example, str) or not self.example.strip():
            raise ValueError("example='' is empty; pass a line or two of code")


@dataclass
class Context:
    """What stages share: the model, the settings, and results later stages reuse."""

    model: Any
    settings: ReportSettings
    progress: bool = True
    shared: dict[str, Any] = field(default_factory=dict)

    def stream_kw(self, tokens: int | None = None) -> dict[str, Any]:
        s = self.settings
        return dict(max_tokens=tokens or s.tokens, batch_size=s.batch_size, n_ctx=s.n_ctx)


@dataclass
class Report:
    """A written report: where it is, its sections, and the time each stage took."""

    path: Path | None
    sections: list[Section]
    timings: dict[str, float]
    html: str = field(repr=False, default="")

    @property
    def nbytes(self) -> int:
        return len(self.html.encode("utf-8"))

    @property
    def titles(self) -> list[str]:
        return [s.title for s in self.sections]

    def summary(self) -> pd.DataFrame:
        """One row per section: title, figures, tables, unavailable parts, seconds."""
        from interp.report.document import Figure, Table, Unavailable

        rows = [
            dict(
                section=s.title,
                figures=sum(isinstance(b, Figure) for b in s.blocks),
                tables=sum(isinstance(b, Table) for b in s.blocks),
                unavailable=sum(isinstance(b, Unavailable) for b in s.blocks),
                seconds=s.seconds,
            )
            for s in self.sections
        ]
        return pd.DataFrame(rows)


StageFn = Callable[[Context, Section, tqdm], None]


def build_report(
    model: Any = None,
    *,
    out: str | Path | None = "report.html",
    data: Any = "stdlib:val",
    tokens: int | None = None,
    example: str | None = None,
    n_ctx: int | None = 128,
    batch_size: int = 16,
    top_k: int = 20,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> Report:
    """Run decomposition, probes and memory management on ``model``; write one HTML file.

    Args:
        model: an ``interp.Model``, a name or directory for ``interp.load``, or None for the
            embedded default model.
        out: the ``.html`` file to write (None: build the page without writing it).
        data / tokens / example / n_ctx / batch_size / top_k / seed / threads: see
            ``ReportSettings``.
        progress: show a progress bar per stage.
    Returns:
        ``Report`` with ``path``, ``sections``, ``timings`` (seconds per stage) and ``html``.
    Raises:
        ValueError: a bad option (e.g. ``tokens`` below 256, ``out`` not ending in .html).
        ModelNotFoundError: a model name or directory that cannot be found.
    Examples:
        >>> report = build_report(out="report.html")   # doctest: +SKIP
    """
    from interp.report import stages

    settings = ReportSettings(
        model=None if model is None else getattr(getattr(model, "cfg", None), "name", None) or str(model),
        data=data, tokens=tokens, example=example or DEFAULT_EXAMPLE, n_ctx=n_ctx,
        batch_size=batch_size, top_k=top_k, seed=seed, threads=threads,
    )
    settings.check()
    if out is not None:
        out = Path(out).expanduser()
        if out.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"out={str(out)!r} must end in .html (the report is one HTML file)")
        if not out.parent.exists():
            raise FileNotFoundError(f"out={str(out)!r}: the directory {str(out.parent)!r} does not exist")
    _check_data(settings.data)

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with _stage_bar("load model", 1, progress) as bar:
        t0 = time.perf_counter()
        model = _load(model)
        bar.update(1)
        timings["load model"] = time.perf_counter() - t0
    settings.tokens = settings.tokens or default_tokens(model)
    ctx = Context(model=model, settings=settings, progress=progress)
    before = torch.get_num_threads()
    settings.threads = settings.threads or choose_threads(model)
    torch.set_num_threads(settings.threads)
    try:
        sections = _run_stages(ctx, timings, progress)
    finally:
        torch.set_num_threads(before)
    total = time.perf_counter() - t_start
    settings_section = Section("Settings")
    stages.settings_table(ctx, settings_section, timings, total)
    sections.append(settings_section)
    sections.insert(0, _summary(ctx, sections))
    return _write(sections, ctx, out, total, timings)


def _summary(ctx: Context, sections: list[Section]) -> Section:
    """The findings a reader should take away, computed from the stages' results."""
    from interp.report import summary
    from interp.report.document import Figure, Html, Table, slug

    section = Section("Summary")
    found = summary.findings(ctx.shared)
    present = {f"{slug(s.title)}--{slug(b.title)}" for s in sections for b in s.blocks
               if isinstance(b, (Figure, Table))}
    if found:
        section.add(Html("What this report finds", summary.html(found, present)))
    else:
        section.add(Text("No finding could be computed: the stages it draws on are unavailable (see below)."))
    ctx.shared["findings"] = found
    return section


def _memory_and_examples(ctx: Context, section: Section, bar: tqdm) -> None:
    from interp.report import causal, stages

    stages.memory(ctx, section, bar)
    causal.neuron_examples(ctx, section, bar)


def _run_stages(ctx: Context, timings: dict[str, float], progress: bool) -> list[Section]:
    from interp.report import causal, pages, stages

    sections: list[Section] = []
    plan: list[tuple[Section, StageFn, int]] = [
        (Section("Residual-stream decomposition", stages.DECOMPOSITION_INTRO), stages.decomposition, 6),
        (Section("Attention heads", causal.HEADS_INTRO), causal.heads, 4),
        (Section("Subspace probes and the shared-memory map", stages.PROBES_INTRO), stages.probes, 7),
        (Section("Memory management", stages.MEMORY_INTRO), _memory_and_examples, 6),
        (Section("Causal evidence", causal.CAUSAL_INTRO), causal.causal, 2),
        (Section("Component pages", pages.INTRO), pages.stage, 2),
    ]
    for section, fn, steps in plan:
        with _stage_bar(section.title, steps, progress) as bar:
            t0 = time.perf_counter()
            try:
                fn(ctx, section, bar)
            except Exception as e:  # a stage that cannot start at all degrades as a whole
                log.debug("report stage %s failed", section.title, exc_info=True)
                section.unavailable(section.title, e)
            section.seconds = time.perf_counter() - t0
            timings[section.title] = section.seconds
        sections.append(section)
    card = Section("Model card")
    from interp.report.card import model_card

    model_card(ctx, card)
    sections.append(card)
    return sections


def _write(sections: list[Section], ctx: Context, out: Path | None, total: float,
           timings: dict[str, float]) -> Report:
    from interp.report.html import Page, render

    model, settings = ctx.model, ctx.settings
    cfg = model.cfg
    page = Page(
        title=f"interp report: {cfg.name}",
        subtitle=f"model id {model.model_id}",
        lede=(
            "The residual stream as shared memory: who writes what into it, which subspaces carry "
            "which information, and which components delete it."
        ),
        cards={
            "layers": str(cfg.n_layers), "heads": f"{cfg.n_heads}", "d_model": str(cfg.d_model),
            "d_mlp": str(cfg.d_mlp), "vocab": f"{cfg.d_vocab:,}", "context": str(cfg.n_ctx),
            "tokens analysed": f"{settings.tokens:,}", "built in": f"{total:.0f} s",
        },
        footer=(
            f"Built by interp {_version()} on {time.strftime('%Y-%m-%d %H:%M')} "
            f"(Python {platform.python_version()}, {platform.system()}). Self-contained: opens offline."
        ),
        version=_version(),
    )
    text = render(sections, page)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        log.info("report written to %s (%.1f MB)", out, len(text) / 1e6)
    return Report(path=out, sections=sections, timings=timings, html=text)


def parameter_count(model: Any) -> int:
    """The model's parameters, each counted once (tied weights once; the checkpoint's own
    tensors, not the bridge's split copies): ``Model.n_params``."""
    n = getattr(model, "n_params", None)
    if isinstance(n, int):
        return n
    hf = getattr(getattr(model, "_fast", None), "hf", None)  # the checkpoint's own module
    params = (hf or model.bridge).parameters()  # nn.Module.parameters() yields shared tensors once
    return sum(p.numel() for p in params)


#: The report's default data budget: tokens x parameters (see ``default_tokens``).
TOKEN_PARAMETER_BUDGET = 2**39
MIN_TOKENS, MAX_TOKENS = 256, 32_768


def default_tokens(model: Any) -> int:
    """Tokens the data-based stages stream by default: ``TOKEN_PARAMETER_BUDGET / n_params``
    rounded down to a power of two, within [256, 32768]. The stages' cost grows with tokens x
    parameters, so the report's time stays about the same across model sizes: 32,768 on the
    embedded model (0.5M parameters), 2,048 on SmolLM2-135M and GPT-2 small."""
    n = parameter_count(model)
    budget = TOKEN_PARAMETER_BUDGET // max(n, 1)
    tokens = 1 << max(budget.bit_length() - 1, 0)
    return int(min(max(tokens, MIN_TOKENS), MAX_TOKENS))


class _stage_bar:
    """A tqdm bar for one stage that always closes, and reaches its total on success."""

    def __init__(self, name: str, steps: int, enabled: bool):
        self.bar = tqdm(total=steps, desc=name, unit="step", disable=not enabled, leave=True)

    def __enter__(self) -> tqdm:
        return self.bar

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None and self.bar.n < (self.bar.total or 0):
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def _load(model: Any) -> Any:
    from interp.model import Model

    if isinstance(model, Model):
        return model
    from interp.load import load

    return load(model)


def _check_data(data: Any) -> None:
    """Fail before the model loads when the corpus cannot be read."""
    from interp.data import iter_texts

    try:
        next(iter(iter_texts(data)))
    except StopIteration:
        raise ValueError(f"data={data!r} holds no documents; pass a file, a directory or 'stdlib:val'") from None


def _version() -> str:
    from interp import __version__

    return __version__


def settings_frame(settings: ReportSettings) -> pd.DataFrame:
    """The settings as a two-column table."""
    rows = [(f.name, repr(getattr(settings, f.name))) for f in dataclasses.fields(settings)]
    if settings.model is None:
        rows[0] = ("model", "the embedded default model (interp.load())")
    return pd.DataFrame(rows, columns=["setting", "value"])


__all__ = ["DEFAULT_EXAMPLE", "Report", "ReportSettings", "build_report", "default_tokens", "settings_frame"]
