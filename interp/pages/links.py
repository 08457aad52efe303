"""Who a component reads from and writes to, from the weights: Q/K/V composition with heads
(``interp.heads.composition``) and, for neurons, the cosine between one neuron's output vector
and another's input vector. A weights-only screen, not a finding."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from interp.heads.composition import composition_scores, effective_weights, neuron_composition

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


def head_links(model: Any, layer: int, head: int, n: int, comp: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(reads_from, writes_to)`` of a head among the heads (Q/K/V composition)."""
    label = f"L{layer}H{head}"
    parts = []
    if comp is not None:
        parts += [_from_composition(comp[comp["target"] == label], "reads_from", "source"),
                  _from_composition(comp[comp["source"] == label], "writes_to", "target")]
    return _split(parts, n)


def all_head_composition(model: Any) -> pd.DataFrame | None:
    """``composition_scores`` of every head pair, or None for a one-layer model."""
    return composition_scores(model) if model.cfg.n_layers > 1 else None


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
