"""Independent truth for post-norm ("sandwich") models, from plain torch hooks on the Hugging
Face module (Gemma 3, OLMo-2): nothing here goes through interp's record or TransformerLens."""

from __future__ import annotations

import torch


def gain(norm: torch.nn.Module) -> torch.Tensor:
    """The norm's elementwise gain: ``1 + w`` for Gemma's RMSNorm, ``w`` for OLMo-2's."""
    w = norm.weight.detach().double()
    return w + 1 if "Gemma" in type(norm).__name__ else w


def eps(norm: torch.nn.Module) -> float:
    return float(getattr(norm, "eps", None) or norm.variance_epsilon)


def hooked_forward(hf, handles: list, **inputs) -> object:
    """``hf(**inputs, use_cache=False)`` under ``no_grad`` with the hooks ``handles`` registered;
    they are removed afterwards, also when the forward raises."""
    try:
        with torch.no_grad():
            return hf(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()


def layers(hf) -> list:
    return list(hf.model.layers)


def head_writes(hf, tokens: torch.Tensor) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per layer, every head's write ``[batch, pos, head, d_model]`` built by hand (the ``o_proj``
    input slice x its columns x the post-norm gain / the frozen scale, in float64), and the
    post-attention norm's own output ``[batch, pos, d_model]`` (the layer's attention write)."""
    cfg = hf.config
    H, dh = cfg.num_attention_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    z_in, o_out, y = {}, {}, {}
    handles = []
    for i, layer in enumerate(layers(hf)):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a, i=i: z_in.__setitem__(i, a[0].detach())))
        handles.append(layer.self_attn.o_proj.register_forward_hook(
            lambda m, a, o, i=i: o_out.__setitem__(i, o.detach())))
        handles.append(layer.post_attention_layernorm.register_forward_hook(
            lambda m, a, o, i=i: y.__setitem__(i, o.detach())))
    hooked_forward(hf, handles, input_ids=tokens)
    writes = {}
    for i, layer in enumerate(layers(hf)):
        norm = layer.post_attention_layernorm
        o = o_out[i].double()
        s = (o.pow(2).mean(-1, keepdim=True) + eps(norm)).sqrt()  # the frozen scale
        z = z_in[i].double().unflatten(-1, (H, dh))  # [b, p, H, dh]
        W = layer.self_attn.o_proj.weight.detach().double().unflatten(1, (H, dh))  # [d_model, H, dh]
        writes[i] = torch.einsum("bphe,mhe->bphm", z, W) * gain(norm) / s[..., None]
    return writes, y


def streams(hf, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The stream entering every decoder layer and entering the final norm: ``n_layers + 1``
    tensors ``[batch, pos, d_model]``."""
    out = []
    handles = [layer.register_forward_pre_hook(
        lambda m, a, kw: out.append((a[0] if a else kw["hidden_states"]).detach()), with_kwargs=True)
        for layer in layers(hf)]
    handles.append(hf.model.norm.register_forward_pre_hook(lambda m, a: out.append(a[0].detach())))
    hooked_forward(hf, handles, input_ids=tokens)
    return out


def patched_head_metric(hf, clean: torch.Tensor, corrupt: torch.Tensor, layer: int, head: int, metric) -> float:
    """The metric on the corrupt run with one head's ``o_proj`` input slice taken from the clean run."""
    cfg = hf.config
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    o_proj = layers(hf)[layer].self_attn.o_proj
    kept = {}
    h = o_proj.register_forward_pre_hook(lambda m, a: kept.__setitem__("z", a[0].detach()))
    try:
        with torch.no_grad():
            hf(input_ids=clean, use_cache=False)
    finally:
        h.remove()

    def patch(m, a):
        x = a[0].clone()
        x[..., head * dh:(head + 1) * dh] = kept["z"][..., head * dh:(head + 1) * dh]
        return (x, *a[1:])

    h = o_proj.register_forward_pre_hook(patch)
    try:
        with torch.no_grad():
            logits = hf(input_ids=corrupt, use_cache=False).logits
    finally:
        h.remove()
    return float(metric(logits.double()))


def in_out_cosines(hf, layer: int) -> torch.Tensor:
    """``cos(g_pre * W_up[n], g_post * W_down[:, n])`` for every neuron of ``layer``: the input
    direction through the pre-MLP norm's gain, the output direction through the post-MLP norm's."""
    blk = layers(hf)[layer]
    pre = getattr(blk, "pre_feedforward_layernorm", None)
    w_in = blk.mlp.up_proj.weight.detach().double()  # [d_mlp, d_model]
    if pre is not None:
        w_in = w_in * gain(pre)
    w_out = blk.mlp.down_proj.weight.detach().double().T * gain(blk.post_feedforward_layernorm)  # [d_mlp, d_model]
    return torch.nn.functional.cosine_similarity(w_in, w_out, dim=-1)
