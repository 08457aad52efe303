"""``python -m benchmarks [--quick] [--only NAME ...] [--out results.json]``: run the suite, print
a table of ratios with their targets, and write JSON. Every ratio is measured side by side in
one run (interleaved repeats, median), because absolute times on shared machines are noise."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import torch

from benchmarks import analyses, capture, entropy, gemma3, heads, load, patching, smollm2, stats, stream
from benchmarks.common import machine

SUITES = {
    "capture": lambda q: capture.run(repeats=5),
    "stream": lambda q: stream.run(small=20_000, large=200_000) if q else stream.run(),
    "neurons": lambda q: analyses.neuron_decomposition(),
    "deleting7b": lambda q: analyses.deleting_neurons_7b(layers=4 if q else 32),
    "probes": lambda q: analyses.probes_vs_forward(tokens=10_000 if q else 100_000),
    "stats": lambda q: stats.run(200_000, 50_000, 100_000) if q else stats.run(),
    "load": lambda q: load.run(repeats=1 if q else 3),
    "patching": lambda q: patching.run(smollm2=not q),
    "heads": lambda q: heads.run(old_layers=1 if q else 2),
    "smollm2": lambda q: smollm2.run(repeats=3 if q else 5, toy=not q),
    "gemma3": lambda q: gemma3.run(repeats=3 if q else 5, load=not q),
    "entropy": lambda q: entropy.run(tokens=64 if q else 512, repeats=1 if q else 3),
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller token counts and stacks (minutes, not tens)")
    p.add_argument("--only", nargs="*", choices=sorted(SUITES), help="run only these suites")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as measured in the issue)")
    p.add_argument("--out", default="benchmarks/results.json", help="where to write the JSON")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    info = {"machine": machine(), "quick": args.quick, "rows": rows}
    for name in args.only or SUITES:
        rows += [{"suite": name, **row} for row in SUITES[name](args.quick)]
        Path(args.out).write_text(json.dumps(info, indent=1, default=str))  # after every suite
        logging.warning("suite %s done", name)
    df = pd.DataFrame(rows)
    cols = [c for c in ["suite", "figure", "what", "ratio", "target", "seconds", "peak_above_mb"] if c in df]
    with pd.option_context("display.width", 200, "display.max_colwidth", 48, "display.float_format", "{:.3f}".format):
        print(df[cols].to_string(index=False))
    print(f"\nwrote {args.out}; machine: {info['machine']}")


if __name__ == "__main__":
    main()
