"""Truths on the embedded default model (a 2-layer attention model trained on stdlib
source): the current token is readable from the embedding, the previous token only after
layer-0 attention has moved it, a layer-0 head writes the previous-token subspace, and
removing that subspace breaks the read-out."""

from __future__ import annotations

import pytest

import interp
from interp.models import DEFAULT_MODEL_DIR
from interp.probes import Subspace

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "config.json").exists(), reason="the embedded default model is not built"
)
DATA = "stdlib:val"
KW = dict(max_tokens=8_000, top_k=50, max_iter=40, progress=False)


@pytest.fixture(scope="module")
def probes(default_model):
    return {
        label: interp.probe_layers(default_model, DATA, label=label, **KW).set_index("layer", drop=False)
        for label in ("current_token", "previous_token")
    }


@pytest.fixture(scope="module")
def prev_subspace(probes):
    return Subspace.from_probe(probes["previous_token"], site=1, k=8, name="previous token")


def test_current_token_decodes_from_the_embedding(probes):
    cur = probes["current_token"]
    assert cur.loc[0, "accuracy"] > 0.97
    assert cur.loc[0, "accuracy"] > cur.loc[0, "baseline"] + 0.2


def test_previous_token_decodes_only_after_layer_0_attention(probes):
    prev = probes["previous_token"]
    assert prev.loc[0, "accuracy"] < prev.loc[0, "baseline"] + 0.1  # not in the embedding
    assert prev.loc[1, "accuracy"] > prev.loc[0, "accuracy"] + 0.3
    assert prev.loc[1, "accuracy"] > 0.8
    assert prev.loc[1, "selectivity"] > prev.loc[0, "selectivity"] + 0.3


def test_a_layer_0_head_writes_the_previous_token(default_model, prev_subspace):
    stream = default_model.stream_writes(DATA, max_tokens=4_000, progress=False)
    who = interp.writers(prev_subspace, stream, layer=1)  # what the layer-1 probe read
    top = who.iloc[:2]
    assert (top["kind"] == "head").all() and (top["layer"] == 0).all()  # two layer-0 heads lead
    heads = who[who["kind"] == "head"]
    assert heads["signed_share"].sum() > 0.6  # heads put most of what the layer-1 probe reads there
    # the default read point is the subspace's own site: nothing that writes after L1_resid_pre
    assert prev_subspace.site.label == "L1_resid_pre"
    default = interp.writers(prev_subspace, default_model.stream_writes(DATA, max_tokens=4_000, progress=False))
    assert default.attrs["read_point"] == "L1_resid_pre" and not (default["layer"].dropna() >= 1).any()
    assert default["component"].tolist() == who["component"].tolist()
    with pytest.raises(ValueError, match="has no site; pass layer=L"):
        interp.writers(Subspace(prev_subspace.basis.T), default_model.run_with_writes("x = 1"))


def test_ablating_the_previous_token_subspace(default_model, prev_subspace):
    df = interp.ablation_effect(default_model, DATA, prev_subspace, at=1, label="previous_token", **KW)
    probe = df[df["metric"] == "probe_accuracy"].set_index("layer")
    assert probe.loc[1, "ablated"] < probe.loc[1, "clean"] - 0.3
    assert probe.loc[1, "random_delta"] > -0.1  # a random 8-dim subspace hardly matters
    loss = df[df["metric"] == "loss"].iloc[0]
    assert loss["delta"] > 0.2 and loss["delta"] > loss["random_delta"] + 0.2
