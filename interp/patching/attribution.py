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
        metric_corrupt)``; plus approximation:float, the estimated change of the metric.
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
    logits_c, rec_c = runner.run(prep.clean, capture=sites, last_only=prep.last_only)
    logits_k, rec_k = runner.run(prep.corrupt, capture=sites, grad=True, last_only=prep.last_only)
    prep = resolve(model, prep, logits_c, logits_k)
    m_clean = float(evaluate(prep.metric, logits_c, B)[0])
    m = evaluate(prep.metric, logits_k, B)[0]
    grads = torch.autograd.grad(m, [rec_k[s] for s in sites], allow_unused=True)
    m_corrupt = float(m.detach())
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
    df.attrs.update(
        method="attribution", metric=prep.name, backend=runner.backend, n_forwards=2, n_backwards=1,
        answers=None if prep.answers is None else [model.decode_token(t[0]) for t in prep.answers],
        str_tokens={"clean": str_tok[0], "corrupt": str_tok[1]}, processing=model.cfg.processing,
    )
    return df

