"""TransformerLens's processing kept beside a converted checkpoint (``interp.processed_cache``):
a stored result is the one the processing computes, bit for bit; it is used only under its own
key; a damaged file is recomputed, never trusted."""

from __future__ import annotations

import pytest
import torch

import interp
from interp import processed_cache
from interp.testing import random_hf_model, tiny_tokenizer


def _load(directory, family="gemma3"):
    with processed_cache.reuse_processing(directory):
        return interp.load(random_hf_model(family), tokenizer=tiny_tokenizer(300), device="cpu")


def _weights(model):
    return {k: v.detach().clone() for k, v in model.bridge.state_dict().items()}


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_a_stored_processing_is_the_computed_one(tmp_path, monkeypatch, family):
    want = _weights(_load(None, family))
    first = _weights(_load(tmp_path, family))  # computes and stores
    stored = list(tmp_path.glob("processed-*.safetensors"))
    assert len(stored) == 1
    from transformer_lens.weight_processing import ProcessWeights

    def no_processing(*a, **k):
        raise AssertionError("the stored processing was computed again")

    monkeypatch.setattr(ProcessWeights, "process_weights", staticmethod(no_processing))
    again = _load(tmp_path, family)  # reads it back
    got = _weights(again)
    assert got.keys() == want.keys() == first.keys()
    for k in want:
        assert torch.equal(got[k], want[k]) and torch.equal(first[k], want[k]), k
    assert list(tmp_path.glob("processed-*.safetensors")) == stored


def test_the_key_follows_what_the_result_depends_on():
    class Cfg:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    sd = {"embed.weight": torch.zeros(4, 2), "blocks.0.ln1.weight": torch.ones(2)}
    key = processed_cache.cache_key(sd, Cfg(n_layers=1, normalization_type="RMS"), {"fold_ln": True, "adapter": object()})
    # an object option is described by its type, not its address: the same key in every process
    assert key == processed_cache.cache_key(sd, Cfg(n_layers=1, normalization_type="RMS"),
                                            {"fold_ln": True, "adapter": object()})
    changed = [
        ({**sd, "embed.weight": torch.zeros(5, 2)}, Cfg(n_layers=1, normalization_type="RMS"), {"fold_ln": True}),
        ({**sd, "embed.weight": torch.zeros(4, 2, dtype=torch.float64)}, Cfg(n_layers=1, normalization_type="RMS"),
         {"fold_ln": True}),
        (sd, Cfg(n_layers=1, normalization_type="LN"), {"fold_ln": True}),
        (sd, Cfg(n_layers=1, normalization_type="RMS"), {"fold_ln": False}),
    ]
    assert len({key} | {processed_cache.cache_key(*c) for c in changed}) == 5
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # a reduction may round differently on more threads
        assert processed_cache.cache_key(sd, Cfg(n_layers=1, normalization_type="RMS"), {"fold_ln": True,
                                                                                         "adapter": object()}) != key
    finally:
        torch.set_num_threads(threads)


def test_a_damaged_or_mislabelled_file_is_recomputed(tmp_path):
    want = _weights(_load(None))
    _load(tmp_path)
    (path,) = tmp_path.glob("processed-*.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    got = _weights(_load(tmp_path))
    assert all(torch.equal(got[k], want[k]) for k in want)
    _load(tmp_path, "gpt2")  # replaces the entry with another model's processing
    (other,) = tmp_path.glob("processed-*.safetensors")
    other.rename(path)  # under this model's name, but recorded under the other's key: never read
    got = _weights(_load(tmp_path))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_an_unwritable_directory_only_costs_the_saving(tmp_path):
    missing = tmp_path / "absent"  # the write fails: the load still succeeds
    model = _load(missing)
    assert model.cfg.n_layers == 2 and not missing.exists()


def test_another_threads_processing_is_neither_read_nor_stored(tmp_path, monkeypatch):
    import threading

    from transformer_lens.weight_processing import ProcessWeights

    monkeypatch.setattr(ProcessWeights, "process_weights", staticmethod(lambda sd, cfg, **kw: dict(sd)))
    seen = []
    with processed_cache.reuse_processing(tmp_path):
        def other():  # a model processed on another thread while the block is open
            seen.append(ProcessWeights.process_weights({"w": torch.ones(2)}, object()))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen and not list(tmp_path.iterdir())
        ProcessWeights.process_weights({"w": torch.ones(2)}, object())  # the block's own thread: stored
        assert len(list(tmp_path.glob("processed-*.safetensors"))) == 1
