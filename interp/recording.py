"""Recording through the bridge, and the first record's checks.

``Model.run_with_writes`` records through TransformerLens's hooks until the fast path
(``interp.capture``) is calibrated. The first record is also the verified one: its writes must
sum to the model's own stream (``interp.reconstruction``), and the fast path must match it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interp.capture import calibration_tolerance
from interp.errors import NonAdditiveModelError
from interp.reconstruction import check_reconstruction
from interp.tokens import Tokens
from interp.writes import ResidualWrites

log = logging.getLogger("interp.model")


def non_finite_message(model: Any, where: str) -> str:
    """Why a forward pass gave NaN or inf in ``where``, and what to do."""
    low = model.cfg.dtype in (torch.float16, torch.bfloat16)
    return (
        f"model={model.cfg.name!r}: its own forward pass gives NaN or inf in {where}; "
        + (f"{model.cfg.dtype} overflows or the weights hold NaN/inf: load it with dtype=torch.float32"
           if low else "its weights hold NaN or inf: check the checkpoint (or the weight surgery)")
    )


def make_writes(model: Any, toks: Tokens, rec: dict[Any, Tensor], layers: Sequence[int], prepend_bos: Any) -> ResidualWrites:
    """The ``ResidualWrites`` of one recorded batch (``rec``: the capture's tensors)."""
    return ResidualWrites(
        tokens=toks.tokens, mask=toks.mask, embed=rec["embed"], pos_embed=rec.get("pos"),
        z={ly: rec[("z", ly)] for ly in layers}, acts={ly: rec[("mlp", ly)] for ly in layers},
        final_scale=rec["scale"], weights=model.write_weights,
        attn_scale={ly: rec[("attn_scale", ly)] for ly in layers} if model.cfg.post_norm else None,
        mlp_scale={ly: rec[("mlp_scale", ly)] for ly in layers} if model.cfg.post_norm else None,
        meta=dict(
            model_id=model.model_id, model_name=model.cfg.name, processing=model.cfg.processing,
            quantization=model.cfg.quantization,
            n_layers=model.cfg.n_layers, parallel=model.cfg.parallel, normalization=model.cfg.normalization,
            eps=model.cfg.eps, prepend_bos=prepend_bos, d_model=model.cfg.d_model,
            post_norm=model.cfg.post_norm, logit_softcap=model.cfg.logit_softcap,
            attn_softcap=model.cfg.attn_softcap,
        ),
        decode_=model.decode_token if model.tokenizer is not None else None,
    )


def shift_reference(model: Any) -> tuple[Tensor, dict]:
    """Fixed tokens ``[1, min(n_ctx, 128)]`` (seeded, whatever the caller's RNG) and their
    bridge record: where the fast path measures its ``z`` shift, the same on every load."""
    n = min(model.cfg.n_ctx, 128)
    tokens = torch.randint(model.cfg.d_vocab, (1, n), generator=torch.Generator().manual_seed(0))
    return tokens, bridge_record(model, tokens, range(model.cfg.n_layers), False)[0]


def bridge_record(model: Any, tokens: Tensor, layers: Sequence[int], verify: bool) -> tuple[dict, dict]:
    """Record through TransformerLens hooks (model dtype); with ``verify``, also the
    model's own ``hook_resid_*`` for the reconstruction check."""
    rec: dict[Any, Tensor] = {}
    ref: dict[str, Tensor] = {}

    def keep(store: dict, key: Any):
        def hook(t: Tensor, hook: Any) -> None:
            store[key] = t.detach()
        return hook

    hooks = [("hook_embed", keep(rec, "embed")), ("ln_final.hook_scale", keep(rec, "scale"))]
    if model.cfg.positional == "standard":
        hooks.append(("hook_pos_embed", keep(rec, "pos")))
    for ly in layers:
        hooks += [(f"blocks.{ly}.attn.hook_z", keep(rec, ("z", ly))),
                  (f"blocks.{ly}.mlp.hook_post", keep(rec, ("mlp", ly)))]
        if model.cfg.post_norm:
            hooks += [(f"blocks.{ly}.ln1_post.hook_scale", keep(rec, ("attn_scale", ly))),
                      (f"blocks.{ly}.ln2_post.hook_scale", keep(rec, ("mlp_scale", ly)))]
    if verify:
        wheres = ("pre", "post") if model.cfg.parallel else ("pre", "mid", "post")
        hooks += [(f"blocks.{ly}.hook_resid_{w}", keep(ref, f"{ly}.{w}"))
                  for ly in range(model.cfg.n_layers) for w in wheres]
    model._forward(tokens, hooks)
    return rec, ref


def verify_first_record(model: Any, toks: Tokens, rec: dict[Any, Tensor], ref: dict[str, Tensor],
                        layers: Sequence[int], prepend_bos: Any) -> None:
    """Check a bridge record against the model's own stream (``interp.reconstruction``; a model
    that fails is refused at the root, ``Model.refuse``), then calibrate the fast path on it
    (``interp.capture``), falling back to the bridge with a warning when they disagree."""
    try:
        model.reconstruction = check_reconstruction(
            make_writes(model, toks, rec, layers, prepend_bos), ref, name=model.cfg.name,
            dtype=model.cfg.dtype, non_finite=functools.partial(non_finite_message, model))
    except NonAdditiveModelError as e:  # one root: every later analysis refuses too
        model.refuse(str(e))
        raise
    model._verified = True
    if model._fast is None or model._fast_ready:
        return
    model._fast_ready = model._fast.calibrate(
        toks.tokens, toks.mask, rec, model.cfg.n_layers,
        rtol=calibration_tolerance(model.cfg.dtype, model.cfg.n_layers),
        shift_reference=functools.partial(shift_reference, model),
    )
    model.calibration = dict(model._fast.errors)
    if not model._fast_ready:
        model._fast = None
        level = logging.WARNING if model.cfg.dtype == torch.float32 else logging.INFO
        worst = {k: f"{v:.1e}" for k, v in model.calibration.items()}
        log.log(level, "%s: the plain-forward capture disagrees with TransformerLens "
                "at %s (worst error per quantity, in units of its row's largest value: %s); "
                "recording through the bridge", model.cfg.name, model.cfg.dtype, worst)
