"""The shared-memory map of a subspace: which components write into it (from recorded
writes) and which read from it (from weights).

Put together, the two tables show which components talk through a subspace and how many
layers apart they sit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_basis, check_bool, check_index, check_int, one_model
from interp.probes.sites import check_model
from interp.probes.subspace import Subspace
from interp.writes import ResidualWrites

WRITER_COLUMNS = [
    "component", "kind", "layer", "head", "neuron", "norm", "share", "fraction", "signed_share", "rank",
]
READER_COLUMNS = ["component", "kind", "matrix", "layer", "head", "norm", "fraction", "baseline", "ratio", "rank"]


def _basis(subspace: Any, d_model: int, what: str) -> Tensor:
    basis = getattr(subspace, "basis", None)
    if not isinstance(basis, Tensor) or basis.dim() != 2:
        raise TypeError(f"subspace must be a Subspace (or have .basis [d_model, k]), got {type(subspace).__name__}")
    if basis.shape[0] != d_model:
        name = getattr(subspace, "name", "subspace")
        raise ValueError(
            f"subspace {name!r} has d_model={basis.shape[0]} but {what} d_model={d_model}; "
            "build the subspace from this model's stream"
        )
    if not torch.isfinite(basis).all():
        raise ValueError("subspace.basis contains NaN or inf; build it from finite directions")
    gram = basis.double().T @ basis.double()
    if basis.shape[1] == 0 or not torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), atol=1e-4):
        # not a Subspace's orthonormal basis: a full-rank one is orthonormalised (same span), a
        # rank-deficient or empty one refused (QR would complete it with arbitrary directions)
        cols = check_basis("subspace.basis", basis, d_model, rows=False).T
        basis = torch.linalg.qr(cols.double())[0].to(basis.dtype if basis.is_floating_point() else torch.float32)
    return basis


class _Acc:
    """Running sums for one component: ||P w||, ||P w||^2, ||w||^2, <P w, P r>."""

    def __init__(self, kind: str, layer: int | None = None, head: int | None = None, neuron: int | None = None):
        self.kind, self.layer, self.head, self.neuron = kind, layer, head, neuron
        self.norm = self.proj_sq = self.total_sq = self.signed = 0.0


def _batch_parts(w: ResidualWrites, B: Tensor, m: Tensor, stop: int, mid: bool = False) -> tuple[list, list]:
    """Each component's write at the kept positions ``m``, projected: ``(label, kind,
    {layer, head}, proj [n, k], ||write||^2 [n])`` for the writes before ``resid_pre[stop]``
    (and block ``stop``'s attention when ``mid``), and per layer ``(layer, acts [n, d_mlp],
    W_out @ B [d_mlp, k], ||W_out[n]||^2 [d_mlp])`` for the neurons."""
    cd, dev = B.dtype, B.device
    n = int(m.sum())
    parts: list = []

    def add(label: str, kind: str, x: Tensor, **pos: int) -> None:
        parts.append((label, kind, pos, x @ B, x.pow(2).sum(-1)))

    add("embed", "embed", w.embed[m].to(cd))
    if w.pos_embed is not None:
        add("pos_embed", "pos_embed", w.pos_embed[m].to(cd))
    neurons = []
    for ly in range(stop + (1 if mid else 0)):
        W_O = w.weights.W_O[ly].to(device=dev, dtype=cd)  # [H, dh, d]
        z = w.write_z(ly)[m].to(device=dev, dtype=cd)  # [n, H, dh], over the post-norm scale
        proj = torch.einsum("nhe,hek->nhk", z, torch.einsum("hed,dk->hek", W_O, B))
        total = torch.einsum("nhe,hef,nhf->nh", z, W_O @ W_O.transpose(1, 2), z)
        parts += [(f"L{ly}H{h}", "head", dict(layer=ly, head=h), proj[:, h], total[:, h]) for h in range(z.shape[1])]
        add(f"L{ly}_attn_bias", "attn_bias", _bias_rows(w, ly, "attn", m, n, dev, cd), layer=ly)
        if ly == stop:  # resid_mid of block ``stop``: its attention has written, its MLP not yet
            break
        acts = w.write_acts(ly)[m].to(device=dev, dtype=cd)  # [n, d_mlp], over the post-norm scale
        W_out = w.weights.W_out[ly].to(device=dev, dtype=cd)
        add(f"L{ly}_mlp", "mlp", acts @ W_out + _bias_rows(w, ly, "mlp", m, n, dev, cd), layer=ly)
        neurons.append((ly, acts, W_out @ B, W_out.pow(2).sum(-1)))
    return parts, neurons


def _bias_rows(w: ResidualWrites, ly: int, block: str, m: Tensor, n: int, dev: Any, cd: Any) -> Tensor:
    """The block's bias write at the kept positions, ``[n, d_model]`` (over the post-norm scale)."""
    b = w.bias_write(ly, block)
    b = b[m] if b.dim() == 3 else b.expand(n, -1)
    return b.to(device=dev, dtype=cd)


def _read_point(subspace: Any, layer: int | None, n_layers: int) -> tuple[int, bool]:
    """``(stop, mid)``: the writes before ``resid_pre[stop]`` count, plus block ``stop``'s
    attention when ``mid`` (a ``resid_mid`` site)."""
    if layer is not None:
        return (n_layers if layer == n_layers else check_index("layer", layer, n_layers, "layer")), False
    site = getattr(subspace, "site", None)
    if site is None:
        name = getattr(subspace, "name", "subspace")
        raise ValueError(
            f"writers needs the point where subspace {name!r} was read, and it has no site; pass layer=L "
            f"(the stream entering block L, e.g. the layer its probe read; layer={n_layers} is the final "
            "stream), or build it with Subspace.from_probe, which keeps the probe's site"
        )
    if not 0 <= site.layer <= n_layers or (site.layer == n_layers and site.where != "resid_pre"):
        raise ValueError(f"subspace site {site.label} is outside a model with {n_layers} layers")
    if site.where == "resid_post":
        return site.layer + 1, False
    return site.layer, site.where == "resid_mid"


def writers(
    subspace: Subspace,
    writes: ResidualWrites | Iterable[ResidualWrites],
    *,
    layer: int | None = None,
    top_neurons: int = 20,
    exclude_first: bool = True,
) -> pd.DataFrame:
    """How much each component writes into ``subspace``.

    Args:
        subspace: a ``Subspace`` (or anything with ``.basis`` ``[d_model, k]``).
        writes: one ``ResidualWrites`` or an iterable of them (e.g. ``model.stream_writes``),
            recorded at every layer; they are reduced batch by batch.
        layer: the read point: only the components that write before the stream entering
            ``layer`` (``resid_pre``; ``n_layers`` is the final stream). Default: the
            subspace's own ``site`` (``Subspace.from_probe`` keeps the probe's, so a
            ``resid_mid`` site counts the block's attention and not its MLP). A subspace
            without a site needs ``layer``: a component that writes after the point where
            the subspace was read cannot be what put the information there. ``r`` below is
            the stream at the read point.
        top_neurons: individual MLP neurons to list (the strongest writers over all layers).
            A neuron's write is ``act * W_out[n]``, so its projection is ``act * (W_out B)[n]``:
            no ``[pos, d_mlp, d_model]`` tensor is built.
        exclude_first: leave out position 0 of every row (BOS / the attention sink).
    Returns:
        One row per component, strongest first:
            component:str (``embed``, ``pos_embed``, ``L0H3``, ``L0_attn_bias``, ``L0_mlp``
            (all neurons plus b_out), ``L0N12``), kind:str, layer/head/neuron:Int64 (<NA>
            where not applicable), norm:float (mean over positions of ``||P w||``, the norm of
            the write projected onto the subspace), share:float (norm over the sum of norms of
            all non-neuron components), fraction:float (``sum ||P w||^2 / sum ||w||^2``: the
            part of the component's write that lands in the subspace; ``k / d_model`` for a
            write with no preference), signed_share:float (``sum <P w, P r> / sum ||P r||^2``
            with ``r`` the stream at ``layer`` (default the final stream): the component's
            signed part of what the subspace holds there; sums to 1 over the non-neuron
            components), rank:int. ``attrs["read_point"]`` names the read point
            (``"L1_resid_pre"``, ``"final stream"``).
    Raises:
        ValueError: a subspace of another ``d_model``, writes missing layers, or no read
            point (``layer=None`` and a subspace without ``site``).
    """
    top_neurons = check_int("top_neurons", top_neurons)
    if top_neurons < 0:
        raise ValueError(f"top_neurons={top_neurons!r} must be an int >= 0")
    check_bool("exclude_first", exclude_first)
    batches = [writes] if isinstance(writes, ResidualWrites) else writes
    if not isinstance(batches, Iterable) or isinstance(batches, (str, bytes)):
        raise TypeError(f"writes must be a ResidualWrites or an iterable of them, got {type(writes).__name__}")
    batches = one_model("writes", batches)
    accs: dict[str, _Acc] = {}
    neuron_accs: dict[int, list[Tensor]] = {}
    count, r_sq, read_at = 0, 0.0, ""
    for w in batches:
        if not isinstance(w, ResidualWrites):
            raise TypeError(f"writes must hold ResidualWrites, got {type(w).__name__}")
        cd, dev = w.compute_dtype, w.embed.device
        B = _basis(subspace, w.embed.shape[-1], "the writes have").to(device=dev, dtype=cd)
        stop, mid = _read_point(subspace, layer, w.n_layers)
        read_at = f"L{stop}_resid_mid" if mid else ("final stream" if stop == w.n_layers else f"L{stop}_resid_pre")
        missing = [ly for ly in range(stop + mid) if ly not in w.z]
        if missing:
            raise ValueError(f"writes lack layers {missing}; record them with run_with_writes(..., layers=None)")
        m = w.mask.to(dev).clone()
        if exclude_first:
            m[:, 0] = False
        n = int(m.sum())
        if n == 0:
            continue
        parts, neurons = _batch_parts(w, B, m, stop, mid)
        parts = [(label, accs.setdefault(label, _Acc(kind, **pos)), proj, tot) for label, kind, pos, proj, tot in parts]
        r = sum(p[2] for p in parts)  # [n, k]: the stream's coordinates at the read point
        r_sq += float(r.pow(2).sum())
        for _, acc, proj, total_sq in parts:
            acc.norm += float(proj.norm(dim=-1).sum())
            acc.proj_sq += float(proj.pow(2).sum())
            acc.total_sq += float(total_sq.sum())
            acc.signed += float((proj * r).sum())
        for ly, acts, WB, wsq in neurons:
            c = WB.norm(dim=-1)  # [d_mlp]
            stats = torch.stack([
                acts.abs().sum(0) * c, acts.pow(2).sum(0) * c.pow(2), acts.pow(2).sum(0) * wsq,
                torch.einsum("tm,mk,tk->m", acts, WB, r),
            ]).double().cpu()
            neuron_accs[ly] = neuron_accs[ly] + stats if ly in neuron_accs else stats
        count += n
    if count == 0:
        raise ValueError("writes hold no positions to measure (all padding or position 0); pass longer inputs")
    rows = []
    for label, a in accs.items():
        rows.append(dict(component=label, kind=a.kind, layer=a.layer, head=a.head, neuron=None,
                         norm=a.norm / count, fraction=a.proj_sq / max(a.total_sq, 1e-300),
                         signed_share=a.signed / max(r_sq, 1e-300)))
    total_norm = sum(r["norm"] for r in rows)
    for r in rows:
        r["share"] = r["norm"] / max(total_norm, 1e-300)
    if top_neurons and neuron_accs:
        layers = sorted(neuron_accs)
        stats = torch.stack([neuron_accs[ly] for ly in layers])  # [L, 4, d_mlp]
        norm = stats[:, 0] / count
        top = norm.flatten().topk(min(top_neurons, norm.numel())).indices
        for i in top.tolist():
            li, nn = divmod(i, norm.shape[1])
            s = stats[li, :, nn]
            rows.append(dict(component=f"L{layers[li]}N{nn}", kind="neuron", layer=layers[li], head=None, neuron=nn,
                             norm=float(s[0]) / count, share=float(s[0]) / count / max(total_norm, 1e-300),
                             fraction=float(s[1] / s[2].clamp_min(1e-300)), signed_share=float(s[3]) / max(r_sq, 1e-300)))
    df = pd.DataFrame(rows).sort_values("norm", ascending=False, kind="stable").reset_index(drop=True)
    for col in ("layer", "head", "neuron"):
        df[col] = df[col].astype("Int64")
    df["rank"] = range(1, len(df) + 1)
    df = df[WRITER_COLUMNS]
    df.attrs["read_point"] = read_at
    return df


def readers(subspace: Subspace, model: Any, *, unembed: bool = True) -> pd.DataFrame:
    """How strongly each head's W_Q, W_K, W_V, each MLP's W_in (and W_gate) and the
    unembedding read from ``subspace``.

    With ``processing="compat"`` (the default) the norms' weights are folded into these
    matrices, so they read the normalised stream directly; under ``"raw"`` the norm's
    per-dimension weight is not included. Under grouped-query attention every query head
    gets the W_K and W_V rows of the key/value head it reads (shared within its group).

    Returns:
        One row per (component, matrix), strongest relative reader first:
            component:str (``L0H3``, ``L0_mlp``, ``unembed``), kind:str (head, mlp, unembed),
            matrix:str (W_Q, W_K, W_V, W_in, W_gate, W_U), layer/head:Int64, norm:float
            (``||basis.T @ W||_F``), fraction:float (``norm^2 / ||W||_F^2``: the share of the
            matrix's reading that comes from the subspace), baseline:float (``k / d_model``:
            the expected fraction for a uniformly random k-dimensional subspace), ratio:float
            (fraction / baseline; above 1 reads the subspace more than chance), rank:int.
    """
    check_model(model)
    check_bool("unembed", unembed)
    d_model = model.cfg.d_model
    B = _basis(subspace, d_model, f"model {model.cfg.name!r} has")
    k = B.shape[1]
    wts = model.weights
    rows = []

    def add(component: str, kind: str, matrix: str, W: Tensor, layer: int | None, head: int | None) -> None:
        W = W.double()
        proj = B.to(W).T @ W
        norm_sq, total_sq = float(proj.pow(2).sum()), float(W.pow(2).sum())
        frac = norm_sq / max(total_sq, 1e-300)
        rows.append(dict(component=component, kind=kind, matrix=matrix, layer=layer, head=head,
                         norm=norm_sq**0.5, fraction=frac, baseline=k / d_model, ratio=frac * d_model / k))

    for ly in range(model.cfg.n_layers):
        for name in ("W_Q", "W_K", "W_V"):
            W = getattr(wts, name)[ly]
            if W.shape[0] != model.cfg.n_heads:  # grouped-query: query head h reads kv head h // group
                W = W.repeat_interleave(model.cfg.n_heads // W.shape[0], dim=0)
            for h in range(W.shape[0]):
                add(f"L{ly}H{h}", "head", name, W[h], ly, h)
        add(f"L{ly}_mlp", "mlp", "W_in", wts.mlp_in(ly), ly, None)
        gate = wts.mlp_gate(ly)
        if gate is not None:
            add(f"L{ly}_mlp", "mlp", "W_gate", gate, ly, None)
    if unembed:
        add("unembed", "unembed", "W_U", wts.W_U, None, None)
    df = pd.DataFrame(rows).sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)
    for col in ("layer", "head"):
        df[col] = df[col].astype("Int64")
    df["rank"] = range(1, len(df) + 1)
    return df[READER_COLUMNS]
