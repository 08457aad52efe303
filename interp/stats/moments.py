"""Streaming moments, rates, extremes and histograms, each mergeable and all-reducible.

Every statistic here reduces over the first axis of its samples, ``x: [n, *shape]``, and
keeps a state of ``shape`` (a neuron layer: ``shape=(d_mlp,)``; heads: ``(n_heads,)``;
directions: ``(k,)``). States are float64 (int64 for counts), on the samples' device.

Examples:
    >>> x = torch.randn(1000, 3)
    >>> a, b = Moments((3,)).update(x[:300]), Moments((3,)).update(x[300:])
    >>> torch.allclose(a.merge(b).mean, x.double().mean(0))
    True
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.stats.base import Statistic
from interp.stats.distributed import all_reduce_tensors, is_distributed


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape={shape!r} must be a tuple of positive ints, e.g. (512,)")
    return shape


def _samples(name: str, x: Any, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(x, Tensor) or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a float tensor [n, *{shape}], got {getattr(x, 'dtype', type(x).__name__)}")
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; this statistic takes [n, *{shape}] samples")
    return x


class Moments(Statistic):
    """Count, mean and variance per feature, merged with Chan, Golub & LeVeque's (1979)
    pairwise update, numerically stable at any scale.

    State: ``count`` (int), ``mean`` ``[*shape]``, ``m2`` ``[*shape]`` (sum of squared
    deviations from the mean), float64.
    """

    def __init__(self, shape: Any = (), *, device: Any = None):
        self.shape = _shape(shape)
        self.count = 0
        self.mean = torch.zeros(self.shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(self.shape, dtype=torch.float64, device=device)

    def update(self, x: Float[Tensor, "n ..."]) -> Moments:
        """Add samples ``x`` ``[n, *shape]``."""
        x = _samples("x", x, self.shape)
        n = x.shape[0]
        if n == 0:
            return self
        # Shifted sums (by the running mean, or the first sample), so they do not cancel;
        # elementwise in the samples' float dtype, accumulated in float64.
        dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float64
        shift = (self.mean if self.count else x[0].to(self.mean.device, torch.float64)).to(dt)
        y = x.to(self.mean.device, dt) - shift
        s = y.sum(0).double()  # torch's cascade sum: float32 here loses ~log(n) ulps, not n
        m2 = (y.square_().sum(0).double() - s * s / n).clamp_min_(0)
        return self._combine(n, shift.double() + s / n, m2)

    def _combine(self, n: int, mean: Tensor, m2: Tensor) -> Moments:
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean.clone(), m2.clone()
            return self
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.count * n / total)
        self.count = total
        return self

    def merge(self, other: Moments) -> Moments:
        self._check_other(other, shape=self.shape)
        if other.count:
            self._combine(other.count, other.mean.to(self.mean.device), other.m2.to(self.mean.device))
        return self

    def all_reduce(self, group: Any = None) -> Moments:
        """Every rank ends with the moments of all ranks' samples: the k-way form of the
        pairwise merge, ``m2 = sum_r m2_r + n_r (mean_r - mean)^2``, in two all-reduces."""
        if not is_distributed(group):
            return self
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.mean.device)
        total = self.mean * self.count
        all_reduce_tensors([count, total], "sum", group=group, what="Moments (count, sum)")
        n = int(count.item())
        mean = total / max(n, 1)
        m2 = self.m2 + (self.mean - mean).pow(2) * self.count
        all_reduce_tensors([m2], "sum", group=group, what="Moments (m2)")
        self.count, self.mean, self.m2 = n, mean, m2
        return self

    def var(self, ddof: int = 0) -> Tensor:
        """Variance ``[*shape]`` (``ddof=0``: population; NaN with ``count <= ddof``)."""
        return self.m2 / (self.count - ddof) if self.count > ddof else torch.full_like(self.m2, float("nan"))

    def std(self, ddof: int = 0) -> Tensor:
        return self.var(ddof).sqrt()

    def __repr__(self) -> str:
        return f"Moments(shape={self.shape}, count={self.count})"


class Covariance(Statistic):
    """Mean and covariance of features ``x`` ``[*lead, n, d]`` (and, with targets ``y``
    ``[n, m]``, their cross-covariance), merged pairwise as ``Moments``.

    State: ``count``; ``mean_x`` ``[*lead, d]``, ``cxx`` ``[*lead, d, d]`` (sum of outer
    products of deviations); with ``m`` targets also ``mean_y`` ``[m]``, ``cxy``
    ``[*lead, d, m]``, ``cyy`` ``[m, m]``. ``lead`` is e.g. the sites of a batched probe.
    Samples are centred chunk by chunk (about ``2**22`` numbers at a time), and each chunk's
    comoments are computed in ``dtype`` (float64 by default; float32 halves the cost and,
    on centred chunks, loses little) and merged in float64.
    """

    def __init__(self, d: int, *, lead: Any = (), m: int = 0, device: Any = None, chunk: int | None = None,
                 dtype: torch.dtype = torch.float64):
        (self.d,) = _shape((d,))
        self.lead = tuple(lead)
        self.m = int(m)
        size = max(1, int(torch.tensor(self.lead).prod()) if self.lead else 1) * self.d
        self.chunk = int(chunk) if chunk is not None else max(64, 2**22 // size)
        self.dtype = dtype
        z = lambda *s: torch.zeros(s, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.mean_x, self.cxx = z(*self.lead, self.d), z(*self.lead, self.d, self.d)
        self.mean_y, self.cxy, self.cyy = z(self.m), z(*self.lead, self.d, self.m), z(self.m, self.m)

    def update(self, x: Float[Tensor, "*lead n d"], y: Float[Tensor, "n m"] | None = None) -> Covariance:
        """Add samples ``x`` ``[*lead, n, d]`` and, when built with ``m``, targets ``y``
        ``[n, m]`` (or ``[n]`` for ``m=1``) shared by every lead index."""
        if not isinstance(x, Tensor) or tuple(x.shape[:-2]) != self.lead or x.shape[-1] != self.d:
            raise ValueError(f"x has shape {tuple(getattr(x, 'shape', ()))}; this Covariance takes "
                             f"[*{self.lead}, n, {self.d}]")
        n = x.shape[-2]
        if self.m:
            if y is None:
                raise ValueError(f"this Covariance was built with m={self.m} targets; pass y [n, {self.m}]")
            y = y.reshape(n, -1) if y.dim() == 1 else y
            if tuple(y.shape) != (n, self.m):
                raise ValueError(f"y has shape {tuple(y.shape)}; pass [{n}, {self.m}]")
        for s in range(0, n, self.chunk):
            xc = x[..., s : s + self.chunk, :].to(self.mean_x.device, self.dtype)
            k = xc.shape[-2]
            mx = xc.double().mean(-2)
            xc = xc - mx.unsqueeze(-2).to(self.dtype)
            cxx = (xc.transpose(-1, -2) @ xc).double()
            my = cxy = cyy = None
            if self.m:
                yc = y[s : s + self.chunk].to(self.mean_x.device, torch.float64)
                my = yc.mean(0)
                yc = yc - my
                cxy, cyy = (xc.transpose(-1, -2) @ yc.to(self.dtype)).double(), yc.T @ yc
            self._combine(k, mx, cxx, my, cxy, cyy)
        return self

    def _combine(self, n: int, mx: Tensor, cxx: Tensor, my: Tensor | None, cxy: Tensor | None,
                 cyy: Tensor | None) -> None:
        if n == 0:
            return
        if self.count == 0:
            self.count, self.mean_x, self.cxx = n, mx.clone(), cxx.clone()
            if self.m:
                self.mean_y, self.cxy, self.cyy = my.clone(), cxy.clone(), cyy.clone()
            return
        total = self.count + n
        w = self.count * n / total
        dx = mx - self.mean_x
        self.cxx = self.cxx + cxx + w * dx.unsqueeze(-1) * dx.unsqueeze(-2)
        self.mean_x = self.mean_x + dx * (n / total)
        if self.m:
            dy = my - self.mean_y
            self.cxy = self.cxy + cxy + w * dx.unsqueeze(-1) * dy
            self.cyy = self.cyy + cyy + w * dy.unsqueeze(-1) * dy
            self.mean_y = self.mean_y + dy * (n / total)
        self.count = total

    def merge(self, other: Covariance) -> Covariance:
        self._check_other(other, d=self.d, lead=self.lead, m=self.m)
        if other.count:
            dev = self.mean_x.device
            self._combine(other.count, other.mean_x.to(dev), other.cxx.to(dev),
                          *((other.mean_y.to(dev), other.cxy.to(dev), other.cyy.to(dev)) if self.m else (None,) * 3))
        return self

    def all_reduce(self, group: Any = None) -> Covariance:
        if not is_distributed(group):
            return self
        dev = self.mean_x.device
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=dev)
        sx, sy = self.mean_x * self.count, self.mean_y * self.count
        all_reduce_tensors([count, sx, sy], "sum", group=group, what="Covariance (count, sums)")
        n = int(count.item())
        mx, my = sx / max(n, 1), sy / max(n, 1)
        dx, dy = self.mean_x - mx, self.mean_y - my
        cxx = self.cxx + self.count * dx.unsqueeze(-1) * dx.unsqueeze(-2)
        cxy = self.cxy + self.count * dx.unsqueeze(-1) * dy
        cyy = self.cyy + self.count * dy.unsqueeze(-1) * dy
        all_reduce_tensors([cxx, cxy, cyy], "sum", group=group, what="Covariance (comoments)")
        self.count, self.mean_x, self.mean_y, self.cxx, self.cxy, self.cyy = n, mx, my, cxx, cxy, cyy
        return self

    def cov(self, ddof: int = 0) -> Tensor:
        """Covariance of ``x``: ``[*lead, d, d]``."""
        return self.cxx / max(self.count - ddof, 1)

    def cross_cov(self, ddof: int = 0) -> Tensor:
        """Covariance of ``x`` with ``y``: ``[*lead, d, m]``."""
        return self.cxy / max(self.count - ddof, 1)

    def __repr__(self) -> str:
        return f"Covariance(d={self.d}, lead={self.lead}, m={self.m}, count={self.count})"


class FiringRate(Statistic):
    """Share of samples above ``threshold`` per feature (a neuron "fires" when its
    activation is positive). State: ``count`` (int) and ``fires`` ``[*shape]`` int64."""

    def __init__(self, shape: Any = (), *, threshold: float = 0.0, device: Any = None):
        self.shape, self.threshold = _shape(shape), float(threshold)
        self.count = 0
        self.fires = torch.zeros(self.shape, dtype=torch.int64, device=device)

    def update(self, x: Float[Tensor, "n ..."]) -> FiringRate:
        x = _samples("x", x, self.shape)
        self.count += x.shape[0]
        if self.threshold == 0 and x.is_floating_point():  # sign(x) > 0 exactly where x > 0; faster than a compare
            fires = torch.sign(x).clamp_min_(0).sum(0).round_().long()
        else:
            fires = (x > self.threshold).sum(0, dtype=torch.int32)
        self.fires += fires.to(self.fires.device)
        return self

    def merge(self, other: FiringRate) -> FiringRate:
        self._check_other(other, shape=self.shape, threshold=self.threshold)
        self.count += other.count
        self.fires += other.fires.to(self.fires.device)
        return self

    def all_reduce(self, group: Any = None) -> FiringRate:
        if is_distributed(group):
            count = torch.tensor([self.count], dtype=torch.int64, device=self.fires.device)
            all_reduce_tensors([count, self.fires], "sum", group=group, what="FiringRate")
            self.count = int(count.item())
        return self

    @property
    def rate(self) -> Tensor:
        """``fires / count`` ``[*shape]`` float64 (NaN before any sample)."""
        return self.fires.double() / self.count if self.count else torch.full(self.shape, float("nan"))


class Extremes(Statistic):
    """Elementwise max and min per feature. State: ``max``, ``min`` ``[*shape]`` (in the
    samples' dtype, so a maximum is the sample itself), ``count``."""

    def __init__(self, shape: Any = (), *, dtype: torch.dtype = torch.float32, device: Any = None):
        self.shape = _shape(shape)
        self.count = 0
        self.max = torch.full(self.shape, -float("inf"), dtype=dtype, device=device)
        self.min = torch.full(self.shape, float("inf"), dtype=dtype, device=device)

    def update(self, x: Float[Tensor, "n ..."], *, amax: Tensor | None = None) -> Extremes:
        """Add samples ``x``; ``amax``: ``x.amax(0)`` when the caller has it already."""
        x = _samples("x", x, self.shape)
        if x.shape[0]:
            self.max = torch.maximum(self.max, (x.amax(0) if amax is None else amax).to(self.max))
            self.min = torch.minimum(self.min, x.amin(0).to(self.min))
            self.count += x.shape[0]
        return self

    def merge(self, other: Extremes) -> Extremes:
        self._check_other(other, shape=self.shape)
        self.max = torch.maximum(self.max, other.max.to(self.max))
        self.min = torch.minimum(self.min, other.min.to(self.min))
        self.count += other.count
        return self

    def all_reduce(self, group: Any = None) -> Extremes:
        if is_distributed(group):
            count = torch.tensor([self.count], dtype=torch.int64, device=self.max.device)
            all_reduce_tensors([self.max], "max", group=group, what="Extremes (max)")
            all_reduce_tensors([self.min], "min", group=group, what="Extremes (min)")
            all_reduce_tensors([count], "sum", group=group, what="Extremes (count)")
            self.count = int(count.item())
        return self


class Histogram(Statistic):
    """Counts per feature on fixed bins ``[edges[i], edges[i+1])``, plus one underflow
    (below ``edges[0]``) and one overflow (at or above ``edges[-1]``) slot.

    State: ``counts`` ``[*shape, n_bins + 2]`` int64: underflow, the bins, overflow.
    """

    def __init__(self, edges: Any, shape: Any = (), *, device: Any = None):
        edges = torch.as_tensor(edges, dtype=torch.float64)
        if edges.dim() != 1 or len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
            raise ValueError(f"edges={edges.tolist()!r:.80} must be a 1-D increasing sequence of at least 2 numbers")
        self.shape = _shape(shape)
        self.edges = edges.to(device)
        self.counts = torch.zeros((*self.shape, len(edges) + 1), dtype=torch.int64, device=device)

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    def update(self, x: Float[Tensor, "n ..."]) -> Histogram:
        x = _samples("x", x, self.shape)
        slots = self.counts.shape[-1]
        idx = torch.bucketize(x.to(self.edges.device, torch.float64), self.edges, right=True)  # 0 .. n_bins + 1
        feature = torch.arange(self.counts[..., 0].numel(), device=idx.device).reshape(self.shape)
        flat = (idx + feature * slots).reshape(-1)
        self.counts += torch.bincount(flat, minlength=self.counts.numel()).reshape(self.counts.shape)
        return self

    def merge(self, other: Histogram) -> Histogram:
        self._check_other(other, shape=self.shape, n_bins=self.n_bins)
        if not torch.equal(self.edges.cpu(), other.edges.cpu()):
            raise ValueError("cannot merge Histograms with different edges; build both with the same edges")
        self.counts += other.counts.to(self.counts.device)
        return self

    def all_reduce(self, group: Any = None) -> Histogram:
        all_reduce_tensors([self.counts], "sum", group=group, what="Histogram")
        return self
