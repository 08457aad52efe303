"""Where probes read the stream (sites), and streaming features and labels out of a model
in bounded memory.

A site is ``(layer, where)`` with ``where`` one of ``"resid_pre"``, ``"resid_mid"``,
``"resid_post"``; ``(n_layers, "resid_pre")`` is the final stream, entering the final norm.
For parallel attention+MLP blocks ``resid_mid`` is ``resid_pre`` plus the attention output,
as in ``ResidualWrites.resid``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp._checks import check_choice, check_index, check_int
from interp._progress import tqdm
from interp.errors import IndexOutOfRangeError
from interp.probes.labels import IGNORE, Labeler, check_labels
from interp.tokens import Tokens

log = logging.getLogger(__name__)

WHERE = ("resid_pre", "resid_mid", "resid_post")


@dataclass(frozen=True, order=True)
class Site:
    """A place in the residual stream: the stream at ``where`` of block ``layer``."""

    layer: int
    where: str = "resid_pre"

    @property
    def label(self) -> str:
        return f"L{self.layer}_{self.where}"


def check_model(model: Any) -> None:
    """Raise ``TypeError`` unless ``model`` is an ``interp.Model``."""
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model (from interp.load), got {type(model).__name__}")


def resolve_sites(model: Any, layers: Any, where: str, *, include_final: bool = True) -> list[Site]:
    """Sites in layer order. ``layers=None``: every layer, plus the final stream
    (``layer = n_layers``) for ``where="resid_pre"`` when ``include_final``. ``layers`` may
    name ``n_layers`` itself with ``"resid_pre"``; negative indices count from the end."""
    check_model(model)
    check_choice("where", where, WHERE)
    n = model.cfg.n_layers
    if where == "resid_mid" and model.cfg.parallel:
        log.info("resid_mid of a parallel block is resid_pre plus the attention output")
    if layers is None:
        ls = list(range(n)) + ([n] if include_final and where == "resid_pre" else [])
    else:
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = [layers]
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
            raise TypeError(f"layers={layers!r} must be an int, a sequence of ints, or None")
        if not layers:
            raise ValueError("layers=[] selects nothing; pass None for all layers")
        size = n + 1 if where == "resid_pre" else n
        ls = []
        for v in layers:
            try:
                ls.append(check_index("layers", v, size, "layer"))
            except IndexOutOfRangeError as e:
                extra = f" ({n} is the final stream)" if where == "resid_pre" else ""
                raise IndexOutOfRangeError(
                    f"layers={list(layers)} out of range for where={where!r} in a {n}-layer model: "
                    f"use 0..{size - 1}{extra} or -{size}..-1"
                ) from e
        ls = sorted(set(ls))
    return [Site(ly, where) for ly in ls]


def hook_names(model: Any, site: Site) -> tuple[str, ...]:
    """TransformerLens hook names whose outputs sum to the stream at ``site``."""
    n = model.cfg.n_layers
    if site.where == "resid_pre":
        return (f"blocks.{n - 1}.hook_resid_post",) if site.layer == n else (f"blocks.{site.layer}.hook_resid_pre",)
    if site.where == "resid_post":
        return (f"blocks.{site.layer}.hook_resid_post",)
    if model.cfg.parallel:
        return (f"blocks.{site.layer}.hook_resid_pre", f"blocks.{site.layer}.hook_attn_out")
    return (f"blocks.{site.layer}.hook_resid_mid",)


def capture_hooks(model: Any, sites: Sequence[Site], store: dict[Site, Tensor]) -> list[tuple[str, Any]]:
    """Forward hooks that put the stream at each site into ``store`` (detached, float32)."""
    hooks = []
    for site in sites:
        names = hook_names(model, site)

        def hook(t: Tensor, hook: Any, site: Site = site) -> None:
            t = t.detach().float()
            store[site] = store[site] + t if site in store else t

        hooks += [(name, hook) for name in names]
    return hooks


#: Log-probabilities made at a time for a loss (numbers): 128M, 512 MB of float32, so a batch of a
#: 262k-token vocabulary's logits is not copied whole.
LOSS_BLOCK = 1 << 27


def stream_at_sites(writes: Any, sites: Sequence[Site]) -> dict[Site, Tensor]:
    """The stream at each site, ``[batch, pos, d_model]`` float32, summed from a record."""
    acc = writes.accumulated_resid()  # [n_layers + 1, batch, pos, d_model]
    out: dict[Site, Tensor] = {}
    for site in sites:
        if site.where == "resid_pre":
            out[site] = acc[site.layer]
        elif site.where == "resid_post":
            out[site] = acc[site.layer + 1]
        else:
            out[site] = acc[site.layer] + writes.attn_write(site.layer)
    return {k: v.float() for k, v in out.items()}


@dataclass
class Batch:
    """tokens/mask ``[batch, pos]``; doc_ids per row; continues ``[batch]``: True where a
    row continues the previous row's document (so it starts mid-text)."""

    tokens: Tensor
    mask: Tensor
    doc_ids: list[str]
    continues: Tensor


def _tensor_batches(tokens: Tokens, batch_size: int) -> Iterator[Batch]:
    for s in range(0, tokens.tokens.shape[0], batch_size):
        t, m = tokens.tokens[s : s + batch_size], tokens.mask[s : s + batch_size]
        ids = [str(i) for i in range(s, s + t.shape[0])]
        yield Batch(t, m, ids, torch.zeros(t.shape[0], dtype=torch.bool))


def iter_batches(model: Any, data: Any, *, batch_size: int = 8, n_ctx: int | None = None) -> Iterator[Batch]:
    """Batches from ``data``: a list of texts (each a document), a corpus name
    (``"stdlib"``, ``"stdlib:val"``), a file or directory, a LongTensor ``[batch, pos]`` or a
    ``Tokens`` batch (each row a document). Texts are cut into windows of ``n_ctx`` tokens
    (default ``interp.data.DEFAULT_ROW_TOKENS``, at most the model's context), each starting with BOS."""
    batch_size = check_int("batch_size", batch_size)  # numpy ints too
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    if isinstance(data, Tokens):
        yield from _tensor_batches(data, batch_size)
        return
    if isinstance(data, Tensor):
        yield from _tensor_batches(model.to_tokens(data, prepend_bos=False), batch_size)
        return
    if isinstance(data, str) and not data.startswith("stdlib") and not Path(data).exists():
        raise FileNotFoundError(
            f"data={data[:60]!r} is neither a corpus name ('stdlib', 'stdlib:val') nor an existing "
            "file or directory; to probe a text, pass a list of texts: [text]"
        )
    if not isinstance(data, (str, Path, list, tuple)):
        raise TypeError(
            f"data of type {type(data).__name__} is not supported; pass a list of texts, 'stdlib:val', "
            "a file or directory path, or a LongTensor [batch, pos] of token ids"
        )
    if isinstance(data, (list, tuple)) and not data:
        raise ValueError("data=[] holds no texts; pass at least two documents")
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer; pass data as a LongTensor [batch, pos] of token ids")
    from interp.data import row_length, token_batches

    n_ctx = row_length(n_ctx, model.cfg.n_ctx)
    prev = None
    for b in token_batches(
        model.tokenizer, data, n_ctx=n_ctx, batch_size=batch_size, min_tokens=2, progress=False,
        prepend_bos=model.tokenizer.bos_token_id is not None, split_special_tokens=getattr(model, "split_special_tokens", True),
    ):
        cont = []
        for d in b.doc_ids:
            cont.append(d == prev)
            prev = d
        yield Batch(b.tokens, b.mask, list(b.doc_ids), torch.tensor(cont, dtype=torch.bool))


_VOCAB_STRINGS: dict[str, list[str]] = {}


def vocab_strings(model: Any) -> list[str]:
    """Each token id's string, decoded once per model."""
    key = model.model_id
    if key not in _VOCAB_STRINGS:
        if model.tokenizer is None:
            raise ValueError("this labeler reads token strings but the model has no tokenizer")
        _VOCAB_STRINGS[key] = [model.decode_token(i) for i in range(model.cfg.d_vocab)]
    return _VOCAB_STRINGS[key]


@dataclass
class Collected:
    """Features and labels streamed out of a model.

    chunks: per batch ``[site, n_b, d_model]`` float32 (``X`` concatenates them; ``split``
    moves them into train and test tensors without holding two full copies);
    y: ``[n]`` labels (zeros without a labeler); types: ``[n]`` current token ids;
    docs: ``[n]`` document index into ``doc_names``; loss_sum / loss_count: next-token loss
    summed over target positions (when asked).
    """

    sites: list[Site]
    chunks: list[Tensor | None]
    y: Tensor
    types: Tensor
    docs: Tensor
    doc_names: list[str]
    loss_sum: float = 0.0
    loss_count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.loss_count, 1)

    @property
    def X(self) -> Tensor:
        """All features ``[site, n, d_model]`` (concatenated on first use)."""
        if len(self.chunks) != 1:
            self.chunks = [torch.cat(self.chunks, 1)]
        return self.chunks[0]

    def for_label(self, j: int) -> Collected:
        """The positions labeler ``j`` labels, with its labels (a record collected with a
        sequence of labelers; this record keeps its own features)."""
        keep = self.y[:, j] != IGNORE
        chunks = [self.X[:, keep]] if self.chunks and self.chunks[0] is not None else []
        return Collected(self.sites, chunks, self.y[keep, j], self.types[keep], self.docs[keep],
                         self.doc_names, self.loss_sum, self.loss_count)

    def split(self, test: Tensor) -> tuple[Tensor, Tensor]:
        """``(X[:, ~test], X[:, test])``, filled chunk by chunk while the chunks are freed
        (the output pages are touched only as they are filled, so peak memory stays near one
        copy). The record holds no features afterwards."""
        S, d = len(self.sites), self.chunks[0].shape[-1]
        n_test = int(test.sum())
        train_x = torch.empty(S, len(test) - n_test, d)
        test_x = torch.empty(S, n_test, d)
        a = b = start = 0
        for i, chunk in enumerate(self.chunks):
            m = test[start : start + chunk.shape[1]]
            start += chunk.shape[1]
            k = int(m.sum())
            train_x[:, a : a + chunk.shape[1] - k] = chunk[:, ~m]
            test_x[:, b : b + k] = chunk[:, m]
            a, b = a + chunk.shape[1] - k, b + k
            self.chunks[i] = None
        self.chunks = []
        return train_x, test_x


def collect(
    model: Any,
    data: Any,
    sites: Sequence[Site],
    *,
    labeler: Labeler | Sequence[Labeler] | None = None,
    max_tokens: int | None = 50_000,
    batch_size: int = 8,
    n_ctx: int | None = None,
    exclude_first: bool = True,
    loss: bool = False,
    hooks: Sequence[tuple[str, Any]] = (),
    progress: bool = True,
    desc: str = "probe",
    moments: Any = None,
    keep_features: bool = True,
) -> Collected:
    """Stream ``data`` through ``model`` and keep the stream at ``sites`` for every labelled
    position, up to ``max_tokens`` positions. Memory: ``max_tokens * len(sites) * d_model``
    float32 numbers plus one batch's forward pass. ``hooks`` run first (e.g. an ablation).
    ``moments``: an ``interp.stats.Moments((len(sites), d_model))`` updated with every
    batch's features; with ``keep_features=False`` only it (and the labels) are kept.
    ``labeler`` may be a sequence: one pass then labels every position for each of them
    (``y`` is ``[n, n_labelers]``, ``IGNORE`` where one does not label a kept position) and
    ``Collected.for_label(j)`` gives one labeler's view."""
    max_tokens = check_int("max_tokens", max_tokens, allow_none=True)  # numpy ints too
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens!r} must be a positive int or None")
    sites = list(sites)
    many = labeler is not None and not isinstance(labeler, Labeler) and isinstance(labeler, Sequence)
    labelers = list(labeler) if many else ([] if labeler is None else [labeler])
    strings = vocab_strings(model) if any(lb.needs_text for lb in labelers) else None
    xs, ys, types, docs = [], [], [], []
    doc_index: dict[str, int] = {}
    out = Collected(sites, [], torch.empty(0), torch.empty(0), torch.empty(0), [])
    kept = 0
    bar = tqdm(total=max_tokens, unit="tok", desc=desc, disable=not progress)
    try:
        for batch in iter_batches(model, data, batch_size=batch_size, n_ctx=n_ctx):
            mask = batch.mask.clone()
            if exclude_first:
                mask[:, 0] = False
            if labelers:  # label first: a failing labeler costs no forward pass
                str_tokens = None
                if strings is not None:
                    str_tokens = [[strings[t] for t in row] for row in batch.tokens.tolist()]
                shape = tuple(batch.tokens.shape)
                labels = torch.stack([check_labels(lb, lb(batch.tokens, str_tokens, batch.continues), shape)
                                      for lb in labelers], -1)  # [batch, pos, n_labelers]
                mask &= (labels != IGNORE).any(-1)
                if not many:
                    labels = labels[..., 0]
            else:
                labels = torch.zeros_like(batch.tokens)
            if not loss and not mask.any():
                continue
            store: dict[Site, Tensor] = {}
            if hooks or loss or model.active_hooks():  # an edit to the stream must be seen
                result = model._forward(
                    batch.tokens, list(hooks) + capture_hooks(model, sites, store), return_type="logits" if loss else None
                )
            else:  # plain streaming: the fast record, summed into the stream at each site
                store = stream_at_sites(model.run_with_writes(Tokens(batch.tokens, batch.mask)), sites)
            if loss:
                tgt = batch.tokens[:, 1:].to(result.device)
                ok = (batch.mask[:, 1:] & batch.mask[:, :-1]).to(result.device)
                rows = max(1, LOSS_BLOCK // max(1, result.shape[1] * result.shape[2]))
                for r in range(0, result.shape[0], rows):  # [rows, pos, d_vocab] at a time, never the batch
                    lp = result[r:r + rows, :-1].float().log_softmax(-1)
                    nll = -lp.gather(-1, tgt[r:r + rows].unsqueeze(-1))[..., 0]
                    out.loss_sum += float(nll[ok[r:r + rows]].sum())
                out.loss_count += int(ok.sum())
            if max_tokens is not None and kept + int(mask.sum()) > max_tokens:
                flat = mask.flatten().nonzero()[max_tokens - kept :, 0]
                mask.view(-1)[flat] = False
            n = int(mask.sum())
            if n:
                dev_mask = mask.to(next(iter(store.values())).device) if store else mask
                feats = torch.stack([store[s][dev_mask].cpu() for s in sites]) if sites else torch.empty(0, n, 0)
                if moments is not None:
                    moments.update(feats.transpose(0, 1))  # [n, site, d_model]
                if keep_features:
                    xs.append(feats)
                ys.append(labels[mask])
                types.append(batch.tokens[mask])
                row_doc = torch.tensor([doc_index.setdefault(d, len(doc_index)) for d in batch.doc_ids])
                docs.append(row_doc.unsqueeze(1).expand_as(mask)[mask])
                kept += n
                bar.update(n)
            if max_tokens is not None and kept >= max_tokens:
                break
    finally:
        bar.close()
    if not kept:
        raise ValueError(
            "data gave no labelled positions: every position was padding, BOS or labelled -100; "
            "pass longer texts or a different label"
        )
    out.chunks = xs
    out.y, out.types, out.docs = torch.cat(ys), torch.cat(types), torch.cat(docs)
    out.doc_names = list(doc_index)
    log.info("collected %d positions at %d sites (%.1f MB)", kept, len(sites),
             kept * len(sites) * model.cfg.d_model * 4 / 1e6 if keep_features else 0.0)
    return out
