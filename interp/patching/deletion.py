"""Deletion tested by intervention: ablate a deleting neuron or head on real tokens and
measure what survives downstream in the direction it erases.

For a deleter with erased direction ``d`` (a neuron: its unit input vector
``W_in[:, n] / |W_in[:, n]|``; a head: minus its own write's direction at each position, as in
``deletion_evidence``), over the tokens where it acts (a neuron: where it fires, as in
``deletion_evidence``; a head: every token), with ``p`` the stream's component along ``d``
where the deleter reads it:

    survival(site) = sum(sign(p) * (x_site . d)) / sum(|p|)

in the clean run and with the deleter ablated (``mode="zero"``: its activation or ``z`` set
to 0; ``"mean"``: to its mean over ``data``). 1 at the first site after the deleter: the
component arrives there intact; 0: erased. ``change`` is ablated minus clean;
``predicted`` (first site only) is the change the deleter's own weights imply,
``sum(sign(p) * (write_ablated - write) . d) / sum(|p|)``: nothing but the deleter differs
before that site, so a measured change that departs from it is a bug. Later sites show what
the rest of the model makes of it. ``n_controls`` random components of the same kind and
layer, each measured along its own input direction, are the yardstick. For a component that
does not erase, the stream's component along its direction can be small next to its write, so
its survival and change are large and noisy: read a deleter against its controls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp import _labels as labels
from interp._checks import check_choice, check_fraction, check_indices, check_int, check_stream
from interp._columns import head_and_neuron
from interp._degenerate import undefined_rows
from interp._progress import tqdm
from interp._threads import with_analysis_threads
from interp.patching._runner import Runner

MODES = ("zero", "mean")
COLUMNS = ["deleter", "component", "role", "draw", "kind", "layer", "index", "site", "site_layer", "where",
           "n_tokens", "survival_clean", "survival_ablated", "change", "predicted"]


_Comp = labels.Component  # kind "neuron" or "head"


def _parse(model: Any, deleter: Any) -> list[_Comp]:
    """Labels ("L1N154", "L1H3"), a find_deleting_* row or frame (flagged rows), or a list."""
    c = model.cfg
    if isinstance(deleter, pd.DataFrame):
        df = deleter[deleter["flagged"]] if "flagged" in deleter.columns else deleter
        col = "neuron" if "neuron" in df.columns else "head" if "head" in df.columns else None
        if col is None or "layer" not in df.columns:
            raise ValueError("deleter is a DataFrame without the columns 'layer' and 'neuron' or 'head'; pass "
                             "the output of find_deleting_neurons / find_deleting_heads or labels like 'L1N154'")
        items = [f"L{ly}{col[0].upper()}{i}" for ly, i in zip(df["layer"].tolist(), df[col].tolist())]
    elif isinstance(deleter, pd.Series):
        col = "neuron" if "neuron" in deleter.index else "head" if "head" in deleter.index else None
        if col is None or "layer" not in deleter.index:
            raise ValueError("deleter is a row without 'layer' and 'neuron' or 'head'; pass a row of "
                             "find_deleting_neurons / find_deleting_heads or a label like 'L1N154'")
        items = [f"L{int(deleter['layer'])}{col[0].upper()}{int(deleter[col])}"]
    elif isinstance(deleter, str):
        items = [deleter]
    elif isinstance(deleter, (list, tuple)) and deleter and all(isinstance(d, str) for d in deleter):
        items = list(deleter)
    else:
        raise TypeError(f"deleter={deleter!r} must be a label such as 'L1N154' or 'L1H3', a list of labels, or a "
                        "row / frame of find_deleting_neurons or find_deleting_heads")
    out: list[_Comp] = []
    for item in items:
        comp = labels.parse("deleter", item, c)
        if comp not in out:
            out.append(comp)
    if not out:
        raise ValueError("deleter selects nothing (an empty frame?); pass at least one neuron or head")
    return out


def _controls(model: Any, comp: _Comp, n: int, exclude: set[_Comp], seed: int) -> list[_Comp]:
    size = model.cfg.d_mlp if comp.kind == "neuron" else model.cfg.n_heads
    pool = [i for i in range(size) if _Comp(comp.kind, comp.layer, i) not in exclude]
    g = torch.Generator().manual_seed(seed * 1_000_003 + comp.layer * 1009 + comp.index)
    pick = torch.randperm(len(pool), generator=g)[:n].tolist()
    return [_Comp(comp.kind, comp.layer, pool[i]) for i in pick]


def _batches(model: Any, data: Any, max_tokens: int | None, batch_size: int, n_ctx: int | None) -> list:
    from interp.probes.sites import iter_batches

    out, kept = [], 0
    for b in iter_batches(model, data, batch_size=batch_size, n_ctx=n_ctx):
        n = int(b.mask[:, 1:].sum())
        if max_tokens is not None and kept + n > max_tokens:
            b, n = _trim(b, max_tokens - kept), max_tokens - kept
        out.append(b)
        kept += n
        if max_tokens is not None and kept >= max_tokens:
            break
    if not out or kept == 0:
        raise ValueError("data gave no tokens after the first position of each row; pass longer texts")
    return out


def _trim(b: Any, need: int) -> Any:
    """The batch with only its first ``need`` counted tokens (positions after the first, in
    row order) left in the mask, and the rows left without any dropped."""
    counted = b.mask.clone()
    counted[:, 0] = False
    keep = counted & (counted.flatten().cumsum(0).view_as(counted) <= need)
    mask = keep.clone()
    mask[:, 0] = b.mask[:, 0]
    rows = keep.any(1)
    idx = rows.nonzero().flatten().tolist()
    return dataclasses.replace(b, tokens=b.tokens[rows], mask=mask[rows], doc_ids=[b.doc_ids[i] for i in idx],
                               continues=b.continues[rows])


@with_analysis_threads
def deletion_effect(
    model: Any,
    deleter: Any,
    data: Any = "stdlib:val",
    *,
    probe: Any = None,
    subspace: Any = None,
    mode: str = "zero",
    n_controls: int = 5,
    layers: Any = None,
    max_tokens: int | None = 4096,
    batch_size: int = 8,
    n_ctx: int | None = 256,
    test_size: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Ablate each deleter (and random controls) on ``data`` and measure what survives.

    Args:
        model: an ``interp.Model`` (``processing="compat"`` for the input directions, as in
            ``deletion_evidence``).
        deleter: a label ("L1N154", "L1H3"), a list of labels, a row of
            ``find_deleting_neurons`` / ``find_deleting_heads``, or such a frame (its flagged
            rows when it has a ``flagged`` column).
        data: a list of texts, a corpus name (``"stdlib:val"``), a file or directory, or a
            LongTensor ``[batch, pos]``; exactly ``max_tokens`` tokens after each row's first are
            read when it has that many (windows of ``n_ctx``; the last batch is cut).
        probe: a label (a built-in name such as ``"previous_token"``, a ``Labeler`` or a
            callable): a ``LinearProbe`` is trained on the clean stream of the training
            documents at up to 4 downstream sites and scored on the held-out documents' clean
            and ablated streams (``accuracy_*`` columns).
        subspace: a ``Subspace``: adds the mean squared norm of the stream's part inside it
            over the deleter's tokens, clean and ablated (``subspace_*`` columns).
        mode: ``"zero"`` or ``"mean"`` (the activation / ``z`` mean over ``data``, from
            ``interp.stats.Moments`` in one extra pass, first position of each row left out).
        n_controls: random components of the same kind and layer (seeded), each ablated alone.
        layers: downstream layers whose ``resid_pre`` is measured (default: every one after
            the deleter; ``n_layers`` is the final stream). A head of a sequential block is
            also measured at its own ``resid_mid``.
    Returns:
        One row per (deleter, ablated component, site): deleter:str, component:str (the
        ablated one), role:"deleter"|"control", draw:int (0 for the deleter), kind, layer,
        head / neuron (the component's number; <NA> on the other kind's rows), site:str ("L2_resid_pre"), site_layer:int, where:str, n_tokens:int,
        survival_clean, survival_ablated, change, predicted:float (NaN after the first
        site), [subspace_clean, subspace_ablated], [accuracy_clean, accuracy_ablated,
        accuracy_change], and on deleter rows control_change / control_std (mean and std over
        the controls at that site) [and control_accuracy_change].
    Raises:
        IndexOutOfRangeError: a deleter outside the model.
        ValueError: a bad label, mode or data.
    Examples:
        >>> df = interp.deletion_effect(model, "L1N154", ["def f(x):\\n    return x\\n"] * 4)
        >>> df[df.role == "deleter"][["site", "survival_clean", "survival_ablated", "control_change"]]
    """
    from interp.patching._measure import measure

    comps = _parse(model, deleter)
    check_choice("mode", mode, MODES)
    n_controls = check_int("n_controls", n_controls, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    if max_tokens is not None:
        check_int("max_tokens", max_tokens, minimum=1)
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress)
    check_fraction("test_size", test_size)
    seed = check_int("seed", seed)
    c = model.cfg
    first = min(x.layer for x in comps) + 1
    lays = check_indices("layers", layers, c.n_layers + 1, "stream") if layers is not None else None
    batches = _batches(model, data, max_tokens, batch_size, n_ctx)
    exclude = set(comps)
    plans = [(d, [d] + _controls(model, d, n_controls, exclude, seed)) for d in comps]
    heads = any(d.kind == "head" for d in comps)
    fast_heads = getattr(model, "_fast_ready", False) and model._fast is not None
    runner = Runner(model) if not heads or fast_heads else Runner(model, backend="bridge")
    rows = measure(model, runner, plans, batches, mode=mode, layers=lays, first=first, probe=probe,
                   subspace=subspace, test_size=test_size, seed=seed,
                   progress=tqdm if progress else None)
    df = pd.DataFrame(rows)
    base = [col for col in COLUMNS if col in df.columns]
    extra = [col for col in df.columns if col not in base]
    df = df[base + extra]
    dele = df["role"] == "deleter"
    ctrl = df[~dele].groupby(["deleter", "site"], sort=False)
    stats = ctrl["change"].agg(["mean", "std"]).rename(columns={"mean": "control_change", "std": "control_std"})
    if "accuracy_change" in df.columns:
        stats["control_accuracy_change"] = ctrl["accuracy_change"].mean()
    df = df.merge(stats, left_on=["deleter", "site"], right_index=True, how="left")
    for col in stats.columns:
        df.loc[~dele, col] = np.nan
    df = head_and_neuron(df.reset_index(drop=True))
    undefined_rows(df[df["role"] == "deleter"], ["change"], "deletion_effect",
                   "the direction the deleter erases is zero in this model's stream (constant or zero weights, a "
                   "stream with no room for a direction such as d_model=1 under LayerNorm) or no token was read")
    df.attrs.update(mode=mode, n_controls=n_controls, backend=runner.backend, processing=c.processing,
                    n_tokens_read=int(sum(int(b.mask[:, 1:].sum()) for b in batches)),
                    mean_source="interp.stats.Moments over data" if mode == "mean" else None)
    return df


__all__ = ["deletion_effect"]
