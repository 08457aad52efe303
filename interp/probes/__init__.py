"""Subspace probes: where kinds of information live in the residual stream, and which
components write and read them.

- ``labels``: what to read out (current token, previous token, position, line start, ...).
- ``LinearProbe`` and ``probe_layers``: linear read-out per layer, with held-out accuracy,
  a majority baseline and a control task.
- ``Subspace`` and ``overlap``: orthonormal bases and the principal angles between them.
- ``writers`` / ``readers``: the components that write into / read from a subspace.
- ``ablate`` / ``ablation_effect``: remove a subspace and measure what breaks.
"""

from interp.probes import labels
from interp.probes.ablation import ablate, ablation_effect, site_means
from interp.probes.labels import IGNORE, Labeler, token_k_back
from interp.probes.linear import OTHER, LinearProbe
from interp.probes.memory_map import readers, writers
from interp.probes.probing import control_labels, probe_labels, probe_layers
from interp.probes.sites import Site, collect
from interp.probes.subspace import Subspace, overlap, overlap_matrix

__all__ = [
    "IGNORE",
    "OTHER",
    "Labeler",
    "LinearProbe",
    "Site",
    "Subspace",
    "ablate",
    "ablation_effect",
    "collect",
    "control_labels",
    "labels",
    "overlap",
    "overlap_matrix",
    "probe_labels",
    "probe_layers",
    "readers",
    "site_means",
    "token_k_back",
    "writers",
]
