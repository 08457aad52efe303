"""The parts of a saved ``ResidualWrites`` agree: one save, unchanged files, one dtype,
finite tensors, token ids in the vocabulary (``ResidualWrites.save`` writes what is checked).

The sidecar's ``record`` field holds the save id (also in the tensors file's safetensors
header), the XXH3-128 of the tensors file and of the sidecar's own canonical JSON, and the
float dtype. A record whose two files come from two saves (an overwrite interrupted between
its two atomic renames, or files copied from two records) or that was edited fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import xxhash
from safetensors import safe_open
from torch import Tensor

from interp import records

#: The sidecar's ``record`` field (save id, hashes, dtype); records saved before it load unchecked.
RECORD_FORMAT = 2


def meta_hash(meta: dict[str, Any]) -> str:
    """XXH3-128 of the sidecar's canonical JSON, its own hash left out."""
    rec = dict(meta.get("record") or {})
    rec.pop("meta_xxh3", None)
    return xxhash.xxh3_128(json.dumps(dict(meta, record=rec), sort_keys=True).encode()).hexdigest()


def check_consistent(path: Path, sidecar: Path, meta: dict[str, Any], t: dict[str, Tensor]) -> None:
    """The record's parts agree: one save (the tensors' save id is the sidecar's), neither file
    changed since (their hashes), one float dtype, finite tensors, token ids in the vocabulary."""
    where = f"path={str(path)!r}"
    fix = "write it again with writes.save()"
    rec = meta.get("record")
    with safe_open(str(path), "pt") as f:
        file_id = (f.metadata() or {}).get("interp.save_id")
    if rec is not None or file_id is not None:
        if not isinstance(rec, dict) or rec.get("save_id") != file_id:
            raise ValueError(f"{where}: {path.name} and {sidecar.name} come from two different saves (an overwrite "
                             f"interrupted between its two files, or files copied from two records), so the record "
                             f"would mix two records; {fix}")
        if rec.get("meta_xxh3") != meta_hash(meta):
            raise ValueError(f"{where}: {sidecar.name} was changed after it was saved (its hash does not match); "
                             f"the record is damaged or was edited: {fix}")
        if rec.get("tensors_xxh3") != records.file_hash(path):
            raise ValueError(f"{where}: {path.name} was changed after it was saved (its hash does not match "
                             f"{sidecar.name}'s); the record is damaged or was edited: {fix}")
    floats = {k: v.dtype for k, v in t.items() if not k.startswith("weights.") and k not in ("tokens", "mask")}
    if len(set(floats.values())) > 1 or any(not v.is_floating_point for v in floats.values()):
        raise ValueError(f"{where}: the record's tensors have dtypes {sorted({str(v) for v in floats.values()})}; a "
                         f"record is stored in one float dtype: the file was damaged or edited: {fix}")
    want = rec.get("dtype") if isinstance(rec, dict) else None
    if want is not None and str(t["embed"].dtype).removeprefix("torch.") != want:
        raise ValueError(f"{where}: the tensors are {t['embed'].dtype} but {sidecar.name} says {want}; {fix}")
    records.check_finite(t, where, [k for k in t if not k.startswith("extras.")])  # attention scores: -inf when masked
    d_vocab = t["weights.W_U"].shape[-1] if "weights.W_U" in t else None
    tokens = t["tokens"][t["mask"]]
    if tokens.numel() and (int(tokens.min()) < 0 or d_vocab is not None and int(tokens.max()) >= d_vocab):
        raise ValueError(f"{where}: tokens holds ids outside the vocabulary 0..{(d_vocab or 1) - 1}; the record was "
                         f"damaged or edited: {fix}")
    str_tokens = meta.get("str_tokens")
    if str_tokens is not None:
        width = t["tokens"].shape[1]
        bad = [i for i, row in enumerate(str_tokens) if not isinstance(row, list) or len(row) != width]
        if bad:
            raise ValueError(f"{where}: {sidecar.name}'s str_tokens row {bad[0]} does not have the record's {width} "
                             f"positions; the record was damaged or edited: {fix}")
