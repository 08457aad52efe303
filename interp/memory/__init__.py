"""Memory management: components that erase, sink, rescale or single out what the stream holds.

Screens (weights only) and verdicts (measured on tokens) side by side:

- ``neuron_in_out_cosines`` (screen) / ``neuron_verdicts`` / ``find_deleting_neurons``: neurons
  whose write removes the stream's component along their input vector (``neuron_data``).
- ``find_deleting_heads``: heads whose write removes what they read of the stream,
  with attention to their own position and to sinks (``heads``, ``head_data``).
- ``attention_sinks``: massive activations and the attention they draw (``sinks``).
- ``entropy_neurons``: output vectors in the unembedding's null space, effect through the final
  norm (``entropy``).
- ``prediction_neurons``: vocabulary skew and kurtosis of ``W_U^T w_out`` (``prediction``).
- ``deletion_evidence`` / ``deletion_summary``: whose writes a deleter erases (``evidence``).
- ``interp.memory.verdict``: the removal distribution and the verdict rules they share.
"""

from interp.memory.entropy import entropy_neurons
from interp.memory.evidence import deletion_evidence, deletion_summary
from interp.memory.heads import find_deleting_heads
from interp.memory.neuron_data import find_deleting_neurons, neuron_verdicts
from interp.memory.neurons import MLPStack, in_out_cosines, neuron_in_out_cosines
from interp.memory.null import cosine_cdf, cosine_quantile
from interp.memory.prediction import prediction_neurons
from interp.memory.sinks import attention_sinks

__all__ = [
    "MLPStack",
    "attention_sinks",
    "cosine_cdf",
    "cosine_quantile",
    "deletion_evidence",
    "deletion_summary",
    "entropy_neurons",
    "find_deleting_heads",
    "find_deleting_neurons",
    "in_out_cosines",
    "neuron_in_out_cosines",
    "neuron_verdicts",
    "prediction_neurons",
]
