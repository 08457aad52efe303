"""Figures: each function takes an analysis's DataFrame and returns a plotly Figure, so any
figure can be rebuilt from a saved table. Export with ``interp.export(fig, path)``."""

from interp.plots.decomposition import head_attribution, logit_lens, stream_norms, top_neurons, write_norms
from interp.plots.heads import attention_pattern, composition_edges
from interp.plots.managers import attention_sinks, entropy_neurons, neuron_verdicts, prediction_neurons
from interp.plots.memory import deleting_heads, deleting_neurons, deletion_graph
from interp.plots.notebook import notebook_renderer
from interp.plots.pages import head_page, neuron_page
from interp.plots.patching import deletion_effect, patching_heads, patching_neurons, patching_positions
from interp.plots.probes import probe_accuracy, subspace_angles, subspace_writers
from interp.plots.stats import top_examples

__all__ = [
    "attention_pattern",
    "attention_sinks",
    "composition_edges",
    "deleting_heads",
    "deleting_neurons",
    "deletion_effect",
    "deletion_graph",
    "entropy_neurons",
    "head_attribution",
    "head_page",
    "logit_lens",
    "neuron_verdicts",
    "neuron_page",
    "notebook_renderer",
    "patching_heads",
    "patching_neurons",
    "patching_positions",
    "prediction_neurons",
    "probe_accuracy",
    "stream_norms",
    "subspace_angles",
    "subspace_writers",
    "top_examples",
    "top_neurons",
    "write_norms",
]
