"""Attribution patching (Nanda 2023; Syed, Rager and Conmy 2023): the first-order estimate of
activation patching for every component at once,

    metric(patched) - metric(corrupt)  ~  grad_a metric(corrupt) . (a_clean - a_corrupt),

from one clean forward and one corrupt forward and backward. Gradients are taken with
``torch.autograd.grad`` on the recorded activations, so no parameter's ``.grad`` is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._threads import with_analysis_threads
from interp.patching._inputs import check_by, components, evaluate, frame, prepare, resolve
from interp.patching._runner import Runner
from interp.patching.activation import _basis


def _per_position(comp_kind: str, g: Tensor, d: Tensor, runner: Runner, basis: Tensor | None) -> Tensor:
    """The estimate per (position, index) summed over prompts: ``[pos, n]`` (``n`` heads or
    neurons, 1 for a layer-level component)."""
    if comp_kind == "head":
        v = (g * d).sum(-1)
    elif comp_kind == "neuron":
        v = g * d
    elif comp_kind == "subspace":
        Bx = basis.to(device=g.device, dtype=g.dtype)
        v = ((g @ Bx) * (runner.to_compat(d) @ Bx)).sum(-1, keepdim=True)
    else:
        v = (g * d).sum(-1, keepdim=True)
    return v.sum(0)


def _frozen_scale_estimates(model: Any, comps: list, rec_c: dict, rec_k: dict, grad_at: dict) -> dict:
    """For heads and neurons in post-norm blocks: the linear estimate with the block's norm scale
    held fixed, ``sum dm/dwrite . (gain * d_out) / s`` (gain in ``W_O`` / ``W_out``)."""
    out: dict[Any, float] = {}
    w = model.weights
    for comp in comps:
        head = comp.kind == "head"
        block, L = ("attn" if head else "mlp"), comp.layer
        g = grad_at.get((block, L))
        kc = rec_k[comp.site].detach().double()
        d = rec_c[comp.site].to(kc) - kc  # [b, p, H, dh] or [b, p, N]
        if g is None:
            out[comp] = 0.0
            continue
        gs = g.detach().double() / rec_k[(f"{block}_scale", L)].detach().double()  # [b, p, d_model]
        if head:
            W = w.W_O[L, comp.index].double().to(gs.device)  # [dh, d_model]
            v = ((d[:, :, comp.index] @ W) * gs).sum(-1)  # [b, p]
        else:
            v = d[:, :, comp.index] * (gs @ w.mlp_out(L)[comp.index].double().to(gs.device))
        v = v.sum(0)
        out[comp] = float(v.sum() if comp.pos is None else v[comp.pos])
    return out


@with_analysis_threads
def attribution_patching(
    model: Any,
    clean: Any,
    corrupt: Any,
    *,
    metric: Any = None,
    by: str | Sequence[str] = ("head", "neuron"),
    positions: Any = None,
    layers: Any = None,
    answers: Any = None,
    subspace: Any = None,
) -> pd.DataFrame:
    """The linear estimate of ``activation_patching`` for every component, from one clean
    forward and one corrupt forward and backward.

    Arguments as in ``activation_patching`` (``by`` defaults to every head and neuron).
    Returns:
        The same frame as ``activation_patching``, where ``metric_patched`` is the estimate
        ``metric_corrupt + approximation`` and ``effect`` is ``approximation / (metric_clean -
        metric_corrupt)``; plus approximation:float, the estimated change of the metric. In
        post-norm blocks a head's or neuron's estimate includes the path through its block's norm
        scale; ``norm_mediated`` is that path's share (the estimate minus the frozen-scale
        estimate ``dm/dwrite . g * dout / s``, in effect units; 0 elsewhere).
        ``attrs["method"] == "attribution"``.
    Examples:
        >>> att = interp.attribution_patching(model, clean, corrupt, answers=(")", "]"))
        >>> att.sort_values("effect").tail(3)[["component", "effect", "approximation"]]
    """
    prep = prepare(model, clean, corrupt, metric, answers)
    kinds = check_by(by)
    B, n_pos = prep.clean.shape
    comps = components(model, kinds, layers, positions, n_pos)
    basis = _basis(subspace, model.cfg.d_model) if "subspace" in kinds else None
    runner = Runner(model)
    sites = sorted({c.site for c in comps}, key=lambda s: (s[1], s[0]))
    through = [c for c in comps if model.cfg.post_norm and c.kind in ("head", "neuron")]
    writes = sorted({("attn" if c.kind == "head" else "mlp", c.layer) for c in through} - set(sites))
    scales = sorted({("attn_scale" if c.kind == "head" else "mlp_scale", c.layer) for c in through})
    logits_c, rec_c = runner.run(prep.clean, capture=sites, last_only=prep.last_only)
    logits_k, rec_k = runner.run(prep.corrupt, capture=sites + writes + scales, grad=True, last_only=prep.last_only)
    prep = resolve(model, prep, logits_c, logits_k)
    m_clean = float(evaluate(prep.metric, logits_c, B)[0])
    m = evaluate(prep.metric, logits_k, B)[0]
    grads = torch.autograd.grad(m, [rec_k[s] for s in sites + writes], allow_unused=True)
    m_corrupt = float(m.detach())
    grad_at = dict(zip(sites + writes, grads))
    table: dict[tuple[str, tuple[str, int]], Tensor] = {}
    kinds_at: dict[tuple[str, int], set[str]] = {}
    for c in comps:
        kinds_at.setdefault(c.site, set()).add(c.kind)
    for site, g in zip(sites, grads):
        kc = rec_k[site].detach()
        g = torch.zeros_like(kc) if g is None else g.detach()
        d = rec_c[site].to(kc) - kc
        for kind in kinds_at[site]:
            table[(kind, site)] = _per_position(kind, g.double(), d.double(), runner, basis).cpu()
    approx = np.empty(len(comps))
    summed = {key: (t.sum(0).numpy(), t.numpy()) for key, t in table.items()}
    for i, comp in enumerate(comps):
        tot, per = summed[(comp.kind, comp.site)]
        j = max(comp.index, 0)
        approx[i] = tot[j] if comp.pos is None else per[comp.pos, j]
    str_tok = [model.to_str_tokens(t[None], prepend_bos=False)[0] for t in (prep.clean[0], prep.corrupt[0])]
    df = frame(comps, m_corrupt + approx, m_clean, m_corrupt, str_tok[1], getattr(subspace, "name", "subspace"))
    df["approximation"] = approx
    direct = _frozen_scale_estimates(model, through, rec_c, rec_k, grad_at)
    mediated = np.zeros(len(comps))
    denom = m_clean - m_corrupt
    for i, comp in enumerate(comps):
        if comp in direct:
            mediated[i] = (approx[i] - direct[comp]) / denom if denom else np.nan
    df["norm_mediated"] = mediated
    df.attrs.update(
        method="attribution", metric=prep.name, backend=runner.backend, n_forwards=2, n_backwards=1,
        answers=None if prep.answers is None else [model.decode_token(t[0]) for t in prep.answers],
        str_tokens={"clean": str_tok[0], "corrupt": str_tok[1]}, processing=model.cfg.processing,
    )
    return df

