"""The shipped default model (interp/models/stdlib_lm) shows every promised phenomenon.

Thresholds come from the issue; the measured values are in MODEL_CARD.md.
"""

from __future__ import annotations

import json

import pytest
import torch

from interp.data import stdlib_root
from interp.models import DEFAULT_MODEL_DIR, measure
from interp.models.tokenizer import bytes_per_token

HELDOUT_LENGTH = 37  # a segment length never used in training (see train_args.json)


@pytest.fixture(scope="module")
def hf():
    torch.manual_seed(0)
    return measure.load_hf(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def val(hf):
    _, tokenizer = hf
    return measure.val_tokens(tokenizer, n_rows=16, n_ctx=256)


def test_checkpoint_files_and_config():
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "MODEL_CARD.md",
    ):
        assert (DEFAULT_MODEL_DIR / name).is_file(), name
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert config["bos_token_id"] == config["eos_token_id"] == 0
    assert config["max_position_embeddings"] >= 256
    assert 256 <= config["vocab_size"] <= 1024
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 20e6
    args = json.loads((DEFAULT_MODEL_DIR / "train_args.json").read_text())
    assert str(HELDOUT_LENGTH) in args["heldout_lengths"].split(",")


def test_tokenizer_roundtrip_and_bos(hf):
    _, tokenizer = hf
    text = (stdlib_root() / "json" / "__init__.py").read_text()
    ids = tokenizer(text, verbose=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 0 and tokenizer.eos_token_id == 0
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert bytes_per_token(tokenizer, "stdlib:val") > 2.0


def test_held_out_loss(hf):
    model, tokenizer = hf
    loss = measure.mean_loss(model, tokenizer, "stdlib:val", n_ctx=256, max_tokens=20_000)
    assert loss < 2.7  # measured 2.44 on these first 20k tokens; 1.90 over 200k (MODEL_CARD.md)


def test_transformer_lens_bridge_matches_hf(hf):
    from transformer_lens.model_bridge import TransformerBridge

    model, _ = hf
    bridge = TransformerBridge.boot_transformers(str(DEFAULT_MODEL_DIR.resolve()), device="cpu")
    tokens = bridge.to_tokens("import os\nprint(os.getcwd())\n", prepend_bos=True)
    assert tokens[0, 0] == 0
    with torch.no_grad():
        expected = model(input_ids=tokens).logits
        got = bridge(tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_previous_token_head_in_layer_0(hf, val):
    model, tokenizer = hf
    scores = measure.prev_token_scores(model, *val, tokenizer=tokenizer)  # interp.head_scores
    assert scores[0].max() >= 0.5, scores


def test_induction_head_at_untrained_length(hf):
    model, tokenizer = hf
    scores = measure.induction_scores(model, HELDOUT_LENGTH, batch=16, seed=123, tokenizer=tokenizer)
    assert scores[1:].max() >= 0.3, scores
    assert scores[0].max() < 0.3, "layer 0 cannot do induction on its own"


def test_in_context_learning_on_repeats(hf):
    model, _ = hf
    first, second = measure.copy_losses(model, HELDOUT_LENGTH, batch=16, seed=123)
    assert first - second >= 2.0, (first, second)


def test_previous_token_decodes_after_layer0_attention(hf, val):
    model, _ = hf
    acc = measure.prev_token_decodability(model, *val)
    assert acc["after_attn0"] >= acc["embed"] + 0.1, acc
    assert acc["embed"] >= acc["majority"] - 0.05, acc


def test_inout_cosines_against_random_init(hf):
    model, _ = hf
    trained = measure.inout_cosines(model)
    baseline = measure.random_init_cosines(model.config, seed=0)
    d_model, d_mlp = model.config.hidden_size, model.config.intermediate_size
    assert len(trained) == len(baseline) == model.config.num_hidden_layers
    assert all(c.shape == (d_mlp,) and c.abs().max() <= 1 + 1e-5 for c in trained + baseline)
    expected = measure.expected_random_cosine_std(d_model)
    for c in baseline:
        assert abs(float(c.std()) - expected) < 0.25 * expected
        assert abs(float(c.mean())) < 3 * expected / d_mlp**0.5
    rows = measure.cosine_summary(trained)
    assert [r["layer"] for r in rows] == list(range(len(trained)))


def test_training_defaults_are_the_shipped_recipe():
    from interp.models.train import build_parser

    defaults = vars(build_parser().parse_args(["--out", "unused"]))
    shipped = json.loads((DEFAULT_MODEL_DIR / "train_args.json").read_text())
    assert {k: v for k, v in defaults.items() if k in shipped} == shipped
    assert set(shipped) >= {"seed", "vocab_size", "phase1_steps", "phase2_steps", "lr"}


def test_training_cli_help():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "interp.models.train", "--help"], capture_output=True, text=True, check=True
    )
    assert "--phase1-steps" in result.stdout and "--resume" in result.stdout
