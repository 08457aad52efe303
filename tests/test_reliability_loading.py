"""What is loaded is what is in the checkpoint, and loading leaves the caller's state alone.

- A directory without tokenizer files, a config declaring other layers or sizes than the
  weights hold, a config that is not an object: refused before anything is built (an absurd
  config fails in well under a second, allocating nothing), and the CLI prints one line.
- ``interp.load()`` does not advance the caller's global torch RNG.
(The individual cases are rows of the table in ``test_bad_inputs.py``.)
"""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

import interp
from interp import cli
from interp.errors import CheckpointError
from interp.testing import random_hf_model, tiny_tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reliability") / "tiny"
    random_hf_model("llama").save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def _variant(ckpt: Path, tmp: Path, **cfg_edits) -> Path:
    d = tmp / "variant"
    shutil.copytree(ckpt, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(cfg_edits)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_a_checkpoint_that_is_whole_loads_and_tokenizes(ckpt):
    model = interp.load(ckpt)
    toks = model.to_tokens("def add(a, b):\n    return a + b\n").tokens
    assert toks.shape[1] > 5 and len(set(toks[0].tolist())) > 3


def test_without_tokenizer_files_nothing_runs_on_bos_alone(ckpt, tmp_path):
    """Before: a GPT2Tokenizer with no vocabulary mapped every text to one token, and every
    analysis ran on BOS alone. Now: refused, unless a tokenizer is passed."""
    d = tmp_path / "no-tok"
    shutil.copytree(ckpt, d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    with pytest.raises(CheckpointError, match="holds no tokenizer files"):
        interp.load(d)
    model = interp.load(d, tokenizer=tiny_tokenizer())
    assert model.to_tokens("x = [1, 2, 3]").tokens.shape[1] > 3


@pytest.mark.parametrize("edits", [dict(num_hidden_layers=10**6), dict(hidden_size=10**6),
                                   dict(vocab_size=10**9), dict(intermediate_size=10**8)])
def test_an_absurd_config_fails_fast_allocating_nothing(ckpt, tmp_path, edits):
    d = _variant(ckpt, tmp_path, **edits)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match="config.json (declares|describes other shapes)"):
            interp.load(d)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5, elapsed
    assert peak < 200e6, f"{peak / 1e6:.0f} MB allocated before the error"


def test_fewer_layers_in_the_config_than_in_the_weights_is_refused(ckpt, tmp_path):
    d = _variant(ckpt, tmp_path, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match=r"declares 1 layer\(s\) but the weights hold 2"):
        interp.load(d)


@pytest.mark.parametrize("config_text, words", [
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"model_type": "llama", "hidden_size": "64"}', "hidden_size='64' (str); a size must be a positive int"),
    ('{"model_type": "llama", "num_attention_heads": -4}', "num_attention_heads=-4; a size must be a positive int"),
    ("{oops", "is not valid JSON"),
])
def test_the_cli_prints_one_line_and_exits_non_zero(ckpt, tmp_path, capsys, config_text, words):
    d = tmp_path / "bad"
    shutil.copytree(ckpt, d)
    (d / "config.json").write_text(config_text)
    code = cli.main(["norms", "x = 1", "--model", str(d)])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert lines[-1].startswith("interp: error: ") and words in lines[-1], err
    assert "Traceback" not in err


def test_the_cli_exits_without_a_traceback_on_a_corrupt_tokenizer(ckpt, tmp_path, capsys):
    d = tmp_path / "bad-tok"
    shutil.copytree(ckpt, d)
    (d / "tokenizer.json").write_text("{definitely not a tokenizer")
    code = cli.main(["norms", "x = 1", "--model", str(d)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interp: error: name_or_path=")
    assert "tokenizer files cannot be read" in err


@pytest.mark.parametrize("source", ["default", "dir", "in-memory"])
def test_loading_does_not_advance_the_callers_rng(ckpt, source):
    arg = {"default": None, "dir": ckpt, "in-memory": random_hf_model("gpt2")}[source]
    kw = {"tokenizer": tiny_tokenizer()} if source == "in-memory" else {}
    torch.manual_seed(0)
    want = torch.rand(5)
    torch.manual_seed(0)
    interp.load(arg, **kw)
    assert torch.equal(torch.rand(5), want)


def test_the_rng_check_can_fail():
    """Without ``fork_rng`` (the undecorated function) loading moves the caller's sequence:
    building a model draws its initial weights."""
    torch.manual_seed(0)
    want = torch.rand(5)
    torch.manual_seed(0)
    interp.load.__wrapped__()  # the embedded default model
    assert not torch.equal(torch.rand(5), want)


@pytest.mark.slow
def test_smollm2_passes_the_checkpoint_checks_and_keeps_the_rng(smollm2):
    """The converted SmolLM2 checkpoint is whole (config, weights, tokenizer agree); loading it
    again (from the cache) leaves the caller's RNG where it was."""
    assert smollm2.cfg.n_layers == 30 and smollm2.to_tokens("def f(x):\n    return x").tokens.shape[1] > 5
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    interp.load("smollm2-135m")
    assert torch.equal(torch.rand(3), want)
