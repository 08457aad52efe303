"""The fast capture path: the residual-write record taken from a plain Hugging Face forward.

TransformerLens's bridge computes attention eagerly and pays per hook; the factored record
does not need that. Folding LayerNorm leaves z and the MLP activations unchanged, centring
changes only W_O/W_out/W_E, and folding value biases shifts z by a constant per head. So
``FastCapture`` runs the checkpoint's own forward (SDPA attention, no unembedding) with
plain torch hooks on the output projections, and maps the raw record into the processed
convention:

- ``embed``/``pos_embed``: centred over ``d_model`` when the processed weights are;
- ``z``: minus a per-head constant ``z_shift`` (the folded value bias);
- MLP activations: as they are; final-norm scale: from the stream entering the final norm.

The mapping is measured, not assumed: ``calibrate`` compares both paths on one batch and
``Model`` falls back to the bridge when they disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)


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
    }


class FastCapture:
    """Records writes from a raw HF causal LM. Build with the raw model and the paths."""

    def __init__(self, hf_model: Any, paths: dict[str, Any], *, n_heads: int, d_head: int,
                 normalization: str, eps: float):
        self.hf = hf_model.eval()
        self.paths = paths
        self.n_heads, self.d_head = n_heads, d_head
        self.normalization, self.eps = normalization, eps
        self.center_embed = False
        self.z_shift: Tensor | None = None  # [layer, head, d_head]
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

        handles = [self._module(self.paths["embed"]).register_forward_hook(out_hook("embed"))]
        if self.paths["pos_embed"]:
            handles.append(self._module(self.paths["pos_embed"]).register_forward_hook(out_hook("pos")))
        handles.append(self._module(self.paths["ln_final"]).register_forward_pre_hook(scale_hook))
        for ly in layers:
            handles.append(self._module(self.paths["o"][ly]).register_forward_pre_hook(z_hook(ly)))
            handles.append(self._module(self.paths["mlp_out"][ly]).register_forward_pre_hook(act_hook(ly)))
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
                  tol: float = 1e-4) -> bool:
        """Learn the raw → processed mapping from one batch recorded both ways.

        ``processed`` holds the bridge's tensors for the same tokens. Returns True when the
        mapped record matches it (to ``tol`` of each tensor's RMS), False otherwise.
        """
        raw = self.capture(tokens, range(n_layers), dtype=torch.float32, device=processed["embed"].device, raw=True)
        m = mask.to(raw["embed"].device)

        def close(a: Tensor, b: Tensor) -> bool:
            rms = b[m].float().pow(2).mean().sqrt().clamp_min(1e-12)
            return bool(((a.float() - b.float())[m].abs().max() / rms) <= tol)

        emb = raw["embed"]
        if close(emb, processed["embed"]):
            self.center_embed = False
        elif close(emb - emb.mean(-1, keepdim=True), processed["embed"]):
            self.center_embed = True
        else:
            return False
        if "pos" in processed:
            pos = raw.get("pos")
            if pos is None:
                return False
            if self.center_embed:
                pos = pos - pos.mean(-1, keepdim=True)
            if not close(pos, processed["pos"]):
                return False
        shifts = []
        for ly in range(n_layers):
            diff = (raw[("z", ly)].float() - processed[("z", ly)].float())[m]  # [n, head, d_head]
            shift = diff.mean(0)
            if not close(raw[("z", ly)] - shift, processed[("z", ly)]):
                return False
            if not close(raw[("mlp", ly)], processed[("mlp", ly)]):
                return False
            shifts.append(shift)
        if not close(raw["scale"], processed["scale"]):
            return False
        self.z_shift = torch.stack(shifts)
        return True
