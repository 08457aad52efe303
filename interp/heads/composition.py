"""Composition scores (Elhage et al. 2021): how much a later head reads what an earlier
component writes, from the weights alone.

A head ``s`` writes through its OV circuit ``W_OV = W_V @ W_O`` (``[d_model, d_model]``,
TransformerLens's row-vector convention). A later head ``t`` reads the stream three ways:
its queries (``W_QK = W_Q @ W_K^T``), its keys (``W_QK^T``) and its values (``W_OV``). The
score of each is a normalised Frobenius norm, as TransformerLens's ``composition_scores``:

    Q: |W_OV^s W_QK^t| / (|W_OV^s| |W_QK^t|)     K: |W_OV^s W_QK^t^T| / (...)
    V: |W_OV^s W_OV^t| / (...)

computed through the ``d_head`` bottleneck: with ``A_s = W_O^T (W_V^T W_V) W_O`` and
``B_t = X (Y^T Y) X^T`` for the reader's factors ``W = X Y^T``, ``|W_OV^s W^t|^2 = <A_s, B_t>``
and ``|W_OV^s|^2 = tr A_s``, one inner product of two symmetric ``[d_model, d_model]``
matrices per pair. ``baseline``: the mean score of Gaussian factor matrices of the same
shapes (their baseline for random matrices; seeded Monte Carlo), and ``excess = score -
baseline``.

Neurons: neuron ``n``'s output vector ``w = W_out[n]`` composes with a later head as
``|w W^t| / (|w| |W^t|)`` (kinds Q, K, V); a head composes with a later neuron's input
vector ``u = W_in[:, n]`` as ``|W_OV^s u| / (|W_OV^s| |u|)`` (kind ``in``; gated MLPs:
the up projection, not the gate).

Weights: under ``processing="compat"`` the reading weights carry the folded LayerNorm
scale (and LayerNorm's centring) and the writing weights are centred, so the maps are the
ones the stream actually sees, up to each position's scalar norm, which a normalised score
ignores. Under ``"raw"`` the norm's scale (and centring, for LayerNorm) is folded here, so
both processings give the same scores. Grouped-query K/V are expanded to their query heads.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_indices, check_int
from interp._degenerate import undefined_rows
from interp._threads import with_analysis_threads

KINDS = ("Q", "K", "V")
COLUMNS = ["kind", "source", "source_layer", "source_head", "source_neuron", "target", "target_layer", "target_head",
           "target_neuron", "score", "baseline", "excess"]


def _by_kind(df: pd.DataFrame) -> pd.DataFrame:
    """``source_index`` / ``target_index`` as ``*_head`` and ``*_neuron`` (nullable ints): one name
    per thing across frames (docs/reference/frames.md)."""
    for side in ("source", "target"):
        idx = df.pop(f"{side}_index").astype("Int64")
        is_head = df[side].str.contains("H", regex=False)
        df[f"{side}_head"] = idx.where(is_head)
        df[f"{side}_neuron"] = idx.where(~is_head)
    return df[COLUMNS]


def _norm_weight(model: Any, layer: int, name: str) -> Tensor | None:
    ln = getattr(model.bridge.blocks[layer], name, None)
    ln = getattr(ln, "_original_component", ln)
    w = getattr(ln, "weight", None)
    return None if w is None else w.detach()


def effective_weights(model: Any) -> dict[str, Tensor]:
    """Float64 weights as the stream sees them: ``W_Q, W_K, W_V [layer, head, d_model, d_head]``
    (K/V expanded to query heads), ``W_O [layer, head, d_head, d_model]``, ``W_in [layer,
    d_model, d_mlp]``, ``W_out [layer, d_mlp, d_model]``."""
    c, w = model.cfg, model.weights
    group = c.n_heads // c.n_kv_heads
    out = {
        "W_Q": w.W_Q.double(), "W_K": w.W_K.double().repeat_interleave(group, 1),
        "W_V": w.W_V.double().repeat_interleave(group, 1), "W_O": w.W_O.double(),
        "W_in": w.W_in.double(), "W_out": w.W_out.double(),
    }
    if c.processing == "raw":
        d = c.d_model
        P = torch.eye(d, dtype=torch.float64, device=model.device)
        if c.normalization.startswith("LN"):
            P = P - 1.0 / d
        for ly in range(c.n_layers):
            read_attn = _reading(_norm_weight(model, ly, "ln1"), P)
            for name in ("W_Q", "W_K", "W_V"):
                out[name][ly] = torch.einsum("ij,hjr->hir", read_attn, out[name][ly])
            out["W_in"][ly] = _reading(_norm_weight(model, ly, "ln2"), P) @ out["W_in"][ly]
            out["W_O"][ly] = out["W_O"][ly] @ P
            out["W_out"][ly] = out["W_out"][ly] @ P
    return out


def _reading(g: Tensor | None, P: Tensor) -> Tensor:
    """``M`` with ``norm(x) @ W = x_hat @ M @ W``: ``P diag(g)`` (``P`` centres for LayerNorm,
    identity for RMSNorm; ``x_hat`` is the stream over its RMS; the norm's bias is a constant
    that a composition score does not see)."""
    return P if g is None else P * g.double()[None, :]


def _pack(M: Tensor) -> Tensor:
    """Symmetric ``[..., d, d]`` to ``[..., d (d + 1) / 2]`` with ``<pack(A), pack(B)> = <A, B>``."""
    d = M.shape[-1]
    i, j = torch.triu_indices(d, d, device=M.device)
    scale = torch.where(i == j, 1.0, 2.0 ** 0.5).to(M.dtype)
    return M[..., i, j] * scale


def _source_grams(V: Tensor, Wo: Tensor) -> Tensor:
    """``A = Wo^T (V^T V) Wo``: ``[..., d, d]`` for ``V [..., d, r]``, ``Wo [..., r, d]``."""
    return Wo.transpose(-1, -2) @ (V.transpose(-1, -2) @ V) @ Wo


def _reader_grams(kind: str, Q: Tensor, K: Tensor, V: Tensor, Wo: Tensor) -> Tensor:
    """``B = X (Y^T Y) X^T`` of each reading matrix ``W = X Y^T``: ``[..., d, d]``."""
    if kind == "Q":
        X, Y = Q, K
    elif kind == "K":
        X, Y = K, Q
    else:
        X, Y = V, Wo.transpose(-1, -2)
    return X @ (Y.transpose(-1, -2) @ Y) @ X.transpose(-1, -2)


def _check_kinds(kinds: Any, allowed: Sequence[str]) -> list[str]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise ValueError(f"kinds={kinds!r} is not supported; use some of {', '.join(map(repr, allowed))}")
    return list(dict.fromkeys(kinds))


@functools.lru_cache(maxsize=32)
def random_baseline(d_model: int, d_head: int, *, samples: int = 64, seed: int = 0) -> tuple[float, float]:
    """Mean composition score of Gaussian factors ``V, Wo, X, Y`` of the heads' shapes, head to
    head and vector to head (seeded Monte Carlo, cached per shape)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*s: int) -> Tensor:
        return torch.randn(*s, generator=g, dtype=torch.float64)

    V, Wo, X, Y = rnd(samples, d_model, d_head), rnd(samples, d_head, d_model), rnd(samples, d_model, d_head), rnd(
        samples, d_model, d_head)
    A = _source_grams(V, Wo)
    B = X @ (Y.transpose(-1, -2) @ Y) @ X.transpose(-1, -2)
    tr = lambda M: M.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    pair = ((A * B).sum((-1, -2)) / (tr(A) * tr(B))).sqrt()
    w = rnd(samples, d_model)
    vec = (torch.einsum("si,sij,sj->s", w, B, w) / (w.pow(2).sum(-1) * tr(B))).sqrt()
    return float(pair.mean()), float(vec.mean())


@with_analysis_threads
def composition_scores(
    model: Any,
    *,
    kinds: Sequence[str] | str = KINDS,
    layers: Sequence[int] | int | None = None,
) -> pd.DataFrame:
    """Q-, K- and V-composition between every pair of heads in different layers.

    Args:
        model: an ``interp.Model``.
        kinds: some of ``"Q"``, ``"K"``, ``"V"``.
        layers: the layers whose heads take part, as writers and readers (default all).
    Returns:
        One row per (kind, earlier head, later head), largest ``excess`` first: kind:str,
        source:str ("L0H2"), source_layer:int, source_head:Int64, source_neuron:Int64 (<NA>:
        heads only here), target:str, target_layer:int, target_head, target_neuron, score:float
        in [0, 1], baseline:float, excess:float. ``attrs``: processing, baseline, d_model, d_head.
    Examples:
        >>> df = composition_scores(interp.load(), kinds="K")
        >>> df.iloc[0][["source", "target"]].tolist()
        ['L0H3', 'L1H1']
    """
    c = model.cfg
    kinds = _check_kinds(kinds, KINDS)
    layers = sorted(check_indices("layers", layers, c.n_layers, "layer"))
    if len(layers) < 2:
        raise ValueError(f"layers={layers} has one layer; composition needs heads in two different layers")
    dt = torch.float64 if c.d_model <= 256 else torch.float32  # packed grams: [heads, d (d + 1) / 2]
    W = {k: v.to(dt) for k, v in effective_weights(model).items()}
    H = c.n_heads
    src, tgt = layers[:-1], layers[1:]

    def packed(grams: list[Tensor]) -> tuple[Tensor, Tensor]:
        G = torch.cat(grams)  # [n_layers * H, d, d]
        return _pack(G), G.diagonal(dim1=-2, dim2=-1).sum(-1)

    A, trA = packed([_source_grams(W["W_V"][ly], W["W_O"][ly]) for ly in src])
    pair_base = random_baseline(c.d_model, c.d_head)[0]
    s_layer = np.repeat(np.array(src), H)
    t_layer = np.repeat(np.array(tgt), H)
    keep = s_layer[:, None] < t_layer[None, :]
    frames = []
    for kind in kinds:
        B, trB = packed([_reader_grams(kind, W["W_Q"][lt], W["W_K"][lt], W["W_V"][lt], W["W_O"][lt]) for lt in tgt])
        inner = (A @ B.T).clamp_min(0)  # [source heads, target heads]: one GEMM for every pair
        del B
        score = (inner / (trA[:, None] * trB[None, :])).sqrt().double().cpu().numpy()
        si, ti = np.nonzero(keep)
        frames.append(pd.DataFrame(dict(
            kind=kind, source_layer=s_layer[si], source_index=si % H, target_layer=t_layer[ti],
            target_index=ti % H, score=score[si, ti])))
    return _finish(pd.concat(frames, ignore_index=True), "H", "H", pair_base, model)


#: Why a composition score is NaN: its norm ratio is 0/0.
_ZERO = ("a head's (or neuron's) matrices are zero after processing (constant or zero weights, weights that "
         "underflow, or a stream with no room for a direction such as d_model=1 under LayerNorm): the score "
         "divides by their norms")


def _finish(df: pd.DataFrame, src: str, tgt: str, base: float, model: Any) -> pd.DataFrame:
    df.insert(1, "source", "L" + df["source_layer"].astype(str) + src + df["source_index"].astype(str))
    df.insert(4, "target", "L" + df["target_layer"].astype(str) + tgt + df["target_index"].astype(str))
    df["baseline"] = base
    df["excess"] = df["score"] - base
    df = df.astype({"source_layer": np.int64, "source_index": np.int64, "target_layer": np.int64,
                    "target_index": np.int64})
    df = df.sort_values(["excess", "kind", "source_layer", "source_index", "target_layer", "target_index"],
                        ascending=[False, True, True, True, True, True], kind="stable").reset_index(drop=True)
    df = undefined_rows(_by_kind(df), ["score"], "composition_scores", _ZERO)
    df.attrs.update(processing=model.cfg.processing, baseline=base, d_model=model.cfg.d_model,
                    d_head=model.cfg.d_head, model_id=model.model_id)
    return df


def _neuron_selection(model: Any, neurons: Any) -> dict[int, list[int]]:
    """``{layer: [neuron, ...]}`` from None (all), ``[(layer, neuron)]``, labels or a frame."""
    c = model.cfg
    if neurons is None:
        return {ly: list(range(c.d_mlp)) for ly in range(c.n_layers)}
    from interp.memory.evidence import _select

    out: dict[int, list[int]] = {}
    for ly, n in _select("neurons", neurons, "neuron", c.n_layers, c.d_mlp):
        out.setdefault(ly, []).append(n)
    return out


@with_analysis_threads
def neuron_composition(
    model: Any,
    neurons: Any = None,
    *,
    kinds: Sequence[str] | str = ("Q", "K", "V", "in"),
    top_k: int | None = None,
) -> pd.DataFrame:
    """Composition between MLP neurons and heads: a neuron's output read by a later head's
    queries, keys or values (Q, K, V), and a head's output read by a later neuron (``in``).

    Args:
        model: an ``interp.Model``.
        neurons: ``[(layer, neuron)]``, labels (``"L0N12"``) or a frame with ``layer`` and
            ``neuron`` columns (e.g. ``find_deleting_neurons``); default all neurons. The cost
            is about ``n_neurons * n_later_heads * d_model * d_head`` per kind: on a large
            model pass a selection.
        kinds: some of ``"Q"``, ``"K"``, ``"V"``, ``"in"``.
        top_k: keep the ``top_k`` rows per (kind, neuron) by ``excess`` (default all).
    Returns:
        The columns of ``composition_scores``; neurons appear as ``"L0N12"`` (source for Q, K, V;
        target for ``in``). A head in layer ``l`` writes before the MLP of layer ``l`` reads,
        except in parallel-attention models; a neuron of layer ``l`` writes before layer ``l + 1``.
    """
    c = model.cfg
    kinds = _check_kinds(kinds, ("Q", "K", "V", "in"))
    top_k = None if top_k is None else check_int("top_k", top_k, minimum=1)
    sel = _neuron_selection(model, neurons)
    W = effective_weights(model)
    vec_base = random_baseline(c.d_model, c.d_head)[1]
    H = c.n_heads
    frames = []
    for ly, idx in sel.items():
        i = torch.tensor(idx, device=model.device)
        w_out = W["W_out"][ly].index_select(0, i)  # [m, d]
        u_in = W["W_in"][ly].index_select(1, i)  # [d, m]
        for kind in kinds:
            if kind == "in":
                srcs = [s for s in range(c.n_layers) if s < ly or (s == ly and not c.parallel)]
                for ls in srcs:
                    V, Wo = W["W_V"][ls], W["W_O"][ls]
                    GV = V.transpose(-1, -2) @ V  # [H, r, r]
                    Ou = Wo @ u_in  # [H, r, m]
                    quad = (Ou * (GV @ Ou)).sum(1)  # [H, m]
                    trA = (GV * (Wo @ Wo.transpose(-1, -2))).sum((-1, -2))  # [H]
                    score = (quad.clamp_min(0) / (trA[:, None] * u_in.pow(2).sum(0)[None])).sqrt()
                    s_idx, n_idx = np.meshgrid(np.arange(H), np.array(idx), indexing="ij")
                    frames.append(pd.DataFrame(dict(kind="in", source=None, source_layer=ls, source_index=s_idx.ravel(),
                                                    target_layer=ly, target_index=n_idx.ravel(),
                                                    score=score.cpu().numpy().ravel(), _src="H", _tgt="N")))
                continue
            for lt in range(ly + 1, c.n_layers):
                Q, K, V, Wo = W["W_Q"][lt], W["W_K"][lt], W["W_V"][lt], W["W_O"][lt]
                X, Y = {"Q": (Q, K), "K": (K, Q), "V": (V, Wo.transpose(-1, -2))}[kind]
                GY = Y.transpose(-1, -2) @ Y  # [H, r, r]
                wX = torch.einsum("md,hdr->hmr", w_out, X)
                quad = (wX * (wX @ GY)).sum(-1)  # [H, m]
                trB = (GY * (X.transpose(-1, -2) @ X)).sum((-1, -2))
                score = (quad.clamp_min(0) / (trB[:, None] * w_out.pow(2).sum(1)[None])).sqrt()
                t_idx, n_idx = np.meshgrid(np.arange(H), np.array(idx), indexing="ij")
                frames.append(pd.DataFrame(dict(kind=kind, source=None, source_layer=ly, source_index=n_idx.ravel(),
                                                target_layer=lt, target_index=t_idx.ravel(),
                                                score=score.cpu().numpy().ravel(), _src="N", _tgt="H")))
    if not frames:
        raise ValueError("no neuron and head pair composes here (a neuron in the last layer has no later head); "
                         "pass neurons of earlier layers or kinds including 'in'")
    df = pd.concat(frames, ignore_index=True)
    df["source"] = "L" + df["source_layer"].astype(str) + df["_src"] + df["source_index"].astype(str)
    df.insert(4, "target", "L" + df["target_layer"].astype(str) + df["_tgt"] + df["target_index"].astype(str))
    neuron = np.where(df["_src"] == "N", df["source"], df["target"])
    df = df.drop(columns=["_src", "_tgt"])
    df["baseline"] = vec_base
    df["excess"] = df["score"] - vec_base
    df = df.astype({"source_layer": np.int64, "source_index": np.int64, "target_layer": np.int64,
                    "target_index": np.int64})
    if top_k is not None:
        df["_n"] = neuron
        df = df.sort_values("excess", ascending=False, kind="stable").groupby(["kind", "_n"], sort=False).head(top_k)
        df = df.drop(columns="_n")
    df = df.sort_values(["excess", "kind", "source_layer", "source_index", "target_layer", "target_index"],
                        ascending=[False, True, True, True, True, True], kind="stable").reset_index(drop=True)
    df = undefined_rows(_by_kind(df), ["score"], "neuron_composition", _ZERO)
    df.attrs.update(processing=c.processing, baseline=vec_base, d_model=c.d_model, d_head=c.d_head,
                    model_id=model.model_id)
    return df
