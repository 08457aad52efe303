"""Forward passes with edits and captures at named sites, on the fast raw Hugging Face model
or through the TransformerLens bridge.

A site is ``(kind, layer)``:

- ``("resid", L)``: the stream entering block ``L`` (``L = n_layers``: entering the final
  norm), ``[batch, pos, d_model]``;
- ``("attn", L)`` / ``("mlp", L)``: the attention / MLP layer's whole write (bias included; after
  the post-norm in post-norm blocks);
- ``("attn_scale", L)`` / ``("mlp_scale", L)``: post-norm blocks only, the scale ``[batch, pos, 1]``
  of the norm on that output; an edit replaces the scale the norm divides by (freezing it);
- ``("z", L)``: head outputs before ``W_O``, ``[batch, pos, head, d_head]``;
- ``("act", L)``: MLP activations (after gating), ``[batch, pos, d_mlp]``.

On the raw model these are the decoder layer's input, the output projections' outputs, and
the output projections' inputs (exactly what ``FastCapture`` records). Raw and processed
(``"compat"``) values differ by constants (the folded value bias in ``z``) and, for
LayerNorm models, by the stream's mean over ``d_model``, which every norm removes; so a
clean value written into a corrupt run gives the same downstream computation in either
convention. ``to_compat`` maps a raw stream into the processed one where a direction is
involved (a subspace patch, a projection).

Logits come back in the model's convention: the compat logits are the raw ones minus
their mean over the vocabulary (the centred unembedding), except for a model whose logits
are soft-capped (``cfg.logit_softcap``, Gemma 2), whose unembedding is not centred; both
backends' logits are the capped ones the model produces.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

Site = tuple[str, int]
Edit = Callable[[Tensor], Tensor]
KINDS = ("resid", "attn", "mlp", "z", "act", "attn_scale", "mlp_scale")


class Runner:
    """Runs ``model`` with edits; picks the raw HF model when the model has one."""

    def __init__(self, model: Any, *, backend: str | None = None):
        self.model = model
        c = model.cfg
        self.n_layers, self.n_heads, self.d_head = c.n_layers, c.n_heads, c.d_head
        fast = getattr(model, "_fast", None)
        self.backend = backend or ("raw" if fast is not None else "bridge")
        if self.backend == "raw" and fast is None:
            raise ValueError("backend='raw' needs a model loaded with its raw Hugging Face weights")
        self.centre = c.processing == "compat" and c.normalization in ("LN", "LNPre") and c.logit_softcap is None
        if self.backend == "raw":
            self.hf = fast.hf
            self._mods = dict(self.hf.named_modules())
            blocks = model.bridge.adapter.component_mapping["blocks"].name
            self._paths = dict(fast.paths, blocks=[f"{blocks}.{i}" for i in range(c.n_layers)])
            params = inspect.signature(self.hf.forward).parameters
            self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None

    # ---- conventions ---------------------------------------------------------------------
    def to_compat(self, x: Tensor) -> Tensor:
        """A raw-backend stream (or difference of streams) in the model's convention."""
        if self.backend == "raw" and self.centre:
            return x - x.mean(-1, keepdim=True)
        return x

    def _logits(self, logits: Tensor) -> Tensor:
        if self.backend == "raw" and self.model.cfg.processing == "compat":
            return logits - logits.mean(-1, keepdim=True)
        return logits

    # ---- running ---------------------------------------------------------------------------
    def run(
        self,
        tokens: Tensor,
        *,
        edits: Mapping[Site, Sequence[Edit]] | None = None,
        capture: Sequence[Site] = (),
        expand: tuple[int, int] | None = None,
        grad: bool = False,
        last_only: bool = False,
    ) -> tuple[Tensor, dict[Site, Tensor]]:
        """One forward; returns ``(logits [rows, pos or 1, d_vocab], captured)``.

        ``edits[site]``: functions applied in order to the site's tensor (they must not
        modify it in place). ``capture``: sites whose value (after edits) is returned.
        ``expand=(layer, k)`` (raw backend): run the layers before ``layer`` once and tile
        the stream ``k`` times at block ``layer`` (row ``j * batch + b`` is prompt ``b``).
        ``grad``: keep the graph (captured tensors are then graph nodes; the embedding
        output is made a leaf so nothing depends on the parameters' ``requires_grad``).
        ``last_only``: logits at the last position only.
        """
        edits = dict(edits or {})
        captured: dict[Site, Tensor] = {}
        for site in list(edits) + list(capture):
            if site[0] not in KINDS:
                raise ValueError(f"unknown site {site!r}")
        ctx = torch.enable_grad() if grad else torch.no_grad()
        lock = getattr(self.model, "_lock", None) or contextlib.nullcontext()
        with lock, ctx:  # the model's lock: no other thread's forward sees these hooks
            if self.backend == "raw":
                logits = self._run_raw(tokens, edits, capture, captured, expand, grad, last_only)
            else:
                if expand is not None:
                    raise ValueError("expand is only available on the raw backend")
                logits = self._run_bridge(tokens, edits, capture, captured, grad)
                if last_only:
                    logits = logits[:, -1:]
        return self._logits(logits), captured

    @staticmethod
    def _apply(site: Site, t: Tensor, edits: Mapping[Site, Sequence[Edit]], capture: Sequence[Site],
               captured: dict[Site, Tensor]) -> Tensor:
        for fn in edits.get(site, ()):
            t = fn(t)
        if site in capture:
            captured[site] = t
        return t

    def _run_raw(self, tokens, edits, capture, captured, expand, grad, last_only) -> Tensor:
        H, dh = self.n_heads, self.d_head
        wanted = set(edits) | set(capture)
        handles = []
        mods, paths = self._mods, self._paths

        def block_hook(layer: int):
            def hook(mod, args, kwargs):
                if args:
                    x, rest = args[0], args[1:]
                else:
                    x, rest = kwargs["hidden_states"], None
                if expand is not None and layer == expand[0]:
                    x = x.repeat(expand[1], *([1] * (x.dim() - 1)))
                x = self._apply(("resid", layer), x, edits, capture, captured)
                if rest is None:
                    return args, dict(kwargs, hidden_states=x)
                return (x, *rest), kwargs
            return hook

        def final_hook(mod, args):
            x = args[0]
            if expand is not None and expand[0] == self.n_layers:
                x = x.repeat(expand[1], *([1] * (x.dim() - 1)))
            return (self._apply(("resid", self.n_layers), x, edits, capture, captured), *args[1:])

        def out_hook(site: Site):
            def hook(mod, args, out):
                return self._apply(site, out, edits, capture, captured)
            return hook

        def z_hook(layer: int):
            def hook(mod, args):
                x = args[0]
                z = self._apply(("z", layer), x.reshape(*x.shape[:-1], H, dh), edits, capture, captured)
                return (z.reshape(x.shape), *args[1:])
            return hook

        def act_hook(layer: int):
            def hook(mod, args):
                return (self._apply(("act", layer), args[0], edits, capture, captured), *args[1:])
            return hook

        post = "ln1_post" in paths
        eps = self.model.cfg.eps

        def scale_hook(site: Site):
            def hook(mod, args, out):  # the norm's scale, as TransformerLens's hook_scale; edits rescale
                s = (args[0].float().pow(2).mean(-1, keepdim=True) + eps).sqrt()
                new = self._apply(site, s, edits, capture, captured)
                return out if new is s else (out.float() * (s / new)).to(out.dtype)
            return hook

        def leaf_hook(mod, args, out):
            return out.detach().requires_grad_(True)

        if grad:
            handles.append(mods[paths["embed"]].register_forward_hook(leaf_hook))
        first_expand = expand is not None
        for ly in range(self.n_layers):
            if ("resid", ly) in wanted or (first_expand and expand[0] == ly):
                handles.append(mods[paths["blocks"][ly]].register_forward_pre_hook(block_hook(ly), with_kwargs=True))
            for block, norm, out in (("attn", "ln1_post", "o"), ("mlp", "ln2_post", "mlp_out")):
                if (f"{block}_scale", ly) in wanted:  # before the output hook: it sees the rescaled write
                    handles.append(mods[paths[norm][ly]].register_forward_hook(scale_hook((f"{block}_scale", ly))))
                if (block, ly) in wanted:
                    mod = mods[paths[norm][ly]] if post else mods[paths[out][ly]]
                    handles.append(mod.register_forward_hook(out_hook((block, ly))))
            if ("z", ly) in wanted:
                handles.append(mods[paths["o"][ly]].register_forward_pre_hook(z_hook(ly)))
            if ("act", ly) in wanted:
                handles.append(mods[paths["mlp_out"][ly]].register_forward_pre_hook(act_hook(ly)))
        if ("resid", self.n_layers) in wanted or (first_expand and expand[0] == self.n_layers):
            handles.append(mods[paths["ln_final"]].register_forward_pre_hook(final_hook))
        kw: dict[str, Any] = {"use_cache": False}
        if last_only and self._keep_arg:
            kw[self._keep_arg] = 1
        try:
            dev = next(self.hf.parameters()).device
            logits = self.hf(input_ids=tokens.to(dev), **kw).logits
        finally:
            for h in handles:
                h.remove()
        return logits[:, -1:] if last_only else logits

    def _bridge_name(self, site: Site) -> str:
        kind, ly = site
        if kind == "resid":
            return f"blocks.{ly}.hook_resid_pre" if ly < self.n_layers else f"blocks.{ly - 1}.hook_resid_post"
        return {"attn": f"blocks.{ly}.hook_attn_out", "mlp": f"blocks.{ly}.hook_mlp_out",
                "z": f"blocks.{ly}.attn.hook_z", "act": f"blocks.{ly}.mlp.hook_post",
                "attn_scale": f"blocks.{ly}.ln1_post.hook_scale", "mlp_scale": f"blocks.{ly}.ln2_post.hook_scale"}[kind]

    def _run_bridge(self, tokens, edits, capture, captured, grad) -> Tensor:
        hooks = []
        for site in dict.fromkeys(list(edits) + list(capture)):
            def hook(t: Tensor, hook: Any, site: Site = site) -> Tensor:
                return self._apply(site, t, edits, capture, captured)
            hooks.append((self._bridge_name(site), hook))
        if grad:
            hooks.insert(0, ("hook_embed", lambda t, hook: t.detach().requires_grad_(True)))
        with self.model.hooks(hooks), warnings.catch_warnings():
            # a frozen post-norm scale is an edit of hook_scale: TransformerLens warns that it then
            # rebuilds the norm's output from the hooked scale, which is the point here
            warnings.filterwarnings("ignore", message=r"A forward hook edited hook_scale")
            return self.model.bridge(tokens.to(self.model.device), return_type="logits")

