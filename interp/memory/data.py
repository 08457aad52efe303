"""Where memory analyses read their tokens: records, texts, token batches or a corpus, each
checked to come from the model and to hold every layer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from interp.errors import ModelMismatchError
from interp.tokens import Tokens
from interp.writes import ResidualWrites

#: The default data of the memory finders: held-out stdlib text.
DEFAULT_DATA = "stdlib:val"


def records(model: Any, data: Any, *, max_tokens: int | None, n_ctx: int | None, batch_size: int,
            progress: bool, what: str) -> Iterator[ResidualWrites]:
    """``ResidualWrites`` of ``model`` from ``data``: a record or a list of them, a LongTensor /
    ``Tokens`` batch, a list of texts, or a corpus for ``model.stream_writes`` (None: the
    default data). Each is checked to be this model's and to hold every layer."""
    from interp.memory.evidence import _batches

    if data is None:
        data = DEFAULT_DATA
    if isinstance(data, (Tokens, torch.Tensor)):
        src: Iterable[Any] = [model.run_with_writes(data)]
    else:
        src = _batches(model, data, dict(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens,
                                         progress=progress))
    c = model.cfg
    for w in src:
        if not isinstance(w, ResidualWrites):
            raise TypeError(f"data yielded a {type(w).__name__}; pass ResidualWrites, texts, tokens or a corpus")
        if w.model_id != model.model_id:
            raise ModelMismatchError(f"data holds writes recorded on {w.meta['model_name']!r}, not on model="
                                     f"{c.name!r}; record them with this model's run_with_writes")
        if w.layers != list(range(c.n_layers)):
            raise ValueError(f"data records layers {w.layers}; {what} needs all {c.n_layers}: run "
                             "run_with_writes with layers=None")
        yield w


def require_compat(model: Any, what: str) -> None:
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    if model.cfg.processing != "compat":
        raise ValueError(f"model has processing={model.cfg.processing!r}; {what} reads the folded weights and "
                         "the recorded stream in the compat convention: reload with "
                         "interp.load(..., processing='compat')")


def describe(data: Any, max_tokens: int | None) -> str:
    """How the data is named in ``attrs``."""
    if data is None or isinstance(data, str):
        name = DEFAULT_DATA if data is None else data
        return name + (f", up to {max_tokens:,} tokens" if max_tokens else "")
    return "given"
