"""Records on disk and inside frames: atomic saves, content hashes, plain-data payloads.

A record is tensors plus a JSON-able ``meta`` dict, serialized as one safetensors blob (the
meta travels in the header's metadata, so nothing is pickled). It lives in one of two places:

- a file (``save_record`` / ``load_record``): written to a temporary file beside the target,
  fsynced, then renamed over it, so a reader sees the whole old file or the whole new one,
  never a mix, even when the write is interrupted;
- a DataFrame's ``attrs`` (``to_attr`` / ``from_attr``): the same blob as a base64 string, a
  plain value that survives ``to_pickle`` and ``to_parquet`` (which stores attrs as JSON) and
  keeps no model alive. ``neuron_stats`` keeps its top examples this way, ``probe_layers`` its
  fitted probe.

Every load checks the blob's kind, its tensors' dtypes where the caller names them, and that
float tensors hold no NaN or inf where the caller asks.

Example:
    >>> s = to_attr("demo", {"x": torch.ones(2)}, {"n": 2})
    >>> from_attr(s, "demo")[1]
    {'n': 2}
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import xxhash
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

PREFIX = "interp-record:"


def encode(kind: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> bytes:
    """One safetensors blob: ``tensors`` (contiguous, on the CPU) and ``meta`` as JSON."""
    header = {"interp.kind": kind, "interp.meta": json.dumps(meta)}
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=header)


def decode(blob: bytes, kind: str, where: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and meta of a blob written by ``encode(kind, ...)``.

    Raises:
        ValueError: not a safetensors blob, another kind of record, or unreadable meta.
    """
    try:
        tensors = load(blob)
        header = _header(blob)
        meta = json.loads(header.get("interp.meta", "null"))
    except (ValueError, SafetensorError, OSError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{where} is not a readable interp record ({e}); write it again") from e
    if header.get("interp.kind") != kind or not isinstance(meta, dict):
        raise ValueError(f"{where} holds a {header.get('interp.kind') or 'foreign'!r} record, not a {kind!r} record; "
                         f"pass what {kind}.save() (or the analysis that makes it) wrote")
    return tensors, meta


def _header(blob: bytes) -> dict[str, str]:
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or n > len(blob) - 8:
        raise ValueError("the header length is out of range")
    return json.loads(blob[8 : 8 + n]).get("__metadata__") or {}


#: Above this many characters a record in ``attrs`` would make the frame's parquet file
#: unreadable with pyarrow's default metadata limit (pandas and Arrow each keep a copy of the
#: attrs in the footer, Arrow's base64-encoded, under a 100 MB thrift limit): measured, 30 MiB
#: of attrs read back, 40 MiB did not.
PARQUET_ATTRS_CHARS = 24 << 20


def to_attr(kind: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """The record as a plain string for a DataFrame's ``attrs`` (zlib-compressed, base64)."""
    blob = zlib.compress(encode(kind, tensors, meta), 6)
    return PREFIX + kind + ":" + base64.b64encode(blob).decode("ascii")


def from_attr(value: Any, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of ``to_attr``. Raises ``ValueError`` for anything else."""
    head = PREFIX + kind + ":"
    if not isinstance(value, str) or not value.startswith(head):
        raise ValueError(f"expected a {kind} record (a string starting {head!r}), got {type(value).__name__}")
    try:
        blob = zlib.decompress(base64.b64decode(value[len(head):].encode("ascii"), validate=True))
    except (ValueError, UnicodeEncodeError, zlib.error) as e:
        raise ValueError(f"the {kind} record in attrs is damaged ({e}); run the analysis again") from e
    return decode(blob, kind, f"the {kind} record in attrs")


def check_finite(tensors: dict[str, Tensor], where: str, names: Any = None) -> None:
    """Raise ``ValueError`` naming the first float tensor (of ``names``, default all) with NaN/inf."""
    for name in names if names is not None else tensors:
        t = tensors.get(name)
        if t is not None and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: the tensor {name!r} holds NaN or inf, which no interp record does; the "
                             "file was damaged or edited: write it again")


def file_hash(path: str | Path) -> str:
    """XXH3-128 of a file's bytes, read in 16 MiB pieces (hex)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path in ``path``'s directory; on a clean exit its file is fsynced and renamed
    onto ``path`` (atomic on POSIX and Windows), on an error (or Ctrl-C) it is removed and
    ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    with open(tmp, "xb"):  # created with the process's umask, like the file it replaces
        pass
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_target(path: Any, suffix: str, what: str) -> Path:
    """``path`` as a record file ending in ``suffix``, in a directory that exists.

    Raises:
        TypeError: not a str or Path. ValueError: a directory.
        FileNotFoundError: its directory does not exist.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path of type {type(path).__name__} is not supported; pass a str or Path for the {what}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"path={str(path)!r} is a directory; pass a file name inside it, e.g. "
                         f"{str(path / ('rec' + suffix))!r}")
    if path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path={str(path)!r}: the directory {str(path.parent)!r} does not exist; create it "
                                "first or save somewhere that exists")
    return path


def check_writable(path: Any, what: str) -> Path:
    """``path`` as a file that can be written now: not a directory or other non-file, in a
    directory that exists and is writable. For outputs checked before a long computation.

    Raises:
        ValueError: a directory or other non-regular file. FileNotFoundError: no such directory.
        PermissionError: the directory or the file is not writable.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; pass a file path inside it, e.g. "
                         f"{str(p / ('out' + (p.suffix or '.csv')))!r}")
    if p.exists() and not p.is_file():
        raise ValueError(f"{what} {str(path)!r} exists and is not a regular file; pass another path")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r}: the directory {str(p.parent)!r} does not exist; create it "
                                f"first (mkdir -p {str(p.parent)!r}) or write somewhere that exists")
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise PermissionError(f"{what} {str(path)!r}: {'the file' if p.exists() else 'its directory'} is not "
                              "writable; pass a path you can write")
    return p


def save_record(path: Any, kind: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write one record file atomically (see ``atomic_path``); returns its path (``.safetensors``)."""
    path = check_target(path, ".safetensors", f"{kind} record")
    blob = encode(kind, tensors, meta)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path


def load_record(path: Any, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by ``save_record(path, kind, ...)``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a regular file, or not that record.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path of type {type(path).__name__} is not supported; pass a str or Path")
    path = Path(path).expanduser()
    if path.suffix != ".safetensors" and not path.exists():
        path = path.with_name(path.name + ".safetensors")
    if not path.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist; pass a file that {kind}.save() wrote")
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} is not a regular file; pass a file that {kind}.save() wrote")
    return decode(path.read_bytes(), kind, f"path={str(path)!r}")
