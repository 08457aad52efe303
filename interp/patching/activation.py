"""Activation patching: run the corrupt prompt with one component's clean value written in,
and see how much of the clean behaviour comes back.

The clean run is recorded once (the factored record's own quantities: each head's ``z``,
each neuron's activation, each layer's output, the stream); then many patched copies of
the corrupt prompt run stacked along the batch, one component each. On the raw Hugging Face
model a batch whose patches all sit at layer ``L`` or later runs the layers before ``L``
once and repeats the stream at block ``L`` (they are the same for every copy).

Post-norm blocks (Gemma 2/3, OLMo-2): a head's or neuron's patch changes its block's output, so
the norm on that output rescales every write of the block. Each such patch runs a second time
with that norm's scale frozen at the corrupt run's value; ``norm_mediated`` is the effect minus
the frozen-scale effect: the part that passes through the norm's scale (0 wherever no post-norm
lies between the patch and the stream, and for pre-norm models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_bool, check_int
from interp._progress import tqdm
from interp._threads import with_analysis_threads
from interp.patching._inputs import Component, check_by, components, evaluate, frame, prepare, resolve
from interp.patching._runner import Runner


def _basis(subspace: Any, d_model: int) -> Tensor:
    from interp.probes.memory_map import _basis as probe_basis

    if subspace is None:
        raise ValueError("by='subspace' needs subspace=...: a Subspace (e.g. Subspace.from_probe(...))")
    return torch.linalg.qr(probe_basis(subspace, d_model, "the model has").double())[0].float()


def _patched_value(rec: dict[tuple[str, int], Tensor], comp: Component) -> Tensor:
    """What ``comp``'s patch writes (or, in the corrupt record, what it overwrites)."""
    x = rec[comp.site]
    x = x if comp.pos is None else x[:, comp.pos]
    return x[..., comp.index] if comp.kind == "neuron" else x[..., comp.index, :] if comp.kind == "head" else x


def make_edits(batch: Sequence[Component], clean: dict[tuple[str, int], Tensor], n_prompts: int,
               runner: Runner, basis: Tensor | None) -> dict[tuple[str, int], list]:
    """One edit per site for a batch of components; component ``j`` owns rows
    ``j * n_prompts ... j * n_prompts + n_prompts - 1``."""
    by_site: dict[tuple[str, int], list[tuple[int, Component]]] = {}
    for j, comp in enumerate(batch):
        by_site.setdefault(comp.site, []).append((j, comp))
    B = n_prompts
    edits = {}
    for site, items in by_site.items():
        src = clean[site]
        groups: dict[Any, list[tuple[int, Component]]] = {}
        for j, comp in items:
            groups.setdefault(comp.pos, []).append((j, comp))
        plan = []
        for pos, its in groups.items():
            rows = torch.tensor([j * B + b for j, _ in its for b in range(B)])
            bidx = torch.arange(B).repeat(len(its))
            idx = torch.tensor([comp.index for _, comp in its for _ in range(B)])
            plan.append((pos, its[0][1].kind, rows, bidx, idx))

        def edit(x: Tensor, plan=plan, src=src) -> Tensor:
            x = x.clone()
            for pos, kind, rows, bidx, idx in plan:
                rows, bidx, idx = rows.to(x.device), bidx.to(x.device), idx.to(x.device)
                p = slice(None) if pos is None else pos
                s = src.to(x.dtype)
                if kind in ("head", "neuron"):
                    x[rows, p, idx] = s[bidx, p, idx]
                elif kind == "subspace":
                    Bx = basis.to(device=x.device, dtype=x.dtype)
                    delta = runner.to_compat(s[bidx, p] - x[rows, p])
                    x[rows, p] = x[rows, p] + (delta @ Bx) @ Bx.T
                else:
                    x[rows, p] = s[bidx, p]
            return x

        edits[site] = [edit]
    return edits


def _freeze_scales(batch: Sequence[Component], corrupt: dict[tuple[str, int], Tensor], n_prompts: int) -> dict:
    """Edits that hold each head's / neuron's own block's post-norm scale at the corrupt run's
    value, on that component's rows (``make_edits``' layout); {} when the batch has none."""
    by_site: dict[tuple[str, int], list[int]] = {}
    for j, comp in enumerate(batch):
        if comp.kind in ("head", "neuron"):
            by_site.setdefault(("attn_scale" if comp.kind == "head" else "mlp_scale", comp.layer), []).append(j)
    B = n_prompts
    edits = {}
    for site, js in by_site.items():
        rows = torch.tensor([j * B + b for j in js for b in range(B)])
        bidx = torch.arange(B).repeat(len(js))

        def edit(x: Tensor, rows=rows, bidx=bidx, src=corrupt[site]) -> Tensor:
            x = x.clone()
            x[rows.to(x.device)] = src.to(x.dtype)[bidx.to(x.device)]
            return x

        edits[site] = [edit]
    return edits


@with_analysis_threads
def activation_patching(
    model: Any,
    clean: Any,
    corrupt: Any,
    *,
    metric: Any = None,
    by: str | Sequence[str] = "head",
    positions: Any = None,
    layers: Any = None,
    answers: Any = None,
    subspace: Any = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Patch each component's clean value into the corrupt run and measure the metric.

    Args:
        model: an ``interp.Model``.
        clean / corrupt: a str, a list of str, a LongTensor ``[batch, pos]`` or ``Tokens``;
            the same number of prompts and of tokens in both, no padding (strings get BOS).
        metric: a callable on the logits of one run, ``[batch, pos, d_vocab]`` (in the model's
            convention: centred under ``"compat"``), returning a scalar or ``[batch]`` (averaged).
            Default: the logit difference ``logit[a] - logit[b]`` at the last position, with
            ``answers=(a, b)``.
        by: ``"head"`` (each head's ``z``; default), ``"neuron"`` (each activation),
            ``"attn"`` / ``"mlp"`` / ``"layer"`` (each layer's output; ``"layer"`` is both),
            ``"resid"`` (the stream entering each block), ``"subspace"`` (the stream entering
            each block, patched inside ``subspace`` only), or a list of these.
        positions: ``None`` (default): each position for ``resid``/``subspace``, all positions
            at once for the others; ``"all"``; ``"each"``; or an int / list of ints (each
            patched on its own).
        layers: layers whose components are patched (default all).
        answers: ``(clean_answer, corrupt_answer)``: single tokens (str) or ids, one pair or one
            per prompt. Default: the clean and the corrupt run's top next tokens.
        subspace: a ``Subspace`` (or ``[d_model, k]`` basis) for ``by="subspace"``.
        batch_size: patched runs per forward (default: about 4096 tokens per forward, fewer when
            a custom metric needs the logits at every position).
    Returns:
        One row per component (and position): component:str ("L3H5", "L3N120",
        "L3_attn", "L3_mlp", "L3_resid_pre", "L3_<subspace name>"), kind:str, layer:int,
        head:Int64, neuron:Int64, pos:Int64 (<NA>: every position), token:str (at pos),
        effect:float ((patched - corrupt) / (clean - corrupt): 0 is the corrupt run, 1 the
        clean run), metric_patched, metric_clean, metric_corrupt:float, norm_mediated:float (post-norm
        blocks: effect minus the effect with the patched block's norm scale frozen at the corrupt
        run's; see the module docstring). ``attrs``: method,
        metric, answers, backend, n_forwards, str_tokens (clean and corrupt, first prompt).
    Raises:
        PromptMismatchError: prompts of different lengths (or counts).
        NotSingleTokenError: an answer that is not one token.
    Examples:
        >>> df = interp.activation_patching(model, "return f(a", "return f[a", answers=(")", "]"))
        >>> df.sort_values("effect").tail(3)[["component", "effect"]]
    """
    prep = prepare(model, clean, corrupt, metric, answers)
    kinds = check_by(by)
    check_bool("progress", progress)
    check_int("batch_size", batch_size, minimum=1, allow_none=True)
    B, n_pos = prep.clean.shape
    comps = components(model, kinds, layers, positions, n_pos)
    basis = _basis(subspace, model.cfg.d_model) if "subspace" in kinds else None
    runner = Runner(model)
    sites = sorted({c.site for c in comps}, key=lambda s: (s[1], s[0]))
    logits_c, rec = runner.run(prep.clean, capture=sites, last_only=prep.last_only)
    post = model.cfg.post_norm
    scale_sites = [(f"{b}_scale", ly) for ly in range(model.cfg.n_layers) for b in ("attn", "mlp")] if post else []
    logits_k, rec_k = runner.run(prep.corrupt, capture=sites + scale_sites, last_only=prep.last_only)
    prep = resolve(model, prep, logits_c, logits_k)
    m_clean = float(evaluate(prep.metric, logits_c, B)[0])
    m_corrupt = float(evaluate(prep.metric, logits_k, B)[0])
    if batch_size is None:  # about 4096 tokens a forward, and full logits (a custom metric) under ~256 MB
        logit_rows = 1 if prep.last_only else n_pos
        batch_size = max(1, min(64, 4096 // n_pos, (1 << 26) // (logit_rows * model.cfg.d_vocab)))
    per = max(1, check_int("batch_size", batch_size, minimum=1) // B)
    # a patch that writes what the corrupt run already holds (a head or position the corruption
    # does not reach) changes nothing: its metric is the corrupt run's, exactly, not a forward's
    # rounding noise (which would otherwise rank among the real effects)
    patched = np.full(len(comps), m_corrupt)
    todo = [i for i, c in enumerate(comps) if not torch.equal(_patched_value(rec, c), _patched_value(rec_k, c))]
    frozen = patched.copy() if post else None
    n_forwards = 2
    chunks = range(0, len(todo), per)
    for start in tqdm(chunks, desc="patching", disable=not progress or len(chunks) < 2):
        index = todo[start:start + per]
        batch = [comps[i] for i in index]
        edits = make_edits(batch, rec, B, runner, basis)
        if runner.backend == "raw" and B == 1:
            logits, _ = runner.run(prep.corrupt, edits=edits, expand=(min(c.layer for c in batch), len(batch)),
                                   last_only=prep.last_only)
        else:
            toks = prep.corrupt.repeat(len(batch), 1)
            logits, _ = runner.run(toks, edits=edits, last_only=prep.last_only)
        patched[index] = evaluate(prep.metric, logits, B).cpu().numpy()
        n_forwards += 1
        if frozen is not None:
            frozen[index] = patched[index]
            freeze = _freeze_scales(batch, rec_k, B)
            if freeze:
                if runner.backend == "raw" and B == 1:
                    logits, _ = runner.run(prep.corrupt, edits={**edits, **freeze}, last_only=prep.last_only,
                                           expand=(min(c.layer for c in batch), len(batch)))
                else:
                    logits, _ = runner.run(prep.corrupt.repeat(len(batch), 1), edits={**edits, **freeze},
                                           last_only=prep.last_only)
                through = np.array([c.kind in ("head", "neuron") for c in batch])
                got = evaluate(prep.metric, logits, B).cpu().numpy()
                frozen[np.asarray(index)[through]] = got[through]
                n_forwards += 1
    str_tok = [model.to_str_tokens(t[None], prepend_bos=False)[0] for t in (prep.clean[0], prep.corrupt[0])]
    df = frame(comps, patched, m_clean, m_corrupt, str_tok[1], getattr(subspace, "name", "subspace"))
    if frozen is None:
        df["norm_mediated"] = 0.0
    else:  # in effect units; NaN where the effect is (clean and corrupt runs alike)
        denom = m_clean - m_corrupt
        df["norm_mediated"] = np.where(df["effect"].isna(), np.nan, (patched - frozen) / (denom or np.nan))
    df.attrs.update(
        method="activation", metric=prep.name, backend=runner.backend, n_forwards=n_forwards,
        answers=None if prep.answers is None else [model.decode_token(t[0]) for t in prep.answers],
        str_tokens={"clean": str_tok[0], "corrupt": str_tok[1]}, processing=model.cfg.processing,
    )
    return df
