"""Records of residual writes on disk: ``ResidualWrites.save`` / ``ResidualWrites.load``.

A record is a safetensors file of tensors and a JSON sidecar, written atomically (temporary
files, fsync, rename) with a save id and hashes of both files, and checked on load against the
model (or the saved weights): every shape, every sidecar field, and that both parts come from
one save (``interp.record_integrity``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from interp import records
from interp.errors import ModelMismatchError
from interp.record_integrity import RECORD_FORMAT, check_consistent, meta_hash
from interp.writes import WRITE_WEIGHTS, ResidualWrites, WriteWeights


def save_record(w: ResidualWrites, path: str | Path, *, weights: bool = True) -> Path:
    """``ResidualWrites.save``: the record as safetensors plus a JSON sidecar, atomically."""
    from interp._checks import check_bool, check_instance

    weights = check_bool("weights", weights)
    check_instance("path", path, (str, Path), "a str or Path naming the record, e.g. 'rec'")
    if Path(path).expanduser().is_dir():
        raise ValueError(f"path={str(path)!r} is a directory; pass a file name for the record inside it, "
                         f"e.g. {str(Path(path) / 'rec')!r}")
    path, sidecar = record_paths(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"path={str(path)!r}: the directory {str(path.parent)!r} does not exist; create it first "
            f"(Path({str(path.parent)!r}).mkdir(parents=True)) or save somewhere that exists"
        )
    tensors = {"tokens": w.tokens, "mask": w.mask, "embed": w.embed}
    if w.pos_embed is not None:
        tensors["pos_embed"] = w.pos_embed
    if w.final_scale is not None:
        tensors["final_scale"] = w.final_scale
    for ly in w.z:
        tensors[f"z.{ly}"] = w.z[ly]
        tensors[f"acts.{ly}"] = w.acts[ly]
        if w.post_norm:
            tensors[f"attn_scale.{ly}"] = w.attn_scale[ly]
            tensors[f"mlp_scale.{ly}"] = w.mlp_scale[ly]
    for key, t in w.extras.items():
        tensors[f"extras.{key}"] = t
    if weights:
        for name in WRITE_WEIGHTS + ("ln_final_w", "ln_final_b"):
            t = getattr(w.weights, name)
            if t is not None:
                tensors[f"weights.{name}"] = t
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # extras are TransformerLens's values as they are: attention scores hold -inf at masked keys
    records.check_finite(tensors, "this record", [k for k in tensors if not k.startswith("extras.")])
    meta = dict(w.meta, post_norm=w.post_norm,
                str_tokens=w.str_tokens if w.decode_ or w.str_tokens_ else None)
    # Atomic: both files are written beside the targets, fsynced, then renamed over them. The
    # sidecar names the save (save_id, also in the tensors' header) and hashes the tensors
    # file and itw, so a record whose parts come from two saves (an overwrite
    # interrupted between the two renames) or were edited fails at load, never loads mixed.
    save_id = uuid.uuid4().hex
    with records.atomic_path(path) as tmp_t, records.atomic_path(sidecar) as tmp_s:
        save_file(tensors, str(tmp_t), metadata={"interp.save_id": save_id})
        meta["record"] = {"format": RECORD_FORMAT, "save_id": save_id, "tensors_xxh3": records.file_hash(tmp_t),
                          "dtype": str(w.embed.dtype).removeprefix("torch.")}
        meta["record"]["meta_xxh3"] = meta_hash(meta)
        tmp_s.write_text(json.dumps(meta))
    return path



def load_record(cls: type[ResidualWrites], path: str | Path, *, model: Any = None) -> ResidualWrites:
    """``ResidualWrites.load``: read and check a record written by ``save_record``."""
    from interp._checks import check_instance

    check_instance("path", path, (str, Path), "a str or Path of a file written by writes.save()")
    path, sidecar = record_paths(path)
    for part in (path, sidecar):
        if part.exists() and not part.is_file():  # a FIFO or device would block the read
            raise ValueError(f"path={str(part)!r} is not a regular file; pass a record written by writes.save()")
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} does not exist; pass a file written by writes.save()")
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"path={str(path)!r} has no {sidecar.name} beside it; writes.save() writes both files, "
            "keep them together"
        )
    try:
        meta = json.loads(sidecar.read_text())
        t = load_file(str(path))
    except (ValueError, OSError, SafetensorError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(
            f"path={str(path)!r} (or its {sidecar.name}) is not a readable record ({e}); "
            "write it again with writes.save()"
        ) from e
    needed = {"tokens", "mask", "embed"} - set(t)
    if not isinstance(meta, dict) or "model_id" not in meta or needed:
        raise ValueError(
            f"path={str(path)!r} is not a record written by writes.save() (lacks "
            f"{sorted(needed) or 'model_id in ' + sidecar.name}); pass a file that writes.save() wrote"
        )
    _check_meta(path, sidecar, meta)
    str_tokens = meta.pop("str_tokens", None)
    if model is not None:
        if getattr(model, "model_id", None) is None:
            raise TypeError(f"model must be an interp.Model (from interp.load) or None, got {type(model).__name__}")
        if model.model_id != meta["model_id"]:
            raise ModelMismatchError(
                f"model={model.cfg.name!r} is not the model these writes were recorded on "
                f"({meta['model_name']!r}; model ids {model.model_id} and {meta['model_id']}); pass that "
                "model or model=None"
            )
        weights, decode = model.write_weights, model.decode_token
    else:
        if "weights.W_O" not in t:
            raise ValueError(f"{path} was saved with weights=False; pass model=... to load it")
        missing = [f"weights.{n}" for n in WRITE_WEIGHTS if f"weights.{n}" not in t]
        if missing:
            raise ValueError(f"path={str(path)!r} lacks the tensor(s) {', '.join(missing)}; the record is "
                             "truncated: write it again with writes.save(), or pass model=...")
        weights = WriteWeights(**{n: t.get(f"weights.{n}") for n in WRITE_WEIGHTS + ("ln_final_w", "ln_final_b")})
        decode = None
    layers = _check_tensors(path, t, meta, weights)
    if str_tokens is not None and (not isinstance(str_tokens, list) or len(str_tokens) != t["tokens"].shape[0]):
        raise ValueError(f"path={str(path)!r}: {sidecar.name} has str_tokens for {len(str_tokens)} rows but the "
                         f"record has {t['tokens'].shape[0]}; write it again with writes.save()")
    check_consistent(path, sidecar, dict(meta, str_tokens=str_tokens), t)
    meta.pop("record", None)
    post = meta.get("post_norm", False)
    extras = {k[len("extras."):]: v for k, v in t.items() if k.startswith("extras.")}
    for key, v in extras.items():
        if v.dim() < 1 or v.shape[0] != t["tokens"].shape[0]:
            raise ValueError(f"path={str(path)!r}: the extra {key!r} has shape {list(v.shape)}, not [batch = "
                             f"{t['tokens'].shape[0]}, ...]; the record is damaged: write it again with writes.save()")
    return cls(
        extras=extras,
        tokens=t["tokens"], mask=t["mask"], embed=t["embed"], pos_embed=t.get("pos_embed"),
        z={ly: t[f"z.{ly}"] for ly in layers}, acts={ly: t[f"acts.{ly}"] for ly in layers},
        final_scale=t.get("final_scale"), weights=weights, meta=meta,
        str_tokens_=str_tokens, decode_=decode,
        attn_scale={ly: t[f"attn_scale.{ly}"] for ly in layers} if post else None,
        mlp_scale={ly: t[f"mlp_scale.{ly}"] for ly in layers} if post else None,
    )



#: Sidecar fields a record needs, and their types.
META_FIELDS = {"model_id": str, "model_name": str, "processing": str, "n_layers": int, "d_model": int,
               "parallel": bool, "normalization": str, "eps": (int, float)}


def record_paths(path: str | Path) -> tuple[Path, Path]:
    """``(safetensors file, JSON sidecar)`` of the record named ``path``: ``rec.1`` ->
    ``rec.1.safetensors`` and ``rec.1.json``; ``rec.safetensors`` / ``rec.json`` -> ``rec.*``."""
    path = Path(path).expanduser()
    if not path.name or path.name in (".", ".."):
        raise ValueError(f"path={str(path)!r} names a directory, not a record; pass a file name such as 'rec'")
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _check_meta(path: Path, sidecar: Path, meta: dict[str, Any]) -> None:
    for name, kind in META_FIELDS.items():
        if name not in meta:
            raise ValueError(f"path={str(path)!r}: {sidecar.name} lacks the field {name!r}; the record is "
                             "incomplete: write it again with writes.save()")
        v = meta[name]
        if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool or kind is int and v < 1:
            raise ValueError(f"path={str(path)!r}: {sidecar.name} has {name}={v!r}, which is not a valid "
                             f"{getattr(kind, '__name__', 'number')}; write the record again with writes.save()")
    if not isinstance(meta.get("post_norm", False), bool):
        raise ValueError(f"path={str(path)!r}: {sidecar.name} has post_norm={meta['post_norm']!r}, not true or "
                         "false; write the record again with writes.save()")
    for name in ("logit_softcap", "attn_softcap"):
        v = meta.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")):
            raise ValueError(f"path={str(path)!r}: {sidecar.name} has {name}={v!r}, not a positive number or "
                             "null; write the record again with writes.save()")
    if meta["processing"] not in ("compat", "raw"):
        raise ValueError(f"path={str(path)!r}: {sidecar.name} has processing={meta['processing']!r}; expected "
                         "'compat' or 'raw': write the record again with writes.save()")


def _check_tensors(path: Path, t: dict[str, Tensor], meta: dict[str, Any], weights: WriteWeights) -> list[int]:
    """Shapes of every tensor against one another and against the weights; the layers."""
    where = f"path={str(path)!r}"
    fix = "the record is damaged or was edited: write it again with writes.save()"

    def bad(name: str, got: Any, want: Any) -> ValueError:
        return ValueError(f"{where}: {name} has shape {list(got)} but {want}; {fix}")

    tokens, mask = t["tokens"], t["mask"]
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ValueError(f"{where}: tokens is a {tokens.dtype} tensor of shape {list(tokens.shape)}, not int64 "
                         f"[batch, pos]; {fix}")
    B, P = tokens.shape
    if mask.dtype != torch.bool or tuple(mask.shape) != (B, P):
        raise ValueError(f"{where}: mask is a {mask.dtype} tensor of shape {list(mask.shape)}, not bool "
                         f"{[B, P]} like tokens; {fix}")
    n_layers, d_model = meta["n_layers"], meta["d_model"]
    W_O, W_out = weights.W_O, weights.W_out
    if W_O.dim() != 4 or W_out.dim() != 3 or W_O.shape[0] != n_layers or W_out.shape[0] != n_layers:
        raise ValueError(f"{where}: the weights hold W_O {list(W_O.shape)} and W_out {list(W_out.shape)}, not "
                         f"the {n_layers} layers the record's sidecar names; {fix}")
    if W_O.shape[-1] != d_model:
        raise ValueError(f"{where}: the record has d_model={d_model} but the weights' W_O has width "
                         f"{W_O.shape[-1]}; {fix}")
    _, n_heads, d_head, _ = W_O.shape
    d_mlp = W_out.shape[1]
    for name in ("embed", "pos_embed"):
        if name in t and tuple(t[name].shape) != (B, P, d_model):
            raise bad(name, t[name].shape, f"the record is [batch, pos, d_model] = {[B, P, d_model]}")
    if "final_scale" in t and tuple(t["final_scale"].shape) != (B, P, 1):
        raise bad("final_scale", t["final_scale"].shape, f"it must be [batch, pos, 1] = {[B, P, 1]}")
    layers: set[int] = set()
    for key in t:
        kind, _, rest = key.partition(".")
        if kind in ("z", "acts"):
            if not rest.isdigit() or int(rest) >= n_layers:
                raise ValueError(f"{where}: the tensor {key!r} names no layer of a {n_layers}-layer model; {fix}")
            layers.add(int(rest))
    scales = meta.get("post_norm", False)
    for key in t:
        kind, _, rest = key.partition(".")
        if kind in ("attn_scale", "mlp_scale") and (not scales or not rest.isdigit() or int(rest) not in layers):
            raise ValueError(f"{where}: the tensor {key!r} belongs to no recorded post-norm layer; {fix}")
    for ly in sorted(layers):
        expected = [(f"z.{ly}", (B, P, n_heads, d_head)), (f"acts.{ly}", (B, P, d_mlp))]
        if scales:
            expected += [(f"attn_scale.{ly}", (B, P, 1)), (f"mlp_scale.{ly}", (B, P, 1))]
        for key, shape in expected:
            if key not in t:
                other = {"z": "acts", "acts": "z"}.get(key.split(".")[0], "z")
                raise ValueError(f"{where}: layer {ly} has {other}.{ly} but no {key}; {fix}")
            if tuple(t[key].shape) != shape:
                raise bad(key, t[key].shape, f"this model's layer {ly} gives {list(shape)}")
    if not layers:
        raise ValueError(f"{where} holds no layer (no z.* / acts.* tensors); {fix}")
    return sorted(layers)
