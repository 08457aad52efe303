"""Attention patterns on demand: ``[batch, head, query, key]``, masked, for every family.

Patterns come from the checkpoint's own attention modules run eagerly (the model's raw
Hugging Face copy, which ``interp.load`` keeps beside the bridge), read by a forward hook
on each attention module and reduced layer by layer, so a caller that only needs a score
never holds every layer's ``[batch, head, pos, pos]`` at once. Grouped-query attention is
expanded by the checkpoint itself (one pattern per query head; query head ``h`` reads kv
head ``h // (n_heads // n_kv_heads)``). Rotary and learned positions are the checkpoint's.
TransformerLens processing never changes a pattern (folding LayerNorm and centring
weights leave every attention score as it is), so the same patterns serve ``"compat"`` and
``"raw"`` models. When the model keeps no raw copy (``fast=False``), or when hooks are
active on the bridge (inside ``interp.ablate``), patterns come from TransformerLens's
``blocks.{l}.attn.hook_pattern`` instead; both agree to float rounding (tested).

Masking: inputs are right-padded (``Tokens``), so a real query never attends to padding;
rows of padding queries are set to zero.

Examples:
    >>> import interp
    >>> pat = interp.attention_patterns(interp.load(), "def f(x):\\n    return x", layers=[0])[0]
    >>> pat.shape[1], bool((pat.sum(-1)[0] - 1).abs().max() < 1e-5)
    (4, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp._checks import check_indices, check_int
from interp._threads import with_analysis_threads
from interp.tokens import Tokens

Reducer = Callable[[int, Tensor], None]


class _Done(Exception):
    """Raised inside the last hook that is needed, to skip the layers after it."""


def as_tokens(model: Any, inputs: Any, *, prepend_bos: bool | None = None, chunk: bool = False,
              split_special_tokens: bool | None = None) -> Tokens:
    """A right-padded ``Tokens`` batch from a str, list of str, LongTensor or ``Tokens``
    (the options: see ``Model.to_tokens``)."""
    if isinstance(inputs, Tokens):
        return model._check_tokens(inputs)
    return model.to_tokens(inputs, prepend_bos=prepend_bos, chunk=chunk, split_special_tokens=split_special_tokens)


def _attention_modules(model: Any) -> list[torch.nn.Module] | None:
    """The raw checkpoint's attention module of every layer, or None when it has none."""
    hf = getattr(model, "_raw_hf", None)
    if hf is None:
        return None
    from interp.capture import hf_module_paths

    modules = dict(hf.named_modules())
    paths = hf_module_paths(model.bridge)["o"]
    return [modules[p.rsplit(".", 1)[0]] for p in paths]


@contextlib.contextmanager
def _eager(hf: Any) -> Iterator[None]:
    """Temporarily run the checkpoint's attention eagerly, so each module returns its pattern."""
    configs = {id(m.config): m.config for m in hf.modules() if getattr(m, "config", None) is not None}
    old = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = old[k]


def source(model: Any) -> str:
    """Where patterns come from for this model now: ``"checkpoint"`` or ``"bridge"``."""
    return "checkpoint" if _attention_modules(model) is not None and not model.active_hooks() else "bridge"


def for_each_pattern(model: Any, toks: Tokens, layers: Sequence[int], fn: Reducer) -> None:
    """Run one forward and call ``fn(layer, pattern)`` for each layer in ``layers`` with its
    masked pattern ``Float[batch, head, query, key]`` (float32), in layer order. Nothing is
    kept: ``fn`` reduces what it needs."""
    mask = toks.mask.to(model.device)
    keep = set(layers)
    last = max(keep)

    def masked(p: Tensor) -> Tensor:
        return p.detach().float() * mask[:, None, :, None]

    mods = _attention_modules(model)
    if mods is None or model.active_hooks():
        pats = model._bridge_patterns(toks.tokens, sorted(keep))
        for ly in sorted(keep):
            fn(ly, masked(pats.pop(ly)))
        return
    hf = model._raw_hf

    def hook(layer: int):
        def f(mod: Any, args: Any, out: Any) -> None:
            fn(layer, masked(out[1]))
            if layer == last:
                raise _Done
        return f

    base = getattr(hf, hf.base_model_prefix, hf) if getattr(hf, "base_model_prefix", "") else hf
    handles = [mods[ly].register_forward_hook(hook(ly)) for ly in sorted(keep)]
    try:
        with model._lock, _eager(hf), torch.no_grad():
            base(input_ids=toks.tokens.to(model.device), use_cache=False)
    except _Done:
        pass
    finally:
        for h in handles:
            h.remove()


@with_analysis_threads
def attention_patterns(
    model: Any, inputs: Any, *, layers: Sequence[int] | int | None = None, prepend_bos: bool | None = None,
    chunk: bool = False, split_special_tokens: bool | None = None,
) -> dict[int, Float[Tensor, "batch head query key"]]:
    """Attention patterns of ``layers`` (default all) for ``inputs``.

    Args:
        model: an ``interp.Model``.
        inputs: a str, a list of str (a right-padded batch), a LongTensor ``[batch, pos]`` or
            ``Tokens``; ``prepend_bos`` / ``chunk`` / ``split_special_tokens``: see ``model.to_tokens``.
        layers: an int or ints (negative count from the end).
    Returns:
        ``{layer: Float[batch, head, query, key]}`` (float32): rows sum to 1 on real queries,
        0 on padding; keys after the query are 0. ``n_heads`` patterns per layer under
        grouped-query attention.
    Raises:
        IndexOutOfRangeError: a layer out of range.
    """
    layers = check_indices("layers", layers, model.cfg.n_layers, "layer")
    toks = as_tokens(model, inputs, prepend_bos=prepend_bos, chunk=chunk, split_special_tokens=split_special_tokens)
    out: dict[int, Tensor] = {}
    for_each_pattern(model, toks, layers, lambda ly, p: out.__setitem__(ly, p))
    return {ly: out[ly] for ly in layers}


@with_analysis_threads
def pattern_frame(
    model: Any,
    inputs: Any,
    *,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    row: int = 0,
    prepend_bos: bool | None = None,
    chunk: bool = False,
    split_special_tokens: bool | None = None,
) -> pd.DataFrame:
    """One row of a batch's patterns as a tidy frame, for ``interp.plots.attention_pattern``.

    Returns:
        One row per (layer, head, query, key) with key <= query on real tokens: layer:int,
        head:int, label:str ("L1H2"), query_pos:int, key_pos:int, query_token:str, key_token:str,
        weight:float. ``attrs``: tokens (the row's token strings), source.
        ``prepend_bos`` / ``chunk`` / ``split_special_tokens``: see ``Model.to_tokens``.
    Examples:
        >>> df = pattern_frame(interp.load(), "x = 1", layers=[0], heads=[2])
        >>> list(df.columns)[:5]
        ['layer', 'head', 'label', 'query_pos', 'key_pos']
    """
    layers = check_indices("layers", layers, model.cfg.n_layers, "layer")
    heads = check_indices("heads", heads, model.cfg.n_heads, "head")
    toks = as_tokens(model, inputs, prepend_bos=prepend_bos, chunk=chunk, split_special_tokens=split_special_tokens)
    row = check_int("row", row, minimum=0, maximum=toks.tokens.shape[0] - 1)
    n = int(toks.mask[row].sum())
    ids = toks.tokens[row, :n].tolist()
    strs = [model.decode_token(t) for t in ids] if model.tokenizer is not None else [str(t) for t in ids]
    q, k = torch.tril_indices(n, n)
    parts = []

    def take(ly: int, p: Tensor) -> None:
        w = p[row][heads][:, :n, :n][:, q, k].cpu()  # [head, n_pairs]
        for j, h in enumerate(heads):
            parts.append(pd.DataFrame(dict(layer=ly, head=h, label=f"L{ly}H{h}", query_pos=q.numpy(), key_pos=k.numpy(),
                                           weight=w[j].numpy())))

    for_each_pattern(model, toks, layers, take)
    df = pd.concat(parts, ignore_index=True)
    tok = pd.Series(strs)
    df.insert(5, "query_token", tok.iloc[df["query_pos"].to_numpy()].to_numpy())
    df.insert(6, "key_token", tok.iloc[df["key_pos"].to_numpy()].to_numpy())
    df.attrs.update(tokens=strs, source=source(model), model_id=model.model_id)
    return df
