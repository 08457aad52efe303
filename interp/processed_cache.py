"""TransformerLens's compatibility processing of a converted checkpoint, computed once and kept
beside it.

``enable_compatibility_mode`` folds the norms and centres the writing weights and the
unembedding through ``ProcessWeights.process_weights``, a pure function of the checkpoint's
state dict and the processing options. On a 262k vocabulary it is seconds of copying:
TransformerLens clones the whole state dict at each step, 670 MB for each of Gemma 3's
embedding and unembedding (3.1 s of a 10 s load). For a checkpoint interp converted itself (a
GGUF cache entry, which never changes under its SHA-256), the function's output is stored in the
entry as ``processed-<key>.safetensors`` on the first load and read back on later loads.

The key covers everything the output depends on: the input state dict's names, shapes and
dtypes, the options, the TransformerLens, transformers and torch versions, the CPU's ATen and
MKL code paths and the thread count (which can change a reduction's rounding). Any change gives
a new key, so the stored result is always what this machine would compute. The rest of the
processing (distributing the weights, adapter hooks, the hook registry) runs unchanged, and
``interp.load`` still checks the model's logits against the checkpoint's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PREFIX = "processed-"
_LOCK = threading.Lock()


def _described(value: Any) -> str:
    """A value as the key sees it: plain values by ``repr``, anything else by its type (an
    object's ``repr`` holds its address, which differs in every process)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_described, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_described(v)}" for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, torch.dtype):
        return str(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def cache_key(state_dict: dict[str, Any], cfg: Any, options: dict[str, Any]) -> str:
    """A hex digest of what ``ProcessWeights.process_weights``'s output depends on besides the
    values themselves (which the caller's directory fixes)."""
    versions = {pkg: importlib.metadata.version(pkg) for pkg in ("transformer-lens", "transformers", "torch")}
    described = {
        "inputs": [[k, list(v.shape), str(v.dtype)] if isinstance(v, torch.Tensor) else [k, _described(v)]
                   for k, v in sorted(state_dict.items())],
        "config": _described(dict(getattr(cfg, "__dict__", {}))),
        "options": {k: _described(v) for k, v in sorted(options.items())},
        "versions": versions,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "threads": torch.get_num_threads(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def _read(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The stored output, or None when absent, unreadable or written under another key."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("interp_key") != key:
                raise ValueError("its recorded key differs from its name")
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:  # a damaged file is recomputed, never trusted
        log.warning("ignoring the unreadable processed weights %s (%s); recomputing them", path.name, e)
        return None


def _write(path: Path, state_dict: dict[str, Any], key: str) -> None:
    """Atomically (``interp.records.atomic_path``): a reader sees the whole file or none.
    Tensors that share memory are stored as copies (safetensors keeps one name per buffer); a
    state dict holding anything but tensors is not stored."""
    from safetensors.torch import save_file

    from interp.records import atomic_path

    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        return
    seen: set[int] = set()
    out = {}
    for k, v in state_dict.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.detach().clone() if ptr in seen else v.detach().contiguous()
        seen.add(ptr)
    try:
        with atomic_path(path) as tmp:
            save_file(out, str(tmp), metadata={"format": "pt", "interp_key": key})
    except OSError as e:  # a read-only or full cache only costs the next load the processing
        log.warning("could not keep the processed weights in %s (%s)", path.parent, e)


@contextlib.contextmanager
def reuse_processing(directory: Path | None) -> Iterator[None]:
    """Within the block, ``ProcessWeights.process_weights`` reads its output from ``directory``
    when stored there under the inputs' key, and stores it there otherwise. ``None``: no effect.
    One block at a time per process (a lock), and only the calling thread's processing is read
    or stored; stale entries of the same directory are removed."""
    if directory is None:
        yield
        return
    from transformer_lens.weight_processing import ProcessWeights

    original = ProcessWeights.__dict__["process_weights"]
    compute = original.__func__ if isinstance(original, staticmethod) else original

    owner = threading.get_ident()

    def process_weights(state_dict: dict[str, Any], cfg: Any, **options: Any) -> dict[str, Any]:
        if threading.get_ident() != owner:  # another thread's model: computed, never stored here
            return compute(state_dict, cfg, **options)
        key = cache_key(state_dict, cfg, options)
        path = Path(directory) / f"{PREFIX}{key}.safetensors"
        stored = _read(path, key)
        if stored is not None:
            return stored
        result = compute(state_dict, cfg, **options)
        for old in Path(directory).glob(f"{PREFIX}*.safetensors"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
        _write(path, result, key)
        return result

    with _LOCK:
        ProcessWeights.process_weights = staticmethod(process_weights)
        try:
            yield
        finally:
            ProcessWeights.process_weights = original
