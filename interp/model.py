"""``load()`` and ``Model``: the one place interp talks to TransformerLens.

A ``Model`` wraps a TransformerLens 4 ``TransformerBridge`` in compatibility mode. It
tokenizes, records residual writes (``run_with_writes``, ``stream_writes``), exposes
weights in TransformerLens's stacked shapes, and runs temporary hooks that are always
removed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from interp import identity
from interp._checks import check_bool, check_choice, check_device, check_indices, check_memory, check_stream
from interp.capture import FastCapture, hf_module_paths
from interp.config import Config, Weights, block_structure, enabled_cap
from interp.recording import (
    bridge_record,
    make_writes,
    non_finite_message,
    verify_first_record,
)
from interp.tokens import (
    SPLIT_SPECIAL_TOKENS,
    Tokens,
    check_token_tensor,
    check_tokens,
    decode_token,
    encode_texts,
)
from interp.writes import ResidualWrites, WriteWeights

log = logging.getLogger(__name__)


def _serialized(method: Any) -> Any:
    """Run ``method`` holding the model's lock: a forward with hooks, and the record it fills,
    belong to one call at a time (threads sharing a ``Model`` each get their own record)."""

    @functools.wraps(method)
    def locked(self: Model, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


PROCESSING = ("compat", "raw")
class Model:
    """A transformer language model ready for residual-stream analysis.

    Build one with ``interp.load``. Attributes: ``cfg`` (``Config``), ``weights``
    (``Weights``), ``tokenizer``, ``bridge`` (the TransformerLens bridge, for anything
    interp does not cover), ``model_id`` (a fingerprint that ties writes to this model).
    """

    def __init__(self, bridge: Any, *, processing: str, name: str, raw_hf: Any = None,
                 source: dict[str, Any] | None = None):
        check_choice("processing", processing, PROCESSING)
        #: Where the weights came from (a GGUF file: its path, hash, quantization, package), else {}.
        self.source = dict(source or {})
        self.bridge = bridge.eval()
        self.tokenizer = bridge.tokenizer
        c = bridge.cfg
        gated = bool(getattr(c, "gated_mlp", False))
        d_mlp = c.d_mlp if c.d_mlp else bridge.blocks[0].mlp.W_out.shape[0]
        parallel = bool(getattr(c, "parallel_attn_mlp", False))
        post_norm, refusal = block_structure(bridge, parallel, name)
        self.cfg = Config(
            name=name, n_layers=c.n_layers, n_heads=c.n_heads,
            n_kv_heads=getattr(c, "n_key_value_heads", None) or c.n_heads, d_model=c.d_model,
            d_head=c.d_head, d_mlp=d_mlp, d_vocab=c.d_vocab, n_ctx=c.n_ctx,
            normalization=str(c.normalization_type), positional=str(c.positional_embedding_type),
            parallel=parallel, gated=gated,
            eps=float(getattr(c, "eps", 1e-5)), processing=processing,
            dtype=bridge.W_E.dtype, quantization=self.source.get("quantization"), post_norm=post_norm,
            logit_softcap=enabled_cap(getattr(c, "output_logits_soft_cap", None)),
            attn_softcap=enabled_cap(getattr(c, "attn_scores_soft_cap", None)),
        )
        self.weights = Weights(bridge, self.cfg)
        self.weights.refusal = refusal
        #: Held by every forward with hooks and by ``run_with_writes``: hooks are state on the
        #: shared bridge, so two threads must not interleave them (re-entrant for nested use).
        self._lock = threading.RLock()
        self._model_id: tuple[tuple, str] | None = None
        self._fingerprint: list[tuple[str, Tensor]] | None = None
        self._verified = False
        self._fast: FastCapture | None = None
        self._fast_ready = False
        #: Default of every function taking text: True, ``"<|endoftext|>"`` in a text stays text;
        #: False reads it as the special token (``interp.tokens``).
        self.split_special_tokens = SPLIT_SPECIAL_TOKENS
        #: The fast path's calibration: worst error per quantity in units of its row's largest
        #: value, and the ``rtol`` it had to meet (``interp.capture``); empty until calibrated.
        self.calibration: dict[str, float] = {}
        #: The last verified record's worst error per stage (``"layer.where"``), in units of the
        #: worst-case rounding bound (``interp/reconstruction.py``): at most 1.
        self.reconstruction: dict[str, float] = {}
        #: The checkpoint's own module (no TransformerLens processing), kept even when the fast
        #: record is not calibrated: attention patterns are the same under every processing.
        self._raw_hf = raw_hf
        if raw_hf is not None:
            self._fast = FastCapture(
                raw_hf, hf_module_paths(bridge), n_heads=self.cfg.n_heads, d_head=self.cfg.d_head,
                normalization=self.cfg.normalization, eps=self.cfg.eps, post_norm=post_norm,
            )

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy / pickle: a lock is not state
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    PENDING = "fast (pending first-call verification)"  #: ``capture_path`` until the first verified record

    @property
    def capture_path(self) -> str:
        """The path records take: ``"fast"`` (the checkpoint's own forward, calibrated), ``PENDING``
        (after ``load``: the first ``run_with_writes`` records through the bridge, verifies and
        calibrates the fast path, then uses it), or ``"bridge"`` (``fast=False``, no raw copy, or
        a calibration that disagreed: logged, with ``model.calibration``)."""
        if self._fast_ready:
            return "fast"
        return self.PENDING if self._fast is not None else "bridge"

    # ---- identity ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.bridge.W_E.device

    @property
    def model_id(self) -> str:
        """Fingerprint of the model: 16 hex digits of an XXH3-128 over the config and every
        parameter's and buffer's bytes, recomputed when a tensor is edited in place
        (``interp.identity.model_id``)."""
        return identity.model_id(self)

    @cached_property
    def n_params(self) -> int:
        """Parameters of the checkpoint, each tensor counted once (``interp.identity.n_params``):
        SmolLM2-135M: 134,515,008; the embedded model: 527,872."""
        return identity.n_params(self)

    def refuse(self, reason: str) -> None:
        """Mark the model as one interp cannot decompose: from now on every writing weight, and so
        every analysis of writes, raises ``NonAdditiveModelError(reason)``."""
        self.weights.refusal = reason
        for name in Weights.WRITING:
            self.weights.__dict__.pop(name, None)
        self.__dict__.pop("write_weights", None)

    @cached_property
    def write_weights(self) -> WriteWeights:
        """The weights a record needs; the final norm's own affine under ``"raw"``, and under
        ``"compat"`` only where processing could not fold it into W_U / b_U."""
        w, ln = self.weights, self.bridge.ln_final
        norm = getattr(ln, "_original_component", ln)

        def affine(name: str) -> Tensor | None:
            t = getattr(norm, name, None)
            if t is None:
                return None
            t = t.detach()
            if name == "weight" and getattr(self.bridge.cfg, "rmsnorm_uses_offset", False):
                t = (t.float() + 1.0).to(t.dtype)  # Gemma: the gain is 1 + w
            identity = bool((t == (1 if name == "weight" else 0)).all())
            # compat processing folds the affine into W_U / b_U, leaving the identity; an adapter that
            # cannot fold (TransformerLens's OLMo-2) leaves the weight, which then applies here
            return None if self.cfg.processing == "compat" and identity else t

        return WriteWeights(
            W_O=w.W_O, b_O=w.b_O, W_out=w.W_out, b_out=w.b_out, W_U=w.W_U, b_U=w.b_U,
            ln_final_w=affine("weight"), ln_final_b=affine("bias"),
        )

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Model({c.name!r}, layers={c.n_layers}, heads={c.n_heads}, d_model={c.d_model}, "
            f"d_mlp={c.d_mlp}, vocab={c.d_vocab}, n_ctx={c.n_ctx}, processing={c.processing!r}, "
            f"device={self.device}, dtype={c.dtype}"
            + (f", logit_softcap={c.logit_softcap}" if c.logit_softcap is not None else "") + ")"
        )

    # ---- tokens ------------------------------------------------------------------------
    @property
    def bos_id(self) -> int | None:
        tok = self.tokenizer
        if tok is None:
            return None
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def decode_token(self, token: int) -> str:
        """One token's text (``interp.tokens.decode_token``): a byte that is not valid UTF-8 on
        its own reads ``<0xE2>``, not ``"\\ufffd"``."""
        return decode_token(self.tokenizer, token)

    def to_tokens(self, inputs: Any, *, prepend_bos: bool | None = None, chunk: bool = False,
                  split_special_tokens: bool | None = None) -> Tokens:
        """A right-padded ``Tokens`` batch from a str, list of str, or LongTensor ``[batch, pos]``.

        ``prepend_bos`` defaults to True for strings and False for token tensors (used exactly
        as given), as in TransformerLens. ``chunk=True`` splits long inputs into ``n_ctx`` rows.
        ``split_special_tokens`` (default ``self.split_special_tokens``, True): a special
        token's string in the text, e.g. ``"<|endoftext|>"``, is tokenized as text; False reads
        it as the special token (``interp.tokens``).
        """
        if prepend_bos is not None:
            check_bool("prepend_bos", prepend_bos)
        check_bool("chunk", chunk)
        split = self._split(split_special_tokens)
        if isinstance(inputs, torch.Tensor):
            if prepend_bos and self.bos_id is None:
                raise ValueError("prepend_bos=True but this model's tokenizer has no BOS (or EOS) token; "
                                 "pass prepend_bos=False")
            bos = self.bos_id if prepend_bos else None
            return check_token_tensor(inputs, self.cfg.d_vocab, self.cfg.n_ctx, chunk=chunk, bos=bos)
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)) or not inputs:
            empty = " (empty)" if isinstance(inputs, (list, tuple)) else ""
            raise TypeError(
                f"inputs must be a str, a non-empty list of str or a LongTensor [batch, pos], "
                f"got {type(inputs).__name__}{empty}"
            )
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids as a LongTensor")
        use_bos = True if prepend_bos is None else prepend_bos
        return encode_texts(
            self.tokenizer, inputs, bos_id=self.bos_id if use_bos else None,
            n_ctx=self.cfg.n_ctx, chunk=chunk, pad_id=self.bos_id or 0, d_vocab=self.cfg.d_vocab,
            split_special_tokens=split,
        )

    def _split(self, split_special_tokens: bool | None) -> bool:
        if split_special_tokens is None:
            return check_bool("model.split_special_tokens", getattr(self, "split_special_tokens", SPLIT_SPECIAL_TOKENS))
        return check_bool("split_special_tokens", split_special_tokens)

    def _check_tokens(self, toks: Tokens) -> Tokens:
        return check_tokens(toks, self.cfg.d_vocab, self.cfg.n_ctx)

    def to_str_tokens(self, inputs: Any, *, prepend_bos: bool | None = None, chunk: bool = False,
                      split_special_tokens: bool | None = None) -> list[list[str]]:
        """Token strings ``[batch][pos]`` for ``inputs`` (the options: see ``to_tokens``)."""
        toks = self.to_tokens(inputs, prepend_bos=prepend_bos, chunk=chunk, split_special_tokens=split_special_tokens)
        return [[self.decode_token(int(t)) for t, m in zip(r, mr) if m] for r, mr in zip(toks.tokens, toks.mask)]

    # ---- forward passes ----------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, Any]]) -> Iterator[Model]:
        """Temporarily add TransformerLens forward hooks ``(hook_name, fn(tensor, hook))``;
        they are removed in ``finally``, even when the body raises. The block holds the
        model's lock: another thread's forward on this model waits until it ends (hooks are
        state on the shared model, and would otherwise leak into that thread's results).

        Raises:
            TypeError: an item that is not a ``(name, callable)`` pair.
            KeyError: a hook name the model does not have.
        """
        fwd_hooks = list(fwd_hooks)
        for i, item in enumerate(fwd_hooks):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and callable(item[1])):
                raise TypeError(f"fwd_hooks[{i}]={item!r} must be a (hook_name, fn(tensor, hook)) pair")
        with self._lock, contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.bridge.hooks(fwd_hooks=fwd_hooks))
            except KeyError as e:
                raise KeyError(
                    f"{e.args[0] if e.args else e} Pass TransformerLens hook names such as "
                    "'blocks.0.hook_resid_pre' (all of them: list(model.bridge.hook_dict))"
                ) from None
            yield self

    def active_hooks(self) -> list[str]:
        """Names of the hook points that carry forward hooks right now (e.g. inside ``ablate``)."""
        return [name for name, hp in self.bridge.hook_dict.items() if hp.fwd_hooks]

    def _forward(self, tokens: Tensor, fwd_hooks: Sequence[tuple[str, Any]] = (), return_type: str | None = None) -> Any:
        with torch.no_grad(), self.hooks(fwd_hooks):
            return self.bridge(tokens.to(self.device), return_type=return_type)

    def logits(self, inputs: Any, *, prepend_bos: bool | None = None, chunk: bool = False,
               split_special_tokens: bool | None = None) -> Tensor:
        """Logits ``[batch, pos, d_vocab]`` as the model produces them: soft-capped where the model
        caps them (``cfg.logit_softcap``); centred unembedding under ``"compat"`` except for a
        soft-capped model (the cap is not invariant to a constant shift, ``interp.load``); the
        options: see ``to_tokens``."""
        toks = self.to_tokens(inputs, prepend_bos=prepend_bos, chunk=chunk, split_special_tokens=split_special_tokens)
        return self._forward(toks.tokens, return_type="logits")

    def attention_patterns(self, inputs: Any, *, layers: Sequence[int] | None = None, prepend_bos: bool | None = None,
                           chunk: bool = False, split_special_tokens: bool | None = None) -> dict[int, Tensor]:
        """Attention patterns per layer: ``{layer: Float[batch, head, query, key]}``, masked.

        The same as ``interp.attention_patterns(self, inputs, layers=layers)``: from the
        checkpoint's own eager attention when the model keeps it (grouped-query K/V expanded
        to one pattern per query head), else from TransformerLens's ``hook_pattern``. Rows of
        padding queries are zero; keys after the query are zero (causal).
        ``inputs``: str, list of str, LongTensor ``[batch, pos]`` or ``Tokens``;
        ``prepend_bos`` / ``chunk`` / ``split_special_tokens``: see ``to_tokens``.
        """
        from interp.heads.patterns import attention_patterns

        return attention_patterns(self, inputs, layers=layers, prepend_bos=prepend_bos, chunk=chunk,
                                  split_special_tokens=split_special_tokens)

    def _bridge_patterns(self, tokens: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        """TransformerLens's ``blocks.{l}.attn.hook_pattern`` for ``tokens`` ``[batch, pos]``."""
        out: dict[int, Tensor] = {}

        def keep(layer: int):
            def hook(t: Tensor, hook: Any) -> None:
                out[layer] = t.detach()
            return hook

        self._forward(tokens, [(f"blocks.{ly}.attn.hook_pattern", keep(ly)) for ly in layers])
        return out

    @_serialized
    def run_with_writes(
        self,
        inputs: Any,
        *,
        prepend_bos: bool | None = None,
        chunk: bool = False,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        verify: bool | None = None,
        split_special_tokens: bool | None = None,
        extras: Sequence[str] = (),
    ) -> ResidualWrites:
        """Run the model once and record every residual-stream write.

        Args:
            inputs: a str, a list of str (a right-padded batch), a LongTensor ``[batch, pos]``,
                or a ``Tokens`` batch.
            prepend_bos: default True for strings, False for tensors (as TransformerLens).
            chunk: split inputs longer than ``n_ctx`` into rows instead of raising.
            layers: layers to record (default all; ``resid`` needs all earlier layers).
            dtype / device: storage dtype (fp32, bf16, fp16) and device (default: the model's).
            verify: check the reconstruction invariant against the model's own
                ``hook_resid_*``. Default: on the first call for this model only. Raises
                ``NonAdditiveModelError`` when the writes do not sum to the stream.
            split_special_tokens: see ``to_tokens`` (default True: user text is text).
            extras: intermediates to keep as well, e.g. ``["pattern", "q", "mlp_pre"]`` or any
                TransformerLens hook name (``interp.extras``): one more forward through the
                bridge; read them as ``w.extra("pattern", layer)``.
        Returns:
            ``ResidualWrites`` with ``tokens``/``mask`` ``[batch, pos]``.
        Raises:
            ValueError: hooks are active on the model (inside ``interp.ablate`` or
                ``model.hooks``): an edit to the stream is not a write, so the record would not
                sum to the stream; or the forward pass gives NaN or inf.
        """
        if verify is not None:
            check_bool("verify", verify)
        self.weights._check_decomposable()
        if isinstance(inputs, Tokens):
            toks = self._check_tokens(inputs)
        else:
            toks = self.to_tokens(inputs, prepend_bos=prepend_bos, chunk=chunk,
                                  split_special_tokens=split_special_tokens)
        layers = check_indices("layers", layers, self.cfg.n_layers, "layer")
        if dtype is not None:
            check_choice("dtype", dtype, (torch.float32, torch.float16, torch.bfloat16, torch.float64))
        B, P = toks.tokens.shape
        check_memory(f"recording a batch of {B:,} rows x {P:,} tokens", self.cfg.forward_bytes(B, P),
                     "pass fewer rows at a time (a smaller batch_size, or a shorter list) or shorter rows (n_ctx)")
        store_device = check_device("device", device) or self.device
        from interp.extras import hooks_for, record_extras

        extra_hooks = hooks_for(self, extras, layers)
        active = self.active_hooks()
        if active:
            raise ValueError(
                f"run_with_writes was called with hooks active on the model ({', '.join(active[:3])}"
                f"{', ...' if len(active) > 3 else ''}), e.g. inside interp.ablate(...) or model.hooks(...). "
                "An edit to the stream is not a write, so the record would not sum to the stream; "
                "call run_with_writes outside the `with` block"
            )
        # the first call verifies and calibrates whatever layers it asks for, so that every record,
        # the first included, comes from the one path the model settles on
        verify = (not self._verified) if verify is None else verify
        store_dtype = dtype or self.cfg.dtype
        rec: dict[Any, Tensor] = {}
        if verify or not self._fast_ready:
            rec_layers = range(self.cfg.n_layers) if verify else layers
            rec, ref = self._bridge_record(toks.tokens, rec_layers, verify)
            if verify:
                verify_first_record(self, toks, rec, ref, rec_layers, prepend_bos)
            rec = {k: v.to(device=store_device, dtype=store_dtype) for k, v in rec.items()}
        if self._fast_ready:  # every record of a calibrated model comes from one path: deterministic
            rec = self._fast.capture(toks.tokens, layers, dtype=store_dtype, device=store_device)
        scale = rec["scale"][toks.mask.to(rec["scale"].device)]
        if not torch.isfinite(scale).all():
            raise ValueError(self._non_finite("the final stream"))
        w = self._make_writes(toks, rec, layers, prepend_bos)
        w.extras.update(record_extras(self, toks.tokens, extra_hooks, dtype=store_dtype, device=store_device))
        return w

    def _non_finite(self, where: str) -> str:
        return non_finite_message(self, where)

    def _make_writes(self, toks: Tokens, rec: dict[Any, Tensor], layers: Sequence[int], prepend_bos: Any) -> ResidualWrites:
        return make_writes(self, toks, rec, layers, prepend_bos)

    def _bridge_record(self, tokens: Tensor, layers: Sequence[int], verify: bool) -> tuple[dict, dict]:
        return bridge_record(self, tokens, layers, verify)

    def stream_writes(
        self,
        data: Any = "stdlib:val",
        *,
        batch_size: int = 8,
        n_ctx: int | None = None,
        max_tokens: int | None = None,
        progress: bool = True,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        verify: bool | None = None,
        split_special_tokens: bool | None = None,
    ) -> Iterator[ResidualWrites]:
        """``ResidualWrites`` batch by batch over a corpus (``interp.data.token_batches``), in
        bounded memory. ``data``: a list of strings (each a document, short prompts kept: a batch
        is as wide as its longest row, right-padded, ``mask`` False), a file, a directory, or
        ``"stdlib"``. ``n_ctx``: the widest row (default 256, at most the model's context).
        ``layers`` / ``dtype`` / ``device`` / ``verify``: as ``run_with_writes``;
        ``split_special_tokens``: see ``to_tokens``. ``meta["doc_ids"]``: each row's document."""
        from interp.data import row_length, token_batches

        check_stream(batch_size=batch_size, n_ctx=n_ctx, max_tokens=max_tokens, progress=progress)
        n_ctx = row_length(n_ctx, self.cfg.n_ctx)  # default: interp.data.DEFAULT_ROW_TOKENS, not the context
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer, so stream_writes cannot read texts; pass token ids "
                             "to run_with_writes as a LongTensor [batch, pos]")
        for batch in token_batches(
            self.tokenizer, data, n_ctx=n_ctx, batch_size=batch_size, max_tokens=max_tokens, progress=progress,
            split_special_tokens=self._split(split_special_tokens),
        ):
            w = self.run_with_writes(Tokens(batch.tokens, batch.mask), layers=layers, dtype=dtype, device=device,
                                     verify=verify)
            w.meta["doc_ids"] = list(batch.doc_ids)
            yield w

    def generate(self, prompt: Any, **kw: Any) -> str | list[str]:
        """Generated text, prompt included: a str for a str prompt, a list for a list. Greedy by
        default; ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``stop``, ``seed``,
        ``ablate``, ``patch``: see ``interp.generate_tokens``, which also returns the tokens."""
        from interp.generation import generate

        return generate(self, prompt, **kw)
