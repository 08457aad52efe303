"""Intermediates a record keeps on request (``run_with_writes(..., extras=[...])``): attention
patterns, q/k/v, MLP pre-activations, norm scales, or any TransformerLens hook, in the same
``ResidualWrites`` and the same save/load.

They are read from one more forward through the TransformerLens bridge (compatibility mode),
so each is exactly TransformerLens's value at that hook. Short names, one tensor per recorded
layer, stored under ``"{name}.{layer}"`` (``w.extra("pattern", 3)``):

=================  ===================================  ==================================
name               TransformerLens hook                 shape
=================  ===================================  ==================================
``pattern``        ``blocks.L.attn.hook_pattern``       ``[batch, head, query, key]``
``attn_scores``    ``blocks.L.attn.hook_attn_scores``   ``[batch, head, query, key]``
``q`` / ``k`` /    ``blocks.L.attn.hook_q`` / ``_k`` /  ``[batch, pos, head, d_head]``
``v``              ``_v``                               (k/v: ``kv_head`` under GQA)
``rot_q/rot_k``    ``blocks.L.attn.hook_rot_q/_k``      as q / k, rotated (rotary models)
``mlp_pre``        ``blocks.L.mlp.hook_pre``            ``[batch, pos, d_mlp]``
``mlp_pre_linear`` ``blocks.L.mlp.hook_pre_linear``     ``[batch, pos, d_mlp]`` (gated MLPs)
``ln1_scale``      ``blocks.L.ln1.hook_scale``          ``[batch, pos, 1]``
``ln2_scale``      ``blocks.L.ln2.hook_scale``          ``[batch, pos, 1]``
=================  ===================================  ==================================

Any other name of ``model.bridge.hook_dict`` (``"ln_final.hook_normalized"``,
``"blocks.3.hook_attn_in"``) is kept under that name. Padding positions hold what the model
computed there (a right-padded row's real positions never see its padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

EXTRAS = {
    "pattern": "attn.hook_pattern", "attn_scores": "attn.hook_attn_scores", "q": "attn.hook_q",
    "k": "attn.hook_k", "v": "attn.hook_v", "rot_q": "attn.hook_rot_q", "rot_k": "attn.hook_rot_k",
    "mlp_pre": "mlp.hook_pre", "mlp_pre_linear": "mlp.hook_pre_linear", "ln1_scale": "ln1.hook_scale",
    "ln2_scale": "ln2.hook_scale",
}


def hooks_for(model: Any, extras: Any, layers: Sequence[int]) -> dict[str, str]:
    """``{record key: TransformerLens hook name}`` for ``extras``; checks every name."""
    if isinstance(extras, str):
        extras = [extras]
    if not isinstance(extras, (list, tuple)) or not all(isinstance(e, str) for e in extras):
        raise TypeError(f"extras={extras!r} must be a list of names such as ['pattern', 'mlp_pre'] (see "
                        "interp.extras.EXTRAS) or TransformerLens hook names")
    known = model.bridge.hook_dict
    out: dict[str, str] = {}
    for name in extras:
        if name in EXTRAS:
            for ly in layers:
                hook = f"blocks.{ly}.{EXTRAS[name]}"
                if hook not in known:
                    raise ValueError(f"extras holds {name!r}, but this model has no {hook} (e.g. mlp_pre_linear "
                                     "needs a gated MLP, rot_q rotary attention)")
                out[f"{name}.{ly}"] = hook
        elif name.endswith("attn.hook_result"):
            raise ValueError(f"extras holds {name!r}: each head's write is already in the record, "
                             "w.head_writes(layer) ([batch, pos, head, d_model], b_O excluded)")
        elif name in known:
            out[name] = name
        else:
            raise ValueError(f"extras holds {name!r}, which is neither a short name ({', '.join(EXTRAS)}) nor a "
                             "TransformerLens hook of this model (list(model.bridge.hook_dict))")
    return out


def record_extras(model: Any, tokens: Tensor, hooks: dict[str, str], *, dtype: torch.dtype,
                  device: torch.device) -> dict[str, Tensor]:
    """One forward through the bridge keeping ``hooks`` (``{key: hook name}``)."""
    if not hooks:
        return {}
    out: dict[str, Tensor] = {}

    def keep(key: str):
        def hook(t: Tensor, hook: Any) -> None:
            out[key] = t.detach().to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        return hook

    model._forward(tokens, [(name, keep(key)) for key, name in hooks.items()])
    return out
