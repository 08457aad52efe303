"""Causal evidence: intervene on the model and measure what changes.

- ``activation_patching``: write one component's clean value into the corrupt run
  (``interp.patching.activation``).
- ``attribution_patching``: the gradient-based linear estimate of the same, for every head
  and neuron at once (``interp.patching.attribution``).
- ``deletion_effect``: ablate a deleting neuron or head on real tokens and measure what
  survives downstream in the direction it erases (``interp.patching.deletion``).
"""

from interp.patching.activation import activation_patching
from interp.patching.attribution import attribution_patching
from interp.patching.deletion import deletion_effect

__all__ = ["activation_patching", "attribution_patching", "deletion_effect"]
