"""Deleting neurons: MLP neurons whose output vector points against their input vector.

A neuron reads the stream along its input vector ``W_in[:, n]`` and writes
``act * W_out[n]``. When ``cos(W_in[:, n], W_out[n])`` is clearly negative, its write removes
part of what it read: memory management (Gurnee et al. 2024, "Universal Neurons in GPT2").

Cosines are computed layer by layer on views of the weights, in float32 chunks of about
a megabyte, so a 7B-shaped MLP stack is never copied whole.

Conventions (recorded in every result's ``attrs``):

- Weights are those of the model's processing: ``"compat"`` (default of ``interp.load``:
  LayerNorm folded into ``W_in``, writing weights centred) or ``"raw"``.
- Gated MLPs (``act = f(x @ W_gate) * (x @ W_in)``): ``input="in"`` (default) tests
  ``W_in``, the linear factor whose component the write removes while the gate is open;
  both ``cosine_in`` and ``cosine_gate`` are reported.
- Null: two independent random directions in ``d`` dimensions (``d = d_model``, or
  ``d_model - 1`` when both vectors are mean-centred, as under ``"compat"`` with LayerNorm)
  have cosine std ``1/sqrt(d)``; the exact Beta tail is used. ``null="empirical"`` instead
  measures, per layer, cosines of mismatched pairs ``(W_in[:, n], W_out[(n + s) % d_mlp])``
  and uses their mean and spread (``d_eff = 1/std**2``).
- Default threshold: Bonferroni over the neurons tested, so that under the null the
  expected number of flagged neurons is ``false_positives`` (default 0.1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp._checks import check_choice, check_float, check_indices, check_int
from interp._threads import with_analysis_threads
from interp.memory.null import cosine_cdf, cosine_quantile

NULLS = ("analytic", "empirical")
INPUTS = ("in", "gate")
#: Default expected number of false positives over all neurons tested.
FALSE_POSITIVES = 0.1
_CHUNK_BYTES = 1 << 20  # float32 bytes per chunk and operand: fits in L2 cache


@dataclass(frozen=True)
class MLPStack:
    """Per-layer MLP weights as plain tensors, for use without an ``interp.Model``.

    Args:
        W_in: per layer ``[d_model, d_mlp]`` (a sequence, or a stacked ``[layer, d_model,
            d_mlp]`` tensor); W_out: per layer ``[d_mlp, d_model]``; W_gate: like W_in, or None.
        centred: the vectors are mean-centred over ``d_model`` (the null then has
            ``d_model - 1`` dimensions).
        processing: the weight convention, recorded in results (default ``"given"``).
    The tensors are used as given: any dtype, never copied whole.

    >>> stack = MLPStack([torch.randn(64, 256)], [torch.randn(256, 64)])
    >>> stack.n_layers, stack.d_model, stack.d_mlp
    (1, 64, 256)
    """

    W_in: Sequence[Tensor] | Tensor
    W_out: Sequence[Tensor] | Tensor
    W_gate: Sequence[Tensor] | Tensor | None = None
    centred: bool = False
    processing: str = "given"

    def __post_init__(self) -> None:
        for name in ("W_in", "W_out", "W_gate"):
            v = getattr(self, name)
            if v is None and name == "W_gate":
                continue
            if isinstance(v, Tensor) and v.dim() != 3 or not isinstance(v, (Tensor, Sequence)):
                got = f"a tensor of shape {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"{name} is {got}; pass one 2-D tensor per layer (a list) or a stacked "
                                 "3-D [layer, ...] tensor")
        n_in, n_out = len(self.W_in), len(self.W_out)
        if n_in == 0 or n_in != n_out:
            raise ValueError(f"W_in has {n_in} layers and W_out {n_out}; pass one [d_model, d_mlp] and "
                             "one [d_mlp, d_model] tensor per layer")
        if self.W_gate is not None and len(self.W_gate) != n_in:
            raise ValueError(f"W_gate has {len(self.W_gate)} layers but W_in has {n_in}; pass one per layer")
        first = self.W_in[0]
        if not isinstance(first, Tensor) or first.dim() != 2:
            raise ValueError(f"W_in[0] must be a 2-D [d_model, d_mlp] tensor, got "
                             f"{tuple(first.shape) if isinstance(first, Tensor) else type(first).__name__}")
        d, m = first.shape
        for ly in range(n_in):
            shapes = [("W_in", self.W_in[ly], (d, m)), ("W_out", self.W_out[ly], (m, d))]
            if self.W_gate is not None:
                shapes.append(("W_gate", self.W_gate[ly], (d, m)))
            for name, t, want in shapes:
                if not isinstance(t, Tensor) or tuple(t.shape) != want:
                    got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    raise ValueError(f"{name}[{ly}] has shape {got}, expected {want} "
                                     "(W_in/W_gate [d_model, d_mlp], W_out [d_mlp, d_model])")

    @property
    def n_layers(self) -> int:
        return len(self.W_in)

    @property
    def d_model(self) -> int:
        return int(self.W_in[0].shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.W_in[0].shape[1])

    @property
    def gated(self) -> bool:
        return self.W_gate is not None

    def layer(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(W_in, W_out, W_gate)`` of one layer, as given."""
        return self.W_in[layer], self.W_out[layer], None if self.W_gate is None else self.W_gate[layer]


class _ModelStack:
    """An ``interp.Model``'s MLP weights through its per-layer views."""

    def __init__(self, model: Any):
        c = model.cfg
        self.n_layers, self.d_model, self.d_mlp, self.gated = c.n_layers, c.d_model, c.d_mlp, c.gated
        self.centred = c.processing == "compat" and c.normalization in ("LN", "LNPre")
        self.processing = c.processing
        self._w = model.weights

    def layer(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None]:
        return self._w.mlp_in(layer), self._w.mlp_out(layer), self._w.mlp_gate(layer)


def _as_stack(model: Any) -> Any:
    from interp.model import Model

    if isinstance(model, MLPStack):
        return model
    if isinstance(model, Model):
        return _ModelStack(model)
    raise TypeError(f"model must be an interp.Model or an interp.memory.MLPStack, got {type(model).__name__}")


def in_out_cosines(
    W_in: Float[Tensor, "d_model d_mlp"], W_out: Float[Tensor, "d_mlp d_model"], *, shift: int = 0
) -> Float[Tensor, " d_mlp"]:
    """``cos(W_in[:, n], W_out[(n + shift) % d_mlp])`` for every neuron ``n``.

    Computed in float32 chunks of about 1 MB on the weights' device; the weights are not
    copied whole. A neuron with a zero vector gets NaN.
    Raises:
        ValueError: the weights contain NaN or inf.
    """
    d, m = W_in.shape
    chunk = max(16, _CHUNK_BYTES // (4 * d))
    out = torch.empty(m, dtype=torch.float32, device=W_in.device)
    for a in range(0, m, chunk):
        b = min(a + chunk, m)
        x = W_in[:, a:b].T.float()
        if shift:
            idx = (torch.arange(a, b, device=W_out.device) + shift) % m
            y = W_out.index_select(0, idx).float()
        else:
            y = W_out[a:b].float()
        # each vector scaled to a largest entry of 1 first: the cosine does not change, and weights
        # scaled towards float32's underflow (1e-30 x a trained matrix) keep squares that do not flush to 0
        tiny = torch.finfo(x.dtype).tiny
        x = x / x.abs().amax(1, keepdim=True).clamp_min(tiny)
        y = y / y.abs().amax(1, keepdim=True).clamp_min(tiny)
        nx, ny = torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(y, dim=1)
        if not (torch.isfinite(nx).all() and torch.isfinite(ny).all()):
            raise ValueError(f"the MLP weights contain NaN or inf (neurons {a}..{b - 1}); "
                             "check the checkpoint or the weight surgery that produced them")
        out[a:b] = torch.linalg.vecdot(x, y) / (nx * ny)
    return out


def _map_layers(fn: Any, layers: list[int], device: torch.device) -> list[Any]:
    """``[fn(layer) for layer in layers]``. On CPU, layers run in parallel Python threads
    that each use one intra-op thread: the chunks are small, and intra-op threads over small
    chunks on a busy machine are ten times slower. The caller's thread setting is kept."""
    saved = torch.get_num_threads()
    if device.type != "cpu" or saved == 1:
        return [fn(ly) for ly in layers]
    try:
        with ThreadPoolExecutor(min(len(layers), saved), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, layers))
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


@dataclass
class _Scan:
    """Per-layer cosines, nulls and thresholds of one scan."""

    layers: list[int]
    cos: dict[int, Tensor]  # the tested cosine, [d_mlp] per layer
    extra: dict[str, dict[int, Tensor]]  # cosine_in / cosine_gate for gated MLPs
    null_mean: dict[int, float]
    null_std: dict[int, float]
    threshold: dict[int, float]
    expected_fp: float
    attrs: dict[str, Any]


def _scan(
    model: Any, layers: Any, threshold: float | None, null: str, input: str, false_positives: float,
    seed: int,
) -> _Scan:
    stack = _as_stack(model)
    layers = check_indices("layers", layers, stack.n_layers, "layer")
    check_choice("null", null, NULLS)
    check_choice("input", input, INPUTS)
    if input == "gate" and not stack.gated:
        raise ValueError("input='gate' needs a gated MLP (W_gate), but this model's MLP is not gated; "
                         "use input='in'")
    check_float("threshold", threshold, allow_none=True)
    check_float("false_positives", false_positives)
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} must be a cosine in [-1, 1] (or None for the null-based "
                         "default)")
    if not 0 < false_positives < stack.d_mlp * len(layers):
        raise ValueError(f"false_positives={false_positives!r} must be a positive number of expected false "
                         f"positives below the {stack.d_mlp * len(layers)} neurons tested, e.g. 0.1")
    d_null = stack.d_model - (1 if stack.centred else 0)
    if d_null < 2:  # a cosine in one (or no) dimension is +-1 (or undefined): no null, no finding
        raise ValueError(f"in/out cosines need a stream of at least 2 directions, and this model's has {d_null} "
                         f"(d_model={stack.d_model}{', less the mean that LayerNorm removes' if stack.centred else ''}); "
                         "the cosine screen is undefined for it")
    gen = torch.Generator().manual_seed(check_int("seed", seed))
    n_shifts = max(1, math.ceil(4096 / stack.d_mlp))
    shifts = {ly: (torch.randperm(stack.d_mlp - 1, generator=gen)[:n_shifts] + 1).tolist() for ly in layers}

    def one_layer(ly: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        w_in, w_out, w_gate = stack.layer(ly)
        c_in = in_out_cosines(w_in, w_out).cpu()
        c_gate = None if w_gate is None else in_out_cosines(w_gate, w_out).cpu()
        if null == "analytic":
            return c_in, c_gate, None
        tested = w_gate if input == "gate" else w_in
        samples = torch.cat([in_out_cosines(tested, w_out, shift=s).cpu() for s in shifts[ly]])
        return c_in, c_gate, samples[torch.isfinite(samples)]

    results = dict(zip(layers, _map_layers(one_layer, layers, stack.layer(layers[0])[0].device)))
    cos, extra = {}, {"cosine_in": {}, "cosine_gate": {}}
    mean, std = {}, {}
    for ly, (c_in, c_gate, samples) in results.items():
        if c_gate is not None:
            extra["cosine_in"][ly], extra["cosine_gate"][ly] = c_in, c_gate
        cos[ly] = c_gate if input == "gate" else c_in
        if samples is None:
            mean[ly], std[ly] = 0.0, 1.0 / math.sqrt(d_null)
        else:
            mean[ly], std[ly] = float(samples.mean()), float(samples.std())
    n_tested = {ly: int(torch.isfinite(cos[ly]).sum()) for ly in layers}
    _undefined(sum(n_tested.values()), sum(cos[ly].numel() for ly in layers))
    d_eff = {ly: max(2.0, 1.0 / std[ly] ** 2) for ly in layers}
    if threshold is None:
        p = false_positives / max(1, sum(n_tested.values()))
        thr = {ly: mean[ly] + cosine_quantile(p, d_eff[ly]) for ly in layers}
    else:
        thr = {ly: float(threshold) for ly in layers}
    expected = sum(n_tested[ly] * cosine_cdf(thr[ly] - mean[ly], d_eff[ly]) for ly in layers)
    if not stack.gated:
        extra = {}
    attrs = dict(
        processing=stack.processing, null=null, input=input, d_model=stack.d_model,
        null_dimensions=d_null if null == "analytic" else None,
        false_positives=None if threshold is not None else float(false_positives),
        null_mean=dict(mean), null_std=dict(std), threshold=dict(thr),
        expected_false_positives=float(expected), n_neurons=int(sum(n_tested.values())),
    )
    return _Scan(layers, cos, extra, mean, std, thr, float(expected), attrs)


def _undefined(n_defined: int, n_all: int) -> None:
    """Say so when neurons have no cosine (a zero input or output vector: constant or zero
    weights, or weights that underflow); refuse when none has one."""
    why = ("their input or output vector is zero after processing (constant or zero weights, or weights so small "
           "that they underflow): the cosine of a zero vector is undefined")
    if n_defined == 0:
        raise ValueError(f"no neuron has an in/out cosine: {why}")
    if n_defined < n_all:
        warnings.warn(f"{n_all - n_defined:,} of {n_all:,} neurons have no in/out cosine (NaN, never flagged): {why}",
                      UserWarning, stacklevel=4)


def _frame(scan: _Scan, *, flagged_only: bool) -> pd.DataFrame:
    parts = []
    for ly in scan.layers:
        c = scan.cos[ly]
        flagged = (c <= scan.threshold[ly]) & torch.isfinite(c)
        idx = torch.nonzero(flagged).flatten() if flagged_only else torch.arange(c.numel())
        cols: dict[str, Any] = {
            "layer": np.full(len(idx), ly, dtype=np.int64),
            "neuron": idx.numpy().astype(np.int64),
            "cosine": c[idx].double().numpy(),
            "z": ((c[idx].double() - scan.null_mean[ly]) / scan.null_std[ly]).numpy(),
        }
        for name, vals in scan.extra.items():
            cols[name] = vals[ly][idx].double().numpy()
        cols["null_mean"] = np.full(len(idx), scan.null_mean[ly])
        cols["null_std"] = np.full(len(idx), scan.null_std[ly])
        cols["threshold"] = np.full(len(idx), scan.threshold[ly])
        if not flagged_only:
            cols["flagged"] = flagged[idx].numpy()
        parts.append(pd.DataFrame(cols))
    df = pd.concat(parts, ignore_index=True)
    df.insert(2, "label", [f"L{ly}N{n}" for ly, n in zip(df["layer"].tolist(), df["neuron"].tolist())])
    df = df.sort_values(["cosine", "layer", "neuron"], kind="stable", na_position="last").reset_index(drop=True)
    df.attrs.update(scan.attrs)
    return df


@with_analysis_threads
def neuron_in_out_cosines(
    model: Any,
    *,
    layers: Sequence[int] | int | None = None,
    null: str = "analytic",
    threshold: float | None = None,
    false_positives: float = FALSE_POSITIVES,
    input: str = "in",
    seed: int = 0,
) -> pd.DataFrame:
    """Every neuron's input/output cosine, for per-layer histograms (options as in
    ``find_deleting_neurons``).

    Returns one row per neuron, most negative first:
        layer:int, neuron:int, label:str ("L3N120"), cosine:float, z:float (cosine minus the
        null mean, in null standard deviations), [cosine_in, cosine_gate: gated MLPs only],
        null_mean:float, null_std:float, threshold:float (the layer's cosine cut-off),
        flagged:bool.
    ``attrs``: processing, null, input, null_mean/null_std/threshold (per layer),
    expected_false_positives, n_neurons, d_model.
    Examples:
        >>> import interp
        >>> df = neuron_in_out_cosines(interp.load())
        >>> len(df) == 2 * 512, df["cosine"].is_monotonic_increasing
        (True, True)
    """
    scan = _scan(model, layers, threshold, null, input, false_positives, seed)
    return _frame(scan, flagged_only=False)
