"""Memory management: neurons and heads that erase what earlier components wrote.

- ``find_deleting_neurons`` / ``neuron_in_out_cosines``: the weight signature
  ``cos(W_in[:, n], W_out[n])`` against a null baseline (``interp.memory.neurons``).
- ``find_deleting_heads``: OV-circuit signatures (``interp.memory.heads``).
- ``deletion_evidence`` / ``deletion_summary``: on real tokens, how much a deleter removes
  and whose writes (``interp.memory.evidence``).
"""

from interp.memory.evidence import deletion_evidence, deletion_summary
from interp.memory.heads import find_deleting_heads
from interp.memory.neuron_data import find_deleting_neurons, neuron_verdicts
from interp.memory.neurons import MLPStack, in_out_cosines, neuron_in_out_cosines
from interp.memory.null import cosine_cdf, cosine_quantile

__all__ = [
    "MLPStack",
    "cosine_cdf",
    "cosine_quantile",
    "deletion_evidence",
    "deletion_summary",
    "find_deleting_heads",
    "find_deleting_neurons",
    "in_out_cosines",
    "neuron_in_out_cosines",
    "neuron_verdicts",
]
