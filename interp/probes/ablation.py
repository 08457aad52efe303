"""Causal check of a subspace: remove it from the stream and measure what breaks.

``ablate`` replaces the stream ``x`` at chosen sites with ``x - P x + P mean`` (``mode="mean"``)
or ``x - P x`` (``mode="zero"``), where ``P`` projects onto the subspace. Later layers see
the ablated stream, and may write into the subspace again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_choice, check_fraction, check_int, check_stream
from interp._threads import with_analysis_threads
from interp.probes.labels import get_labeler
from interp.probes.linear import LinearProbe
from interp.probes.memory_map import _basis
from interp.probes.probing import split_documents
from interp.probes.sites import Site, check_model, collect, resolve_sites
from interp.probes.subspace import Subspace
from interp.stats.moments import Moments

MODES = ("mean", "zero")
EFFECT_COLUMNS = ["metric", "layer", "where", "site", "clean", "ablated", "delta", "random_ablated", "random_delta"]


def _sites(model: Any, at: Any) -> list[Site]:
    """``at``: a layer (its ``resid_pre``; ``n_layers`` is the final stream), a
    ``(layer, where)`` pair, or a list of these."""
    items = at if isinstance(at, list) else [at]
    if not items:
        raise ValueError("at=[] selects nothing; pass a layer, a (layer, where) pair or a list of them")
    sites: list[Site] = []
    for item in items:
        if isinstance(item, Site):
            layer, where = item.layer, item.where
        elif isinstance(item, tuple) and len(item) == 2:
            layer, where = item
        elif isinstance(item, int) and not isinstance(item, bool):
            layer, where = item, "resid_pre"
        else:
            raise TypeError(
                f"at={at!r}: each site must be a layer int or a (layer, where) pair such as (1, 'resid_pre')"
            )
        if where == "resid_mid" and model.cfg.parallel:
            raise ValueError(
                f"at={at!r}: resid_mid is not part of a parallel attention+MLP block's computation; "
                "use 'resid_pre' or 'resid_post'"
            )
        for s in resolve_sites(model, [layer], where):
            if s not in sites:
                sites.append(s)
    return sites


def _hook_name(model: Any, site: Site) -> str:
    n = model.cfg.n_layers
    if site.where == "resid_pre" and site.layer == n:
        return f"blocks.{n - 1}.hook_resid_post"
    return f"blocks.{site.layer}.hook_{site.where}"


@contextlib.contextmanager
def ablate(
    model: Any,
    subspace: Subspace,
    *,
    at: Any,
    mode: str = "mean",
    mean: Tensor | Mapping[Any, Tensor] | None = None,
) -> Iterator[Any]:
    """Remove ``subspace`` from the residual stream at ``at`` for every forward pass inside
    the ``with`` block; the hooks are removed on exit, also when the block raises.

    Args:
        at: a layer (its ``resid_pre``; ``n_layers`` is the final stream), a
            ``(layer, where)`` pair, or a list of these.
        mode: ``"mean"`` (default): replace the subspace component with that of ``mean``;
            ``"zero"``: delete it.
        mean: for ``"mean"``: a ``[d_model]`` stream mean used at every site, or a dict
            ``{(layer, where): [d_model]}``. ``site_means(model, data, at=...)`` computes one.
    Yields:
        the model.
    Examples:
        >>> with interp.ablate(model, sub, at=1, mode="zero"):
        ...     logits = model.logits("x = 1")
    """
    check_model(model)
    check_choice("mode", mode, MODES)
    B = _basis(subspace, model.cfg.d_model, f"model {model.cfg.name!r} has").to(model.device)
    sites = _sites(model, at)
    means: dict[Site, Tensor] = {}
    if mode == "mean":
        if mean is None:
            raise ValueError(
                "mode='mean' needs mean=...: the stream's mean at the ablated sites; compute it with "
                "interp.probes.site_means(model, data, at=...) or use mode='zero'"
            )
        for s in sites:
            m = mean
            if isinstance(mean, Mapping):
                m = mean.get(s, mean.get((s.layer, s.where), mean.get(s.layer)))
                if m is None:
                    raise KeyError(f"mean has no entry for site {(s.layer, s.where)}; pass a mean for every site in at")
            if not isinstance(m, Tensor) or m.shape != (model.cfg.d_model,) or not torch.isfinite(m).all():
                raise ValueError(
                    f"mean for site {(s.layer, s.where)} must be a finite tensor of shape [{model.cfg.d_model}], "
                    f"got {getattr(m, 'shape', type(m).__name__)}"
                )
            means[s] = m.to(model.device)

    def make_hook(site: Site):
        def hook(x: Tensor, hook: Any) -> Tensor:
            Bx = B.to(x.dtype)
            out = x - (x @ Bx) @ Bx.T
            if site in means:
                out = out + (means[site].to(x.dtype) @ Bx) @ Bx.T
            return out
        return hook

    with model.hooks([(_hook_name(model, s), make_hook(s)) for s in sites]):
        yield model


def site_means(
    model: Any, data: Any, *, at: Any, max_tokens: int | None = 20_000, batch_size: int = 8,
    n_ctx: int | None = None, exclude_first: bool = True, progress: bool = False,
) -> dict[tuple[int, str], Tensor]:
    """The stream's mean ``[d_model]`` at each site in ``at``, over real positions of ``data``:
    an ``interp.stats.Moments`` streamed batch by batch (memory: one batch, not the corpus)."""
    sites = _sites(model, at)
    mom = Moments((len(sites), model.cfg.d_model))
    collect(model, data, sites, max_tokens=max_tokens, batch_size=batch_size, n_ctx=n_ctx,
            exclude_first=exclude_first, progress=progress, desc="site means", moments=mom, keep_features=False)
    return {(s.layer, s.where): mom.mean[i].float() for i, s in enumerate(sites)}


@with_analysis_threads
def ablation_effect(
    model: Any,
    data: Any,
    subspace: Subspace,
    *,
    at: Any,
    mode: str = "mean",
    label: Any = None,
    layers: Any = None,
    max_tokens: int | None = 20_000,
    top_k: int = 50,
    max_iter: int = 100,
    test_size: float = 0.2,
    batch_size: int = 8,
    n_ctx: int | None = None,
    exclude_first: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """What removing ``subspace`` at ``at`` does: next-token loss, and (with ``label``) the
    held-out accuracy of probes at every ``resid_pre`` site at or after the first ablated
    site (the ablated site itself included; ``layers`` picks some of them: the ``resid_pre``
    streams to probe, default every one from the first ablated site to the final stream).

    A random subspace of the same dimension, ablated the same way, is the yardstick.
    ``data`` is read three times (clean, ablated, random), so it must be re-iterable (a list
    of texts, a corpus name, a path or a token tensor). Probes are trained on clean streams of
    the training documents and scored on the held-out documents' clean and ablated streams.
    The mean for ``mode="mean"`` is the clean stream's mean over the same data.

    Returns:
        metric:str ("loss" or "probe_accuracy"), layer:Int64, where:str, site:str (<NA> for the
        loss), clean:float, ablated:float, delta:float (ablated - clean), random_ablated:float,
        random_delta:float.
    """
    check_model(model)
    check_choice("mode", mode, MODES)
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress,
                 exclude_first=exclude_first)
    check_fraction("test_size", test_size)
    seed = check_int("seed", seed)
    LinearProbe(top_k=top_k, max_iter=max_iter)._check_params()
    sub_sites = _sites(model, at)
    B = _basis(subspace, model.cfg.d_model, f"model {model.cfg.name!r} has")
    first = min(s.layer + (s.where != "resid_pre") for s in sub_sites)  # first resid_pre downstream
    labeler = get_labeler(label) if label is not None else None
    downstream = list(range(first, model.cfg.n_layers + 1))
    if layers is not None:
        picked = resolve_sites(model, layers, "resid_pre")
        if any(site.layer < first for site in picked):
            raise ValueError(f"layers={list(layers) if not isinstance(layers, int) else layers!r} includes streams "
                             f"before the first ablated site (L{first}_resid_pre); pass layers >= {first}")
        downstream = [site.layer for site in picked]
    probe_sites = resolve_sites(model, downstream, "resid_pre") if labeler else []
    all_sites = list(dict.fromkeys(sub_sites + probe_sites))
    kw = dict(labeler=labeler, max_tokens=max_tokens, batch_size=batch_size, n_ctx=n_ctx,
              exclude_first=exclude_first, loss=True, progress=progress)
    mom = Moments((len(all_sites), model.cfg.d_model)) if mode == "mean" else None
    clean = collect(model, data, all_sites, desc="clean", moments=mom, **kw)
    means = {(s.layer, s.where): mom.mean[all_sites.index(s)].float() for s in sub_sites} if mom is not None else None
    rand = Subspace.random(B.shape[0], B.shape[1], seed=seed, name="random")
    runs = {}
    for name, sub in (("ablated", subspace), ("random", rand)):
        with ablate(model, sub, at=at, mode=mode, mean=means):
            runs[name] = collect(model, data, probe_sites, desc=name, **kw)
    rows = [dict(metric="loss", layer=None, where=None, site=None, clean=clean.loss,
                 ablated=runs["ablated"].loss, random_ablated=runs["random"].loss)]
    if labeler is not None:
        n = min(len(clean.y), len(runs["ablated"].y), len(runs["random"].y))
        test = split_documents(clean.docs[:n], len(clean.doc_names), test_size=test_size, seed=seed)
        idx = [all_sites.index(s) for s in probe_sites]
        X, y = clean.X[idx, :n], clean.y[:n]
        probe = LinearProbe(top_k=top_k, max_iter=max_iter).fit(X[:, ~test], y[~test])
        acc = {"clean": probe.score(X[:, test], y[test])}
        for name in runs:
            acc[name] = probe.score(runs[name].X[:, :n][:, test], y[test])
        for i, s in enumerate(probe_sites):
            rows.append(dict(metric="probe_accuracy", layer=s.layer, where=s.where, site=s.label,
                             clean=float(acc["clean"][i]), ablated=float(acc["ablated"][i]),
                             random_ablated=float(acc["random"][i])))
    df = pd.DataFrame(rows)
    df["delta"] = df["ablated"] - df["clean"]
    df["random_delta"] = df["random_ablated"] - df["clean"]
    df["layer"] = df["layer"].astype("Int64")
    for col in ("metric", "where", "site"):
        df[col] = df[col].astype("string")  # <NA> on the loss row
    return df[EFFECT_COLUMNS]
