"""How many CPU threads interp's heavy analyses use, chosen by the library.

torch's default (one intra-op thread per core) loses on small models: their matmuls are too
small to split, and the threads' synchronisation dominates, several times over on a busy
machine (``probe_layers`` on the embedded model: 13 s on one thread, 45-48 s on two). Models
of ``SMALL_MODEL`` parameters or more have matmuls large enough to share.

Policy (``choose_threads``): ``$INTERP_NUM_THREADS`` when set (a positive int, at most
``MAX_THREADS_PER_CPU`` per CPU: an absurd number is refused, not passed to torch); else one thread for a model
under ``SMALL_MODEL`` parameters on CPU; else the caller's current ``torch.get_num_threads()``.
``analysis_threads`` applies it for the length of a call and restores the caller's setting
in ``finally``; ``with_analysis_threads`` does so for a function whose first argument is the
model. Models on an accelerator keep the caller's setting (their CPU work is small).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

#: Models with fewer parameters run their analyses on one CPU thread.
SMALL_MODEL = 20_000_000
ENV = "INTERP_NUM_THREADS"

F = TypeVar("F", bound=Callable[..., Any])


#: At most this many threads per CPU the process may run on: more only adds switching, and
#: a number in the millions makes torch's thread pool crash the process.
MAX_THREADS_PER_CPU = 4


def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def env_threads() -> int | None:
    """``$INTERP_NUM_THREADS`` as a checked int, or None when unset or empty.

    Raises:
        ValueError: not a positive int, or more than ``MAX_THREADS_PER_CPU`` per CPU.
    """
    env = os.environ.get(ENV, "").strip()
    if not env:
        return None
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"${ENV}={env!r} must be a positive int (threads for interp's analyses)") from None
    if n < 1:
        raise ValueError(f"${ENV}={env!r} must be a positive int (threads for interp's analyses)")
    return check_thread_count(f"${ENV}={env!r}", n, "(or unset it: interp then chooses)")


def check_thread_count(what: str, n: int, alternative: str = "") -> int:
    """``n`` threads, refused (``ValueError`` naming ``what``) above ``MAX_THREADS_PER_CPU`` per
    CPU: torch's thread pool crashes the process on a number in the millions."""
    cpus = cpu_count()
    if n > MAX_THREADS_PER_CPU * cpus:
        raise ValueError(f"{what} asks for more threads than this machine can use: it has {cpus} CPU(s), "
                         f"and interp allows at most {MAX_THREADS_PER_CPU * cpus}; set it to {cpus} or fewer "
                         f"{alternative}".rstrip())
    return n


def choose_threads(model: Any) -> int:
    """Threads for an analysis of ``model`` (see the module docstring)."""
    n = env_threads()
    if n is not None:
        return n
    current = torch.get_num_threads()
    device = getattr(model, "device", None)
    if device is not None and torch.device(device).type != "cpu":
        return current
    n_params = getattr(model, "n_params", None)
    if isinstance(n_params, int) and n_params < SMALL_MODEL:
        return 1
    return current


@contextlib.contextmanager
def analysis_threads(model: Any) -> Iterator[int]:
    """Use ``choose_threads(model)`` threads inside the block; the caller's setting after."""
    old = torch.get_num_threads()
    n = choose_threads(model)
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def with_analysis_threads(fn: F) -> F:
    """Run ``fn(model, ...)`` under ``analysis_threads(model)``."""

    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        with analysis_threads(model):
            return fn(model, *args, **kwargs)

    wrapper.chooses_threads = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
