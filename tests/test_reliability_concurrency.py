"""Threads sharing one Model: each call gets its own record, equal to the single-threaded one.

Hooks and the fast capture's buffers are state on the shared model, so two forwards must not
interleave; ``Model`` serialises them (a re-entrant lock around every forward with hooks and
around ``run_with_writes``). Without the lock, 8 threads gave records holding another call's
writes (equal shapes) or crashed (unequal shapes).
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

import interp
from interp.testing import random_model

# Mixed lengths: some calls share a shape (a wrong record would go unnoticed by shape), some not.
TEXTS = [
    "def f(x):\n    return x\n",
    "a = 1",
    "for i in range(10):\n    print(i)\n",
    "b = 2",
    ["x = [i for i in range(3)]", "y = 4"],
    "import os\nimport sys\n",
]


def _same(w: interp.ResidualWrites, ref: interp.ResidualWrites) -> bool:
    return (torch.equal(w.tokens, ref.tokens) and torch.equal(w.embed, ref.embed)
            and all(torch.equal(w.z[ly], ref.z[ly]) and torch.equal(w.acts[ly], ref.acts[ly]) for ly in ref.z)
            and torch.equal(w.final_scale, ref.final_scale))


def _hammer(model: interp.Model, refs: dict, n_threads: int = 8, n_calls: int = 10) -> tuple[int, list[str]]:
    wrong, errors = [], []
    start = threading.Barrier(n_threads)

    def work(k: int) -> None:
        start.wait()
        for j in range(n_calls):
            i = (k + j) % len(TEXTS)
            try:
                w = model.run_with_writes(TEXTS[i])
                if not _same(w, refs[i]):
                    wrong.append((k, j))
                logits = model.logits(TEXTS[i] if isinstance(TEXTS[i], str) else TEXTS[i][0])
                if not torch.equal(logits, refs[("logits", i)]):
                    wrong.append((k, j, "logits"))
            except Exception as e:  # collected: a crash in any thread fails the test
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    return len(wrong), errors


def _refs(model: interp.Model) -> dict:
    refs: dict = {i: model.run_with_writes(t) for i, t in enumerate(TEXTS)}
    for i, t in enumerate(TEXTS):
        refs[("logits", i)] = model.logits(t if isinstance(t, str) else t[0])
    return refs


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_threads_sharing_a_model_each_get_their_own_record(family):
    model = random_model(family, seed=4)
    refs = _refs(model)  # single-threaded: the truth (the first call also calibrates the fast path)
    wrong, errors = _hammer(model, refs)
    assert not errors, errors[:3]
    assert wrong == 0, f"{wrong} of 80 records held another call's writes"


def test_the_check_can_fail_without_the_lock():
    """The same hammer on a model whose lock is disabled finds wrong records or crashes, so the
    test above is not vacuous."""
    model = random_model("llama", seed=4)
    refs = _refs(model)
    model._lock = contextlib.nullcontext()
    bad = 0
    for _ in range(3):  # a race: usually the first round shows it
        wrong, errors = _hammer(model, refs)
        bad += wrong + len(errors)
        if bad:
            break
    assert bad > 0


def test_hooks_of_one_thread_do_not_leak_into_another():
    """A thread inside ``model.hooks`` (or ``interp.ablate``) holds the model: another thread's
    forward waits and computes the unhooked logits."""
    model = random_model("gpt2", seed=5)
    clean = model.logits("x = 1")
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def other() -> None:
        inside.wait()
        seen["logits"] = model.logits("x = 1")
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with model.hooks([("blocks.0.hook_resid_pre", lambda x, hook: x * 0)]):
        inside.set()
        assert not done.wait(0.5), "another thread ran a forward while this one's hooks were active"
        hooked = model.logits("x = 1")
    t.join(timeout=60)
    assert not torch.allclose(hooked, clean)
    torch.testing.assert_close(seen["logits"], clean, rtol=0, atol=0)


@pytest.mark.slow
def test_threads_sharing_smollm2_each_get_their_own_record(smollm2):
    texts = ["def f(x):\n    return x\n", "a = 1", ["b = 2", "import os"]]
    refs = [smollm2.run_with_writes(t) for t in texts]
    wrong, errors = [], []

    def work(k: int) -> None:
        for j in range(2):
            i = (k + j) % len(texts)
            try:
                if not _same(smollm2.run_with_writes(texts[i]), refs[i]):
                    wrong.append((k, j))
            except Exception as e:  # collected: a crash in any thread fails the test
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not wrong, (errors[:2], wrong)


def test_a_copied_model_has_its_own_lock_and_gives_the_same_records():
    import copy

    model = random_model("gpt2", seed=6)
    w = model.run_with_writes(TEXTS[0])
    twin = copy.deepcopy(model)
    assert twin._lock is not model._lock and twin.model_id == model.model_id
    assert _same(twin.run_with_writes(TEXTS[0]), w)
