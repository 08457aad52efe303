"""The interface every mergeable statistic follows, and the additive one (``Sums``).

A statistic is a small state that

- ``update(...)``: takes one batch of samples, in memory bounded by the batch;
- ``merge(other)``: absorbs another statistic of its kind, exactly: merging the statistics
  of k shards gives the statistic of their union;
- ``all_reduce(group=None)``: merges the statistics of every rank of a ``torch.distributed``
  process group (a no-op without one), so that every rank holds the same result.

All three return ``self``. States live on the device of the samples and are reduced there
(nccl needs CUDA tensors, gloo CPU ones; ``interp.stats.distributed`` moves them).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor


class Statistic(abc.ABC):
    """Base class: ``update`` / ``merge`` / ``all_reduce``, each returning ``self``; a subclass
    that lacks one cannot be instantiated."""

    @abc.abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> Statistic: ...

    @abc.abstractmethod
    def merge(self, other: Statistic) -> Statistic: ...

    @abc.abstractmethod
    def all_reduce(self, group: Any = None) -> Statistic: ...

    def _check_other(self, other: Any, **same: Any) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for name, value in same.items():
            theirs = getattr(other, name)
            equal = torch.equal(value, theirs) if isinstance(value, Tensor) else value == theirs
            if not equal:
                raise ValueError(f"cannot merge {type(self).__name__}s with different {name}: "
                                 f"{_short(value)} and {_short(theirs)}; build both with the same {name}")

    def __deepcopy__(self, memo: dict) -> Statistic:
        # pandas deep-copies DataFrame.attrs on every operation; a statistic stored there is
        # shared rather than copied (states are replaced, never edited, once reported).
        return self


def _short(v: Any) -> str:
    return f"shape {tuple(v.shape)}" if isinstance(v, Tensor) else repr(v)


class Sums(Statistic):
    """Named float64 sums that add: ``merge`` is ``+``, ``all_reduce`` is one SUM.

    ``Sums(n=(), fire=(k,))`` holds a scalar ``n`` and a ``[k]`` vector ``fire``; read and
    write them as attributes (``s.fire += x``). Counts are exact up to 2**53.
    """

    def __init__(self, device: Any = None, **shapes: tuple[int, ...]):
        tensors = {k: torch.zeros(s, dtype=torch.float64, device=device) for k, s in shapes.items()}
        object.__setattr__(self, "tensors", tensors)

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self.__dict__["tensors"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.tensors:
            self.tensors[name] = torch.as_tensor(value, dtype=torch.float64).to(self.tensors[name].device)
        else:
            object.__setattr__(self, name, value)

    def update(self, **values: Any) -> Sums:
        for k, v in values.items():
            self.tensors[k] += torch.as_tensor(v).to(self.tensors[k].device, torch.float64)
        return self

    def merge(self, other: Sums) -> Sums:
        self._check_other(other, names=sorted(self.tensors))
        for k, t in self.tensors.items():
            if t.shape != other.tensors[k].shape:
                raise ValueError(f"cannot merge Sums: {k} has shape {tuple(t.shape)} and "
                                 f"{tuple(other.tensors[k].shape)}")
            t += other.tensors[k].to(t.device)
        return self

    @property
    def names(self) -> list[str]:
        return sorted(self.tensors)

    def all_reduce(self, group: Any = None) -> Sums:
        from interp.stats.distributed import all_reduce_tensors

        all_reduce_tensors(list(self.tensors.values()), "sum", group=group, what="Sums")
        return self

    def __repr__(self) -> str:
        return "Sums(" + ", ".join(f"{k}={tuple(t.shape)}" for k, t in self.tensors.items()) + ")"
