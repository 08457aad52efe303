"""Who a component reads from and writes to, from the weights: Q/K/V composition with heads
(``interp.heads.composition``) and, for neurons, the cosine between one neuron's output vector
and another's input vector. A weights-only screen, not a finding."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from interp.heads.composition import effective_weights, neuron_composition, random_baseline

COLUMNS = ["direction", "kind", "component", "layer", "head", "neuron", "score", "baseline", "excess", "cosine"]


def _from_composition(df: pd.DataFrame, direction: str, side: str) -> pd.DataFrame:
    """Rows of a composition frame as links to the component on ``side`` ("source"/"target")."""
    return pd.DataFrame(dict(
        direction=direction, kind=df["kind"], component=df[side], layer=df[f"{side}_layer"].astype("int64"),
        head=df[f"{side}_head"], neuron=df[f"{side}_neuron"], score=df["score"], baseline=df["baseline"],
        excess=df["excess"], cosine=float("nan"),
    ))


def _neuron_cosines(model: Any, W: dict, layer: int, neuron: int, n: int) -> list[pd.DataFrame]:
    """The neurons whose input reads this neuron's output most (later layers), and those whose
    output this neuron's input reads most (earlier layers), by |cosine|."""
    c = model.cfg
    base = math.sqrt(2 / (math.pi * c.d_model))  # E|cos| of two random directions in d_model dims
    w_out = W["W_out"][layer, neuron]
    u_in = W["W_in"][layer][:, neuron]
    out = []
    for direction, layers, fn in (
        ("writes_to", [ly for ly in range(c.n_layers) if ly > layer], lambda ly: W["W_in"][ly].T @ w_out
         / (W["W_in"][ly].norm(dim=0) * w_out.norm()).clamp_min(1e-30)),
        ("reads_from", [ly for ly in range(c.n_layers) if ly < layer], lambda ly: W["W_out"][ly] @ u_in
         / (W["W_out"][ly].norm(dim=1) * u_in.norm()).clamp_min(1e-30)),
    ):
        if not layers:
            continue
        cos = torch.stack([fn(ly) for ly in layers])  # [layers, d_mlp]
        k = min(n, cos.numel())
        top = cos.abs().flatten().topk(k).indices
        ly_i, n_i = top // c.d_mlp, top % c.d_mlp
        vals = cos.flatten()[top]
        out.append(pd.DataFrame(dict(
            direction=direction, kind="neuron", component=[f"L{layers[a]}N{b}" for a, b in zip(ly_i.tolist(), n_i.tolist())],
            layer=[layers[a] for a in ly_i.tolist()], head=pd.array([None] * k, dtype="Int64"),
            neuron=pd.array(n_i.tolist(), dtype="Int64"), score=vals.abs().tolist(), baseline=base,
            excess=(vals.abs() - base).tolist(), cosine=vals.tolist())))
    return out


def neuron_links(model: Any, layer: int, neuron: int, n: int, W: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(reads_from, writes_to)`` of a neuron: the ``n`` strongest heads and the ``n`` strongest
    neurons each way, by excess over their null."""
    W = effective_weights(model) if W is None else W
    parts = _neuron_cosines(model, W, layer, neuron, n)
    try:
        comp = neuron_composition(model, [(layer, neuron)])
        parts += [_from_composition(comp[comp["kind"] == "in"], "reads_from", "source"),
                  _from_composition(comp[comp["kind"] != "in"], "writes_to", "target")]
    except ValueError:  # no head before or after it (a one-layer parallel model)
        pass
    return _split(parts, n)


def _scores(V: torch.Tensor, Wo: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Composition ``|W_OV W| / (|W_OV| |W|)`` of writers ``W_OV = V Wo`` (``V [S, d, r]``, ``Wo [S,
    r, d]``) with readers ``W = X Y^T`` (``X, Y [T, d, r]``): ``[S, T]``, through ``r x r`` Gram
    matrices: ``|V Wo X Y^T|^2 = tr(M^T (V^T V) M (Y^T Y))`` with ``M = Wo X`` (the definition of
    ``interp.composition_scores``, for one head against all others without their ``d x d`` grams)."""
    GV, GY = V.transpose(-1, -2) @ V, Y.transpose(-1, -2) @ Y  # [S, r, r], [T, r, r]
    M = torch.einsum("srd,tdq->strq", Wo, X)  # [S, T, r, r]
    num = torch.einsum("strq,srp,stpu,tuq->st", M, GV, M, GY)
    n_ov = torch.einsum("srp,srd,spd->s", GV, Wo, Wo)  # |V Wo|^2 = tr(GV Wo Wo^T)
    n_w = torch.einsum("tuq,tdu,tdq->t", GY, X, X)  # |X Y^T|^2 = tr(GY X^T X)
    return (num.clamp_min(0) / (n_ov[:, None] * n_w[None, :])).sqrt()


def _reader(W: dict, kind: str, layers: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    Q, K, V, Wo = (torch.cat([W[n][ly] for ly in layers]) for n in ("W_Q", "W_K", "W_V", "W_O"))
    return {"Q": (Q, K), "K": (K, Q), "V": (V, Wo.transpose(-1, -2))}[kind]


def head_links(model: Any, layer: int, head: int, n: int, W: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(reads_from, writes_to)`` of a head among the heads: the Q/K/V composition of every earlier
    head into it and of it into every later head (``interp.composition_scores``'s scores, for
    this head's row and column only)."""
    W = effective_weights(model) if W is None else W
    c = model.cfg
    H = c.n_heads
    base = random_baseline(c.d_model, c.d_head)[0]
    parts = []
    for direction, layers in (("reads_from", list(range(layer))), ("writes_to", list(range(layer + 1, c.n_layers)))):
        if not layers:
            continue
        others = [(ly, h) for ly in layers for h in range(H)]
        for kind in ("Q", "K", "V"):
            if direction == "reads_from":
                V = torch.cat([W["W_V"][ly] for ly in layers])
                Wo = torch.cat([W["W_O"][ly] for ly in layers])
                X, Y = _reader(W, kind, [layer])
                score = _scores(V, Wo, X[head:head + 1], Y[head:head + 1])[:, 0]
            else:
                X, Y = _reader(W, kind, layers)
                score = _scores(W["W_V"][layer][head:head + 1], W["W_O"][layer][head:head + 1], X, Y)[0]
            s = score.double().cpu().tolist()
            parts.append(pd.DataFrame(dict(
                direction=direction, kind=kind, component=[f"L{ly}H{h}" for ly, h in others],
                layer=[ly for ly, _ in others], head=pd.array([h for _, h in others], dtype="Int64"),
                neuron=pd.array([None] * len(others), dtype="Int64"), score=s, baseline=base,
                excess=[v - base for v in s], cosine=float("nan"))))
    return _split(parts, n)


def _split(parts: list[pd.DataFrame], n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    parts = [p for p in parts if len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    df = df.astype({"head": "Int64", "neuron": "Int64"})
    out = []
    for d in ("reads_from", "writes_to"):
        sub = df[df["direction"] == d].sort_values(["excess", "component"], ascending=[False, True], kind="stable")
        # the n strongest heads and the n strongest neurons: their scores have different nulls
        sub = pd.concat([sub[sub["head"].notna()].head(n), sub[sub["neuron"].notna()].head(n)])
        sub = sub.sort_values(["excess", "component"], ascending=[False, True], kind="stable")
        out.append(sub.reset_index(drop=True)[COLUMNS])
    return out[0], out[1]
