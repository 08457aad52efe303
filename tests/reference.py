"""The model's own residual stream, for checking records against it."""

from __future__ import annotations

import torch

import interp


def own_stream(model: interp.Model, tokens: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """The model's own ``hook_resid_*`` per ``(layer, where)``, captured through ``model.hooks``
    (no ``mid`` for parallel attention+MLP blocks, which have none)."""
    wheres = ("pre", "post") if model.cfg.parallel else ("pre", "mid", "post")
    out: dict[tuple[int, str], torch.Tensor] = {}

    def keep(key):
        def hook(t, hook):
            out[key] = t.detach().clone()
        return hook

    hooks = [(f"blocks.{ly}.hook_resid_{w}", keep((ly, w))) for ly in range(model.cfg.n_layers) for w in wheres]
    with model.hooks(hooks), torch.no_grad():
        model.bridge(tokens.to(model.device), return_type=None)
    assert len(out) == len(hooks), "a reference hook did not fire"
    return out


def rel_err(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> float:
    """Max abs error over real positions, in units of ``want``'s RMS there."""
    want = want.to(got.dtype)
    rms = want[mask].pow(2).mean().sqrt().clamp_min(1e-12)
    return float((got - want)[mask].abs().max() / rms)


def stream_error(model: interp.Model, w, ref: dict, mask: torch.Tensor | None = None) -> float:
    """How far a record's summed stream is from the model's own ``ref`` (``own_stream``), in units
    of the tolerance that applies (at most 1 passes): a record from the bridge's forward is held to
    the worst-case rounding bound of the sum (``interp.reconstruction``); one from the fast path
    (another forward, SDPA on the checkpoint's weights) to the calibration's elementwise
    tolerance (``interp.capture``)."""
    from interp.capture import calibration_tolerance, row_error
    from interp.reconstruction import reconstruction_ratios

    mask = w.mask if mask is None else mask
    if model.capture_path == "fast":
        rtol = calibration_tolerance(model.cfg.dtype, model.cfg.n_layers)
        worst = max(row_error(w.resid(ly, where), want, mask) for (ly, where), want in ref.items())
        return worst / rtol
    return max(reconstruction_ratios(w, ref, model.cfg.dtype).values())
