"""Null baselines for cosine similarities and OV-circuit scores.

The cosine of two independent, uniformly random directions in ``d`` dimensions has mean 0,
standard deviation ``1/sqrt(d)`` and an exact distribution: ``(1 + cos) / 2`` follows
``Beta((d - 1) / 2, (d - 1) / 2)``. Tail probabilities here are exact (regularised
incomplete beta function), so thresholds stay calibrated for small ``d`` where the normal
approximation is not.

>>> round(cosine_cdf(-2 / 64**0.5, 64), 4)   # P(cos <= -2 sigma) in 64 dimensions
0.0223
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import torch

from interp._linalg import eigvals


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)``, accurate in both tails."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_bt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_bt) * _betacf(b, a, 1.0 - x) / b


def cosine_cdf(c: float, d: float) -> float:
    """``P(cos <= c)`` for two independent random directions in ``d`` dimensions (``d >= 2``;
    non-integer ``d`` is an effective dimension)."""
    if d < 2:
        raise ValueError(f"d={d} must be at least 2 for a cosine null")
    a = (d - 1.0) / 2.0
    return betainc(a, a, (1.0 + max(-1.0, min(1.0, c))) / 2.0)


@functools.lru_cache(maxsize=256)
def cosine_quantile(p: float, d: float) -> float:
    """The cosine ``c`` with ``P(cos <= c) = p`` (bisection on ``cosine_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must be strictly between 0 and 1")
    lo, hi = -1.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        if cosine_cdf(mid, d) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def normal_upper_quantile(p: float) -> float:
    """``z`` with ``P(Z >= z) = p`` for a standard normal ``Z``."""
    return -NormalDist().inv_cdf(p)


@functools.lru_cache(maxsize=32)
def ov_score_null(d_model: int, d_head: int, *, samples: int = 256, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of ``ov_eigen_score`` for Gaussian ``W_V [d_model, d_head]``
    and ``W_O [d_head, d_model]`` (Monte Carlo, seeded, cached per shape)."""
    g = torch.Generator().manual_seed(seed)
    W_V = torch.randn(samples, d_model, d_head, generator=g, dtype=torch.float64)
    W_O = torch.randn(samples, d_head, d_model, generator=g, dtype=torch.float64)
    s = ov_eigen_score(W_V, W_O)[0]
    return float(s.mean()), float(s.std())


def ov_eigen_score(W_V: torch.Tensor, W_O: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalue signature of OV circuits ``W_V @ W_O`` (``[..., d_model, d_head]`` and
    ``[..., d_head, d_model]``), from the ``d_head x d_head`` product ``W_O @ W_V``, which has
    the same non-zero eigenvalues.

    Returns ``(score, neg_share)``, each ``[...]``: ``score = -sum(Re l) / sum(|l|)`` in
    ``[-1, 1]`` (+1: the head writes minus what it reads; -1: it copies; 0 for random weights),
    and ``neg_share = sum(|l| : Re l < 0) / sum(|l|)`` in ``[0, 1]``.
    """
    lam = eigvals(W_O.double() @ W_V.double())
    mag = lam.abs()
    total = mag.sum(-1).clamp_min(1e-300)
    score = -lam.real.sum(-1) / total
    neg = (mag * (lam.real < 0)).sum(-1) / total
    return score, neg
