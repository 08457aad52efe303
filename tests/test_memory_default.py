"""Memory analyses on the embedded default model: the contract, and cosines that match the
checkpoint's own weights under both conventions."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.models import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").exists(),
                                reason="the default model is not built")


def test_contract_on_the_default_model(default_model):
    df = interp.find_deleting_neurons(default_model)
    assert {"layer", "neuron", "cosine", "verdict"} <= set(df.columns)
    assert df["cosine"].is_monotonic_increasing and (df["verdict"] == "deleting").all()
    assert df.attrs["processing"] == "compat" and df.attrs["n_tokens_data"] > 0
    heads = interp.find_deleting_heads(default_model)
    assert {"layer", "head", "score", "verdict", "self_attention"} <= set(heads.columns)
    assert len(heads) == default_model.cfg.n_layers * default_model.cfg.n_heads
    assert heads["flagged"].is_monotonic_decreasing and (heads["flagged"] == (heads["verdict"] == "deleting")).all()
    # L1H2 puts most of its attention on the first position (a sink) and erases nothing
    assert "L1H2" not in set(heads.query("flagged")["label"])


def test_raw_cosines_match_the_checkpoint(default_model):
    """Raw convention: GPT-NeoX dense_h_to_4h rows against dense_4h_to_h columns."""
    from safetensors.torch import load_file

    sd = load_file(str(DEFAULT_MODEL_DIR / "model.safetensors"))
    ly = default_model.cfg.n_layers - 1
    w_in = sd[f"gpt_neox.layers.{ly}.mlp.dense_h_to_4h.weight"]  # [d_mlp, d_model]
    w_out = sd[f"gpt_neox.layers.{ly}.mlp.dense_4h_to_h.weight"]  # [d_model, d_mlp]
    want = torch.nn.functional.cosine_similarity(w_in, w_out.T, dim=1)
    raw = interp.neuron_in_out_cosines(interp.load(processing="raw", device="cpu"), layers=-1)
    got = torch.tensor(raw.sort_values("neuron")["cosine"].to_numpy(), dtype=torch.float32)
    assert torch.allclose(got, want, atol=1e-5)
    assert raw.attrs["processing"] == "raw" and raw.attrs["null_dimensions"] == default_model.cfg.d_model
