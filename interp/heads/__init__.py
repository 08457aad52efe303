"""Attention heads: patterns, detectors, composition and the in-context-learning score.

- ``attention_patterns`` / ``pattern_frame``: masked patterns ``[batch, head, query, key]``
  (``interp.heads.patterns``).
- ``head_scores``: previous-token, induction, duplicate-token, BOS-sink, self and
  user-pattern scores per head (``interp.heads.detectors``).
- ``composition_scores`` / ``neuron_composition``: Q-, K- and V-composition (Elhage et al.
  2021) between heads, and between neurons and heads (``interp.heads.composition``).
- ``icl_score``: loss at a late token minus loss at an early one (Olsson et al. 2022).
"""

from interp.heads.composition import composition_scores, neuron_composition
from interp.heads.detectors import KINDS, THRESHOLDS, head_scores
from interp.heads.icl import icl_score
from interp.heads.patterns import attention_patterns, pattern_frame

__all__ = [
    "KINDS",
    "THRESHOLDS",
    "attention_patterns",
    "composition_scores",
    "head_scores",
    "icl_score",
    "neuron_composition",
    "pattern_frame",
]
