"""Shared machinery for the stream analyses (``decomposition``, ``readout``).

The stream at a position is a sum of writes. Here each layer's writes come as a
``Group``: either dense vectors ``[rows, n, d_model]`` (embeddings, heads, sublayer
outputs, biases) or a rank-one family ``coef[rows, n] * vecs[n, d_model]`` (neurons:
activation times ``W_out`` row). Analyses reduce a group to ``[rows, n]`` numbers (a
norm, a projection, a dot product with a per-row direction) without ever building a
neuron's write, so nothing of shape ``[pos, d_mlp, d_model]`` is materialised.

Rows are the selected (batch, position) pairs; frames are assembled from
``[rows, components]`` value matrices with categorical labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_choice, check_direction, check_index, check_int
from interp._linalg import svd
from interp.errors import ModelMismatchError
from interp.writes import ResidualWrites

BY = ("layer", "head", "neuron", "component")
KINDS = (
    "embed", "pos_embed", "attn", "head", "attn_bias", "mlp", "neuron", "mlp_bias", "unembed_bias",
)


# ---- validation -------------------------------------------------------------------------
def check_writes(writes: Any, model: Any) -> ResidualWrites:
    """``writes`` must be a ResidualWrites; ``model``, when given, the one that recorded it."""
    if not isinstance(writes, ResidualWrites):
        raise TypeError(
            f"writes must be a ResidualWrites, got {type(writes).__name__}; "
            "record one with model.run_with_writes(text)"
        )
    if model is not None:
        model_id = getattr(model, "model_id", None)
        if model_id is None:
            raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
        if model_id != writes.model_id:
            raise ModelMismatchError(
                f"model={model.cfg.name!r} (id {model_id}) is not the model these writes were "
                f"recorded on ({writes.meta['model_name']!r}, id {writes.model_id}); pass the model "
                "the writes came from, or model=None"
            )
    return writes


def stream_layer(writes: ResidualWrites, layer: int | None) -> int:
    """The stream ``resid_pre[layer]`` to take apart; ``None`` or ``n_layers``: the final one.
    Checks every earlier layer was recorded."""
    n = writes.n_layers
    stop = n if layer is None or (type(layer) is int and layer == n) else check_index("layer", layer, n, "layer")
    missing = [ly for ly in range(stop) if ly not in writes.z]
    if missing:
        raise ValueError(
            f"the stream before layer {stop} needs layers {missing}, which were not recorded "
            f"(recorded: {writes.layers}); run run_with_writes with layers=None"
        )
    return stop


def check_top_k(top_k: Any) -> int | None:
    if top_k is None:
        return None
    top_k = check_int("top_k", top_k, allow_none=True)
    if top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive int (rows kept per position) or None for all")
    return top_k


# ---- tokens -----------------------------------------------------------------------------
def decoder(writes: ResidualWrites, model: Any) -> Any:
    if model is not None:
        return model.decode_token
    return writes.decode_


def tokenizer(writes: ResidualWrites, model: Any) -> Any:
    owner = model if model is not None else getattr(writes.decode_, "__self__", None)
    return getattr(owner, "tokenizer", None)


def token_id(name: str, tok: Any, writes: ResidualWrites, model: Any) -> int:
    """A token id from an int (checked against the vocabulary) or a single-token string."""
    d_vocab = writes.weights.W_U.shape[-1]
    if isinstance(tok, Tensor) and tok.numel() == 1 and not tok.is_floating_point():
        tok = int(tok.item())
    if isinstance(tok, str):
        tkz = tokenizer(writes, model)
        if tkz is None:
            raise ValueError(f"{name}={tok!r} is a string but these writes carry no tokenizer; pass model=...")
        ids = tkz(tok, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"{name}={tok!r} is {len(ids)} tokens {ids}, not one; pass a single token "
                "(check the leading space) or its id"
            )
        return int(ids[0])
    if isinstance(tok, bool) or not isinstance(tok, (int, np.integer)):
        raise TypeError(f"{name}={tok!r} must be a token id (int) or a single-token string")
    if not 0 <= int(tok) < d_vocab:
        raise ValueError(f"{name}={int(tok)} is outside the vocabulary 0..{d_vocab - 1}; pass a valid token id")
    return int(tok)


def token_categorical(ids: Tensor, decode: Any) -> pd.Categorical:
    """Token strings for ``ids`` as a categorical (ids that decode alike share a category)."""
    ids_np = ids.cpu().numpy().astype(np.int64)
    uniq, inv = np.unique(ids_np, return_inverse=True)
    strings = [decode(int(t)) if decode is not None else str(int(t)) for t in uniq]
    cats, code_of = [], {}
    for s in strings:
        if s not in code_of:
            code_of[s] = len(cats)
            cats.append(s)
    codes = np.asarray([code_of[s] for s in strings], dtype=np.int32)[inv] if len(uniq) else inv
    return pd.Categorical.from_codes(codes.astype(np.int32), categories=pd.Index(cats, dtype=object))


# ---- final norm -------------------------------------------------------------------------
def centres(writes: ResidualWrites) -> bool:
    """Whether the final norm subtracts the mean (LayerNorm) before scaling."""
    return str(writes.meta.get("normalization", "LN")).startswith("LN")


def has_norm(writes: ResidualWrites) -> bool:
    return str(writes.meta.get("normalization", "LN")).startswith(("LN", "RMS"))


def recomputed_scale(writes: ResidualWrites, x: Tensor) -> Tensor:
    """The final norm's scale ``[..., 1]`` for stream ``x [..., d_model]``."""
    if not has_norm(writes):
        return torch.ones_like(x[..., :1])
    if centres(writes):
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + float(writes.meta["eps"])).sqrt()


def final_norm(writes: ResidualWrites, x: Tensor) -> Tensor:
    """Apply the final norm to ``x [..., d_model]`` with its own (recomputed) scale."""
    scale = recomputed_scale(writes, x)
    if has_norm(writes) and centres(writes):
        x = x - x.mean(-1, keepdim=True)
    y = x / scale
    w, b = writes.weights.ln_final_w, writes.weights.ln_final_b
    if w is not None:
        y = y * writes._w(w)
    if b is not None:
        y = y + writes._w(b)
    return y


# ---- directions -------------------------------------------------------------------------
@dataclass
class Reader:
    """A projection: ``kind="dir"``: the signed component along unit ``mat[:, 0]``;
    ``kind="sub"``: the norm of the projection onto the orthonormal columns of ``mat``."""

    name: str
    kind: str
    mat: Tensor  # [d_model, r]


def unembed_direction(writes: ResidualWrites, tid: int) -> Tensor:
    """The direction token ``tid``'s logit reads from the stream (before centring/scale)."""
    u = writes._w(writes.weights.W_U[:, tid])
    w = writes.weights.ln_final_w
    return u * writes._w(w) if w is not None else u


def readers(directions: Any, writes: ResidualWrites, model: Any) -> list[Reader]:
    """Resolve ``directions``: a tensor ``[d_model]`` or ``[k, d_model]``, a token string,
    an object with ``.basis [d_model, k]`` (a subspace), or a list / dict of these."""
    if directions is None:
        return []
    d = int(writes.meta["d_model"])
    items: list[tuple[str, Any]]
    if isinstance(directions, dict):
        items = [(str(k), v) for k, v in directions.items()]
        if not items:
            raise ValueError("directions={} is empty; pass None or at least one direction")
    elif isinstance(directions, (list, tuple)):
        if not directions:
            raise ValueError("directions=[] is empty; pass None or at least one direction")
        items = [(None, v) for v in directions]  # type: ignore[misc]
    else:
        items = [(None, directions)]  # type: ignore[misc]
    out: list[Reader] = []
    counter = 0
    for pos, (key, item) in enumerate(items):
        if key is not None:
            where = f"directions[{key!r}]"
        else:
            where = f"directions[{pos}]" if isinstance(directions, (list, tuple)) else "directions"
        if isinstance(item, str):
            tid = token_id(where, item, writes, model)
            u = unembed_direction(writes, tid)
            out.append(Reader(key or item, "dir", (u / u.norm())[:, None]))
        elif isinstance(item, Tensor):
            t = check_direction(where, item, d)
            if t.dim() not in (1, 2):
                raise ValueError(f"{where} has shape {tuple(t.shape)}; pass [d_model] or [k, d_model]")
            t = t.to(device=writes.embed.device, dtype=writes.compute_dtype).reshape(-1, d)
            for j, row in enumerate(t):
                if key is None:
                    name = str(counter)
                    counter += 1
                else:
                    name = key if t.shape[0] == 1 and item.dim() == 1 else f"{key}_{j}"
                out.append(Reader(name, "dir", (row / row.norm())[:, None]))
        elif isinstance(getattr(item, "basis", None), Tensor):
            out.append(Reader(key or str(getattr(item, "name", None) or f"subspace{pos}"), "sub",
                              _orthonormal(where, item.basis, d, writes)))
        else:
            raise TypeError(
                f"{where} is a {type(item).__name__}; pass a tensor [d_model] or [k, d_model], a "
                "token string, or a subspace with a .basis [d_model, k] tensor"
            )
    names = [r.name for r in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"directions give the column name(s) {dup} more than once; pass a dict with unique names")
    return out


def _orthonormal(where: str, basis: Tensor, d: int, writes: ResidualWrites) -> Tensor:
    if basis.dim() != 2 or basis.shape[0] != d:
        raise ValueError(
            f"{where}.basis has shape {tuple(basis.shape)} but the model's d_model is {d}; "
            f"pass a subspace of this model, with basis [{d}, k]"
        )
    b = basis.detach().to(device=writes.embed.device, dtype=writes.compute_dtype)
    if not torch.isfinite(b).all():
        raise ValueError(f"{where}.basis contains NaN or inf; pass a finite basis")
    u, s, _ = svd(b)
    if s.numel() == 0 or s.min() <= s.max() * 1e-6:
        raise ValueError(f"{where}.basis has rank below its {b.shape[1]} columns; pass independent vectors")
    return u


# ---- groups of writes -------------------------------------------------------------------
@dataclass
class Group:
    """Writes of one kind in one layer, for ``rows`` selected positions."""

    kind: str
    layer: int | None
    labels: list[str]
    index: list[int] | None = None  # head or neuron numbers
    dense: Tensor | None = None  # [rows or 1, n, d_model]
    coef: Tensor | None = None  # [rows, n]    (write = coef * vecs)
    vecs: Tensor | None = None  # [n, d_model]

    def norms(self, rows: int) -> Tensor:
        if self.dense is not None:
            return self.dense.norm(dim=-1).expand(rows, -1)
        return self.coef.abs() * self.vecs.norm(dim=-1)

    def read(self, rdrs: Sequence[Reader], rows: int) -> list[Tensor]:
        """Projection onto each reader for every write, ``[rows, n]`` each. Direction
        readers go through one matmul per block of columns, kept to ~16M numbers."""
        out: list[Tensor | None] = [None] * len(rdrs)
        dirs = [i for i, r in enumerate(rdrs) if r.kind == "dir"]
        block = max(1, 2**24 // max(1, rows * len(self.labels)))
        for s in range(0, len(dirs), block):
            ids = dirs[s : s + block]
            M = torch.cat([rdrs[i].mat for i in ids], dim=1)  # [d_model, m]
            if self.dense is not None:
                p = (self.dense @ M).expand(rows, -1, -1)
            else:
                p = self.coef[..., None] * (self.vecs @ M)
            for j, i in enumerate(ids):
                out[i] = p[..., j]
        for i, r in enumerate(rdrs):
            if r.kind == "sub":
                if self.dense is not None:
                    out[i] = (self.dense @ r.mat).norm(dim=-1).expand(rows, -1)
                else:
                    out[i] = self.coef.abs() * (self.vecs @ r.mat).norm(dim=-1)
        return out  # type: ignore[return-value]

    def dot(self, u: Tensor) -> Tensor:
        """Dot product of every write with a per-row vector ``u [rows, d_model]``: ``[rows, n]``."""
        if self.dense is not None:
            return (self.dense @ u[:, :, None])[..., 0].expand(u.shape[0], -1)
        return self.coef * (u @ self.vecs.T)

    def total(self) -> Tensor:
        """The group's summed write, ``[rows or 1, d_model]``."""
        if self.dense is not None:
            return self.dense.sum(1)
        return self.coef @ self.vecs


def groups(writes: ResidualWrites, by: str, stop: int, sel: tuple[Tensor, Tensor]) -> Iterator[Group]:
    """Every write into ``resid_pre[stop]`` at the selected positions, split as ``by`` says.

    ``layer``: embed, pos_embed, ``L{l}_attn``, ``L{l}_mlp``; ``head``: attention split into
    heads plus ``L{l}_attn_bias``; ``neuron``: MLPs split into neurons plus ``L{l}_mlp_bias``;
    ``component``: both splits. Each split sums to the stream.
    """
    check_choice("by", by, BY)
    cd = writes.compute_dtype
    yield Group("embed", None, ["embed"], dense=at(writes.embed, sel).to(cd)[:, None])
    if writes.pos_embed is not None:
        yield Group("pos_embed", None, ["pos_embed"], dense=at(writes.pos_embed, sel).to(cd)[:, None])
    for ly in range(stop):
        yield from layer_groups(writes, by, ly, sel)


def layer_groups(writes: ResidualWrites, by: str, ly: int, sel: tuple[Tensor, Tensor]) -> Iterator[Group]:
    """Layer ``ly``'s writes at the selected positions: attention, then MLP (see ``groups``)."""
    cd, W = writes.compute_dtype, writes.weights
    z = at(writes.write_z(ly), sel).to(cd)  # [rows, head, d_head], over the post-norm scale
    W_O, b_O = writes._w(W.W_O[ly]), writes._w(W.b_O[ly])
    s_attn = writes.scale(ly, "attn")
    if s_attn is not None:  # post-norm: the bias is written over the frozen scale, per row
        b_O = b_O / at(s_attn, sel)[:, None]  # [rows, 1, d_model]
    if by in ("head", "component"):
        n_h = z.shape[1]
        yield Group("head", ly, [f"L{ly}H{h}" for h in range(n_h)], list(range(n_h)),
                    dense=torch.einsum("rhk,hkd->rhd", z, W_O))
        yield Group("attn_bias", ly, [f"L{ly}_attn_bias"], dense=b_O if s_attn is not None else b_O[None, None])
    else:
        yield Group("attn", ly, [f"L{ly}_attn"],
                    dense=(z.flatten(1) @ W_O.flatten(0, 1))[:, None] + (b_O if s_attn is not None else b_O[None, None]))
    acts = at(writes.write_acts(ly), sel).to(cd)  # [rows, d_mlp], over the post-norm scale
    W_out, b_out = writes._w(W.W_out[ly]), writes._w(W.b_out[ly])
    s_mlp = writes.scale(ly, "mlp")
    b_out = b_out[None, None] if s_mlp is None else b_out / at(s_mlp, sel)[:, None]
    if by in ("neuron", "component"):
        n_n = acts.shape[1]
        yield Group("neuron", ly, [f"L{ly}N{n}" for n in range(n_n)], list(range(n_n)), coef=acts, vecs=W_out)
        yield Group("mlp_bias", ly, [f"L{ly}_mlp_bias"], dense=b_out)
    else:
        yield Group("mlp", ly, [f"L{ly}_mlp"], dense=(acts @ W_out)[:, None] + b_out)


def stream_at(writes: ResidualWrites, stop: int, sel: tuple[Tensor, Tensor]) -> Tensor:
    """``resid_pre[stop]`` at the selected positions, ``[rows, d_model]``."""
    return sum(g.total() for g in groups(writes, "layer", stop, sel)).expand(len(sel[0]), -1)  # type: ignore[union-attr]


@dataclass
class Table:
    """Row metadata for a ``[rows, component]`` value matrix."""

    labels: list[str]
    kinds: list[str]
    layers: list[int | None]
    heads: list[int | None]
    neurons: list[int | None]

    @classmethod
    def empty(cls) -> Table:
        return cls([], [], [], [], [])

    def add(self, g: Group) -> None:
        n = len(g.labels)
        self.labels += g.labels
        self.kinds += [g.kind] * n
        self.layers += [g.layer] * n
        idx = g.index if g.index is not None else [None] * n
        self.heads += idx if g.kind == "head" else [None] * n
        self.neurons += idx if g.kind == "neuron" else [None] * n


def selected(mask: Tensor) -> tuple[Tensor, Tensor]:
    bb, pp = torch.nonzero(mask, as_tuple=True)
    return bb, pp


def at(t: Tensor, sel: tuple[Tensor, Tensor]) -> Tensor:
    """``t[batch, pos, ...]`` at the selected positions; a batch axis of 1 broadcasts
    (records may store batch-independent writes such as ``pos_embed`` once)."""
    bb, pp = sel
    bb = bb.to(t.device)
    return t[bb if t.shape[0] > 1 else torch.zeros_like(bb), pp.to(t.device)]


def _int_column(values: Sequence[int | None], comp: Any) -> pd.arrays.IntegerArray:
    """A nullable int column from per-component ``values`` (None -> NA)."""
    arr = np.asarray([-1 if v is None else v for v in values], dtype=np.int32)
    miss = np.asarray([v is None for v in values], dtype=bool)
    return pd.arrays.IntegerArray(comp(arr), comp(miss))


def _categorical(codes: np.ndarray, categories: Sequence[str]) -> pd.Categorical:
    dtype = pd.CategoricalDtype(pd.Index(list(categories), dtype=object))
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def frame(
    table: Table,
    sel: tuple[Tensor, Tensor],
    tokens: pd.Categorical,
    values: dict[str, Tensor],
    *,
    top_k: int | None,
    key: Tensor,
    extra: dict[str, pd.Categorical] | None = None,
) -> pd.DataFrame:
    """Long frame: one row per (selected position, component) in component order, or the
    ``top_k`` components by ``key`` at each position (largest first)."""
    n_rows, n_comp = key.shape
    if top_k is None:
        vals, per = values, n_comp
        codes = None

        def comp(a: np.ndarray) -> np.ndarray:  # per-component -> per-row (tiled)
            return np.tile(a, n_rows)
    else:
        per = min(top_k, n_comp)
        idx = torch.topk(key, per, dim=1).indices  # [rows, k], largest first
        vals = {k: v.gather(1, idx) for k, v in values.items()}
        codes = idx.flatten().cpu().numpy().astype(np.int32)

        def comp(a: np.ndarray) -> np.ndarray:
            return a[codes]

    def row(a: np.ndarray) -> np.ndarray:  # per-position -> per-row (repeated)
        return np.repeat(a, per)

    comp_codes = comp(np.arange(n_comp, dtype=np.int32))
    kind_codes = np.asarray([KINDS.index(k) for k in table.kinds], dtype=np.int8)
    cols: dict[str, Any] = {
        "component": _categorical(comp_codes, table.labels),
        "kind": _categorical(comp(kind_codes), KINDS),
        "layer": _int_column(table.layers, comp),
        "head": _int_column(table.heads, comp),
        "neuron": _int_column(table.neurons, comp),
        "batch": row(sel[0].cpu().numpy().astype(np.int32)),
        "pos": row(sel[1].cpu().numpy().astype(np.int32)),
        "token": _categorical(row(tokens.codes), tokens.categories),
    }
    for name, col in (extra or {}).items():
        cols[name] = _categorical(row(col.codes), col.categories)
    for name, v in vals.items():
        cols[name] = v.detach().cpu().numpy().reshape(-1)
    return pd.DataFrame(cols, copy=False)


WHERE = ("pre", "mid", "post", "all")


def streams(writes: ResidualWrites, where: str, sel: tuple[Tensor, Tensor]) -> Iterator[tuple[int, str, Tensor]]:
    """The accumulated stream at the selected positions, ``(layer, where, [rows, d_model])``,
    in stream order. ``pre``: entering each layer, then the final stream as layer
    ``n_layers``; ``mid``: after each attention; ``post``: after each block (the last is the
    final stream); ``all``: ``pre`` and ``mid`` of every layer, then the final stream."""
    check_choice("where", where, WHERE)
    n = stream_layer(writes, None)
    want = {"pre", "mid"} if where == "all" else {where}
    x = sum(g.total() for g in groups(writes, "layer", 0, sel)).expand(len(sel[0]), -1)
    for ly in range(n):
        if "pre" in want:
            yield ly, "pre", x
        attn, mlp = (g.total() for g in layer_groups(writes, "layer", ly, sel))
        x = x + attn
        if "mid" in want:
            yield ly, "mid", x
        x = x + mlp
        if "post" in want:
            yield ly, "post", x
    if "pre" in want:
        yield n, "pre", x


def stamp(df: pd.DataFrame, source: Any, **choices: Any) -> pd.DataFrame:
    """Record on ``df.attrs`` the conventions its numbers depend on: the weight processing, the
    model, its quantization before dequantizing (None for a full-precision checkpoint), and the
    analysis's own choices (e.g. ``ln_scale``). ``source``: the ``ResidualWrites`` or ``Model``
    the numbers come from."""
    meta = getattr(source, "meta", None)
    if meta is not None:  # a ResidualWrites
        conv = dict(processing=source.processing, model_id=source.model_id, quantization=meta.get("quantization"))
    else:  # a Model
        conv = dict(processing=source.cfg.processing, model_id=source.model_id,
                    quantization=source.cfg.quantization)
    df.attrs.update(conv, **choices)
    return df
