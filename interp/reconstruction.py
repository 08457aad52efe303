"""The reconstruction invariant: a record's writes, summed in stream order, equal the model's
own residual stream at every stage (``blocks.L.hook_resid_pre/mid/post``).

``Model.run_with_writes`` checks it on a model's first record; a model whose writes do not add
up (post-block norms left unrecorded, say) raises ``NonAdditiveModelError`` instead of being
analysed wrongly.

The tolerance is derived, elementwise, from the arithmetic (no constant tuned to one machine).
The model and the record compute the same writes from the same recorded inputs (``z``, MLP
activations, embeddings) and the same weights; only the order of the floating-point operations
differs (which kernel, which blocking, how many threads, which CPU code path). Write ``j`` is a
sum of ``n`` terms (``n = n_heads * d_head + 1`` for attention with its bias, ``d_mlp + 1`` for
the MLP): computed in any order with unit roundoff ``u``, its error is at most
``gamma(n) * A_j`` with ``gamma(n) = n u / (1 - n u)`` and ``A_j = |a| @ |b| + |bias|`` the same
sum of absolute terms (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1). Each
addition into the stream rounds once more, by at most ``u`` of its result. Unrolled over the
stages, the model's stream ``x`` and the record's ``y`` satisfy, elementwise,

    |x_s - y_s| <= sum_{j<=s} 2 gamma(n) A_j + u * sum_{j<=s} (|x_j| + |y_j|)

a worst-case bound: it holds for every summation order, so on every CPU, MKL code path and
thread count. ``u`` is the unit roundoff of the accumulation (float32, or less when
``torch.get_float32_matmul_precision()`` lets float32 matmuls run in TF32 or bfloat16; float16
and bfloat16 models accumulate in float32, as CPU oneDNN and cuBLAS do by default) plus one
rounding to the model's dtype per write. Writes that interp fails to record (a post-norm it
does not know, a missed bias) err by the order of the write itself, orders of magnitude above
this bound: ``NON_ADDITIVE_RATIO`` separates the two verdicts. The bound is computed on the
first record only (one extra matmul per write, on absolute values).

Post-norm blocks (``interp.writes``): the model computes ``g * fl(sum) * rsqrt(s^2)`` and the record
``fl(sum(z * fl(W_O * g))) / s`` with the same recorded ``s``, so ``A_j`` is the sum of absolute
terms through the gain and over the scale (``absolute`` keeps the scales), and each side adds
``POST_NORM_ROUNDINGS`` elementwise roundings of ``A_j``: the model's multiplications by the
reciprocal root and by the gain, its reciprocal root against the record's root (two), the
record's product ``W_O * g`` and its division by ``s``; at float32's unit roundoff at least, since
Gemma's and OLMo-2's norms compute in float32 even in a float64 model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from interp.errors import NonAdditiveModelError, ReconstructionToleranceError
from interp.writes import ResidualWrites, WriteWeights

#: A measured error at least this many times the worst-case rounding bound is a structural
#: disagreement (the architecture writes what interp does not record). The bound is itself far
#: above typical rounding (SmolLM2-135M in float32: worst element 0.006 of it under
#: MKL_CBWR=COMPATIBLE, exactly 0 on the default AVX2 path), so past 10 times the worst case
#: the error is orders of magnitude beyond rounding; one zeroed head of SmolLM2's layer 5 errs
#: by 46 times it. Between 1 and 10 times, the arithmetic is not IEEE float at the precision
#: assumed (a reduced-precision kernel), and the error says so.
NON_ADDITIVE_RATIO = 10.0

#: Unit roundoff of a float32 matmul's accumulation under each float32 matmul precision
#: (``torch.set_float32_matmul_precision``): IEEE float32, TF32 (10-bit mantissa), bfloat16.
_MATMUL_UNIT = {"highest": 2.0**-24, "high": 2.0**-11, "medium": 2.0**-8}

#: Elementwise roundings a post-norm adds to a write, model and record together (module docstring).
POST_NORM_ROUNDINGS = 6


def unit_roundoff(dtype: torch.dtype) -> tuple[float, float]:
    """``(u_acc, u_out)``: the unit roundoff of a matmul's accumulation and of its output in
    ``dtype`` (float32 and half types accumulate at the float32 matmul precision in force; see
    the module docstring)."""
    u_out = torch.finfo(dtype).eps / 2
    if dtype == torch.float64:
        return u_out, u_out
    return _MATMUL_UNIT.get(torch.get_float32_matmul_precision(), 2.0**-24), u_out


def gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of an ``n``-term sum."""
    nu = n * u
    return nu / (1 - nu) if nu < 0.5 else float("inf")


def stream_stages(writes: ResidualWrites) -> Iterator[tuple[str, Tensor]]:
    """``("layer.where", stream)`` for pre, mid and post of every layer, in stream order,
    summed once (one walk instead of a ``resid`` call per stage)."""
    x = writes.resid(0, "pre")
    for ly in range(writes.n_layers):
        yield f"{ly}.pre", x
        x = x + writes.attn_write(ly)
        yield f"{ly}.mid", x
        x = x + writes.mlp_write(ly)
        yield f"{ly}.post", x


def absolute(writes: ResidualWrites) -> ResidualWrites:
    """The record with every input and weight replaced by its absolute value: its writes are
    ``|a| @ |b| + |bias|``, so its stream at each stage is ``sum_j A_j`` (module docstring)."""
    w = writes.weights
    weights = WriteWeights(W_O=w.W_O.abs(), b_O=w.b_O.abs(), W_out=w.W_out.abs(), b_out=w.b_out.abs(),
                           W_U=w.W_U, b_U=w.b_U, ln_final_w=w.ln_final_w, ln_final_b=w.ln_final_b)
    return dataclasses.replace(
        writes, embed=writes.embed.abs(), pos_embed=None if writes.pos_embed is None else writes.pos_embed.abs(),
        z={ly: t.abs() for ly, t in writes.z.items()}, acts={ly: t.abs() for ly, t in writes.acts.items()},
        weights=weights, str_tokens_=None,
    )


def terms_per_write(writes: ResidualWrites) -> int:
    """``n`` of the widest write: every head's ``d_head`` terms plus the bias, or ``d_mlp`` plus
    the bias (and the embedding plus the positional embedding)."""
    ly = writes.layers[0]
    z, acts = writes.z[ly], writes.acts[ly]
    return max(z.shape[-1] * z.shape[-2], acts.shape[-1], 1) + 1


def reconstruction_ratios(writes: ResidualWrites, ref: dict[Any, Tensor], dtype: torch.dtype,
                          non_finite: Callable[[str], str] | None = None) -> dict[str, float]:
    """Worst ``|record - model| / bound`` per stage over real tokens (``bound``: the module
    docstring's, elementwise). ``ref`` maps ``"layer.where"`` or ``(layer, where)`` to the
    model's own stream ``[batch, pos, d_model]`` computed in the forward the record came from.
    A ratio <= 1 is rounding; ``NON_ADDITIVE_RATIO`` and above is structural."""
    ref = {k if isinstance(k, str) else f"{k[0]}.{k[1]}": v for k, v in ref.items()}
    u_acc, u_out = unit_roundoff(dtype)
    g = 2 * (gamma(terms_per_write(writes), u_acc) + u_out)
    if writes.post_norm:  # the checkpoints' RMSNorms compute in float32 whatever the model's dtype
        g = g + POST_NORM_ROUNDINGS * max(u_acc, u_out, 2.0**-24)
    mask = writes.mask.to(writes.embed.device)
    tiny = torch.finfo(torch.float64).tiny
    out: dict[str, float] = {}
    adds = torch.zeros((), dtype=torch.float64, device=writes.embed.device)  # u * sum_j (|x_j| + |y_j|)
    for (key, got), (_, mag) in zip(stream_stages(writes), stream_stages(absolute(writes)), strict=True):
        y = got.double()
        want = ref.get(key)
        if want is not None:
            want = want.to(device=y.device, dtype=torch.float64)
            if non_finite is not None and not torch.isfinite(want[mask]).all():
                ly, where = key.split(".")
                raise ValueError(non_finite(f"blocks.{ly}.hook_resid_{where}"))
        # a stage is a new rounded addition, except "L.pre" (the last "post") and an unsummed embedding
        if not key.endswith(".pre") or (key == "0.pre" and writes.pos_embed is not None):
            adds = adds + u_out * (y.abs() + (y.abs() if want is None else want.abs()))
        if want is None:
            continue
        err = (y - want).abs()[mask]
        bound = (g * mag.double() + adds)[mask]
        if not torch.isfinite(err).all():
            out[key] = float("inf")
        else:
            out[key] = float((err / bound.clamp_min(tiny)).max()) if err.numel() else 0.0
    return out


def check_reconstruction(writes: ResidualWrites, ref: dict[str, Tensor], *, name: str, dtype: torch.dtype,
                         non_finite: Callable[[str], str]) -> dict[str, float]:
    """Compare every stage of ``writes`` with ``ref`` (``"layer.where"`` -> the model's own
    stream ``[batch, pos, d_model]``, from the same forward) over real tokens. Returns the
    worst ratio to the rounding bound per stage. Raises ``NonAdditiveModelError`` when a stage
    errs by ``NON_ADDITIVE_RATIO`` times the bound or more, ``ReconstructionToleranceError``
    when it exceeds the bound by less (rounding the bound does not model, e.g. a reduced-
    precision kernel), and ``ValueError(non_finite(hook))`` where the model's stream is not finite."""
    ratios = reconstruction_ratios(writes, ref, dtype, non_finite)
    if not ratios:
        return ratios
    key = max(ratios, key=ratios.__getitem__)
    worst = ratios[key]
    ly, where = key.split(".")
    hook = f"blocks.{ly}.hook_resid_{where}"
    if worst >= NON_ADDITIVE_RATIO:
        raise NonAdditiveModelError(
            f"model={name!r}: the recorded writes do not sum to the model's own {hook}: the worst "
            f"element errs by {worst:.3g} times the bound on {dtype} rounding (interp/reconstruction.py), "
            "far beyond rounding. This architecture writes to the residual stream in a way interp does "
            "not record (e.g. post-block norms); its decompositions would be wrong"
        )
    if worst > 1:
        raise ReconstructionToleranceError(
            f"model={name!r}: the recorded writes differ from the model's own {hook} by {worst:.3g} times "
            f"the worst-case rounding bound of {dtype} arithmetic (torch float32 matmul precision "
            f"{torch.get_float32_matmul_precision()!r}). That is too small to be a missing write and too "
            "large to be IEEE rounding: a kernel may compute in reduced precision. Fix: call "
            "torch.set_float32_matmul_precision('highest'), or load with dtype=torch.float64 to check "
            "the model, or pass verify=False to record without this check"
        )
    return ratios
