"""The reconstruction invariant: a record's writes, summed in stream order, equal the model's
own residual stream at every stage (``blocks.L.hook_resid_pre/mid/post``).

``Model.run_with_writes`` checks it on a model's first record; a model whose writes do not add
up (post-block norms, say) raises ``NonAdditiveModelError`` instead of being analysed wrongly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from interp.errors import NonAdditiveModelError
from interp.writes import ResidualWrites

#: Reconstruction tolerance, as max abs error over the stream's RMS, by model dtype.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def stream_stages(writes: ResidualWrites) -> Iterator[tuple[str, Tensor]]:
    """``("layer.where", stream)`` for pre, mid and post of every layer, in stream order,
    summed once (one walk instead of a ``resid`` call per stage)."""
    x = writes.resid(0, "pre")
    for ly in range(writes.n_layers):
        yield f"{ly}.pre", x
        x = x + writes.attn_write(ly)
        yield f"{ly}.mid", x
        x = x + writes.mlp_write(ly)
        yield f"{ly}.post", x


def check_reconstruction(writes: ResidualWrites, ref: dict[str, Tensor], *, name: str, dtype: torch.dtype,
                         non_finite: Callable[[str], str]) -> None:
    """Compare every stage of ``writes`` with ``ref`` (``"layer.where"`` -> the model's own
    stream ``[batch, pos, d_model]``) over real tokens. Raises ``NonAdditiveModelError`` past
    ``TOLERANCE[dtype]``, and ``ValueError(non_finite(hook))`` where the model's stream is not finite."""
    tol = TOLERANCE.get(dtype, 1e-4)
    mask = writes.mask.to(writes.embed.device)
    for key, got in stream_stages(writes):
        if key not in ref:
            continue
        ly, where = key.split(".")
        want = ref[key].to(got.dtype)
        if not torch.isfinite(want[mask]).all():
            raise ValueError(non_finite(f"blocks.{ly}.hook_resid_{where}"))
        rms = want[mask].pow(2).mean().sqrt().clamp_min(1e-12)
        err = (got - want)[mask].abs().max() / rms
        if not torch.isfinite(err) or err > tol:
            raise NonAdditiveModelError(
                f"model={name!r}: the recorded writes do not sum to the model's own "
                f"blocks.{ly}.hook_resid_{where} (max error {float(err):.2e} of the stream's RMS, "
                f"tolerance {tol:.0e}). This architecture writes to the residual stream in a way "
                "interp does not record (e.g. post-block norms); its decompositions would be wrong"
            )
