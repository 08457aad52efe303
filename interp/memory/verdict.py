"""Per-token removal as a distribution, and the verdict it supports.

For a component that reads the stream ``x`` and writes ``w`` at the same position, the
**removal** on one token is the share of the stream's component that the write takes away:

- a neuron, along its unit input direction ``u``: ``r = -(w . u) / (x . u)``;
- a head, within what it reads (the column space of its ``W_V``, projector ``P``):
  ``r = -(w . P x) / |P x|^2``.

``r = 1``: the write erases that component on this token; ``0``: no net effect; ``< 0``: it
amplifies; ``> 1``: it overshoots (reverses the component). Ratios are per token and reported
as a distribution (median, 10th and 90th percentiles, share of tokens past a cut), never pooled,
so one outsized position (an attention sink) cannot decide the number.

Distributions are kept as counts on fixed bins (an ``interp.stats.Histogram``: shards merge
and ranks all-reduce exactly). The bin edges include every verdict cut, so the shares past a
cut, and so the verdicts, are exact; the quantiles are interpolated inside bins of width
``BIN`` (their resolution).

Verdicts, from the median removal ``m`` over the counted tokens (``cuts`` below):

- ``deleting``: ``min_removed <= m <= max_removed`` (default 0.3 to 1.5);
- ``partial``: ``partial <= m < min_removed`` (default 0.05 to 0.3);
- ``coupled``: ``m > max_removed`` (its write is a signal of its own, tied to the component
  rather than erasing it) or two-sided, whatever the median: at least ``two_sided`` (25%) of
  tokens on each side of ``+-min_removed``;
- ``amplifying``: ``m <= -partial``;
- ``none``: in between, or fewer than ``min_tokens`` counted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from interp.stats import Histogram

#: Removal bin width; the quantiles' resolution.
BIN = 0.025
LO, HI = -2.0, 3.0
#: Verdict cuts (defaults of every finder).
MIN_REMOVED, MAX_REMOVED, PARTIAL, TWO_SIDED = 0.3, 1.5, 0.05, 0.25
#: Fewest counted tokens for any verdict other than ``none``.
MIN_TOKENS = 16
VERDICTS = ("deleting", "partial", "coupled", "amplifying", "none")
_UNCOUNTED = -1e300  # below it: a token that is not counted (the neuron does not fire, a sink query)


@dataclass(frozen=True)
class Cuts:
    """The verdict's cut-offs (see the module docstring)."""

    min_removed: float = MIN_REMOVED
    max_removed: float = MAX_REMOVED
    partial: float = PARTIAL
    two_sided: float = TWO_SIDED
    min_tokens: int = MIN_TOKENS

    def edges(self) -> Tensor:
        """Bin edges: the ``BIN`` grid on ``[LO, HI]`` plus every cut, and the uncounted edge."""
        grid = np.round(np.arange(LO, HI + BIN / 2, BIN), 10)
        cuts = [self.min_removed, -self.min_removed, self.max_removed, self.partial, -self.partial]
        e = np.unique(np.concatenate([grid, np.asarray(cuts, dtype=np.float64)]))
        return torch.tensor([_UNCOUNTED, *e.tolist()], dtype=torch.float64)


def removal_histogram(k: int, cuts: Cuts) -> Histogram:
    """Counts for ``k`` components; slot 0 holds the uncounted tokens."""
    return Histogram(cuts.edges(), (k,))


def add_tokens(hist: Histogram, r: Tensor, counted: Tensor) -> None:
    """Add ``r [tokens, k]`` where ``counted [tokens, k]``; non-finite ratios are not counted."""
    ok = counted & torch.isfinite(r)
    hist.update(torch.where(ok, r.double(), torch.full_like(r, float("-inf"), dtype=torch.float64)))


@dataclass
class Summary:
    """Per component ``[k]`` numpy arrays: counted tokens, median, 10th/90th percentiles,
    share of counted tokens with ``r >= min_removed`` and with ``r <= -min_removed``, verdict."""

    n: np.ndarray
    median: np.ndarray
    q10: np.ndarray
    q90: np.ndarray
    erase_share: np.ndarray
    amplify_share: np.ndarray
    verdict: np.ndarray


def _quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """Interpolated quantile per row of ``counts [k, slots]`` (slot 0 excluded: uncounted;
    slot 1 is ``[-1e300, LO)``, reported as ``LO``; the last, ``>= HI``, as ``HI``)."""
    c = counts[:, 1:].astype(np.float64)
    n = c.sum(1)
    lo_edges = np.concatenate([[LO], edges[1:]])  # left edge of each counted slot
    hi_edges = np.concatenate([edges[1:], [HI]])
    cum = np.cumsum(c, 1)
    target = q * n
    j = np.minimum((cum < target[:, None]).sum(1), c.shape[1] - 1)  # first slot reaching the target
    rows = np.arange(len(c))
    before = np.where(j > 0, cum[rows, np.maximum(j - 1, 0)], 0.0)
    here = c[rows, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(here > 0, (target - before) / here, 0.0)
    a, b = lo_edges[j], hi_edges[j]
    out = np.where(n > 0, np.clip(a + frac * (b - a), LO, HI), np.nan)
    return out


def summarise(hist: Histogram, cuts: Cuts) -> Summary:
    """Medians, quantiles, shares and verdicts from the counts."""
    counts = hist.counts.cpu().numpy()
    edges = hist.edges.cpu().numpy()  # [_UNCOUNTED, e_0, ..., e_last]
    counted = counts[:, 1:]
    n = counted.sum(1)
    # slot s (s >= 1) holds [edges[s-1], edges[s]); the last slot (>= e_last)
    left = np.concatenate([[-np.inf], edges])[1:]  # left edge of slot s for s >= 1 is edges[s-1]

    def share(mask: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (counted[:, mask]).sum(1) / n, np.nan)

    erase = share(left >= cuts.min_removed)
    # slots entirely at or below -min_removed: right edge <= -min_removed
    right = np.concatenate([edges[1:], [np.inf]])
    amplify = share(right <= -cuts.min_removed)
    # the median is past a cut exactly when at least half the tokens are (exact, from the counts)
    at_least = lambda c: share(left >= c)  # noqa: E731
    at_most = lambda c: share(right <= c)  # noqa: E731
    med = _quantile(counts, edges, 0.5)
    verdict = np.full(len(n), "none", dtype=object)
    enough = n >= cuts.min_tokens
    over = at_least(cuts.max_removed) > 0.5
    deleting = (erase >= 0.5) & ~over
    partial = (at_least(cuts.partial) >= 0.5) & ~(erase >= 0.5)
    amplifying = at_most(-cuts.partial) >= 0.5
    two_sided = (erase >= cuts.two_sided) & (amplify >= cuts.two_sided)
    verdict[enough & amplifying] = "amplifying"
    verdict[enough & partial] = "partial"
    verdict[enough & deleting] = "deleting"
    verdict[enough & (over | two_sided)] = "coupled"  # both ways on many tokens: not an erasure whatever the median
    return Summary(n=n, median=med, q10=_quantile(counts, edges, 0.1), q90=_quantile(counts, edges, 0.9),
                   erase_share=erase, amplify_share=amplify, verdict=verdict)


__all__ = ["BIN", "Cuts", "MAX_REMOVED", "MIN_REMOVED", "MIN_TOKENS", "PARTIAL", "Summary", "VERDICTS",
           "add_tokens", "removal_histogram", "summarise"]
