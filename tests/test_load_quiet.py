"""Loading prints nothing that is not the user's business, and leaves the caller's settings
(progress bars, log levels, torch threads) as it found them."""

from __future__ import annotations

import logging

import torch
from transformers.utils import logging as hf_logging

import interp


def test_load_prints_no_progress_bars_and_restores_settings(capfd):
    threads = torch.get_num_threads()
    assert hf_logging.is_progress_bar_enabled()
    tl_level = logging.getLogger("transformer_lens").level
    model = interp.load()
    out, err = capfd.readouterr()
    assert "Loading weights" not in err + out and "%|" not in err, err[-500:]
    assert torch.get_num_threads() == threads
    assert hf_logging.is_progress_bar_enabled()
    assert logging.getLogger("transformer_lens").level == tl_level
    assert model.generate("x", max_new_tokens=1)  # the model works after the quiet load


def test_load_threads_follow_the_environment(monkeypatch):
    seen = []
    load_mod = __import__("importlib").import_module("interp.load")
    finish = load_mod._finish

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return finish(*a, **k)

    monkeypatch.setattr(load_mod, "_finish", spy)
    interp.load()
    monkeypatch.setenv("INTERP_NUM_THREADS", "2")
    interp.load()
    assert seen == [1, 2]
