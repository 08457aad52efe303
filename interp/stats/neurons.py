"""``neuron_stats``: how often, how strongly and on which tokens every MLP neuron fires
over a corpus, on one process or on every rank of a ``torch.distributed`` group.

The activation of neuron ``n`` in layer ``L`` is the record's ``acts[L][..., n]``
(TransformerLens's ``mlp.hook_post``: after the nonlinearity and, for gated MLPs, after
the gate, ``silu(x @ W_gate) * (x @ W_in)``, which is signed). A neuron *fires* on a token
when its activation is positive.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp import records
from interp._checks import check_indices, check_int, check_memory, check_stream
from interp._progress import tqdm
from interp._threads import with_analysis_threads
from interp.data import row_length
from interp.stats.distributed import all_gather_objects, rank_and_world, shard_budget, shard_records
from interp.stats.moments import Extremes, FiringRate, Moments
from interp.stats.topk import EMPTY_KEY, TopK

log = logging.getLogger(__name__)

COLUMNS = ["layer", "neuron", "label", "n_tokens", "firing_rate", "mean", "std", "min", "max"]
EXAMPLE_COLUMNS = ["layer", "neuron", "label", "rank", "activation", "doc", "doc_index", "row", "pos", "token",
                   "context", "tokens", "acts", "center"]
_POS_BITS, _ROW_BITS = 16, 16  # key = doc_index << 32 | row_in_doc << 16 | pos


def _keys(doc_index: list[int], row_in_doc: list[int], n_pos: int, device: Any) -> Tensor:
    """``[batch, pos]`` int64 keys, unique over a corpus and ordered like it."""
    if n_pos > 1 << _POS_BITS or max(row_in_doc) >= 1 << _ROW_BITS or max(doc_index) >= 1 << 31:
        raise ValueError(f"a reference does not fit: rows of {n_pos} positions, {max(row_in_doc) + 1} rows in one "
                         f"document, document index {max(doc_index)}; use rows under 65,536 tokens and "
                         "documents under 65,536 rows")
    base = (torch.tensor(doc_index, dtype=torch.int64) << 32) | (torch.tensor(row_in_doc, dtype=torch.int64) << 16)
    return (base[:, None] | torch.arange(n_pos, dtype=torch.int64)[None]).to(device)


class TopExamples:
    """The top-k activating examples of every neuron, as plain data: compact tensors with
    references, the documents' names and the strings of the tokens they hold. No model.

    Built by ``neuron_stats``, which keeps it in ``stats.attrs["examples"]`` as a plain string
    (``to_attr``), so the frame saves with ``to_pickle`` / ``to_parquet`` and ``top_examples``
    works on the frame read back. ``save`` / ``load``: a record file of its own. ``frame(...)``
    (or ``interp.top_examples(stats, ...)``) turns the chosen neurons into a long DataFrame.

    State per layer: ``values`` ``[F, k]`` (descending, ``-inf`` in empty slots), ``keys``
    ``[F, k]`` int64 (document << 32 | row << 16 | pos; ``EMPTY_KEY`` when empty), ``tokens``
    ``[F, k, 2 * context + 1]`` int32 (-1 outside the row), ``acts`` the same shape, float32.
    """

    KIND = "TopExamples"

    def __init__(self, layers: dict[int, dict[str, Tensor]], doc_names: dict[int, str], strings: dict[int, str],
                 context: int, n_layers: int):
        self.layers, self.doc_names, self.strings = layers, doc_names, strings
        self.context, self.n_layers = context, n_layers

    @classmethod
    def from_tops(cls, tops: dict[int, TopK], doc_names: dict[int, str], decode: Any, context: int,
                  n_layers: int) -> TopExamples:
        """From ``neuron_stats``'s reduced ``TopK`` statistics; ``decode(id) -> str`` (or None:
        token ids shown as numbers) is applied here, once per token id the examples hold."""
        layers = {ly: {"values": t.values.float().cpu(), "keys": t.keys.cpu(), "tokens": t.payload["tokens"].cpu(),
                       "acts": t.payload["acts"].float().cpu()} for ly, t in tops.items()}
        ids = torch.cat([d["tokens"].reshape(-1) for d in layers.values()]).unique().tolist()
        strings = {i: decode(i) if decode is not None else str(i) for i in ids if i >= 0}
        return cls(layers, doc_names, strings, context, n_layers)

    # ---- plain data ----------------------------------------------------------------------
    def _parts(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"{name}.{ly}": t for ly, d in self.layers.items() for name, t in d.items()}
        meta = {"context": self.context, "n_layers": self.n_layers, "layers": sorted(self.layers),
                "doc_names": [[i, n] for i, n in sorted(self.doc_names.items())],
                "strings": [[i, s] for i, s in sorted(self.strings.items())]}
        return tensors, meta

    @classmethod
    def _from_parts(cls, tensors: dict[str, Tensor], meta: dict[str, Any], where: str) -> TopExamples:
        try:
            layers = {int(ly): {name: tensors[f"{name}.{ly}"] for name in ("values", "keys", "tokens", "acts")}
                      for ly in meta["layers"]}
            doc_names = {int(i): str(n) for i, n in meta["doc_names"]}
            strings = {int(i): str(t) for i, t in meta["strings"]}
            context, n_layers = int(meta["context"]), int(meta["n_layers"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where} is not a complete TopExamples record (lacks {e}); run neuron_stats again") from e
        W = 2 * context + 1
        for ly, d in layers.items():
            F, k = d["values"].shape if d["values"].dim() == 2 else (-1, -1)
            want = {"values": ((F, k), torch.float32), "keys": ((F, k), torch.int64),
                    "tokens": ((F, k, W), torch.int32), "acts": ((F, k, W), torch.float32)}
            for name, (shape, dtype) in want.items():
                t = d[name]
                if F < 0 or tuple(t.shape) != shape or t.dtype != dtype:
                    raise ValueError(f"{where}: {name}.{ly} is a {t.dtype} tensor of shape {list(t.shape)}, not "
                                     f"{dtype} {list(shape)}; the record was damaged or edited: run neuron_stats again")
            if bool(d["values"].isnan().any()) or bool(d["values"].isposinf().any()):
                raise ValueError(f"{where}: values.{ly} holds NaN or +inf; the record was damaged or edited")
            bad = ((d["tokens"] >= 0) & ~torch.isin(d["tokens"], torch.tensor(sorted(strings), dtype=torch.int32)))
            if bool(bad.any()):
                raise ValueError(f"{where}: tokens.{ly} holds token ids without a string; the record was damaged "
                                 "or edited: run neuron_stats again")
        return cls(layers, doc_names, strings, context, n_layers)

    def to_attr(self) -> str:
        """A plain string (base64 of a safetensors blob) for a frame's ``attrs``."""
        return records.to_attr(self.KIND, *self._parts())

    @classmethod
    def from_attr(cls, value: Any) -> TopExamples:
        return cls._from_parts(*records.from_attr(value, cls.KIND), where="stats.attrs['examples']")

    def save(self, path: str | Path) -> Path:
        """Write the examples as one safetensors file (atomically: all new or all old);
        ``.safetensors`` is added to ``path`` when missing. Returns the path."""
        return records.save_record(path, self.KIND, *self._parts())

    @classmethod
    def load(cls, path: str | Path) -> TopExamples:
        """Read a file written by ``save`` (its parts checked against one another)."""
        return cls._from_parts(*records.load_record(path, cls.KIND), where=f"path={str(path)!r}")

    # ---- the frame -----------------------------------------------------------------------
    def frame(self, neurons: Any = None, *, k: int | None = None) -> pd.DataFrame:
        """Long format, one row per (neuron, rank): layer, neuron, label ("L1N5"), rank (1 =
        largest), activation, doc (document id), doc_index (its index in the corpus), row (the
        row of the document, ``n_ctx``-token windows), pos (position in that row), token,
        context (the window's text), tokens (list[str]: the window's tokens), acts
        (list[float]: the neuron's activation on each), center (index of the example token).

        ``neurons``: labels (``"L1N5"``), ``(layer, neuron)`` pairs or a DataFrame with
        ``layer`` and ``neuron`` columns (e.g. ``find_deleting_neurons``); default all.
        """
        from interp.memory.evidence import _select

        layers = sorted(self.layers)
        d_mlp, k_max = next(iter(self.layers.values()))["values"].shape
        if neurons is None:
            sel = [(ly, n) for ly in layers for n in range(d_mlp)]
        else:
            sel = _select("neurons", neurons, "neuron", self.n_layers, d_mlp)
            missing = sorted({ly for ly, _ in sel} - set(layers))
            if missing:
                raise ValueError(f"neurons name layer(s) {missing}, which these statistics do not cover "
                                 f"(layers {layers}); run neuron_stats with those layers")
        k = check_int("k", k, minimum=1, allow_none=True) or k_max
        tok = self.strings.__getitem__
        rows = []
        for ly, n in sel:
            d = self.layers[ly]
            vals, keys = d["values"][n, :k].tolist(), d["keys"][n, :k].tolist()
            ctx_t, ctx_a = d["tokens"][n, :k].tolist(), d["acts"][n, :k].tolist()
            for r, (v, key) in enumerate(zip(vals, keys)):
                if key == EMPTY_KEY:
                    break
                valid = [j for j, t in enumerate(ctx_t[r]) if t >= 0]
                toks = [tok(ctx_t[r][j]) for j in valid]
                doc_index = key >> 32
                rows.append(dict(
                    layer=ly, neuron=n, label=f"L{ly}N{n}", rank=r + 1, activation=v,
                    doc=self.doc_names.get(doc_index, str(doc_index)), doc_index=doc_index,
                    row=(key >> 16) & 0xFFFF, pos=key & 0xFFFF, token=tok(ctx_t[r][self.context]),
                    context="".join(toks), tokens=toks, acts=[ctx_a[r][j] for j in valid],
                    center=valid.index(self.context),
                ))
        return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)

    def __repr__(self) -> str:
        return f"TopExamples(layers={sorted(self.layers)}, context={self.context})"


@functools.lru_cache(maxsize=4)
def _examples_of(value: str) -> TopExamples:
    return TopExamples.from_attr(value)


def top_examples(stats: Any, neurons: Any = None, *, k: int | None = None) -> pd.DataFrame:
    """The top activating examples of ``neurons`` from a ``neuron_stats`` frame (also one read
    back from pickle or parquet) or a ``TopExamples`` (see ``TopExamples.frame`` for the
    columns); ``neurons`` default: every row of ``stats`` (every neuron of a ``TopExamples``)."""
    if isinstance(stats, TopExamples):
        return stats.frame(neurons, k=k)
    ex = stats.attrs.get("examples") if isinstance(stats, pd.DataFrame) else None
    if ex is None:
        raise ValueError("stats carries no examples; pass the DataFrame that interp.neuron_stats returned (or "
                         "read back with pd.read_pickle / pd.read_parquet: to_csv keeps no attrs), or a "
                         "TopExamples loaded with TopExamples.load")
    ex = ex if isinstance(ex, TopExamples) else _examples_of(ex)
    if neurons is None:
        neurons = stats[["layer", "neuron"]]
    return ex.frame(neurons, k=k)


def _check_data(data: Any) -> None:
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("data=[] holds no texts; pass a list of texts, a corpus name or a path")
        return
    if not isinstance(data, (str, Path)):
        raise TypeError(f"data of type {type(data).__name__} is not supported; pass a list of texts, a corpus "
                        "name ('stdlib', 'stdlib:val') or a file or directory path")
    if isinstance(data, str) and not data.startswith("stdlib") and not Path(data).exists():
        raise FileNotFoundError(f"data={data[:60]!r} is neither a corpus name ('stdlib', 'stdlib:val') nor an "
                                "existing file or directory; to run on a text, pass a list of texts: [text]")


@with_analysis_threads
def neuron_stats(
    model: Any,
    data: Any = "stdlib:val",
    *,
    layers: Any = None,
    max_tokens: int | None = 100_000,
    top_k: int = 20,
    batch_size: int = 8,
    n_ctx: int | None = None,
    context: int = 8,
    exclude_first: bool = True,
    progress: bool = True,
    group: Any = None,
) -> pd.DataFrame:
    """Firing rate, mean, std, min, max and the top-k activating examples of every MLP neuron.

    Under an initialised ``torch.distributed`` process group, each rank streams its own
    documents (corpus index ``i`` goes to rank ``i % world_size``) and the statistics are
    all-reduced, so every rank returns the same frame.

    Args:
        model: an ``interp.Model``.
        data: a list of texts (each a document), a corpus name (``"stdlib:val"``, default),
            or a file or directory.
        layers: layers to measure (default all; negative counts from the end).
        max_tokens: positions to measure, over all ranks (each rank takes its share);
            None: the whole corpus. Memory does not grow with it.
        top_k: examples kept per neuron (ties: the earlier position in the corpus).
        batch_size / n_ctx: rows per forward pass, tokens per row (default: the model's
            context); a document longer than a row continues in the next row.
        context: tokens kept on each side of an example (within its row; less than ``n_ctx``).
            ``top_k`` and ``context`` size the state, ``layers x d_mlp x top_k x (12 + 8 x (2 x
            context + 1))`` bytes: a size the machine cannot hold is refused (``MemoryError``)
            before anything is allocated.
        exclude_first: leave out position 0 of every row (BOS; the attention sink).
        group: the process group (default: the global one, when initialised).
    Returns:
        One row per (layer, neuron), in layer then neuron order: layer:int, neuron:int,
        label:str ("L1N5"), n_tokens:int, firing_rate:float (share of positions with a positive
        activation), mean, std (population), min, max:float. The top examples are a second,
        long frame, ``interp.top_examples(stats, neurons)``, built from compact tensors
        stored as ``stats.attrs["examples"]`` (a ``TopExamples``).
    Raises:
        ValueError: layers out of range, a bad size, data without any position to measure.
        MemoryError: ``top_k`` / ``context`` asking for more memory than is available.
        DistributedError: another rank failed or timed out.
    Examples:
        >>> stats = interp.neuron_stats(interp.load(), max_tokens=20_000)
        >>> interp.top_examples(stats, ["L1N5"])[["rank", "activation", "token"]]
    """
    from interp.probes.sites import check_model

    check_model(model)
    c = model.cfg
    layers = check_indices("layers", layers, c.n_layers, "layer")
    top_k = check_int("top_k", top_k, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    context = check_int("context", context, minimum=0)
    if max_tokens is not None:
        max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    if n_ctx is not None:
        n_ctx = check_int("n_ctx", n_ctx, minimum=2)
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress,
                 exclude_first=exclude_first)
    _check_data(data)
    row = row_length(n_ctx, c.n_ctx)
    if context >= row:
        raise ValueError(f"context={context:,} is wider than a row: rows hold {row} tokens (n_ctx), so an example "
                         f"has at most {row - 1} tokens on either side; pass context <= {row - 1}")
    per_example = 4 + 8 + (2 * context + 1) * (4 + 4)  # value, key, the window's tokens and activations
    check_memory(f"top_k={top_k:,} examples of {len(layers) * c.d_mlp:,} neurons with context={context}",
                 len(layers) * c.d_mlp * top_k * per_example,
                 "pass a smaller top_k (examples kept per neuron), a smaller context, or fewer layers")
    rank, world = rank_and_world(group)
    budget = shard_budget(max_tokens, group)
    dev, F, W = model.device, c.d_mlp, 2 * context + 1
    payload = {"tokens": ((W,), torch.int32, -1), "acts": ((W,), torch.float32, float("nan"))}
    mom = {ly: Moments((F,), device=dev) for ly in layers}
    fire = {ly: FiringRate((F,), device=dev) for ly in layers}
    ext = {ly: Extremes((F,), device=dev) for ly in layers}
    tops = {ly: TopK(F, top_k, payload_shapes=payload, device=dev) for ly in layers}
    offsets = torch.arange(-context, context + 1, device=dev)
    names: dict[int, str] = {}
    seen = 0
    bar = tqdm(total=budget, unit="tok", desc="neuron stats", disable=not progress or rank != 0)
    try:
        for w in shard_records(model, data, batch_size=batch_size, n_ctx=n_ctx, group=group, layers=layers):
            mask = w.mask.clone()
            if exclude_first:
                mask[:, 0] = False
            n = int(mask.sum())
            if budget is not None and seen + n > budget:
                flat = mask.flatten().nonzero()[budget - seen :, 0]
                mask.view(-1)[flat] = False
                n = budget - seen
            if n:
                names.update(zip(w.meta["doc_index"], w.meta["doc_ids"]))
                _update(w, mask.to(dev), layers, mom, fire, ext, tops, offsets)
                seen += n
                bar.update(n)
            if budget is not None and seen >= budget:
                break
    finally:
        bar.close()
    for ly in layers:
        for s in (mom[ly], fire[ly], ext[ly], tops[ly]):
            s.all_reduce(group)
    total = mom[layers[0]].count
    if total == 0:
        raise ValueError("data gave no positions to measure: every text was empty or one token long, and "
                         "exclude_first=True leaves out position 0 of every row; pass non-empty texts or "
                         "exclude_first=False")
    needed = {int(k) >> 32 for t in tops.values() for k in t.keys.unique().tolist() if k != EMPTY_KEY}
    found: dict[int, str] = {}
    for part in all_gather_objects({i: names[i] for i in needed if i in names}, group=group, what="document names"):
        found.update(part)
    frames = []
    for ly in layers:
        frames.append(pd.DataFrame({
            "layer": ly, "neuron": np.arange(F), "label": [f"L{ly}N{i}" for i in range(F)],
            "n_tokens": mom[ly].count, "firing_rate": fire[ly].rate.cpu().numpy(),
            "mean": mom[ly].mean.cpu().numpy(), "std": mom[ly].std().cpu().numpy(),
            "min": ext[ly].min.double().cpu().numpy(), "max": ext[ly].max.double().cpu().numpy(),
        }))
    df = pd.concat(frames, ignore_index=True)[COLUMNS]
    decode = model.decode_token if model.tokenizer is not None else None
    examples = TopExamples.from_tops(tops, found, decode, context, c.n_layers).to_attr()
    if len(examples) > records.PARQUET_ATTRS_CHARS and rank == 0:
        warnings.warn(f"the top examples take {len(examples) / 2**20:,.0f} MiB in stats.attrs['examples']: to_pickle "
                      "keeps them, but a parquet file with attrs this large cannot be read back with pyarrow's "
                      "default limits. Save them as a record of their own, TopExamples.from_attr(stats.attrs"
                      "['examples']).save(path), and drop them before to_parquet; or measure fewer layers or a "
                      "smaller top_k", UserWarning, stacklevel=3)
    df.attrs.update(examples=examples, model_id=model.model_id,
                    n_tokens=total, world_size=world, exclude_first=exclude_first, context=context, top_k=top_k)
    return df


def _update(w: Any, mask: Tensor, layers: list[int], mom: dict, fire: dict, ext: dict, tops: dict,
            offsets: Tensor) -> None:
    """Add one record's masked positions to every layer's statistics."""
    B, P = mask.shape
    flat = mask.reshape(-1).nonzero()[:, 0]
    rows, pos = flat // P, flat % P
    keys = _keys(w.meta["doc_index"], w.meta["row_in_doc"], P, mask.device).reshape(-1)[flat]
    tokens = w.tokens.to(mask.device)
    real = w.mask.to(mask.device)
    for ly in layers:
        a = w.acts[ly]
        x = a.reshape(B * P, -1).index_select(0, flat)  # [n, F]

        def window(feat: Tensor, sample: Tensor, a: Tensor = a) -> dict[str, Tensor]:
            r, p = rows[sample].unsqueeze(-1), pos[sample].unsqueeze(-1) + offsets  # [m, 1], [m, W]
            pc = p.clamp(0, P - 1)
            ok = (p >= 0) & (p < P) & real[r, pc]
            return {"tokens": torch.where(ok, tokens[r, pc], -1),
                    "acts": torch.where(ok, a[r, pc, feat.unsqueeze(-1)].float(), float("nan"))}

        col_max = x.amax(0)
        mom[ly].update(x)
        fire[ly].update(x)
        ext[ly].update(x, amax=col_max)
        tops[ly].update(x, keys, window, col_max=col_max)
