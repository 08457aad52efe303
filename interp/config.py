"""``Config`` and ``Weights``: a model's numbers and its stacked weights in TransformerLens
shapes, independent of TransformerLens's own config class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Config:
    """The numbers analyses need, independent of TransformerLens's config class."""

    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    normalization: str  # "LN" or "RMS" (TransformerLens's normalization_type)
    positional: str  # "standard", "rotary", ...
    parallel: bool
    gated: bool
    eps: float
    processing: str  # "compat" (folded LN, centred writing weights) or "raw"
    dtype: torch.dtype
    quantization: str | None = None  # the checkpoint's quantization before dequantizing (GGUF), e.g. "Q4_1"
    #: Post-norm ("sandwich") blocks: each attention / MLP output passes an RMSNorm before it is
    #: added (Gemma 2/3, OLMo-2). Their writes are exact with the norm's scale frozen (``interp.writes``).
    post_norm: bool = False
    #: Final-logit soft-cap (Gemma 2): the model's logits are ``cap * tanh(z / cap)`` of the linear
    #: readout ``z`` (``soft_cap``); None when the model has none. Direct logit attribution is
    #: additive in ``z`` only (``interp.readout``); probabilities, losses and entropies use the cap.
    logit_softcap: float | None = None
    #: Attention-score soft-cap (Gemma 2): scores are ``cap * tanh(score / cap)`` before the
    #: softmax. It shapes the patterns; the writes stay additive. None when the model has none.
    attn_softcap: float | None = None

    def forward_bytes(self, batch: int, pos: int, itemsize: int = 4) -> int:
        """Bytes a recorded forward of ``[batch, pos]`` tokens holds at its peak, a lower bound
        for refusing sizes early: the record (embeddings, per layer ``z`` and the MLP
        activations, in ``itemsize``-byte floats), one layer's attention scores and MLP
        pre-activations, and the logits' last position."""
        per_pos = 2 * self.d_model + self.n_layers * (self.n_heads * self.d_head + self.d_mlp) + 1
        record = batch * pos * per_pos * itemsize
        transient = batch * (self.n_heads * pos * pos + 3 * pos * self.d_mlp) * 4 + batch * self.d_vocab * 4
        return record + transient


def soft_cap(z: Tensor, cap: float | None) -> Tensor:
    """The logits a soft-capped model produces from its linear readout ``z`` ``[..., d_vocab]``:
    ``cap * tanh(z / cap)`` (Gemma 2's ``final_logit_softcapping``); ``z`` itself for ``cap=None``.
    The one definition every analysis that reports the model's own logits, probabilities,
    losses or entropies applies. Monotonic, so it changes no ranking of tokens; not additive,
    so contributions to ``z`` (direct logit attribution) do not carry over to the capped logit."""
    return z if cap is None else cap * torch.tanh(z / cap)


def enabled_cap(value: Any) -> float | None:
    """A TransformerLens soft-cap setting as interp records it: a positive float, else None
    (TransformerLens writes -1.0 or 0 for "no cap")."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and v == v and v != float("inf") else None


class Weights:
    """Stacked weights in TransformerLens shapes, built on first use and cached.

    ``W_Q``: ``[layer, head, d_model, d_head]``; ``W_K/W_V``: ``[layer, kv_head, d_model,
    d_head]`` (grouped-query attention keeps its ``n_kv_heads``; query head ``h`` reads kv head
    ``h // (n_heads // n_kv_heads)``), ``W_O``: ``[layer, head, d_head, d_model]``, ``W_in``/``W_gate``:
    ``[layer, d_model, d_mlp]``, ``W_out``: ``[layer, d_mlp, d_model]``, ``W_E``:
    ``[d_vocab, d_model]``, ``W_pos``: ``[n_ctx, d_model]`` or None, ``W_U``:
    ``[d_model, d_vocab]``. Missing biases are zeros. ``mlp_in(l)``/``mlp_out(l)`` give one
    layer as views of the model's own parameters, without copying.

    Post-norm models (``cfg.post_norm``): the writing weights ``W_O``, ``b_O``, ``W_out``,
    ``b_out`` (and ``mlp_out``) include the post-norm's gain ``g`` (``1 + w`` for Gemma, ``w``
    for OLMo-2), ``W_O[l, h] * g_attn[l]``: a head's or neuron's output direction as it reaches
    the stream, up to the positive per-position scale ``1 / s`` (``interp.writes``). So every
    analysis that reads output directions (in/out cosines, composition, OV circuits) sees the
    direction the model writes. ``post_gain(l, block)`` gives ``g`` itself.

    A model whose writes interp cannot decompose exactly (``refusal`` set: an unrecognised block
    structure, or a record that did not sum to the stream) raises ``NonAdditiveModelError`` from
    every writing weight, so every analysis that would use them refuses at this one root.
    """

    #: Writing weights: refused for a model that cannot be decomposed, gain-included for post-norms.
    WRITING = ("W_O", "b_O", "W_out", "b_out")

    def __init__(self, bridge: Any, cfg: Config):
        self._bridge, self._cfg = bridge, cfg
        self.refusal: str | None = None

    def _get(self, name: str, zeros_shape: tuple[int, ...] | None = None) -> Tensor | None:
        try:
            t = getattr(self._bridge, name)
        except AttributeError:
            t = None
        if t is None and zeros_shape is not None:
            t = torch.zeros(zeros_shape, dtype=self._cfg.dtype, device=self._bridge.W_E.device)
        return None if t is None else t.detach()

    def __getattr__(self, name: str) -> Tensor | None:
        if name.startswith("_"):  # copy/pickle probe dunders before __init__ has run
            raise AttributeError(name)
        c = self._cfg
        zeros = {
            "b_Q": (c.n_layers, c.n_heads, c.d_head), "b_K": (c.n_layers, c.n_heads, c.d_head),
            "b_V": (c.n_layers, c.n_heads, c.d_head), "b_O": (c.n_layers, c.d_model),
            "b_in": (c.n_layers, c.d_mlp), "b_out": (c.n_layers, c.d_model), "b_U": (c.d_vocab,),
        }
        known = {"W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out", "W_U"}
        if name not in known and name not in zeros:
            raise AttributeError(name)
        if name in self.WRITING:
            self._check_decomposable()
        t = self._get(name, zeros.get(name))
        if name == "W_pos" and c.positional != "standard":
            t = None
        if name in self.WRITING and c.post_norm:
            block = "attn" if name.endswith("O") else "mlp"
            g = torch.stack([self.post_gain(ly, block) for ly in range(c.n_layers)])  # [layer, d_model]
            t = t * (g[:, None, None, :] if name == "W_O" else g[:, None, :] if name == "W_out" else g)
        self.__dict__[name] = t  # cache
        return t

    def _check_decomposable(self) -> None:
        if self.refusal is not None:
            from interp.errors import NonAdditiveModelError

            raise NonAdditiveModelError(self.refusal)

    def post_gain(self, layer: int, block: str) -> Tensor | None:
        """The gain of the norm on ``block``'s output (``"attn"``: ``ln1_post``, ``"mlp"``:
        ``ln2_post``) in ``layer``, ``[d_model]`` (``1 + w`` where the norm adds one); None for
        pre-norm models."""
        if not self._cfg.post_norm:
            return None
        norm = getattr(self._bridge.blocks[layer], "ln1_post" if block == "attn" else "ln2_post")
        w = getattr(norm, "_original_component", norm).weight.detach()
        return (w.float() + 1.0).to(w.dtype) if getattr(self._bridge.cfg, "rmsnorm_uses_offset", False) else w

    def _block(self, layer: int, path: str) -> Tensor | None:
        obj = self._bridge.blocks[layer]
        for part in path.split("."):
            obj = getattr(obj, part, None)
        return None if obj is None else obj.detach()

    def mlp_in(self, layer: int) -> Tensor:
        """``W_in[layer]``: ``[d_model, d_mlp]``, a view."""
        return self._block(layer, "mlp.W_in")

    def mlp_gate(self, layer: int) -> Tensor | None:
        """``W_gate[layer]``: ``[d_model, d_mlp]`` for gated MLPs, else None."""
        return self._block(layer, "mlp.W_gate") if self._cfg.gated else None

    def mlp_out(self, layer: int) -> Tensor:
        """``W_out[layer]``: ``[d_mlp, d_model]``, a view (gain-included, so a copy, for post-norms)."""
        self._check_decomposable()
        t = self._block(layer, "mlp.W_out")
        return t if not self._cfg.post_norm else t * self.post_gain(layer, "mlp")


#: The parts of a TransformerLens block whose writes interp records: pre-norms, post-norms (both or
#: neither), attention, MLP. A block with any other part (a state-space mixer, a convolution) is refused.
BLOCK_PARTS = frozenset({"ln1", "ln2", "ln1_post", "ln2_post", "attn", "mlp"})


def block_structure(bridge: Any, parallel: bool, name: str) -> tuple[bool, str | None]:
    """``(post_norm, refusal)`` from the bridge's block layout (its adapter's component mapping)."""
    try:
        parts = set(bridge.adapter.component_mapping["blocks"].submodules)
    except (AttributeError, KeyError, TypeError):
        return False, None
    post = parts & {"ln1_post", "ln2_post"}
    unknown = sorted(parts - BLOCK_PARTS)
    if unknown or (post and (len(post) == 1 or parallel)):
        what = f"parts interp does not record ({', '.join(unknown)})" if unknown else (
            f"a post-norm on one sublayer only ({', '.join(sorted(post))})" if len(post) == 1
            else "post-norms on parallel attention and MLP")
        return False, (
            f"model={name!r}: its blocks hold {what}, so its residual stream is not a sum of per-head and "
            "per-neuron writes that interp can record; analyses of writes (decomposition, attribution, "
            "probes' writers, in/out cosines, composition, deletion) would be wrong and are refused. "
            "Attention patterns, head scores and activation patching still work"
        )
    return bool(post), None
