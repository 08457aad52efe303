"""The fast capture path: the residual-write record taken from a plain Hugging Face forward.

TransformerLens's bridge computes attention eagerly and pays per hook; the factored record
does not need that. Folding LayerNorm leaves z and the MLP activations unchanged, centring
changes only W_O/W_out/W_E, and folding value biases shifts z by a constant per head. So
``FastCapture`` runs the checkpoint's own forward (SDPA attention, no unembedding) with
plain torch hooks on the output projections, and maps the raw record into the processed
convention:

- ``embed``/``pos_embed``: centred over ``d_model`` when the processed weights are;
- ``z``: minus a per-head constant ``z_shift`` (the folded value bias);
- MLP activations: as they are; final-norm scale: from the stream entering the final norm;
- post-norm blocks: each post-norm's scale from its input, as TransformerLens's ``hook_scale``.

The mapping is measured, not assumed: ``calibrate`` compares both paths on one batch and
``Model`` falls back to the bridge when they disagree.

What "agree" means. The two paths are the same function rounded differently (eager attention on
folded weights against SDPA on the checkpoint's own), so they differ by rounding, and rounding
scales with the magnitude of the values a position's computation involves. Real models have
outlier activations (SmolLM2-135M: an MLP activation of 61 at a position where the layer's RMS
is 0.21), and one RMS-relative constant over the whole tensor calls their rounding a
disagreement. So each element is compared with the largest magnitude of its own row (the same
quantity at the same position: every neuron of the layer, every head's ``z``, the scale):

    |fast - bridge| <= rtol * max_row |bridge|,   rtol = min(ROUNDINGS_PER_LAYER * eps * (n_layers + 1), 0.1)

with ``eps`` the dtype's machine epsilon: a budget of ``ROUNDINGS_PER_LAYER`` roundings for
every layer the error can accumulate through. A mapping error (a missed centring, an unfolded
bias, a wrong hook) is of the order of the row's own scale, which the 0.1 cap (binding only in
fp16/bf16) still tells apart from rounding. The worst ratios are kept in ``errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: Roundings allowed per layer by the calibration (see the module docstring). SmolLM2-135M in
#: fp32 (30 layers) uses at most ~330 eps of its 1,984-eps budget; the embedded model ~50 of 192.
ROUNDINGS_PER_LAYER = 64


def calibration_tolerance(dtype: torch.dtype, n_layers: int) -> float:
    """``rtol`` for ``calibrate``: a rounding budget per layer, capped at 0.1 (see the module doc)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
    return min(ROUNDINGS_PER_LAYER * eps * (n_layers + 1), 0.1)


def row_error(a: Tensor, b: Tensor, mask: Tensor) -> float:
    """Worst ``|a - b|`` over real positions, each in units of its row's largest ``|b|`` (the
    row: everything after the ``[batch, pos]`` axes). ``a``, ``b``: ``[batch, pos, ...]``."""
    a, b = a.double()[mask].flatten(1), b.double()[mask].flatten(1)
    if not a.numel():
        return 0.0
    scale = b.abs().amax(1, keepdim=True)
    diff = (a - b).abs()
    # a row that is zero in both paths agrees exactly (d_model=1 under LayerNorm, say); one that is
    # zero in one path only disagrees by the other's whole size
    scale = torch.where(scale > 0, scale, a.abs().amax(1, keepdim=True))
    ratio = torch.where(diff > 0, diff / scale.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(diff))
    return float(ratio.max())


def hf_module_paths(bridge: Any) -> dict[str, Any]:
    """Dotted paths of the HF submodules that carry each write, from the bridge's adapter."""
    cm = bridge.adapter.component_mapping
    blocks = cm["blocks"]
    attn, mlp = blocks.submodules["attn"], blocks.submodules["mlp"]
    return {
        "embed": cm["embed"].name,
        "pos_embed": cm["pos_embed"].name if "pos_embed" in cm else None,
        "ln_final": cm["ln_final"].name,
        "o": [f"{blocks.name}.{i}.{attn.name}.{attn.submodules['o'].name}" for i in range(bridge.cfg.n_layers)],
        "mlp_out": [f"{blocks.name}.{i}.{mlp.name}.{mlp.submodules['out'].name}" for i in range(bridge.cfg.n_layers)],
        **{part: [f"{blocks.name}.{i}.{blocks.submodules[part].name}" for i in range(bridge.cfg.n_layers)]
           for part in ("ln1_post", "ln2_post") if part in blocks.submodules},
    }


class FastCapture:
    """Records writes from a raw HF causal LM. Build with the raw model and the paths."""

    def __init__(self, hf_model: Any, paths: dict[str, Any], *, n_heads: int, d_head: int,
                 normalization: str, eps: float, post_norm: bool = False):
        self.hf = hf_model.eval()
        self.paths = paths
        self.n_heads, self.d_head = n_heads, d_head
        self.normalization, self.eps = normalization, eps
        self.post_norm = post_norm
        self.center_embed = False
        self.z_shift: Tensor | None = None  # [layer, head, d_head]
        self.errors: dict[str, float] = {}  # the last calibration's worst ratios (see calibrate)
        self._modules = dict(self.hf.named_modules())
        base = getattr(self.hf, "base_model_prefix", "")
        self._body = getattr(self.hf, base, self.hf) if base else self.hf
        self._prefix = f"{base}." if base and self._body is not self.hf else ""

    def _module(self, path: str) -> torch.nn.Module:
        return self._modules[path]

    def capture(self, tokens: Tensor, layers: Sequence[int], *, dtype: torch.dtype, device: torch.device,
                raw: bool = False) -> dict[Any, Tensor]:
        """One forward of the base model (no unembedding); returns the record's tensors.

        With ``raw=True`` nothing is mapped (used by ``calibrate``).
        """
        rec: dict[Any, Tensor] = {}
        b, p = tokens.shape
        H, dh = self.n_heads, self.d_head
        center = self.center_embed and not raw

        def store(t: Tensor) -> Tensor:
            return t.detach().to(device=device, dtype=dtype)

        def out_hook(key: str):
            def hook(mod, args, out):
                t = out - out.mean(-1, keepdim=True) if center else out
                rec[key] = store(t).expand(b, p, -1)  # positions broadcast over the batch: a view
            return hook

        def z_hook(layer: int):
            def hook(mod, args):
                z = args[0].reshape(b, p, H, dh)
                if self.z_shift is not None and not raw:
                    z = z - self.z_shift[layer].to(z.dtype)
                rec[("z", layer)] = store(z)
            return hook

        def act_hook(layer: int):
            def hook(mod, args):
                rec[("mlp", layer)] = store(args[0])
            return hook

        def scale_hook(mod, args):
            x = args[0].float()
            if self.normalization == "LN":
                x = x - x.mean(-1, keepdim=True)
            rec["scale"] = store((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())

        def post_scale_hook(key: tuple[str, int]):
            def hook(mod, args):  # RMSNorm: sqrt(mean(x^2) + eps) in float32, as hook_scale
                rec[key] = store((args[0].float().pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
            return hook

        handles = [self._module(self.paths["embed"]).register_forward_hook(out_hook("embed"))]
        if self.paths["pos_embed"]:
            handles.append(self._module(self.paths["pos_embed"]).register_forward_hook(out_hook("pos")))
        handles.append(self._module(self.paths["ln_final"]).register_forward_pre_hook(scale_hook))
        for ly in layers:
            handles.append(self._module(self.paths["o"][ly]).register_forward_pre_hook(z_hook(ly)))
            handles.append(self._module(self.paths["mlp_out"][ly]).register_forward_pre_hook(act_hook(ly)))
            if self.post_norm:
                for part, kind in (("ln1_post", "attn_scale"), ("ln2_post", "mlp_scale")):
                    mod = self._module(self.paths[part][ly])
                    handles.append(mod.register_forward_pre_hook(post_scale_hook((kind, ly))))
        try:
            with torch.no_grad():
                self._body(input_ids=tokens.to(self._device()), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return rec

    def _device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def calibrate(self, tokens: Tensor, mask: Tensor, processed: dict[Any, Tensor], n_layers: int,
                  rtol: float, shift_reference: Callable[[], tuple[Tensor, dict[Any, Tensor]]] | None = None) -> bool:
        """Learn the raw → processed mapping from one batch recorded both ways.

        ``processed`` holds the bridge's tensors for the same tokens. Returns True when every
        mapped tensor matches it elementwise to ``rtol`` of its row's largest magnitude
        (``row_error``), False otherwise. ``errors`` keeps each quantity's worst ratio (``z`` and
        ``mlp``: the worst layer) and ``rtol``.

        The per-head ``z`` shift (the folded value bias) is a mean of ``raw - processed`` over
        tokens; ``shift_reference`` (called only when a shift is needed) gives fixed tokens
        ``[1, pos]`` and their processed record to take that mean on, so that the shift, and so
        every record, does not depend on which batch happened to be recorded first.
        """
        raw = self.capture(tokens, range(n_layers), dtype=torch.float32, device=processed["embed"].device, raw=True)
        m = mask.to(raw["embed"].device)
        errors: dict[str, float] = {"rtol": rtol}
        self.errors = errors

        def close(key: str, a: Tensor, b: Tensor) -> bool:
            err = row_error(a, b, m)
            errors[key] = max(errors.get(key, 0.0), err) if key in ("z", "mlp", "post_scale") else err  # worst layer
            return err <= rtol

        emb = raw["embed"]
        if close("embed", emb, processed["embed"]):
            self.center_embed = False
        elif close("embed", emb - emb.mean(-1, keepdim=True), processed["embed"]):
            self.center_embed = True
        else:
            return False
        if "pos" in processed:
            pos = raw.get("pos")
            if pos is None:
                return False
            if self.center_embed:
                pos = pos - pos.mean(-1, keepdim=True)
            if not close("pos", pos, processed["pos"]):
                return False
        # no folded value bias (e.g. Llama): the raw z already matches, so record it as it is
        # (no subtraction of a rounding-sized mean per layer, and no copy)
        unshifted = all(row_error(raw[("z", ly)], processed[("z", ly)], m) <= rtol for ly in range(n_layers))
        shifts = None
        if not unshifted and shift_reference is None:
            shifts = self._z_shifts(raw, processed, m, n_layers)
        elif not unshifted:
            ref_tokens, ref_processed = shift_reference()
            ref_raw = self.capture(ref_tokens, range(n_layers), dtype=torch.float32, device=processed["embed"].device,
                                   raw=True)
            shifts = self._z_shifts(ref_raw, ref_processed, torch.ones(ref_tokens.shape, dtype=torch.bool), n_layers)
        ok = True
        for ly in range(n_layers):
            z = raw[("z", ly)] if shifts is None else raw[("z", ly)] - shifts[ly]
            ok &= close("z", z, processed[("z", ly)])
            ok &= close("mlp", raw[("mlp", ly)], processed[("mlp", ly)])
            if self.post_norm:  # the post-norms' scales: not changed by processing
                ok &= close("post_scale", raw[("attn_scale", ly)], processed[("attn_scale", ly)])
                ok &= close("post_scale", raw[("mlp_scale", ly)], processed[("mlp_scale", ly)])
        ok &= close("scale", raw["scale"], processed["scale"])
        if ok:
            self.z_shift = shifts
        return bool(ok)

    @staticmethod
    def _z_shifts(raw: dict[Any, Tensor], processed: dict[Any, Tensor], mask: Tensor, n_layers: int) -> Tensor:
        """Mean of ``raw z - processed z`` over real tokens: ``[layer, head, d_head]``."""
        m = mask.to(raw["embed"].device)
        return torch.stack([(raw[("z", ly)].double() - processed[("z", ly)].double())[m].mean(0).float()
                            for ly in range(n_layers)])
