"""``quiet_loading``: what ``interp.load`` does around building a model.

- Progress bars and info logs of transformers and TransformerLens are silenced for the call
  (two "Loading weights" bars per load are not the user's business; warnings and errors still
  show), and restored after.
- Torch runs on one CPU thread for the call (``$INTERP_NUM_THREADS`` overrides), restored
  after: the load's own work is two forwards of 8 tokens and TransformerLens's weight
  processing, which copies memory; extra threads only synchronise. Measured on a shared 2-core
  machine under load (a cached ``interp.load("smollm2-135m")``, fresh processes): 37-38 s on two
  threads against 7-12 s on one; the checkpoint's own 8-token forward alone went from 9 s to 0.4 s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

LOGGERS = ("transformers", "transformer_lens", "accelerate")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    threads = torch.get_num_threads()
    env = os.environ.get("INTERP_NUM_THREADS", "").strip()
    want = int(env) if env.isdigit() and int(env) > 0 else 1
    try:
        hf_logging.disable_progress_bar()
        for name in LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
        if want != threads:
            torch.set_num_threads(want)
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def quietly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` inside ``quiet_loading()``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with quiet_loading():
            return fn(*args, **kwargs)

    return wrapper
