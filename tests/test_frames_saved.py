"""Results are data: every frame a public analysis returns survives ``to_pickle``,
``to_parquet`` and ``to_csv``, read back in a process that has no model loaded, and the
objects analyses keep for later (top examples, the fitted probe) work from the frame read back.

To cover a new analysis, add a row to ``ANALYSES``: a name and a callable of the shared
inputs (``Inputs``) returning its frame.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import interp

TEXTS = ["def add(a, b):\n    return a + b\n" * 3, "class A:\n    x = 1\n    y = [1, 2]\n" * 3,
         "for i in range(3):\n    print(i)\n" * 3]


@dataclass
class Inputs:
    model: Any
    writes: Any
    subspace: Any


ANALYSES: dict[str, Any] = {
    "decompose": lambda i: interp.decompose(i.writes, by="head"),
    "stream_norms": lambda i: interp.stream_norms(i.writes),
    "logit_attribution": lambda i: interp.logit_attribution(i.writes),
    "logit_lens": lambda i: interp.logit_lens(i.writes),
    "find_deleting_neurons": lambda i: interp.find_deleting_neurons(i.model),
    "neuron_in_out_cosines": lambda i: interp.neuron_in_out_cosines(i.model),
    "find_deleting_heads": lambda i: interp.find_deleting_heads(i.model, TEXTS),
    "deletion_evidence": lambda i: interp.deletion_evidence(i.model, TEXTS, max_tokens=120, progress=False),
    "head_scores": lambda i: interp.head_scores(i.model, "previous_token"),
    "composition_scores": lambda i: interp.composition_scores(i.model),
    "neuron_composition": lambda i: interp.neuron_composition(i.model, ["L0N1", "L1N2"]),
    "icl_score": lambda i: interp.icl_score(i.model),
    "pattern_frame": lambda i: interp.pattern_frame(i.model, "x = 1", layers=0),
    "activation_patching": lambda i: interp.activation_patching(i.model, "x = 1", "y = 1"),
    "attribution_patching": lambda i: interp.attribution_patching(i.model, "x = 1", "y = 1"),
    "probe_layers": lambda i: interp.probe_layers(i.model, TEXTS, max_tokens=300, progress=False),
    "probe_labels": lambda i: interp.probe_labels(i.model, TEXTS, max_tokens=300, progress=False)["current_token"],
    "overlap": lambda i: interp.overlap(i.subspace, i.subspace),
    "writers": lambda i: interp.writers(i.subspace, i.writes),
    "readers": lambda i: interp.readers(i.subspace, i.model),
    "ablation_effect": lambda i: interp.ablation_effect(i.model, TEXTS, i.subspace, at=1, max_tokens=120,
                                                       progress=False),
    "neuron_stats": lambda i: interp.neuron_stats(i.model, TEXTS, progress=False, top_k=3),
    "top_examples": lambda i: interp.top_examples(interp.neuron_stats(i.model, TEXTS, progress=False, top_k=3),
                                                  ["L0N1", "L1N2"]),
    "deletion_effect": lambda i: interp.deletion_effect(i.model, "L1N3", TEXTS, progress=False),
    "memory.deletion_summary": lambda i: interp.memory.deletion_summary(
        interp.deletion_evidence(i.model, TEXTS, max_tokens=120, progress=False)),
    "probes.overlap_matrix": lambda i: interp.probes.overlap_matrix([i.subspace, interp.Subspace.random(128, 4)]),
    "attention_sinks": lambda i: interp.attention_sinks(i.model, TEXTS, max_tokens=200),
    "entropy_neurons": lambda i: interp.entropy_neurons(i.model, TEXTS, max_tokens=200),
    "neuron_verdicts": lambda i: interp.neuron_verdicts(i.model, TEXTS, max_tokens=200),
    "prediction_neurons": lambda i: interp.prediction_neurons(i.model, n_null=16),
    "generate_tokens": lambda i: interp.generate_tokens(i.model, ["x = "], max_new_tokens=2).to_frame(),
    "component_pages": lambda i: interp.component_pages(i.model, ["L1N3"], TEXTS, max_tokens=200,
                                                        progress=False)[0].to_frame(),
    "component_pages.frames": lambda i: pd.concat(
        [f.assign(frame=k) for k, f in interp.component_pages(i.model, ["L1N3", "L0H1"], TEXTS, max_tokens=200,
                                                               progress=False)[1].frames.items()], ignore_index=True),
}

#: Run in a fresh process: reads every frame back in each format and compares it with the
#: pickled original; then uses what the frames carry (examples, probe) from the parquet copy.
CHECK = r"""
import gc, json, sys
import numpy as np, pandas as pd
import interp
root = sys.argv[1]
names = json.loads(sys.argv[2])

def plain(x):
    return json.loads(json.dumps(x, default=str))

def same(a, b, where):
    assert list(a.columns) == list(b.columns) and len(a) == len(b), (where, list(a.columns), list(b.columns))
    for c in a.columns:
        x, y = a[c].tolist(), b[c].tolist()
        x = [v.tolist() if isinstance(v, np.ndarray) else v for v in x]
        y = [v.tolist() if isinstance(v, np.ndarray) else v for v in y]
        if pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c]):
            if "csv" in where:  # read back as float64: the text is the shortest repr of the stored dtype
                b = b.astype({c: a[c].dtype})
            f = lambda s: s.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            assert np.array_equal(f(a[c]), f(b[c]), equal_nan=True), (where, c)
        elif "csv" in where:  # csv keeps text: the text of every cell as written (a list or array: its str)
            norm = lambda v: "" if v is None or (isinstance(v, float) and v != v) or v is pd.NA else str(v)
            assert [norm(v) for v in a[c].tolist()] == [norm(v) for v in b[c].tolist()], (where, c)
        else:
            na = lambda v: v is None or (isinstance(v, float) and v != v)  # parquet reads NaN in lists as None
            assert x == y or all((na(u) and na(v)) or u == v for u, v in zip(x, y)), (where, c)

for name in names:
    ref = pd.read_pickle(f"{root}/{name}.pkl")
    pq = pd.read_parquet(f"{root}/{name}.parquet")
    same(ref, pq, name + " parquet")
    assert plain(pq.attrs) == plain(ref.attrs), (name, "attrs")
    text = [c for c in ref.columns if not pd.api.types.is_numeric_dtype(ref[c])]  # read as text, as written
    csv = pd.read_csv(f"{root}/{name}.csv", keep_default_na=False, na_values=[""], dtype={c: object for c in text})
    same(ref, csv, name + " csv")
    if name == "neuron_stats":
        ex = interp.top_examples(pq, ["L0N1", "L1N2"])
        same(pd.read_pickle(f"{root}/examples.pkl"), ex, "top_examples after parquet")
    if name == "probe_layers":
        probe = interp.LinearProbe.from_frame(pq)
        assert probe.sites_ and probe.coef_.shape[0] == len(pq)
        interp.Subspace.from_probe(pq, site=1, k=2)
assert not [o for o in gc.get_objects() if isinstance(o, interp.Model)], "a model was loaded"
print("ALL SAVED", len(names))
"""


@pytest.fixture(scope="module")
def saved(default_model, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("frames")
    writes = default_model.run_with_writes(["def f(x):\n    return x + 1\n", "x = [1, 2, 3]\nprint(x)\n"])
    probe = interp.probe_layers(default_model, TEXTS, max_tokens=300, progress=False, layers=[0, 1])
    inputs = Inputs(default_model, writes, interp.Subspace.from_probe(probe, site=1, k=4))
    errors: dict[str, str] = {}
    for name, make in ANALYSES.items():
        try:
            df = make(inputs)
            assert isinstance(df, pd.DataFrame), f"{name} returned {type(df).__name__}"
            df.to_pickle(root / f"{name}.pkl")
            df.to_parquet(root / f"{name}.parquet")
            # pandas writes a bare carriage return (a token such as "\r") unquoted, and reads it back as a
            # line end: quoting every text field keeps token strings exact (the CLI writes csv this way)
            df.to_csv(root / f"{name}.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
            if name == "neuron_stats":
                interp.top_examples(df, ["L0N1", "L1N2"]).to_pickle(root / "examples.pkl")
        except Exception as e:  # noqa: BLE001 - reported per analysis below
            errors[name] = f"{type(e).__name__}: {e}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    names = [n for n in ANALYSES if n not in errors]
    run = subprocess.run([sys.executable, "-c", CHECK, str(root), json.dumps(names)], capture_output=True,
                         text=True, env=env, timeout=300)
    return {"errors": errors, "check": run}


@pytest.mark.parametrize("name", list(ANALYSES))
def test_frame_saves(saved, name):
    assert name not in saved["errors"], saved["errors"].get(name)


def test_frames_read_back_without_a_model(saved):
    run = saved["check"]
    assert run.returncode == 0 and "ALL SAVED" in run.stdout, run.stderr[-3000:]


def test_every_public_analysis_is_listed():
    """A new public function of ``interp`` returning frames needs a row above (plots, loaders and
    tensor-level helpers excepted; analyses of the subpackages are listed by their dotted name)."""
    not_frames = {"ablate", "load", "export", "attention_patterns", "labels", "data", "heads", "plots", "stats",
                  "Config", "LinearProbe", "MLPStack", "Model", "ResidualWrites", "Subspace", "Tokens",
                  "generate", "repeated_tokens",  # text, a tensor
                  "neuron_page", "head_page"}  # one page each: component_pages' rows cover their frames
    public = {n for n in interp.__all__ if n[0].islower() or n in not_frames} - not_frames
    public -= {n for n in public if n.endswith("Error")}
    assert public <= set(ANALYSES), sorted(public - set(ANALYSES))
