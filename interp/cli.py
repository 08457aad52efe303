"""The ``interp`` command: ``interp report`` and subcommands that mirror the Python API.

Each analysis subcommand prints a readable table (the first ``--rows`` rows), writes the
whole table with ``--format csv|json`` (to stdout) or ``--table FILE``, and its figure with
``--out FILE`` (``.html``, ``.png``, ``.svg``, ``.pdf``). Errors print one line,
``interp: error: ...``, and exit with status 2.

    interp report --out report.html
    interp decompose "def add(a, b):" --by head
    interp neurons --out neurons.png
    interp probe --label previous_token --tokens 20000
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.cli_tables import print_table, tidy, write_table
from interp.report.resolve import find

EXIT_ERROR = 2
_EPILOG = "Errors print one line, 'interp: error: ...', and exit with status 2."


@dataclass
class Command:
    """One analysis subcommand: how to compute its table and draw its figure."""

    name: str
    help: str
    description: str
    add_args: Callable[[argparse.ArgumentParser], None]
    table: Callable[[Any, argparse.Namespace], Any]  # (model, args) -> DataFrame
    figure: Callable[[Any, argparse.Namespace], Any]  # (DataFrame, args) -> Figure


# ---- the analyses ---------------------------------------------------------------------
def _writes(model: Any, args: argparse.Namespace) -> Any:
    return model.run_with_writes(args.text, chunk=True)


def read_text_arg(text: str | None, file: str | None) -> str:
    """The text a subcommand runs on: TEXT itself, standard input for ``-``, or ``--file``.

    A shell passes ``"a\\nb"`` as a backslash and an n, not a newline; in bash write
    ``$'a\\nb'``, or pipe the text in with ``-``, or put it in a file.
    """
    if file is not None:
        if text is not None:
            raise ValueError(f"pass TEXT or --file, not both (got TEXT={text[:30]!r} and --file {file!r})")
        path = Path(file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--file {file!r} does not exist or is not a file")
        return path.read_text(encoding="utf-8")
    if text is None:
        raise ValueError("no text: pass TEXT, '-' to read standard input, or --file FILE")
    if text == "-":
        return sys.stdin.read()
    if "\\n" in text and "\n" not in text:
        logging.getLogger("interp").warning(
            "TEXT holds a literal backslash-n, not a newline; for newlines use $'...\\n...' in bash, "
            "pipe the text in with '-', or pass --file FILE")
    return text


def _decompose(model, args):
    return find("decompose")(_writes(model, args), by=args.by, top_k=args.top, model=model)


def _attribute(model, args):
    return find("logit_attribution")(_writes(model, args), args.target, by=args.by, model=model)


def _lens(model, args):
    return find("logit_lens")(_writes(model, args), k=args.k, model=model)


def _norms(model, args):
    return find("stream_norms")(_writes(model, args), model=model)


def _neurons(model, args):
    kw: dict[str, Any] = {"layers": args.layers}
    if args.threshold is not None:
        kw["threshold"] = args.threshold
    if args.all:
        return find("neuron_in_out_cosines")(model, **kw)
    return find("find_deleting_neurons")(model, **kw)


def _heads(model, args):
    return find("find_deleting_heads")(model, layers=args.layers)


def _probe(model, args):
    return find("probe_layers")(
        model, args.data, label=args.label, max_tokens=args.tokens, progress=not args.quiet,
    )


def _stats(model, args):
    """``neuron_stats`` on every rank of a torchrun / accelerate launch (or one process);
    rank 0 alone prints and writes."""
    from interp.stats import init_distributed, neuron_stats, rank_and_world, top_examples

    if args.neurons:  # before the corpus is read, not after
        from interp.memory.evidence import _select

        c = model.cfg
        chosen = _select("--neurons", args.neurons, "neuron", c.n_layers, c.d_mlp)
        measured = set(range(c.n_layers)) if not args.layers else {ly % c.n_layers for ly in args.layers}
        missing = sorted({ly for ly, _ in chosen} - measured)
        if missing:
            raise ValueError(f"--neurons names layer(s) {missing}, which --layers leaves out; add them to --layers")
    init_distributed(timeout=600.0 if args.timeout is None else args.timeout)
    df = neuron_stats(model, args.data, layers=args.layers, max_tokens=args.tokens, top_k=args.top_k,
                      batch_size=args.batch_size, context=args.context, progress=not args.quiet)
    args.stats_rank = rank_and_world()[0]
    import torch.distributed as dist

    if dist.is_initialized():  # every collective is done; leave the group cleanly
        dist.destroy_process_group()
    if args.examples and args.stats_rank == 0:
        ex = top_examples(df, args.neurons) if args.neurons else top_examples(df)
        write_table(tidy(ex), Path(args.examples))
    if args.sort:
        df = df.sort_values(args.sort, ascending=False, kind="stable").reset_index(drop=True)
    return df


def _stats_figure(df, args):
    from interp.stats import top_examples

    neuron = args.neurons[0] if args.neurons else str(df.loc[df["max"].idxmax(), "label"])
    return find("plots.top_examples")(top_examples(df, [neuron]))


def _plot(name: str) -> Callable[[Any, argparse.Namespace], Any]:
    """The plot function ``interp.plots.<name>``, looked up when the figure is drawn."""

    def draw(df: Any, args: argparse.Namespace) -> Any:
        return find(f"plots.{name}")(df)

    return draw


def _text_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", default=None, metavar="TEXT",
                   help="the text to run the model on; '-' reads it from standard input. A shell passes "
                        "\"a\\nb\" as backslash-n: for newlines use $'a\\nb' (bash), '-' or --file")
    p.add_argument("--file", default=None, metavar="FILE", help="read the text from FILE instead of TEXT")


def _args_decompose(p):
    _text_arg(p)
    p.add_argument("--by", default="layer", choices=["layer", "head", "neuron", "component"],
                   help="unit of a row: whole layers, heads, neurons, or every single write (default: layer)")
    p.add_argument("--top", type=int, default=None, metavar="K",
                   help="keep only the K largest-norm writes at each position")


def _args_attribute(p):
    _text_arg(p)
    p.add_argument("--target", default=None,
                   help="the token whose logit to explain (default: the actual next token at each position)")
    p.add_argument("--by", default="head", choices=["layer", "head", "neuron", "component"],
                   help="unit of a row (default: head)")


def _args_lens(p):
    _text_arg(p)
    p.add_argument("--k", type=int, default=5, help="top tokens kept per layer and position (default: 5)")


def _args_layers(p):
    p.add_argument("--layers", type=int, nargs="+", default=None, metavar="L",
                   help="layers to scan (default: all; negative counts from the end)")


def _args_neurons(p):
    _args_layers(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="flag neurons whose in/out cosine is below this (default: from the null baseline)")
    p.add_argument("--all", action="store_true", help="list every neuron's cosine, not only the flagged ones")


def _args_probe(p):
    p.add_argument("--label", default="previous_token",
                   help="what to decode: current_token, previous_token, line_start_distance, ... "
                        "(default: previous_token)")
    p.add_argument("--data", default="stdlib:val",
                   help="corpus: a file, a directory, 'stdlib', 'stdlib:train' or 'stdlib:val' (default)")
    p.add_argument("--tokens", type=int, default=20_000, help="tokens to stream (default: 20000)")


def _args_stats(p):
    p.add_argument("--data", default="stdlib:val",
                   help="corpus: a file, a directory, 'stdlib', 'stdlib:train' or 'stdlib:val' (default)")
    p.add_argument("--tokens", type=int, default=100_000,
                   help="positions measured, over all ranks (default: 100000)")
    _args_layers(p)
    p.add_argument("--top-k", type=int, default=20, help="top activating examples kept per neuron (default: 20)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default: 8)")
    p.add_argument("--context", type=int, default=8, help="tokens kept each side of an example (default: 8)")
    p.add_argument("--sort", default=None, choices=["firing_rate", "mean", "std", "max"],
                   help="order rows by this column, largest first (default: layer, then neuron)")
    p.add_argument("--neurons", nargs="+", default=None, metavar="LABEL",
                   help="neurons whose examples --examples writes and --out draws (default: all / the largest max; "
                        "needs --examples or --out)")
    p.add_argument("--examples", default=None, metavar="FILE",
                   help="write the top examples (one row per neuron and rank) to FILE (.csv, .json, .parquet)")
    p.add_argument("--timeout", type=float, default=None,
                   help="under torchrun: seconds a rank waits for the others before failing (default: 600)")


COMMANDS: list[Command] = [
    Command("decompose", "who wrote what into the residual stream of a text",
            "Take the residual stream of TEXT apart into its writes (embeddings, heads, MLPs, "
            "neurons, biases): one row per (position, component) with the write's norm and its "
            "share of the stream. The figure: write norms per layer, by kind, side by side.",
            _args_decompose, _decompose, _plot("write_norms")),
    Command("attribute", "direct logit attribution of each component",
            "Each component's direct contribution to a logit, through the final norm (its scale "
            "frozen from the forward pass). The figure: a layer x head heatmap.",
            _args_attribute, _attribute, _plot("head_attribution")),
    Command("lens", "logit lens: the prediction after every layer",
            "Apply the final norm and unembedding to the stream after every layer: top tokens, "
            "the probability and rank of the actual next token, KL to the final distribution.",
            _args_lens, _lens, _plot("logit_lens")),
    Command("norms", "the stream's norm through the layers",
            "The accumulated residual stream's norm at every layer and position (norm growth, "
            "the first-token outlier).",
            _text_arg, _norms, _plot("stream_norms")),
    Command("neurons", "deleting neurons (in/out cosine against the null)",
            "Neurons whose output vector points against their input vector (cosine of "
            "W_in[:, n] and W_out[n] significantly negative against a random-vector null), most "
            "negative first. The figure: per-layer strip plot of all cosines.",
            _args_neurons, _neurons, _plot("deleting_neurons")),
    Command("heads", "deleting heads (OV-circuit signature)",
            "A per-head weight signature of erasing what the head reads, from its OV circuit.",
            _args_layers, _heads, _plot("deleting_heads")),
    Command("probe", "linear probes per layer for one label",
            "Train a linear probe on every layer's residual stream to decode LABEL; held-out "
            "accuracy, the majority baseline and a control task (Hewitt & Liang 2019).",
            _args_probe, _probe, _plot("probe_accuracy")),
    Command("stats", "neuron statistics over a corpus, on one process or under torchrun",
            "Every MLP neuron's firing rate, mean, std, min and max over a corpus, and its top "
            "activating examples with their context. Under torchrun / accelerate launch each rank "
            "streams its own documents and the statistics are all-reduced (gloo on CPU, nccl on "
            "GPUs); rank 0 prints and writes. The figure: one neuron's top examples, tokens shaded "
            "by activation.",
            _args_stats, _stats, _stats_figure),
]


# ---- parser -------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and output")
    g.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="a checkpoint directory, a .gguf file, 'smollm2-135m' or a hub name (default: the embedded model)")
    g.add_argument("--rows", type=int, default=None, metavar="N",
                   help="rows printed to the terminal (default: 20; only with --format table)")
    g.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table: readable text (default); csv / json: the whole table on stdout")
    g.add_argument("--table", default=None, metavar="FILE",
                   help="also write the whole table to FILE (.csv, .json or .parquet)")
    g.add_argument("--out", default=None, metavar="FILE", help="write the figure to FILE (.html, .png, .svg, .pdf)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp",
        description="Mechanistic interpretability of transformer language models: the residual "
                    "stream as shared memory.",
        epilog=_EPILOG,
    )
    from interp import __version__

    parser.add_argument("--version", action="version", version=f"interp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    r = sub.add_parser(
        "report", help="run everything on one model and write one self-contained HTML report",
        description="Run decomposition, logit lens, probes, subspace writers/readers and memory "
                    "management on one model, and write one self-contained HTML file (plotly.js "
                    "inlined; opens offline) with every figure, the key tables, the model card and "
                    "the settings used. With no options: the embedded default model on stdlib:val.",
        epilog=_EPILOG,
    )
    r.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="a Hugging Face checkpoint directory or hub name (default: the embedded model)")
    r.add_argument("--data", default="stdlib:val", metavar="FILE|DIR|stdlib",
                   help="corpus for probes and deletion evidence: a file, a directory, 'stdlib', "
                        "'stdlib:train' or 'stdlib:val' (default)")
    r.add_argument("--tokens", type=int, default=None, metavar="N",
                   help="tokens streamed by the probes and the ablation; the other data-based stages use a "
                        "quarter or an eighth (default: scaled to the model's size: 32768 on the embedded model, "
                        "2048 on smollm2-135m)")
    r.add_argument("--example", default=None, metavar="TEXT",
                   help="the code the per-position figures are drawn on (default: a small function)")
    r.add_argument("--out", default="report.html", metavar="FILE", help="the HTML file to write (default: report.html)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description, epilog=_EPILOG)
        cmd.add_args(p)
        _common(p)
    return parser


# ---- running ------------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    from interp.records import check_writable
    from interp.report import build_report

    check_writable(args.out, "--out")  # before the build, not after it
    report = build_report(
        args.model, out=args.out, data=args.data, tokens=args.tokens, example=args.example,
        progress=not args.quiet,
    )
    unavailable = sum(s.n_unavailable for s in report.sections)
    note = f"; {unavailable} part(s) unavailable (see the report)" if unavailable else ""
    sys.stdout.write(
        f"wrote {report.path} ({report.nbytes / 1e6:.1f} MB, {len(report.sections)} sections){note}\n"
    )
    return 0


def _check_combinations(args: argparse.Namespace) -> None:
    """Options that take effect only with another are refused alone, not ignored."""
    if args.rows is not None and args.format != "table":
        raise ValueError(f"--rows takes effect only with --format table (the default); --format {args.format} "
                         "writes every row: drop --rows or --format")
    if getattr(args, "neurons", None) and not (args.examples or args.out):
        raise ValueError("--neurons picks the neurons that --examples FILE writes and --out FILE draws; add one of "
                         "them (the table itself has every neuron)")
    if getattr(args, "timeout", None) is not None and "WORLD_SIZE" not in os.environ:
        logging.getLogger("interp").warning(
            "--timeout applies under torchrun / accelerate launch only; this run is one process, so it has no effect")


def _analysis(cmd: Command, args: argparse.Namespace) -> int:
    from interp.records import check_writable

    _check_combinations(args)
    args.rows = 20 if args.rows is None else args.rows
    if args.rows < 1:
        raise ValueError(f"--rows {args.rows} must be at least 1")
    table_path = Path(args.table) if args.table else None
    if table_path is not None and table_path.suffix.lower() not in (".csv", ".json", ".parquet"):
        raise ValueError(f"--table {args.table!r}: use a .csv, .json or .parquet file")
    examples = getattr(args, "examples", None)
    if examples is not None and Path(examples).suffix.lower() not in (".csv", ".json", ".parquet"):
        raise ValueError(f"--examples {examples!r}: use a .csv, .json or .parquet file")
    for flag, path in (("--table", args.table), ("--out", args.out), ("--examples", examples)):
        if path is not None:
            check_writable(path, flag)  # before the model loads and the analysis runs
    if args.out is not None:
        from interp.export import IMAGE_SUFFIXES, SUFFIXES, _require_chromium

        suffix = Path(args.out).suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"--out {args.out!r}: use one of {', '.join(SUFFIXES)}")
        if suffix in IMAGE_SUFFIXES:
            _require_chromium()  # before the analysis runs, not after
    from interp._threads import analysis_threads
    from interp.load import load

    if hasattr(args, "text"):
        args.text = read_text_arg(args.text, args.file)
    model = load(args.model)
    with analysis_threads(model):
        df = tidy(cmd.table(model, args))
    if getattr(args, "stats_rank", 0) != 0:  # under torchrun every rank computes; rank 0 reports
        return 0
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records", default_handler=str) + "\n")
    else:
        print_table(df, args.rows)
    if table_path is not None:
        write_table(df, table_path)
    if args.out is not None:
        from interp.export import export

        export(cmd.figure(df, args), args.out)
        sys.stderr.write(f"interp: wrote {args.out}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.ERROR if quiet else logging.WARNING, format="interp: %(message)s")
    saved = _silence_progress() if quiet else {}
    try:
        if args.command == "report":
            return _report(args)
        cmd = next(c for c in COMMANDS if c.name == args.command)
        return _analysis(cmd, args)
    except KeyboardInterrupt:
        sys.stderr.write("interp: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `interp neurons | head`
        return 0
    except (ValueError, TypeError, LookupError, OSError, RuntimeError, ImportError, MemoryError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"interp: error: {msg}\n")
        return EXIT_ERROR
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _silence_progress() -> dict[str, str | None]:
    """Turn progress bars off through the environment; returns the values to restore."""
    saved = {key: os.environ.get(key) for key in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    return saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
