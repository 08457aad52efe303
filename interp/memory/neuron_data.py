"""Deleting neurons on data: every neuron's per-token removal along its input direction, and
the same measurement under a null of the model's own trained weights.

On each token where neuron ``n`` of layer ``l`` fires (its activation is positive; for gated
MLPs, its gate is open: ``x @ W_gate[:, n] > 0``), with ``x`` the stream it reads
(``resid_mid``; ``resid_pre`` for parallel blocks) and ``u`` its unit input vector
``W_in[:, n] / |W_in[:, n]|``::

    r = -act * (W_out[n] . u) / (x . u)

the share of the stream's component along ``u`` that its write removes (``interp.memory.verdict``).

**Null.** The same ratio with each neuron's output vector replaced by another neuron's of the
same layer (a seeded derangement of the trained ``W_out`` rows): activations, input vectors,
output norms and the directions the layer writes are all the model's own; only the pairing
is broken. The number of null pairs that get the verdict ``deleting`` is the expected number
of false positives.

Cost: one ``[tokens, d_mlp]`` product per layer (the size of the MLP's own input product),
float64; the distributions are kept as counts, so memory does not grow with the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_float, check_stream
from interp._threads import with_analysis_threads
from interp.memory.data import describe, records, require_compat
from interp.memory.evidence import _bias, _flatten
from interp.memory.neurons import FALSE_POSITIVES, _frame, _scan
from interp.memory.verdict import (
    MAX_REMOVED,
    MIN_REMOVED,
    PARTIAL,
    VERDICTS,
    Cuts,
    Summary,
    add_tokens,
    removal_histogram,
    summarise,
)


@dataclass
class NeuronMeasure:
    """Per measured layer: the removal summary of every neuron, and of the null pairing."""

    real: dict[int, Summary]
    null: dict[int, Summary]
    firing: dict[int, Tensor]  # [d_mlp] firing-token counts
    n_tokens: int
    permutation: dict[int, Tensor]


def derangement(n: int, seed: int) -> Tensor:
    """A seeded permutation of ``range(n)`` with no fixed point (``n >= 2``): a random cyclic shift
    of a random order."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    shift = int(torch.randint(1, n, (1,), generator=g))
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(shift)
    return out


def _layer_weights(model: Any, ly: int, perm: Tensor, dt: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(U [d_model, d_mlp] unit input vectors, W_out[n] . u_n, W_out[perm[n]] . u_n, W_gate or None)``."""
    w = model.weights
    U = w.mlp_in(ly).to(dt)
    U = U / torch.linalg.vector_norm(U, dim=0).clamp_min(1e-300)
    W_out = w.mlp_out(ly).to(dt)
    real = (W_out * U.T).sum(-1)
    null = (W_out.index_select(0, perm.to(W_out.device)) * U.T).sum(-1)
    gate = w.mlp_gate(ly)
    return U, real, null, None if gate is None else gate.to(dt)


def _layer_ratios(model: Any, w: Any, prep: dict[int, tuple]) -> Any:
    """Yield ``(layer, r, r_null, fire)`` for each prepared layer of record ``w``: the per-token
    removal of every neuron with its own and with the null's output vector, and where it fires,
    each ``[tokens, d_mlp]`` over the record's real tokens (float64)."""
    c, ws = model.cfg, model.write_weights
    dt = torch.float64
    parts = _flatten(w, model.device, dt)
    x = parts["embed"] + (parts["pos"] if parts["pos"] is not None else 0)
    for ly in range(max(prep) + 1):
        z, acts = parts["z"][ly], parts["acts"][ly]
        x_mid = x + z.flatten(1) @ ws.W_O[ly].to(dt).flatten(0, 1) + _bias(parts, ws, "b_O", ly, x)
        if ly in prep:
            U, real, null, G = prep[ly]
            x_in = x if c.parallel else x_mid
            p = x_in @ U  # [t, d_mlp]: the stream's component along each input direction
            fire = (x_in @ G > 0) if G is not None else acts > 0
            yield ly, -acts * real / p, -acts * null / p, fire
        x = x_mid + acts @ ws.W_out[ly].to(dt) + _bias(parts, ws, "b_out", ly, x)


def neuron_removal(model: Any, writes: Any, layer: int) -> tuple[Tensor, Tensor]:
    """Per-token removal ``r [tokens, d_mlp]`` of every neuron of ``layer`` on the real tokens of
    ``writes`` (row-major over batch and position), and where each fires (``[tokens, d_mlp]``
    bool): the numbers whose distribution ``neuron_verdicts`` summarises."""
    from interp._checks import check_index

    layer = check_index("layer", layer, model.cfg.n_layers, "layer")
    prep = {layer: _layer_weights(model, layer, derangement(model.cfg.d_mlp, 0), torch.float64)}
    _, r, _, fire = next(iter(_layer_ratios(model, writes, prep)))
    return r, fire


def measure_neurons(model: Any, batches: Any, layers: list[int], cuts: Cuts, *, seed: int = 0) -> NeuronMeasure:
    """Removal distributions of every neuron in ``layers`` over the records in ``batches``."""
    c = model.cfg
    dt = torch.float64
    perms = {ly: derangement(c.d_mlp, seed + ly) for ly in layers}
    prep = {ly: _layer_weights(model, ly, perms[ly], dt) for ly in layers}
    hist = {ly: removal_histogram(c.d_mlp, cuts) for ly in layers}
    hist_null = {ly: removal_histogram(c.d_mlp, cuts) for ly in layers}
    firing = {ly: torch.zeros(c.d_mlp, dtype=torch.float64) for ly in layers}
    n_tok = 0
    for w in batches:
        n_tok += int(w.mask.sum())
        for ly, r, r_null, fire in _layer_ratios(model, w, prep):
            firing[ly] += fire.double().sum(0).cpu()
            add_tokens(hist[ly], r.cpu(), fire.cpu())
            add_tokens(hist_null[ly], r_null.cpu(), fire.cpu())
    for h in [*hist.values(), *hist_null.values()]:
        h.all_reduce()
    from interp.stats.distributed import is_distributed

    if is_distributed():
        import torch.distributed as dist

        t = torch.tensor([float(n_tok)], dtype=torch.float64)
        dist.all_reduce(t)
        n_tok = int(t.item())
        for f in firing.values():
            dist.all_reduce(f)
    return NeuronMeasure(
        real={ly: summarise(hist[ly], cuts) for ly in layers},
        null={ly: summarise(hist_null[ly], cuts) for ly in layers},
        firing=firing, n_tokens=n_tok, permutation=perms,
    )


# ---- frames ------------------------------------------------------------------------------
SCREEN_TOP = (10, 100)  # the screen's precision is reported for these N most negative, and for its own flags


def _verdict_frame(model: Any, scan: Any, meas: NeuronMeasure | None, cuts: Cuts) -> pd.DataFrame:
    df = _frame(scan, flagged_only=False).rename(columns={"flagged": "screen"})
    if meas is None:  # weights only: no verdict can be measured
        df["verdict"] = "unmeasured"
        df["flagged"] = df["screen"]
        df.attrs["flagged"] = "screen: cosine at or below the null threshold (no data measured)"
        return df
    n = meas.n_tokens
    idx = df["layer"].to_numpy(), df["neuron"].to_numpy()
    cols: dict[str, list] = {k: [] for k in ("verdict", "removed_median", "removed_q10", "removed_q90",
                                             "erase_share", "amplify_share", "n_firing", "firing_rate")}
    for ly, nr in zip(*idx):
        s = meas.real[int(ly)]
        cols["verdict"].append(s.verdict[nr])
        cols["removed_median"].append(s.median[nr])
        cols["removed_q10"].append(s.q10[nr])
        cols["removed_q90"].append(s.q90[nr])
        cols["erase_share"].append(s.erase_share[nr])
        cols["amplify_share"].append(s.amplify_share[nr])
        f = float(meas.firing[int(ly)][nr])
        cols["n_firing"].append(int(s.n[nr]))
        cols["firing_rate"].append(f / n if n else float("nan"))
    for k, v in cols.items():
        df[k] = np.asarray(v, dtype=object if k == "verdict" else np.float64 if k != "n_firing" else np.int64)
    df["verdict"] = df["verdict"].astype(str)
    df["flagged"] = df["verdict"] == "deleting"
    null_counts = {v: int(sum((meas.null[ly].verdict == v).sum() for ly in meas.null)) for v in VERDICTS}
    counts = {v: int((df["verdict"] == v).sum()) for v in VERDICTS}
    by_cos = df  # already most negative first
    precision = []
    n_screen = int(df["screen"].sum())
    for top in (*SCREEN_TOP, n_screen):
        if top and top <= len(df) and top not in [p["n"] for p in precision]:
            head = by_cos.head(top)
            precision.append(dict(n=int(top), erasing=int((head["removed_median"] >= cuts.min_removed).sum()),
                                  deleting=int((head["verdict"] == "deleting").sum()),
                                  screen_flags=top == n_screen))
    df.attrs.update(
        screen_expected_false_positives=df.attrs.pop("expected_false_positives"),
        expected_false_positives=null_counts["deleting"], null_verdicts=null_counts, verdicts=counts,
        null_verdicts_by_layer={int(ly): int((meas.null[ly].verdict == "deleting").sum()) for ly in meas.null},
        verdict_null="W_out rows of the same layer deranged (seeded)", screen_precision=precision,
        n_tokens_data=n, min_removed=cuts.min_removed, max_removed=cuts.max_removed, partial=cuts.partial,
        two_sided=cuts.two_sided, min_tokens=cuts.min_tokens,
        flagged="verdict 'deleting': the median firing token loses at least min_removed of the stream's "
                "component along the input direction",
    )
    return df


def _run(model: Any, data: Any, layers: Any, threshold: Any, null: str, input: str, false_positives: float,
         seed: int, min_removed: float, max_removed: float, max_tokens: Any, n_ctx: Any, batch_size: int,
         progress: bool) -> pd.DataFrame:
    from interp.model import Model

    scan = _scan(model, layers, threshold, null, input, false_positives, seed)
    min_removed = check_float("min_removed", min_removed, minimum=0, min_open=True)
    max_removed = check_float("max_removed", max_removed)
    if not max_removed > min_removed:
        raise ValueError(f"max_removed={max_removed!r} must exceed min_removed={min_removed!r}, e.g. 1.5")
    cuts = Cuts(min_removed=min_removed, max_removed=max_removed, partial=min(PARTIAL, min_removed / 2))
    check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress)
    if not isinstance(model, Model) or data is False:
        return _verdict_frame(model, scan, None, cuts)
    require_compat(model, "the deleting-neuron verdict")
    batches = records(model, data, max_tokens=max_tokens, n_ctx=n_ctx, batch_size=batch_size, progress=progress,
                      what="find_deleting_neurons")
    meas = measure_neurons(model, batches, scan.layers, cuts, seed=seed)
    if meas.n_tokens == 0:
        raise ValueError(f"data={data!r:.80} yielded no tokens; pass longer texts, tokens or a ResidualWrites")
    df = _verdict_frame(model, scan, meas, cuts)
    df.attrs["data"] = describe(data, max_tokens)
    return df


@with_analysis_threads
def neuron_verdicts(
    model: Any,
    data: Any = None,
    *,
    layers: Sequence[int] | int | None = None,
    input: str = "in",
    threshold: float | None = None,
    null: str = "analytic",
    false_positives: float = FALSE_POSITIVES,
    min_removed: float = MIN_REMOVED,
    max_removed: float = MAX_REMOVED,
    max_tokens: int | None = 1024,
    n_ctx: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Every neuron: its in/out cosine (the weights-only screen) and what it does on data.

    Args:
        model: an ``interp.Model`` (``processing="compat"``); an ``MLPStack`` gives the screen only.
        data: tokens to measure on: ``ResidualWrites`` (or a list), texts, a LongTensor /
            ``Tokens`` batch, or a corpus for ``stream_writes``; default ``"stdlib:val"``.
            ``False``: the screen only (verdict ``"unmeasured"``).
        layers: layers to test (default all; negative indices count from the end).
        input: for gated MLPs, the screen's input vector: ``"in"`` (up projection, default: the
            linear factor whose component the write removes) or ``"gate"``; ``cosine_in`` and
            ``cosine_gate`` are both reported. The measured removal always uses ``W_in``.
        threshold / null / false_positives: the screen's cut (``neuron_in_out_cosines``).
        min_removed / max_removed: the verdict's cuts on the median removal (``interp.memory.verdict``).
        max_tokens / n_ctx / batch_size / progress: the data's size and streaming.
        seed: the screen's empirical null and the verdict null's derangement.
    Returns:
        One row per neuron, most negative cosine first: layer, neuron, label, cosine, z,
        [cosine_in, cosine_gate], null_mean, null_std, threshold, screen:bool (cosine at or below
        the threshold), verdict (deleting / partial / coupled / amplifying / none), removed_median,
        removed_q10, removed_q90 (removal over firing tokens), erase_share / amplify_share (share
        of firing tokens with removal >= min_removed / <= -min_removed), n_firing, firing_rate,
        flagged:bool (verdict == "deleting"). ``attrs``: verdicts and null_verdicts (counts),
        expected_false_positives (null pairs judged deleting), screen_precision (of the N most
        negative: how many erase, i.e. median >= min_removed), n_tokens_data, the cuts.
    Examples:
        >>> import interp
        >>> df = neuron_verdicts(interp.load(), ["def f(x):\\n    return x + 1\\n"] * 4)
        >>> set(df["verdict"]) <= {"deleting", "partial", "coupled", "amplifying", "none"}
        True
    """
    return _run(model, data, layers, threshold, null, input, false_positives, seed, min_removed, max_removed,
                max_tokens, n_ctx, batch_size, progress)


@with_analysis_threads
def find_deleting_neurons(
    model: Any,
    data: Any = None,
    *,
    layers: Sequence[int] | int | None = None,
    threshold: float | None = None,
    null: str = "analytic",
    false_positives: float = FALSE_POSITIVES,
    input: str = "in",
    min_removed: float = MIN_REMOVED,
    max_removed: float = MAX_REMOVED,
    max_tokens: int | None = 1024,
    n_ctx: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Neurons that erase the stream's component along their input vector, on data.

    The flagged rows of ``neuron_verdicts`` (same arguments and columns), most negative cosine
    first. Flagged means measured: the verdict ``deleting`` (the median firing token loses at
    least ``min_removed``, default 30%, of that component, and at most ``max_removed``). With an
    ``MLPStack`` or ``data=False`` nothing can be measured: flagged is then the screen (cosine
    at or below the null threshold) and the verdict ``"unmeasured"``.
    Raises:
        IndexOutOfRangeError: a layer out of range (names the valid range).
        ValueError: an unknown ``null``/``input``, a threshold outside [-1, 1], raw processing.
    Examples:
        >>> import interp
        >>> df = find_deleting_neurons(interp.load(), ["def f(x):\\n    return x + 1\\n"] * 4)
        >>> list(df.columns[:4]), bool((df["verdict"] == "deleting").all())
        (['layer', 'neuron', 'label', 'cosine'], True)
    """
    df = _run(model, data, layers, threshold, null, input, false_positives, seed, min_removed, max_removed,
              max_tokens, n_ctx, batch_size, progress)
    out = df[df["flagged"]].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out
