"""interp: mechanistic interpretability of transformer language models.

The residual stream is a shared memory: every component writes into it by addition and
later components read from it. interp records every write, takes the stream apart by
who wrote what, finds the subspaces that carry information, and flags the components
that delete it.
"""

from interp.errors import (
    ChromiumNotFoundError,
    IndexOutOfRangeError,
    InterpError,
    ModelMismatchError,
    ModelNotFoundError,
    NonAdditiveModelError,
    UnsafeCheckpointError,
)
from interp.load import load
from interp.model import Config, Model
from interp.tokens import Tokens
from interp.writes import ResidualWrites

# decomposition (issue: decomposing the residual stream)
# isort: split
from interp.decomposition import decompose as decompose
from interp.decomposition import stream_norms as stream_norms
from interp.readout import logit_attribution as logit_attribution
from interp.readout import logit_lens as logit_lens

# probes (issue: subspace probes)
# isort: split
from interp.probes import LinearProbe as LinearProbe
from interp.probes import Subspace as Subspace
from interp.probes import ablate as ablate
from interp.probes import ablation_effect as ablation_effect
from interp.probes import labels as labels
from interp.probes import overlap as overlap
from interp.probes import probe_layers as probe_layers
from interp.probes import readers as readers
from interp.probes import writers as writers

# memory (issue: memory management)
# isort: split
from interp.memory import MLPStack as MLPStack
from interp.memory import deletion_evidence as deletion_evidence
from interp.memory import find_deleting_heads as find_deleting_heads
from interp.memory import find_deleting_neurons as find_deleting_neurons
from interp.memory import neuron_in_out_cosines as neuron_in_out_cosines

# surface (issue: report, export, CLI)
# isort: split
from interp.export import export as export

__version__ = "0.1.0"

__all__ = [
    "ChromiumNotFoundError",
    "Config",
    "IndexOutOfRangeError",
    "InterpError",
    "Model",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NonAdditiveModelError",
    "ResidualWrites",
    "Tokens",
    "UnsafeCheckpointError",
    "load",
]
