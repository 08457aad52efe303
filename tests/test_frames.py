"""One name per thing across every public frame (docs/reference/frames.md): components are named
by ``layer`` and ``head`` / ``neuron``, never by an ``index``, and no column takes the name of a
DataFrame attribute except the documented ones."""

from __future__ import annotations

import inspect
import warnings

import pandas as pd
import pytest

import interp

TEXTS = ["def add(a, b):\n    return a + b\n" * 3, "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n" * 3,
         "import os\nimport sys\n\n# a comment\nvalue = 'string'\n" * 3]
#: Column names that are also DataFrame attributes, kept because a contract names them
#: (/work/shared/DESIGN.md: ``head``, neuron_stats's ``mean``, ``std``, ``min``, ``max``) or, for
#: ``where``, ``rank`` and prediction_neurons' ``skew`` / ``kurtosis``, documented in
#: docs/reference/frames.md. Read every column as df["name"].
ATTRIBUTE_NAMES = {"head", "mean", "std", "min", "max", "where", "rank", "skew", "kurtosis"}
#: Public functions that return no DataFrame (or build one only through another entry here).
NOT_FRAMES = {"ablate", "attention_patterns", "data", "export", "generate", "heads", "labels", "load", "plots",
              "stats", "repeated_tokens", "neuron_page", "head_page", "icl_score"}


def _frames(m: interp.Model) -> dict[str, pd.DataFrame]:
    w = m.run_with_writes(TEXTS[:2])
    sub = interp.Subspace.random(m.cfg.d_model, 3, seed=0)
    q = dict(progress=False)
    stats = interp.neuron_stats(m, TEXTS, max_tokens=300, **q)
    evidence = interp.deletion_evidence(m, w, neurons=["L1N3"], heads=["L0H1"], **q)
    out = {
        "decompose": interp.decompose(w, by="head"),
        "decompose(neuron)": interp.decompose(w, by="neuron", top_k=3),
        "stream_norms": interp.stream_norms(w),
        "logit_attribution": interp.logit_attribution(w, by="head"),
        "logit_lens": interp.logit_lens(w),
        "probe_layers": interp.probe_layers(m, TEXTS, max_tokens=300, **q),
        "probe_labels": interp.probe_labels(m, TEXTS, labels=["current_token"], max_tokens=300, **q)["current_token"],
        "overlap": interp.overlap(sub, interp.Subspace.random(m.cfg.d_model, 2, seed=1)),
        "writers": interp.writers(sub, w, layer=2),
        "readers": interp.readers(sub, m),
        "ablation_effect": interp.ablation_effect(m, TEXTS, sub, at=1, mode="zero", max_tokens=200, **q),
        "find_deleting_neurons": interp.find_deleting_neurons(m, threshold=0.0),
        "neuron_in_out_cosines": interp.neuron_in_out_cosines(m),
        "find_deleting_heads": interp.find_deleting_heads(m),
        "deletion_evidence": evidence,
        "deletion_summary": interp.memory.deletion_summary(evidence),
        "head_scores": interp.head_scores(m, "previous_token"),
        "pattern_frame": interp.pattern_frame(m, "x = 1"),
        "composition_scores": interp.composition_scores(m),
        "neuron_composition": interp.neuron_composition(m, ["L0N1"]),
        "activation_patching": interp.activation_patching(m, "a = 1", "a = 2", answers=(5, 6), **q),
        "attribution_patching": interp.attribution_patching(m, "a = 1", "a = 2", answers=(5, 6)),
        "deletion_effect": interp.deletion_effect(m, "L0N3", TEXTS, max_tokens=200, **q),
        "neuron_stats": stats,
        "neuron_verdicts": interp.neuron_verdicts(m, TEXTS, max_tokens=200),
        "attention_sinks": interp.attention_sinks(m, TEXTS, max_tokens=200),
        "entropy_neurons": interp.entropy_neurons(m, TEXTS, max_tokens=200),
        "prediction_neurons": interp.prediction_neurons(m),
        "top_examples": interp.top_examples(stats, ["L1N3"]),
        "generate_tokens": interp.generate_tokens(m, ["x"], max_new_tokens=2).to_frame(),
    }
    for page in interp.component_pages(m, ["L1N3", "L0H1"], TEXTS, max_tokens=300, **q):
        out[f"component_pages({page.kind})"] = page.to_frame()
        out.update({f"component_pages({page.kind}).{k}": v for k, v in page.frames.items()})
    return out


@pytest.fixture(scope="module")
def frames():
    from interp.testing import random_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _frames(random_model("llama"))  # gated MLP, grouped-query attention


def test_every_public_frame_is_covered(frames):
    public = {n for n in interp.__all__ if inspect.isfunction(getattr(interp, n))} - NOT_FRAMES
    assert public <= {k.split("(")[0] for k in frames}, sorted(public - set(frames))


def test_components_are_named_by_layer_head_neuron(frames):
    for name, df in frames.items():
        cols = list(df.columns)
        bad = [c for c in cols if c == "index" or (c.endswith("_index") and c != "doc_index")]
        assert not bad, f"{name}: {bad}: name a component by layer and head / neuron (docs/reference/frames.md)"
        for prefix in ("", "source_", "target_"):
            if f"{prefix}head" in cols or f"{prefix}neuron" in cols:
                assert f"{prefix}layer" in cols, f"{name}: {prefix}head / {prefix}neuron without {prefix}layer"
        for col in ("head", "neuron", "source_head", "source_neuron", "target_head", "target_neuron"):
            if col in cols and len(df):
                assert pd.api.types.is_integer_dtype(df[col]), f"{name}.{col} is {df[col].dtype}, not an int"


def test_no_column_silently_shadows_a_dataframe_attribute(frames):
    for name, df in frames.items():
        shadow = {c for c in df.columns if hasattr(pd.DataFrame, c)} - ATTRIBUTE_NAMES
        assert not shadow, f"{name}: {sorted(shadow)} are DataFrame attributes; rename (docs/reference/frames.md)"
    # the documented exception reads as documented
    df = frames["head_scores"]
    assert callable(df.head) and df["head"].dtype.kind == "i"
