"""Evidence on data that a neuron or head erases what earlier components wrote.

For a deleter with a direction ``d`` it erases (a neuron: its unit input vector
``W_in[:, n] / |W_in[:, n]|``; a head: minus its own write's direction at each position),
over real tokens:

- ``firing_rate``: a neuron's share of tokens where its activation function's output is
  positive (gated MLPs: where ``x @ W_gate[:, n] > 0``, i.e. the SiLU gate is open); a
  head's share of tokens where its write points against the stream (``x . write < 0``).
- ``removed_fraction``: of the stream's component along ``d`` before the write
  (``p = x . d``, with ``x`` the stream the deleter reads), the part its write removes,
  ``-sum(delta * sign(p)) / sum(|p|)`` over firing tokens, where ``delta`` is the change in
  ``x . d`` caused by the write. 1: it erases the component; 0: no net effect; above 1:
  it overshoots (reverses the component); negative: it amplifies.
- ``share`` per earlier writer (``embed``, ``pos_embed``, ``L0H3``, ``L0_attn_bias``,
  ``L0N12``, ``L0_mlp_bias``): its part of ``p``, weighted by how much the deleter erases at
  each token (a neuron's activation, a head's write norm):
  ``sum(w * (write_c . d)) / sum(w * p)``. Shares over all writers sum to 1; the top
  ``top_writers`` are reported and the rest summed in a row ``other``.

Streams are rebuilt from the factored record; no ``[pos, d_mlp, d_model]`` tensor is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from interp import _labels as labels
from interp._checks import check_basis, check_index, check_int, check_stream
from interp._columns import head_and_neuron
from interp._threads import with_analysis_threads
from interp.errors import IndexOutOfRangeError, ModelMismatchError
from interp.stats.base import Sums
from interp.stats.distributed import is_distributed, rank_and_world, shard_budget, shard_records
from interp.writes import ResidualWrites

COLUMNS = ["deleter", "kind", "layer", "index", "n_tokens", "firing_rate", "removed_fraction",
           "writer", "writer_kind", "writer_layer", "share", "rank"]


def _select(name: str, value: Any, kind: str, n_layers: int, size: int) -> list[tuple[int, int]]:
    """Normalise ``[(layer, index)]``, ``["L3N120"]`` or a DataFrame with ``layer`` and
    ``neuron``/``head`` columns."""
    col = "neuron" if kind == "neuron" else "head"
    if isinstance(value, pd.DataFrame):
        if not {"layer", col} <= set(value.columns):
            raise ValueError(f"{name} is a DataFrame without the columns 'layer' and '{col}'; pass the "
                             f"output of find_deleting_{col}s or a list of (layer, {col}) pairs")
        value = list(zip(value["layer"].tolist(), value[col].tolist()))
    if isinstance(value, (str, tuple)) or not isinstance(value, Iterable):
        raise TypeError(f"{name}={value!r} must be a list of (layer, {col}) pairs or labels such as "
                        f"{'L3N120' if kind == 'neuron' else 'L1H3'!r}")
    out: list[tuple[int, int]] = []
    for k, item in enumerate(value):
        given = item
        if isinstance(item, str):
            got = labels.split(item)
            if got is None or got[0] != kind:
                raise ValueError(f"{name} has the label {item!r}; {kind} labels look like "
                                 f"{'L3N120' if kind == 'neuron' else 'L1H3'!r}")
            item = got[1:]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{name} has the item {item!r}; pass (layer, {col}) pairs")
        try:
            pair = (check_index(name, item[0], n_layers, "layer"), check_index(name, item[1], size, col))
        except IndexOutOfRangeError as e:
            raise IndexOutOfRangeError(f"{e}; the item is {name}[{k}]={given!r}") from None
        if pair not in out:
            out.append(pair)
    return out


def _writers(layer: int, with_attn: bool, n_heads: int, d_mlp: int, pos: bool) -> list[tuple[str, str, int]]:
    """``(label, kind, layer)`` of every write before a reader in ``layer``; ``with_attn``
    includes layer ``layer``'s attention (an MLP reading ``resid_mid``)."""
    out = [("embed", "embed", -1)] + ([("pos_embed", "pos_embed", -1)] if pos else [])
    for ly in range(layer + 1):
        if ly == layer and not with_attn:
            break
        out += [(f"L{ly}H{h}", "head", ly) for h in range(n_heads)] + [(f"L{ly}_attn_bias", "attn_bias", ly)]
        if ly < layer:
            out += [(f"L{ly}N{n}", "neuron", ly) for n in range(d_mlp)] + [(f"L{ly}_mlp_bias", "mlp_bias", ly)]
    return out


def _batches(model: Any, data: Any, kw: dict[str, Any]) -> Iterable[ResidualWrites]:
    """Records from ``data``: itself, a list of records, a list of texts (each used whole,
    ``batch_size`` at a time, long ones chunked to ``n_ctx``), or a corpus to stream.

    Under a ``torch.distributed`` process group, texts and corpora are sharded by document
    (``i % world_size``) and ``max_tokens`` is split between the ranks; records are taken as
    this rank's own."""
    if isinstance(data, ResidualWrites):
        return [data]
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, ResidualWrites) for d in data):
        return data
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, str) for d in data):
        bs = kw["batch_size"]
        rank, world = rank_and_world()
        mine = list(data)[rank::world]
        return (model.run_with_writes(mine[i:i + bs], chunk=True) for i in range(0, len(mine), bs))
    if is_distributed():
        return _shard(model, data, kw)
    return model.stream_writes(data, **kw)


def _shard(model: Any, data: Any, kw: dict[str, Any]) -> Iterable[ResidualWrites]:
    """This rank's records of a corpus, up to its share of ``max_tokens``."""
    budget, seen = shard_budget(kw["max_tokens"]), 0
    for w in shard_records(model, data, batch_size=kw["batch_size"], n_ctx=kw["n_ctx"]):
        yield w
        seen += int(w.mask.sum())
        if budget is not None and seen >= budget:
            return


class _Acc(Sums):
    """Sums over tokens for a group of deleters (``k`` of them): an ``interp.stats.Sums``, so
    shards merge and ranks all-reduce."""

    def __init__(self, n_writers: int, k: int):
        super().__init__(n_tok=(), n_fire=(k,), rem_num=(k,), rem_den=(k,), den=(k,), num=(n_writers, k),
                         sub_num=(k,), sub_den=(k,))

    def add(self, before: Tensor, delta: Tensor, fire: Tensor, weight: Tensor, num: Tensor,
            active: Tensor | None = None) -> None:
        """``[pos, k]`` tensors; ``active`` (default ``fire``) is what ``firing_rate`` counts."""
        f = fire.to(before.dtype)
        self.n_tok += before.shape[0]
        # float64 throughout (see deletion_evidence): the totals then do not depend on how
        # tokens were split into batches or ranks
        self.n_fire += (fire if active is None else active).double().sum(0).cpu()
        self.rem_num += (-delta * before.sign() * f).double().sum(0).cpu()
        self.rem_den += (before.abs() * f).double().sum(0).cpu()
        self.den += (weight * before).double().sum(0).cpu()
        self.num += num.double().cpu()


def _project_fixed(parts: dict[str, Any], ws: Any, U: Tensor, w: Tensor, layer: int, with_attn: bool) -> Tensor:
    """``sum_p w[p, k] * (write_c[p] . U[:, k])`` for every writer ``c`` before a reader in
    ``layer``: ``[n_writers, k]``. ``U``: ``[d_model, k]``, ``w``: ``[pos, k]``."""
    rows = [(w * (parts["embed"] @ U)).sum(0, keepdim=True)]
    if parts["pos"] is not None:
        rows.append((w * (parts["pos"] @ U)).sum(0, keepdim=True))
    wsum = w.sum(0, keepdim=True)
    for ly in range(layer + 1 if with_attn else layer):
        z, W_O = parts["z"][ly], ws.W_O[ly].to(U)
        rows.append((torch.einsum("phe,pk->hek", z, w) * torch.einsum("hem,mk->hek", W_O, U)).sum(1))
        b = _bias(parts, ws, "b_O", ly, U)
        rows.append((b @ U)[None] * wsum if b.dim() == 1 else (w * (b @ U)).sum(0, keepdim=True))
        if ly < layer:
            rows.append((parts["acts"][ly].T @ w) * (ws.W_out[ly].to(U) @ U))
            b = _bias(parts, ws, "b_out", ly, U)
            rows.append((b @ U)[None] * wsum if b.dim() == 1 else (w * (b @ U)).sum(0, keepdim=True))
    return torch.cat(rows)


def _project_tokens(parts: dict[str, Any], ws: Any, D: Tensor, w: Tensor, layer: int) -> Tensor:
    """As ``_project_fixed`` for one direction per token, ``D``: ``[pos, d_model]``, ``w``:
    ``[pos]`` (a head in ``layer`` reads ``resid_pre``). Returns ``[n_writers, 1]``."""
    rows = [((parts["embed"] * D).sum(-1) @ w)[None]]
    if parts["pos"] is not None:
        rows.append(((parts["pos"] * D).sum(-1) @ w)[None])
    for ly in range(layer):
        z, W_O, W_out = parts["z"][ly], ws.W_O[ly].to(D), ws.W_out[ly].to(D)
        rows.append((z * torch.einsum("pm,hem->phe", D, W_O)).sum(-1).T @ w)
        b = _bias(parts, ws, "b_O", ly, D)
        rows.append((((D @ b) if b.dim() == 1 else (D * b).sum(-1)) @ w)[None])
        rows.append((parts["acts"][ly] * (D @ W_out.T)).T @ w)
        b = _bias(parts, ws, "b_out", ly, D)
        rows.append((((D @ b) if b.dim() == 1 else (D * b).sum(-1)) @ w)[None])
    return torch.cat(rows)[:, None]


def _flatten(w: ResidualWrites, device: torch.device, dt: torch.dtype) -> dict[str, Any]:
    """The record's real tokens as ``[pos, ...]`` tensors on ``device`` in ``dt``. ``z`` and
    ``acts`` are the write coefficients (over the frozen post-norm scale; ``interp.writes``), so
    every write rebuilt from them is the one the model added; post-norm biases are written over
    the scale too (``b_O``, ``b_out``: ``[pos, d_model]`` per layer, else None). ``fired``: the
    activations themselves (post-norm records; a neuron's tokens are weighted by its activation)."""
    m = w.mask.to(w.embed.device)

    def f(t: Tensor) -> Tensor:
        return t[m].to(device, dt)

    def bias(ly: int, block: str) -> Tensor | None:
        return f(w.bias_write(ly, block)) if w.post_norm else None

    return dict(
        embed=f(w.embed), pos=None if w.pos_embed is None else f(w.pos_embed.expand_as(w.embed)),
        z={ly: f(w.write_z(ly)) for ly in w.z}, acts={ly: f(w.write_acts(ly)) for ly in w.acts},
        fired={ly: f(t) for ly, t in w.acts.items()} if w.post_norm else None,
        b_O={ly: bias(ly, "attn") for ly in w.z}, b_out={ly: bias(ly, "mlp") for ly in w.z},
    )


def _bias(parts: dict[str, Any], ws: Any, name: str, ly: int, like: Tensor) -> Tensor:
    """Layer ``ly``'s bias write: ``[pos, d_model]`` for post-norm records, else ``[d_model]``."""
    b = parts.get(name, {}).get(ly)
    return getattr(ws, name)[ly].to(like) if b is None else b.to(like)


def _prepare_neurons(model: Any, sel: list[tuple[int, int]], dt: torch.dtype) -> dict[int, tuple]:
    """Per layer: ``(neurons, U [d_model, k] unit input vectors, G [d_model, k] gate vectors or
    None, W_out[n] . u [k])``."""
    by_layer: dict[int, list[int]] = {}
    for ly, n in sel:
        by_layer.setdefault(ly, []).append(n)
    prep = {}
    for ly, idx in by_layer.items():
        i = torch.tensor(idx, device=model.device)
        U = model.weights.mlp_in(ly).index_select(1, i).to(dt)
        U = U / torch.linalg.vector_norm(U, dim=0).clamp_min(1e-30)
        gate = model.weights.mlp_gate(ly)
        G = None if gate is None else gate.index_select(1, i).to(dt)
        wout_u = (model.weights.mlp_out(ly).index_select(0, i).to(dt) * U.T).sum(-1)
        prep[ly] = (idx, U, G, wout_u, i)
    return prep


def _accumulate(parts: dict[str, Any], model: Any, prep: dict[int, tuple], acc_n: dict[int, _Acc],
                acc_h: dict[tuple[int, int], _Acc], basis: Tensor | None) -> None:
    """Add one batch: rebuild the stream layer by layer and measure each deleter on it."""
    c, ws = model.cfg, model.write_weights
    dt = parts["embed"].dtype
    x = parts["embed"] + (parts["pos"] if parts["pos"] is not None else 0)
    for ly in range(c.n_layers):
        z, acts = parts["z"][ly], parts["acts"][ly]
        for (hl, h), acc in acc_h.items():
            if hl != ly:
                continue
            write = z[:, h] @ ws.W_O[ly, h].to(dt)
            norm = torch.linalg.vector_norm(write, dim=-1)
            D = -write / norm.clamp_min(1e-30)[:, None]
            before = (x * D).sum(-1)
            num = _project_tokens(parts, ws, D, norm, ly)
            acc.add(before[:, None], -norm[:, None], (norm > 0)[:, None], norm[:, None], num,
                    active=(before > 0)[:, None])
            if basis is not None:
                acc.sub_num += (norm * ((D.double() @ basis.to(D.device)) ** 2).sum(-1)).sum().cpu()
                acc.sub_den += norm.double().sum().cpu()
        x_mid = x + z.flatten(1) @ ws.W_O[ly].to(dt).flatten(0, 1) + _bias(parts, ws, "b_O", ly, x)
        if ly in prep:
            _, U, G, wout_u, i = prep[ly]
            x_in = x if c.parallel else x_mid
            a = acts.index_select(1, i)  # the write coefficient (over the post-norm scale)
            act = a if parts.get("fired") is None else parts["fired"][ly].index_select(1, i)
            fire = (x_in @ G > 0) if G is not None else act > 0
            weight = act * fire
            num = _project_fixed(parts, ws, U, weight, ly, not c.parallel)
            acc_n[ly].add(x_in @ U, a * wout_u, fire, weight, num)
        x = x_mid + acts @ ws.W_out[ly].to(dt) + _bias(parts, ws, "b_out", ly, x)


def _subspace_basis(subspace: Any, d_model: int) -> Tensor | None:
    if subspace is None:
        return None
    basis = getattr(subspace, "basis", subspace)
    if not isinstance(basis, Tensor) or basis.dim() != 2:
        raise TypeError(f"subspace must have a .basis tensor [d_model, k] (or be one), got {type(basis).__name__}")
    basis = check_basis("subspace.basis", basis, d_model, rows=False).T  # full rank: QR adds nothing
    return torch.linalg.qr(basis.double())[0]


@with_analysis_threads
def deletion_evidence(
    model: Any,
    data: Any = "stdlib:val",
    *,
    neurons: Any = None,
    heads: Any = None,
    subspace: Any = None,
    top_writers: int = 5,
    max_tokens: int | None = 20_000,
    batch_size: int = 8,
    n_ctx: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Whether neurons and heads erase the stream on real tokens, and whose writes they erase.

    Args:
        model: an ``interp.Model`` with ``processing="compat"`` (its ``W_in`` is then the
            neuron's reading direction in the stream).
        data: a ``ResidualWrites`` or list of them (from this model); a list of texts (each
            used whole, long ones chunked); or a corpus for ``model.stream_writes``
            (``"stdlib:val"``, a file, a directory).
        neurons: ``[(layer, neuron)]``, labels ``["L3N120"]`` or a DataFrame with ``layer``
            and ``neuron``. Default None: those flagged by ``find_deleting_neurons(model)``.
        heads: likewise for heads (``"L1H3"``); default: those flagged by
            ``find_deleting_heads(model)``. Pass ``[]`` to skip neurons or heads.
        subspace: optional object with ``.basis`` ``[d_model, k]`` (e.g. a probe's subspace):
            adds ``subspace_overlap``, the share of the erased direction inside it (weighted
            over tokens for heads). Probe accuracy before/after is not computed here.
        top_writers: writers reported per deleter (the rest are summed in ``other``).
        max_tokens / batch_size / n_ctx / progress: passed to ``stream_writes`` (a list of
            texts uses ``batch_size`` only). Under a ``torch.distributed`` process group each
            rank takes its share of the documents and of ``max_tokens``, and the sums are
            all-reduced, so every rank returns the same table.
    Returns:
        Long format, one row per (deleter, writer), deleters in the order given, writers by
        share: deleter:str ("L3N120"/"L1H3"), kind:"neuron"|"head", layer:int, head / neuron:Int64,
        n_tokens:int, firing_rate:float, removed_fraction:float, [subspace_overlap:float],
        writer:str, writer_kind:str (embed, pos_embed, head, attn_bias, neuron, mlp_bias,
        other), writer_layer:int (-1 for embeddings and other), share:float, rank:int.
    Raises:
        ModelMismatchError: writes recorded on another model.
        ValueError: raw weights, writes missing layers, a bad selection.
    Examples:
        >>> import interp
        >>> ev = deletion_evidence(interp.load(), ["x = 1 + 2"], neurons=["L1N5"], heads=[])
        >>> ev["writer"].iloc[-1], round(float(ev["share"].sum()), 6)
        ('other', 1.0)
    """
    from interp.memory.heads import find_deleting_heads
    from interp.memory.neuron_data import find_deleting_neurons
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    c = model.cfg
    if c.processing != "compat":
        raise ValueError(f"model has processing={c.processing!r}; deletion_evidence needs 'compat' (LayerNorm "
                         "folded into W_in, so W_in is the neuron's direction in the stream): reload with "
                         "interp.load(..., processing='compat')")
    top_writers = check_int("top_writers", top_writers)
    if top_writers < 1:
        raise ValueError(f"top_writers={top_writers!r} must be a positive int, e.g. 5")
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress)
    neurons = find_deleting_neurons(model) if neurons is None else neurons
    heads = find_deleting_heads(model).query("flagged") if heads is None else heads
    sel_n = _select("neurons", neurons, "neuron", c.n_layers, c.d_mlp)
    sel_h = _select("heads", heads, "head", c.n_layers, c.n_heads)
    basis = _subspace_basis(subspace, c.d_model)
    dt = torch.float64  # every product and sum: the result then does not depend on how tokens were batched
    prep = _prepare_neurons(model, sel_n, dt)
    pos = c.positional == "standard"
    writers_n = {ly: _writers(ly, not c.parallel, c.n_heads, c.d_mlp, pos) for ly in prep}
    writers_h = {ly: _writers(ly, False, c.n_heads, c.d_mlp, pos) for ly, _ in sel_h}
    acc_n = {ly: _Acc(len(writers_n[ly]), len(p[0])) for ly, p in prep.items()}
    acc_h = {(ly, h): _Acc(len(writers_h[ly]), 1) for ly, h in sel_h}
    kw = dict(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress)
    for w in _batches(model, data, kw) if (sel_n or sel_h) else []:
        if not isinstance(w, ResidualWrites):
            raise TypeError(f"data yielded a {type(w).__name__}; pass ResidualWrites or a corpus")
        if w.model_id != model.model_id:
            raise ModelMismatchError(f"data holds writes recorded on {w.meta['model_name']!r}, not on model="
                                     f"{c.name!r} (model ids {w.model_id} and {model.model_id}); record them "
                                     "with this model's run_with_writes")
        if w.layers != list(range(c.n_layers)):
            raise ValueError(f"data records layers {w.layers}; deletion_evidence needs all {c.n_layers}: "
                             "run run_with_writes with layers=None")
        _accumulate(_flatten(w, model.device, dt), model, prep, acc_n, acc_h, basis)
    for acc in [*acc_n.values(), *acc_h.values()]:
        acc.all_reduce()  # the sums of every rank (a no-op on one process)
    seen = next(iter(acc_n.values() or acc_h.values()), None)
    if seen is not None and seen.n_tok == 0:
        raise ValueError(f"data={data!r:.80} yielded no tokens to measure (every text is empty); "
                         "pass non-empty texts, a list of texts, or a ResidualWrites")
    rows: list[dict[str, Any]] = []
    for ly, n in sel_n:
        idx, U = prep[ly][0], prep[ly][1]
        j = idx.index(n)
        ov = None if basis is None else float(((U[:, j].double().cpu() @ basis) ** 2).sum())
        rows += _rows(acc_n[ly], j, "neuron", ly, n, ov, writers_n[ly], top_writers)
    for (ly, h), acc in acc_h.items():
        ov = None if basis is None else float(acc.sub_num[0] / acc.sub_den[0].clamp_min(1e-300))
        rows += _rows(acc, 0, "head", ly, h, ov, writers_h[ly], top_writers)
    cols = COLUMNS if basis is None else COLUMNS[:7] + ["subspace_overlap"] + COLUMNS[7:]
    df = head_and_neuron(pd.DataFrame(rows, columns=cols))
    df.attrs.update(processing=c.processing, top_writers=top_writers, model_id=model.model_id)
    return df


def _rows(acc: _Acc, j: int, kind: str, layer: int, index: int, overlap: float | None,
          writers: list[tuple[str, str, int]], top: int) -> list[dict[str, Any]]:
    n_tok = int(acc.n_tok)
    den = float(acc.den[j])
    share = acc.num[:, j] / den if den != 0 else torch.full((len(writers),), float("nan"), dtype=torch.float64)
    order = torch.argsort(torch.nan_to_num(share, nan=-float("inf")), descending=True)[:top].tolist()
    base = dict(
        deleter=f"L{layer}{'N' if kind == 'neuron' else 'H'}{index}", kind=kind, layer=layer, index=index,
        n_tokens=n_tok, firing_rate=float(acc.n_fire[j]) / n_tok if n_tok else float("nan"),
        removed_fraction=float(acc.rem_num[j] / acc.rem_den[j]) if float(acc.rem_den[j]) > 0 else float("nan"),
    )
    if overlap is not None:
        base["subspace_overlap"] = overlap
    out = []
    for r, i in enumerate(order):
        label, wkind, wlayer = writers[i]
        out.append(dict(base, writer=label, writer_kind=wkind, writer_layer=wlayer, share=float(share[i]), rank=r + 1))
    rest = float(1.0 - share[order].sum()) if den != 0 else float("nan")
    out.append(dict(base, writer="other", writer_kind="other", writer_layer=-1, share=rest, rank=len(order) + 1))
    return out


def deletion_summary(evidence: pd.DataFrame, *, min_share: float = 0.1, max_writers: int = 3) -> pd.DataFrame:
    """One row per deleter of a ``deletion_evidence`` table, with a sentence naming the
    writers it erases (those with ``share >= min_share``, at most ``max_writers``).

    Columns: deleter, kind, layer, head, neuron, firing_rate, removed_fraction, erases:str, e.g.
    ``"L1N5 erases what L0H2 (62%) and embed (21%) wrote"``.
    """
    missing = {"deleter", "writer", "share", "rank"} - set(evidence.columns)
    if missing:
        raise ValueError(f"evidence lacks the columns {sorted(missing)}; pass the output of deletion_evidence")
    out = []
    for name, g in evidence.groupby("deleter", sort=False):
        top = g[(g["writer"] != "other") & (g["share"] >= min_share)].sort_values("rank").head(max_writers)
        names = [f"{r.writer} ({r.share:.0%})" for r in top.itertuples()]
        said = (", ".join(names[:-1]) + " and " + names[-1]) if len(names) > 1 else (names[0] if names else "")
        first = g.iloc[0]
        out.append(dict(
            deleter=name, kind=first["kind"], layer=first["layer"], head=first["head"], neuron=first["neuron"],
            firing_rate=first["firing_rate"], removed_fraction=first["removed_fraction"],
            erases=f"{name} erases what {said} wrote" if names else f"{name}: no single writer above {min_share:.0%}",
        ))
    return pd.DataFrame(out, columns=["deleter", "kind", "layer", "head", "neuron", "firing_rate", "removed_fraction",
                                      "erases"]).astype({"head": "Int64", "neuron": "Int64"})
