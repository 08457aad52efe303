"""ResidualWrites: every write into the residual stream, stored factored.

A head's write is ``z[l][..., h, :] @ W_O[l, h]`` and a neuron's write is
``act[l][..., n] * W_out[l, n]``; both are computed on demand, so a record costs about
``d_head * n_heads + d_mlp`` numbers per layer and position instead of ``d_model`` per
component. Summing the writes before layer ``L`` reproduces the model's ``resid_pre[L]``.

Post-norm ("sandwich") blocks (Gemma 2/3, OLMo-2) pass each attention and MLP output through an
RMSNorm before adding it: ``write = g * out / s`` with ``s = sqrt(mean(out^2) + eps)`` one number
per position. With ``s`` frozen the norm is linear, so every head's, neuron's and bias's share
is exact: ``g * (z_h W_O[h]) / s`` (``W_O``/``W_out``/biases here already carry the gain ``g``,
see ``interp.config.Weights``). The record stores ``s`` per layer and position
(``attn_scale``/``mlp_scale``); ``write_z``/``write_acts`` are the write coefficients ``z / s``,
``acts / s``, which every reader of the record uses in place of ``z``/``acts``.

The record is data; analyses live in their own modules and take it as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interp._checks import check_choice, check_index

Where = Literal["pre", "mid", "post"]
WRITE_WEIGHTS = ("W_O", "b_O", "W_out", "b_out", "W_U", "b_U")


@dataclass(frozen=True)
class WriteWeights:
    """The weights that turn the factored record into writes and logits.

    W_O: ``[layer, head, d_head, d_model]``, b_O: ``[layer, d_model]``,
    W_out: ``[layer, d_mlp, d_model]``, b_out: ``[layer, d_model]``,
    W_U: ``[d_model, d_vocab]``, b_U: ``[d_vocab]``, and the final norm's own affine
    ``ln_final_w``/``ln_final_b`` (``None`` when folded into W_U / b_U).
    """

    W_O: Tensor
    b_O: Tensor
    W_out: Tensor
    b_out: Tensor
    W_U: Tensor
    b_U: Tensor
    ln_final_w: Tensor | None
    ln_final_b: Tensor | None


@dataclass(eq=False)
class ResidualWrites:
    """Every write into the residual stream for one batch of tokens.

    Attributes:
        tokens: ``[batch, pos]`` token ids; mask: ``[batch, pos]`` True on real tokens.
        embed: ``[batch, pos, d_model]`` token-embedding write.
        pos_embed: ``[batch, pos, d_model]`` positional write, or None (rotary models).
        z: layer -> ``[batch, pos, head, d_head]`` attention head outputs before W_O.
        acts: layer -> ``[batch, pos, d_mlp]`` MLP activations (after gating).
        final_scale: ``[batch, pos, 1]`` the final norm's scale in this forward pass.
        weights: the ``WriteWeights`` shared with the model (not copied).
        meta: model id, name, weight processing, config numbers, options used.
        extras: intermediates kept on request (``run_with_writes(extras=...)``, ``interp.extras``):
            ``"{name}.{layer}"`` or a TransformerLens hook name -> tensor ``[batch, ...]``.
    """

    tokens: Tensor
    mask: Tensor
    embed: Tensor
    pos_embed: Tensor | None
    z: dict[int, Tensor]
    acts: dict[int, Tensor]
    final_scale: Tensor | None
    weights: WriteWeights
    meta: dict[str, Any]
    extras: dict[str, Tensor] = field(default_factory=dict, repr=False)
    str_tokens_: list[list[str]] | None = field(default=None, repr=False)
    decode_: Any = field(default=None, repr=False)
    #: Post-norm blocks only: layer -> ``[batch, pos, 1]`` the frozen scale of the norm on the
    #: attention (``attn_scale``) and MLP (``mlp_scale``) output; None for pre-norm models.
    attn_scale: dict[int, Tensor] | None = None
    mlp_scale: dict[int, Tensor] | None = None

    # ---- shape and bookkeeping -------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def layers(self) -> list[int]:
        """The layers recorded, ascending."""
        return sorted(self.z)

    @property
    def shape(self) -> tuple[int, int]:
        """``(batch, pos)``."""
        return tuple(self.tokens.shape)  # type: ignore[return-value]

    @property
    def processing(self) -> str:
        """Weight convention: ``"compat"`` (folded LN, centred writes) or ``"raw"``."""
        return self.meta["processing"]

    @property
    def model_id(self) -> str:
        return self.meta["model_id"]

    @property
    def nbytes(self) -> int:
        """Bytes of memory the record's tensors keep alive (each storage counted once; the
        shared weights are not counted)."""
        ts = [self.tokens, self.mask, self.embed, self.pos_embed, self.final_scale]
        ts += list(self.z.values()) + list(self.acts.values()) + list(self.extras.values())
        ts += list((self.attn_scale or {}).values()) + list((self.mlp_scale or {}).values())
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in ts if t is not None}
        return sum(storages.values())

    @property
    def str_tokens(self) -> list[list[str]]:
        """Per-row token strings, ``[batch][pos]`` (padding included)."""
        if self.str_tokens_ is None:
            if self.decode_ is None:
                raise ValueError("these writes carry no tokenizer; load them with model=...")
            self.str_tokens_ = [[self.decode_(int(t)) for t in row] for row in self.tokens]
        return self.str_tokens_

    @property
    def compute_dtype(self) -> torch.dtype:
        """Accessors compute in at least float32 (float64 when the record is float64)."""
        return torch.promote_types(self.embed.dtype, torch.float32)

    def _w(self, t: Tensor) -> Tensor:
        return t.to(device=self.embed.device, dtype=self.compute_dtype)

    def _layer(self, layer: int, name: str = "layer") -> int:
        layer = check_index(name, layer, self.n_layers, "layer")
        if layer not in self.z:
            raise ValueError(
                f"{name}={layer} was not recorded (recorded: {self.layers}); "
                "run run_with_writes with layers=None to record every layer"
            )
        return layer

    @property
    def logit_softcap(self) -> float | None:
        """The model's final-logit soft-cap (``Config.logit_softcap``): its logits are
        ``cap * tanh(z / cap)`` of the linear readout ``z`` these writes sum to; None: no cap
        (also for records saved before caps were recorded)."""
        return self.meta.get("logit_softcap")

    # ---- post-norm scales -------------------------------------------------------------
    @property
    def post_norm(self) -> bool:
        """True when the blocks' outputs pass a norm before they are added (scales recorded)."""
        return self.attn_scale is not None

    def scale(self, layer: int, block: str) -> Tensor | None:
        """The frozen post-norm scale of ``block`` (``"attn"`` or ``"mlp"``) in ``layer``,
        ``[batch, pos, 1]`` in the compute dtype; None for pre-norm models (scale 1)."""
        layer = self._layer(layer)
        check_choice("block", block, ("attn", "mlp"))
        scales = self.attn_scale if block == "attn" else self.mlp_scale
        if scales is None:
            return None
        return scales[layer].to(device=self.embed.device, dtype=self.compute_dtype)

    def write_z(self, layer: int) -> Float[Tensor, "batch pos head d_head"]:
        """The heads' write coefficients: ``z`` over the frozen post-norm scale (``z`` itself,
        uncopied, for pre-norm models). ``write_z[..., h, :] @ W_O[l, h]`` is head h's write."""
        s = self.scale(layer, "attn")
        layer = self._layer(layer)
        return self.z[layer] if s is None else self.z[layer].to(self.compute_dtype) / s[..., None]

    def write_acts(self, layer: int) -> Float[Tensor, "batch pos d_mlp"]:
        """The neurons' write coefficients: ``acts`` over the frozen post-norm scale (``acts``
        itself, uncopied, for pre-norm models)."""
        s = self.scale(layer, "mlp")
        layer = self._layer(layer)
        return self.acts[layer] if s is None else self.acts[layer].to(self.compute_dtype) / s

    def bias_write(self, layer: int, block: str) -> Tensor:
        """``b_O`` (``block="attn"``) or ``b_out`` (``"mlp"``) as written: ``[d_model]``, or
        ``[batch, pos, d_model]`` over the post-norm scale."""
        s = self.scale(layer, block)
        layer = self._layer(layer)
        b = self._w(self.weights.b_O[layer] if block == "attn" else self.weights.b_out[layer])
        return b if s is None else b / s
    def extra(self, name: str, layer: int | None = None) -> Tensor:
        """An intermediate kept with ``run_with_writes(extras=...)``: ``extra("pattern", 3)``
        (short names, ``interp.extras.EXTRAS``) or ``extra("blocks.3.attn.hook_result")``."""
        key = name if layer is None else f"{name}.{check_index('layer', layer, self.n_layers, 'layer')}"
        if key not in self.extras:
            raise KeyError(f"{key!r} was not kept in this record (kept: {sorted(self.extras) or 'none'}); record "
                           f"it with run_with_writes(..., extras=[{name!r}])")
        return self.extras[key]

    # ---- single writes ---------------------------------------------------------------
    def head_writes(self, layer: int) -> Float[Tensor, "batch pos head d_model"]:
        """Each head's write in ``layer`` (excluding b_O)."""
        layer = self._layer(layer)
        return torch.einsum(
            "bphd,hdm->bphm", self.write_z(layer).to(self.compute_dtype), self._w(self.weights.W_O[layer])
        )

    def head_write(self, layer: int, head: int) -> Float[Tensor, "batch pos d_model"]:
        """One head's write (excluding b_O)."""
        layer = self._layer(layer)
        head = check_index("head", head, self.z[layer].shape[2], "head")
        z = self.z[layer][:, :, head].to(self.compute_dtype)
        s = self.scale(layer, "attn")
        return (z if s is None else z / s) @ self._w(self.weights.W_O[layer, head])

    def attn_write(self, layer: int) -> Float[Tensor, "batch pos d_model"]:
        """The attention layer's whole write: all heads plus b_O."""
        layer = self._layer(layer)
        z = self.z[layer].to(self.compute_dtype).flatten(-2)
        W_O = self._w(self.weights.W_O[layer]).flatten(0, 1)
        out = z @ W_O + self._w(self.weights.b_O[layer])
        s = self.scale(layer, "attn")
        return out if s is None else out / s

    def mlp_write(self, layer: int) -> Float[Tensor, "batch pos d_model"]:
        """The MLP layer's whole write: all neurons plus b_out."""
        layer = self._layer(layer)
        out = self.acts[layer].to(self.compute_dtype) @ self._w(self.weights.W_out[layer]) + self._w(
            self.weights.b_out[layer]
        )
        s = self.scale(layer, "mlp")
        return out if s is None else out / s

    def neuron_write(self, layer: int, neuron: int) -> Float[Tensor, "batch pos d_model"]:
        """One neuron's write ``act * W_out[neuron]``; never builds ``[pos, d_mlp, d_model]``."""
        layer = self._layer(layer)
        neuron = check_index("neuron", neuron, self.acts[layer].shape[-1], "neuron")
        act = self.acts[layer][..., neuron, None].to(self.compute_dtype)
        s = self.scale(layer, "mlp")
        return (act if s is None else act / s) * self._w(self.weights.W_out[layer, neuron])

    # ---- the stream ------------------------------------------------------------------
    def resid(self, layer: int, where: Where = "pre") -> Float[Tensor, "batch pos d_model"]:
        """The residual stream at ``layer`` (``pre``, ``mid`` or ``post``), summed from writes.

        ``layer`` may equal ``n_layers`` with ``where="pre"``: the stream entering the final
        norm. For parallel attention+MLP blocks, ``mid`` is ``pre`` plus the attention write.
        """
        check_choice("where", where, ("pre", "mid", "post"))
        if layer == self.n_layers and where == "pre":
            stop = self.n_layers
        else:
            layer = check_index("layer", layer, self.n_layers, "layer")
            stop = layer
        missing = [ly for ly in range(stop + (where != "pre")) if ly not in self.z]
        if missing:
            raise ValueError(
                f"resid(layer={layer}, where={where!r}) needs layers {missing}, which were not "
                "recorded; run run_with_writes with layers=None"
            )
        x = self.embed.to(self.compute_dtype)
        if self.pos_embed is not None:
            x = x + self.pos_embed.to(self.compute_dtype)
        for ly in range(stop):
            x = x + self.attn_write(ly) + self.mlp_write(ly)
        if where in ("mid", "post") and stop < self.n_layers:
            x = x + self.attn_write(stop)
            if where == "post":
                x = x + self.mlp_write(stop)
        return x

    def accumulated_resid(self) -> Float[Tensor, "layer_plus_1 batch pos d_model"]:
        """``resid_pre`` for every layer plus the final stream, stacked (one pass)."""
        x = self.embed.to(self.compute_dtype)
        if self.pos_embed is not None:
            x = x + self.pos_embed.to(self.compute_dtype)
        out = [x]
        for ly in range(self.n_layers):
            self._layer(ly)
            x = x + self.attn_write(ly) + self.mlp_write(ly)
            out.append(x)
        return torch.stack(out)

    def components(
        self, *, layer: int | None = None, where: Where = "pre", mlp: str = "layer"
    ) -> tuple[list[str], Float[Tensor, "component batch pos d_model"]]:
        """Stack every write that makes up ``resid(layer, where)`` (default: the final stream).

        Labels follow TransformerLens: ``embed``, ``pos_embed``, ``L0H3``, ``L0_attn_bias``,
        ``L0_mlp`` (all neurons plus b_out) or, with ``mlp="neuron"``, ``L0N123`` for every
        neuron plus ``L0_mlp_bias``. The stack sums to ``resid(layer, where)``.
        Per-neuron stacks are ``[n_layers * d_mlp, batch, pos, d_model]``: small models only.
        """
        check_choice("mlp", mlp, ("layer", "neuron"))
        check_choice("where", where, ("pre", "mid", "post"))
        stop = self.n_layers if layer is None else layer
        if layer is not None and not (layer == self.n_layers and where == "pre"):
            stop = check_index("layer", layer, self.n_layers, "layer")
        labels, parts = ["embed"], [self.embed.to(self.compute_dtype)]
        if self.pos_embed is not None:
            labels.append("pos_embed")
            parts.append(self.pos_embed.to(self.compute_dtype).expand_as(parts[0]))
        for ly in range(self.n_layers):
            if ly > stop or (ly == stop and where == "pre"):
                break
            hw = self.head_writes(ly)
            labels += [f"L{ly}H{h}" for h in range(hw.shape[2])] + [f"L{ly}_attn_bias"]
            parts += list(hw.unbind(2))
            parts.append(self.bias_write(ly, "attn").expand_as(parts[0]))
            if ly == stop and where == "mid":
                break
            if mlp == "layer":
                labels.append(f"L{ly}_mlp")
                parts.append(self.mlp_write(ly))
            else:
                acts = self.write_acts(ly).to(self.compute_dtype)
                W_out = self._w(self.weights.W_out[ly])
                labels += [f"L{ly}N{n}" for n in range(acts.shape[-1])] + [f"L{ly}_mlp_bias"]
                parts += list(torch.einsum("bpn,nm->nbpm", acts, W_out).unbind(0))
                parts.append(self.bias_write(ly, "mlp").expand_as(parts[0]))
        return labels, torch.stack(parts)

    # ---- persistence -----------------------------------------------------------------
    def save(self, path: str | Path, *, weights: bool = True) -> Path:
        """Write the record as safetensors plus a JSON sidecar (no pickle).

        ``path`` names the record: ``save("rec.1")`` writes ``rec.1.safetensors`` and
        ``rec.1.json`` (a trailing ``.safetensors`` or ``.json`` is taken as the record's
        suffix, any other dot is part of the name). The directory must exist: a missing one is
        refused rather than created, so that a mistyped path fails instead of writing elsewhere.
        With ``weights=True`` the write-side weights travel too, so ``load(path)`` works without
        the model. Atomic: both files are written beside their targets, fsynced and renamed over
        them; the sidecar's ``record`` field (a save id, hashes of both files) lets ``load``
        refuse a record whose parts come from two saves. Returns the safetensors path.
        Raises:
            FileNotFoundError: the directory does not exist (names it and how to create it).
            ValueError: a tensor holds NaN or inf (nothing is written).
        """
        from interp.writes_io import save_record

        return save_record(self, path, weights=weights)

    @classmethod
    def load(cls, path: str | Path, *, model: Any = None) -> ResidualWrites:
        """Read a record written by ``save``. With ``model``, its weights are used (and
        must be the model the writes came from: same ``model_id``); without, the saved weights
        are. Every tensor's shape and the sidecar's fields are checked here, against the model
        (or the saved weights), so a tampered or truncated record fails at the load.

        Raises:
            FileNotFoundError: no such record, or its sidecar is missing.
            ModelMismatchError: ``model`` is not the model the record was made on.
            ValueError: an unreadable file, a missing field or tensor, a tensor of the wrong shape;
                parts of two saves, a file changed since it was saved, mixed dtypes, NaN or inf,
                token ids outside the vocabulary (``interp.record_integrity``).
        """
        from interp.writes_io import load_record

        return load_record(cls, path, model=model)

    def __repr__(self) -> str:
        b, p = self.shape
        return (
            f"ResidualWrites(model={self.meta['model_name']!r}, batch={b}, pos={p}, "
            f"layers={len(self.z)}/{self.n_layers}, processing={self.processing!r}, "
            f"nbytes={self.nbytes:,})"
        )
