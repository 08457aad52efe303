"""torch.distributed for real: two gloo processes under ``torchrun`` give the frame of one
process (counts exactly, floats to 1e-6, the same top examples) on every rank, through the
API and through ``python -m interp stats``; and a rank that raises, is interrupted or hangs
fails the whole run with a clear error instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import interp
from interp.data import stdlib_files
from interp.stats import neuron_stats, top_examples

FLOATS = ["firing_rate", "mean", "std", "min", "max"]
LIMIT = 240  # seconds any torchrun run may take before the test fails (instead of hanging)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for i, p in enumerate(stdlib_files("val")[:11]):
        (d / f"doc{i:02d}.py").write_text(p.read_text(errors="replace")[: 900 + 250 * i])
    return d


def torchrun(*args: str, cwd: Path, timeout: float = LIMIT) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return res, time.perf_counter() - t


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    assert a[["layer", "neuron", "n_tokens"]].equals(b[["layer", "neuron", "n_tokens"]])
    n = a["n_tokens"].to_numpy()
    assert np.array_equal(np.rint(a["firing_rate"] * n), np.rint(b["firing_rate"] * n))  # counts exactly
    for c in FLOATS:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        assert np.allclose(x, y, rtol=1e-6, atol=1e-6 * np.abs(y).max()), c


SCRIPT = """
import sys, torch, interp
from interp.stats import init_distributed, neuron_stats, rank_and_world, top_examples
torch.set_num_threads(1)
assert init_distributed(timeout=300)
rank, world = rank_and_world()
stats = neuron_stats(interp.load(), sys.argv[1], max_tokens=None, top_k=4, batch_size=3, context=2,
                     progress=False)
stats.to_csv(f"stats{rank}.csv", index=False)
top_examples(stats).drop(columns=["tokens", "acts"]).to_csv(f"examples{rank}.csv", index=False)
ev = interp.deletion_evidence(interp.load(), sys.argv[1], neurons=NEURONS, heads=["L1H3"], max_tokens=None,
                              batch_size=3, progress=False)
ev.to_csv(f"evidence{rank}.csv", index=False)
from interp.stats import Covariance, Histogram, Moments, TopK
x = torch.randn(1000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 100
y = x[:, :1] - 2 * x[:, 1:2]
keys = torch.arange(1000)
mine = slice(rank * 300, 1000 if rank == world - 1 else 300)  # unequal shares
parts = [Covariance(4, m=1).update(x[mine], y[mine]), Histogram([90, 95, 100, 105, 110], (4,)).update(x[mine]),
         Moments((4,)).update(x[mine]), TopK(4, 7, dtype=torch.float64).update(x[mine], keys[mine])]
whole = [Covariance(4, m=1).update(x, y), Histogram([90, 95, 100, 105, 110], (4,)).update(x),
         Moments((4,)).update(x), TopK(4, 7, dtype=torch.float64).update(x, keys)]
for p, w in zip(parts, whole):
    p.all_reduce()
c, h, m, t = parts
assert c.count == 1000 and torch.allclose(c.cov(), whole[0].cov(), rtol=1e-9) and torch.allclose(c.cross_cov(), whole[0].cross_cov(), rtol=1e-9)
assert torch.equal(h.counts, whole[1].counts)
assert m.count == 1000 and torch.allclose(m.var(), whole[2].var(), rtol=1e-9)
assert torch.equal(t.keys, whole[3].keys) and torch.equal(t.values, whole[3].values)
open(f"done{rank}.txt", "w").write(f"STATISTICS REDUCED {rank} world {world} tokens {stats.attrs['n_tokens']}")
"""
NEURONS = ["L1N154", "L1N294", "L1N436"]


def test_two_gloo_ranks_give_the_single_process_frame(default_model, corpus, tmp_path):
    (tmp_path / "run.py").write_text(textwrap.dedent(SCRIPT).replace("NEURONS", repr(NEURONS)))
    res, _ = torchrun("run.py", str(corpus), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    one = neuron_stats(default_model, str(corpus), max_tokens=None, top_k=4, batch_size=3, context=2,
                       progress=False)
    ex_one = top_examples(one).drop(columns=["tokens", "acts"])
    ranks = [pd.read_csv(tmp_path / f"stats{r}.csv", keep_default_na=False) for r in (0, 1)]
    assert ranks[0].equals(ranks[1])  # the same frame on every rank
    assert_same(ranks[0], one.reset_index(drop=True))
    for r in (0, 1):
        ex = pd.read_csv(tmp_path / f"examples{r}.csv", keep_default_na=False)
        want = ex_one.reset_index(drop=True)
        keys = ["layer", "neuron", "rank", "doc", "doc_index", "row", "pos", "context", "center"]
        assert ex[keys].astype(str).equals(want[keys].astype(str))  # top examples: exactly the same
        assert np.allclose(ex["activation"], want["activation"], rtol=1e-6, atol=1e-7)
    for r in (0, 1):  # one file per rank: the ranks' stdout interleaves in torchrun's pipe
        assert (tmp_path / f"done{r}.txt").read_text().startswith(f"STATISTICS REDUCED {r} world 2 tokens ")
    # deletion evidence: its sums are all-reduced the same way
    ev_one = interp.deletion_evidence(default_model, str(corpus), neurons=NEURONS, heads=["L1H3"], max_tokens=None,
                                      batch_size=3, progress=False)
    for r in (0, 1):
        ev = pd.read_csv(tmp_path / f"evidence{r}.csv", keep_default_na=False)
        assert ev[["deleter", "writer", "n_tokens", "rank"]].equals(ev_one[["deleter", "writer", "n_tokens", "rank"]])
        for c in ("firing_rate", "removed_fraction", "share"):
            assert np.allclose(ev[c], ev_one[c], rtol=1e-6, atol=1e-9), (c, (ev[c] - ev_one[c]).abs().max())


@pytest.mark.slow
def test_torchrun_cli_stats(default_model, corpus, tmp_path):
    res, _ = torchrun("-m", "interp", "stats", "--data", str(corpus), "--tokens", "3000", "--top-k", "3",
                      "--layers", "1", "--table", "two.csv", "--examples", "ex.csv", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    two = pd.read_csv(tmp_path / "two.csv", keep_default_na=False)
    assert (two["n_tokens"] == 3000).all() and set(two["layer"]) == {1}
    assert res.stdout.count("more rows") == 1  # rank 0 alone prints
    ex = pd.read_csv(tmp_path / "ex.csv", keep_default_na=False)
    assert len(ex) == 3 * len(two)


FAILING = """
import os, signal, sys, time, torch, interp
from interp.stats import init_distributed, neuron_stats, rank_and_world
torch.set_num_threads(1)
init_distributed(timeout=float(sys.argv[3]))
rank, _ = rank_and_world()
model = interp.load()
if rank == 1:
    how = sys.argv[2]
    if how == "raise":
        raise RuntimeError("rank 1 broke on purpose")
    if how == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
    if how == "hang":
        time.sleep(600)
neuron_stats(model, sys.argv[1], max_tokens=None, top_k=2, progress=False)
print("rank", rank, "finished")
"""


@pytest.mark.parametrize("how, expect", [
    ("raise", "rank 1 broke on purpose"),
    pytest.param("interrupt", "KeyboardInterrupt", marks=pytest.mark.slow),
    ("hang", "DistributedError"),
])
def test_a_failing_rank_fails_the_run_and_never_hangs(corpus, tmp_path, how, expect):
    """A rank that raises or is interrupted: torchrun stops the others. A rank that hangs:
    the others' collective times out (5 s here) with a DistributedError, then torchrun
    stops it. Either way the run ends, non-zero, well within the subprocess limit."""
    (tmp_path / "fail.py").write_text(textwrap.dedent(FAILING))
    res, seconds = torchrun("fail.py", str(corpus), how, "5", cwd=tmp_path, timeout=180)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert expect in out, out[-3000:]
    assert "rank 0 finished" not in out
    assert seconds < 150
    if how == "hang":
        assert "reducing" in out and "timeout 5 s" in out
