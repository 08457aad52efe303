"""The library chooses its CPU threads (``interp/_threads.py``): every public analysis that
takes the model runs under the policy and gives the caller's setting back, also when it raises."""

from __future__ import annotations

import inspect

import pytest
import torch

import interp
from interp._threads import SMALL_MODEL, choose_threads


def _wrapped(fn) -> bool:
    return getattr(fn, "chooses_threads", False) is True


def test_every_analysis_that_takes_the_model_is_under_the_policy():
    skip = {"load", "export", "ablate", "repeated_tokens"}  # they build, write, or edit the caller's own forwards; repeated_tokens only draws token ids
    unwrapped = []
    for name in interp.__all__:
        fn = getattr(interp, name)
        if not inspect.isfunction(fn) or name in skip:
            continue
        params = list(inspect.signature(fn).parameters)
        if params and params[0] == "model" and not _wrapped(fn):
            unwrapped.append(name)
    assert not unwrapped, f"analyses that do not choose their threads: {unwrapped}"


def test_policy(default_model, monkeypatch):
    assert default_model.n_params < SMALL_MODEL
    before = torch.get_num_threads()
    monkeypatch.delenv("INTERP_NUM_THREADS", raising=False)
    assert choose_threads(default_model) == 1
    big = type("Big", (), {"n_params": 2 * SMALL_MODEL, "device": torch.device("cpu")})()
    assert choose_threads(big) == before
    monkeypatch.setenv("INTERP_NUM_THREADS", "3")
    assert choose_threads(default_model) == 3
    monkeypatch.setenv("INTERP_NUM_THREADS", "two")
    with pytest.raises(ValueError, match=r"\$INTERP_NUM_THREADS='two' must be a positive int"):
        choose_threads(default_model)


def test_an_analysis_runs_on_one_thread_and_restores_the_callers(default_model, monkeypatch):
    from interp._threads import with_analysis_threads

    monkeypatch.delenv("INTERP_NUM_THREADS", raising=False)
    seen = []

    @with_analysis_threads
    def analysis(model, fail=False):
        seen.append(torch.get_num_threads())
        if fail:
            raise ValueError("bad")
        return interp.find_deleting_neurons(model)  # nested: the inner call keeps the policy

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        df = analysis(default_model)
        assert seen == [1] and torch.get_num_threads() == 2 and len(df)
        with pytest.raises(ValueError, match="bad"):
            analysis(default_model, fail=True)
        assert seen == [1, 1] and torch.get_num_threads() == 2  # given back after an error too
        interp.find_deleting_neurons(default_model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
