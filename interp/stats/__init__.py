"""Corpus statistics that merge: streaming, exactly mergeable, and all-reduced across the
ranks of a ``torch.distributed`` process group.

- ``Moments`` (count, mean, variance; Chan et al.'s pairwise merge), ``Covariance`` (with
  a cross-covariance to targets), ``FiringRate``, ``Extremes``, ``Histogram`` (fixed bins),
  ``TopK`` (top-k samples with keys and payloads, e.g. context windows), ``Sums``.
  Each has ``update`` / ``merge`` / ``all_reduce``.
- ``neuron_stats`` / ``top_examples``: every MLP neuron's firing rate, mean, std, extremes
  and top activating examples over a corpus.
- ``init_distributed``, ``shard_documents``, ``shard_records``: the launcher's process group
  (with a timeout) and this rank's share of a corpus.
"""

from interp.stats.base import Statistic, Sums
from interp.stats.distributed import (
    DEFAULT_TIMEOUT,
    init_distributed,
    is_distributed,
    rank_and_world,
    shard_documents,
    shard_records,
)
from interp.stats.moments import Covariance, Extremes, FiringRate, Histogram, Moments
from interp.stats.neurons import TopExamples, neuron_stats, top_examples
from interp.stats.topk import TopK

__all__ = [
    "DEFAULT_TIMEOUT",
    "Covariance",
    "Extremes",
    "FiringRate",
    "Histogram",
    "Moments",
    "Statistic",
    "Sums",
    "TopExamples",
    "TopK",
    "init_distributed",
    "is_distributed",
    "neuron_stats",
    "rank_and_world",
    "shard_documents",
    "shard_records",
    "top_examples",
]
