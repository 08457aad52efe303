"""interp: mechanistic interpretability of transformer language models.

The residual stream is a shared memory: every component writes into it by addition and
later components read from it. interp records every write, takes the stream apart by
who wrote what, finds the subspaces that carry information and who writes and reads
them, and flags the components that delete it.

>>> import interp
>>> model = interp.load()                     # the embedded default model, offline
>>> w = model.run_with_writes("x = 1")
"""

from interp import _progress, data, heads, plots, stats  # noqa: F401  (_progress first: it picks the bar quietly)
from interp.decomposition import decompose, stream_norms
from interp.errors import (
    ChromiumNotFoundError,
    DistributedError,
    IndexOutOfRangeError,
    InterpError,
    ModelMismatchError,
    ModelNotFoundError,
    NonAdditiveModelError,
    ReconstructionToleranceError,
    UnsafeCheckpointError,
)
from interp.export import export
from interp.generation import Generation, generate, generate_tokens
from interp.heads import (
    attention_patterns,
    composition_scores,
    head_scores,
    icl_score,
    neuron_composition,
    pattern_frame,
)
from interp.load import load
from interp.memory import (
    MLPStack,
    attention_sinks,
    deletion_evidence,
    entropy_neurons,
    find_deleting_heads,
    find_deleting_neurons,
    neuron_in_out_cosines,
    neuron_verdicts,
    prediction_neurons,
)
from interp.model import Config, Model
from interp.models.synthetic import repeated_tokens_for as repeated_tokens
from interp.pages import component_pages, head_page, neuron_page
from interp.patching import activation_patching, attribution_patching, deletion_effect
from interp.probes import (
    LinearProbe,
    Subspace,
    ablate,
    ablation_effect,
    labels,
    overlap,
    probe_labels,
    probe_layers,
    readers,
    writers,
)
from interp.readout import logit_attribution, logit_lens
from interp.stats import neuron_stats, top_examples
from interp.tokens import Tokens
from interp.writes import ResidualWrites

__version__ = "0.1.0"

__all__ = [
    "ChromiumNotFoundError",
    "Config",
    "DistributedError",
    "Generation",
    "IndexOutOfRangeError",
    "InterpError",
    "LinearProbe",
    "MLPStack",
    "Model",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NonAdditiveModelError",
    "ReconstructionToleranceError",
    "ResidualWrites",
    "Subspace",
    "Tokens",
    "UnsafeCheckpointError",
    "ablate",
    "ablation_effect",
    "activation_patching",
    "attention_patterns",
    "attention_sinks",
    "attribution_patching",
    "component_pages",
    "composition_scores",
    "data",
    "decompose",
    "deletion_effect",
    "deletion_evidence",
    "entropy_neurons",
    "export",
    "find_deleting_heads",
    "find_deleting_neurons",
    "generate",
    "generate_tokens",
    "head_page",
    "head_scores",
    "heads",
    "icl_score",
    "labels",
    "load",
    "logit_attribution",
    "logit_lens",
    "neuron_composition",
    "neuron_in_out_cosines",
    "neuron_page",
    "neuron_stats",
    "neuron_verdicts",
    "overlap",
    "pattern_frame",
    "plots",
    "prediction_neurons",
    "probe_labels",
    "probe_layers",
    "readers",
    "repeated_tokens",
    "stats",
    "stream_norms",
    "top_examples",
    "writers",
]
