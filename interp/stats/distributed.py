"""torch.distributed helpers: who am I, start a process group with a timeout, reduce
tensors with errors that say what happened, and shard a corpus by document.

Nothing here opens a socket or a process: ``torchrun`` (or ``accelerate launch``) starts
the processes and sets ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR``; ``init_distributed``
joins them with ``torch.distributed.init_process_group``. Without a process group every
helper is the identity, so the same code runs on one process.

A rank that fails (raises, is interrupted, or dies) makes the others fail too, never hang:
``torchrun`` stops the remaining workers when one exits with an error, and every
collective here runs under the process group's timeout (``timeout=`` of
``init_distributed``, default ``DEFAULT_TIMEOUT`` seconds), after which it raises
``DistributedError`` naming the rank and the collective.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from interp.errors import DistributedError

log = logging.getLogger(__name__)

#: Seconds a collective waits for the other ranks before it raises (``init_distributed``).
DEFAULT_TIMEOUT = 600.0
_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def is_distributed(group: Any = None) -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group``; ``(0, 1)`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def init_distributed(backend: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the
    environment (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPUs); default nccl when CUDA is available,
            else gloo. Under nccl each rank uses the GPU ``LOCAL_RANK``.
        timeout: seconds a collective waits for the other ranks before raising.
    Returns:
        True when a process group is (now, or already) initialised; False when the
        environment names no launcher (one process: nothing to do).
    Raises:
        ValueError: a non-positive timeout or an unknown backend.
    """
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a positive number of seconds, e.g. 600")
    if dist.is_available() and dist.is_initialized():
        return True
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return False
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE is set but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend={backend!r} is not supported; use 'gloo' (CPU) or 'nccl' (GPUs)")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    _STATE["timeout"] = float(timeout)
    log.info("rank %d of %d joined (%s, timeout %.0f s)", dist.get_rank(), dist.get_world_size(), backend, timeout)
    return True


_STATE: dict[str, float] = {}


def comm_device(group: Any = None) -> torch.device:
    """Where tensors must be to take part in a collective: the current GPU under nccl, else CPU."""
    if dist.is_initialized() and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _fail(what: str, e: BaseException, group: Any) -> DistributedError:
    rank, world = rank_and_world(group)
    timeout = _STATE.get("timeout")
    limit = f" (timeout {timeout:.0f} s)" if timeout else ""
    return DistributedError(
        f"rank {rank} of {world}: reducing {what} across ranks failed{limit} "
        f"({type(e).__name__}: {' '.join(str(e).split())[:300]}). Usually another rank failed, was "
        "interrupted or is stuck, so no rank can finish: its own error is in its output"
    )


def all_reduce_tensors(tensors: Sequence[Tensor], op: str = "sum", *, group: Any = None,
                       what: str = "a statistic") -> None:
    """Reduce ``tensors`` in place across ranks with one collective per dtype (a no-op on one
    process). ``op``: ``"sum"``, ``"max"`` or ``"min"``.

    Raises:
        DistributedError: a collective failed or timed out (another rank died or hangs).
    """
    if not is_distributed(group) or not tensors:
        return
    dev = comm_device(group)
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    reduce_op = getattr(dist.ReduceOp, _OPS[op])
    for ts in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in ts]).to(dev)
        try:
            dist.all_reduce(flat, op=reduce_op, group=group)
        except Exception as e:  # noqa: BLE001 - backends raise RuntimeError subclasses of their own
            raise _fail(what, e, group) from e
        start = 0
        for t in ts:
            t.copy_(flat[start : start + t.numel()].view_as(t).to(t.device))
            start += t.numel()


def all_gather_tensor(t: Tensor, *, group: Any = None, what: str = "a statistic") -> Tensor:
    """``[world, *t.shape]``: every rank's ``t`` (same shape on every rank), in rank order."""
    if not is_distributed(group):
        return t.unsqueeze(0)
    dev = comm_device(group)
    out = [torch.empty(t.shape, dtype=t.dtype, device=dev) for _ in range(dist.get_world_size(group))]
    try:
        dist.all_gather(out, t.contiguous().to(dev), group=group)
    except Exception as e:  # noqa: BLE001
        raise _fail(what, e, group) from e
    return torch.stack(out).to(t.device)


def all_gather_objects(obj: Any, *, group: Any = None, what: str = "names") -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (small things only: names, not tensors)."""
    if not is_distributed(group):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size(group)
    try:
        dist.all_gather_object(out, obj, group=group)
    except Exception as e:  # noqa: BLE001
        raise _fail(what, e, group) from e
    return out


def shard_budget(max_tokens: int | None, group: Any = None) -> int | None:
    """This rank's share of ``max_tokens`` (the shares sum to it exactly)."""
    if max_tokens is None:
        return None
    rank, world = rank_and_world(group)
    return max_tokens // world + (rank < max_tokens % world)


def shard_documents(data: Any, group: Any = None) -> Iterator[tuple[int, str, str]]:
    """This rank's documents of ``data`` (anything ``interp.data.iter_texts`` takes):
    ``(index, doc_id, text)`` for every document whose corpus index is ``rank`` modulo
    ``world_size``. Every rank walks the document list; only its own are read into memory."""
    from interp.data import iter_texts

    rank, world = rank_and_world(group)
    for i, (doc_id, text) in enumerate(iter_texts(data)):
        if i % world == rank:
            yield i, doc_id, text


def shard_records(
    model: Any, data: Any, *, batch_size: int = 8, n_ctx: int | None = None, group: Any = None,
    group_tokens: int | None = None, layers: Any = None,
) -> Iterator[Any]:
    """Records (``ResidualWrites``) of this rank's documents, in corpus order.

    Documents are taken ``group_tokens`` tokens' worth at a time (about 16 batches) and
    streamed through ``model.stream_writes``; each record's ``meta`` gains ``doc_index``
    (the corpus index of every row's document) and ``row_in_doc`` (the row's ordinal
    within its document), which make every position's reference unique across ranks.
    Unbounded: the caller stops when its budget is spent. ``layers``: as ``stream_writes``.
    """
    from interp.data import row_length

    n = row_length(n_ctx, model.cfg.n_ctx)
    group_chars = 4 * (group_tokens or 16 * batch_size * n)  # ~4 characters per token
    docs: list[tuple[int, str, str]] = []
    rows_seen: dict[int, int] = {}

    def flush() -> Iterator[Any]:
        texts = [t for _, _, t in docs]
        for w in model.stream_writes(texts, batch_size=batch_size, n_ctx=n, progress=False, layers=layers):
            local = [int(d) for d in w.meta["doc_ids"]]
            index = [docs[j][0] for j in local]
            row = []
            for i in index:
                row.append(rows_seen.get(i, 0))
                rows_seen[i] = row[-1] + 1
            w.meta.update(doc_ids=[docs[j][1] for j in local], doc_index=index, row_in_doc=row)
            yield w
        docs.clear()
        rows_seen.clear()

    chars = 0
    for item in shard_documents(data, group):
        docs.append(item)
        chars += len(item[2])
        if chars >= group_chars:
            yield from flush()
            chars = 0
    if docs:
        yield from flush()
