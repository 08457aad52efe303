"""Error types raised at interp's public boundary.

Each subclasses a built-in exception, so ``except ValueError`` keeps working, and each
message names the parameter, the value received and the fix.
"""

from __future__ import annotations


class InterpError(Exception):
    """Base class for interp's own errors."""


class NonAdditiveModelError(InterpError, ValueError):
    """The model's residual stream is not the sum of the writes interp records."""


class ModelNotFoundError(InterpError, FileNotFoundError):
    """A model directory or hub name could not be found offline."""


class UnsafeCheckpointError(InterpError, ValueError):
    """A checkpoint needs pickle (or remote code) and the caller did not opt in."""


class ModelMismatchError(InterpError, ValueError):
    """Writes recorded on one model were passed together with another model."""


class ChromiumNotFoundError(InterpError, FileNotFoundError, RuntimeError):
    """Static image export needs a Chromium browser and none was found (a missing executable:
    ``except FileNotFoundError`` catches it, as does ``except RuntimeError``)."""


class IndexOutOfRangeError(InterpError, IndexError, ValueError):
    """A layer, head or neuron index outside the model (``except ValueError`` catches it)."""


class DistributedError(InterpError, RuntimeError):
    """A collective across torch.distributed ranks failed or timed out: another rank failed,
    was interrupted or is stuck."""


class PromptMismatchError(InterpError, ValueError):
    """Clean and corrupt prompts for patching differ in length or batch size (or are padded)."""


class NotSingleTokenError(InterpError, ValueError):
    """An answer given as text is not exactly one token of the model's tokenizer."""


class CheckpointError(InterpError, ValueError):
    """A checkpoint whose files do not describe one model: a config that is not an object or
    has invalid sizes, a config that does not match the weights, missing or unreadable
    tokenizer files (``except ValueError`` catches it)."""


class ReconstructionToleranceError(InterpError, ValueError):
    """The recorded writes miss the model's own stream by more than the worst-case rounding
    bound, but by too little to be a missing write (a reduced-precision kernel, say)."""
