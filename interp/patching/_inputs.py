"""What activation and attribution patching share: checking the prompt pair and the answers,
the metric, the list of components to patch, and the result frame."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp._checks import check_choice, check_indices, check_int
from interp.errors import NotSingleTokenError, PromptMismatchError
from interp.tokens import Tokens

BY = ("resid", "attn", "mlp", "layer", "head", "neuron", "subspace")
#: the site each kind of component is patched at
SITE = {"resid": "resid", "attn": "attn", "mlp": "mlp", "head": "z", "neuron": "act", "subspace": "resid"}
COLUMNS = ["component", "kind", "layer", "head", "neuron", "pos", "token", "effect",
           "metric_patched", "metric_clean", "metric_corrupt"]


@dataclass(frozen=True)
class Component:
    """One patch: ``kind`` in ``resid``/``attn``/``mlp``/``head``/``neuron``/``subspace``,
    its layer, head or neuron index (``-1``: none), and position (``None``: all)."""

    kind: str
    layer: int
    index: int = -1
    pos: int | None = None

    @property
    def site(self) -> tuple[str, int]:
        return (SITE[self.kind], self.layer)

    def label(self, sub_name: str = "subspace") -> str:
        if self.kind == "head":
            return f"L{self.layer}H{self.index}"
        if self.kind == "neuron":
            return f"L{self.layer}N{self.index}"
        return f"L{self.layer}_" + {"resid": "resid_pre", "subspace": sub_name}.get(self.kind, self.kind)


@dataclass
class Prepared:
    clean: Tensor  # [batch, pos]
    corrupt: Tensor  # [batch, pos]
    metric: Callable[[Tensor], Tensor] | None  # logits [batch, pos, d_vocab] -> scalar or [batch]; None: pending
    last_only: bool  # the metric reads the last position only (the default metric)
    answers: tuple[list[int], list[int]] | None
    name: str


def _tokens(model: Any, name: str, x: Any) -> Tensor:
    if isinstance(x, Tokens):
        toks = model._check_tokens(x)
    else:
        toks = model.to_tokens(x)
    if not bool(toks.mask.all()):
        lengths = toks.lengths
        raise PromptMismatchError(
            f"{name} holds prompts of different lengths ({sorted(set(lengths))} tokens); patching compares "
            "position by position, so every prompt must have the same number of tokens"
        )
    return toks.tokens


def _answer_ids(model: Any, name: str, value: Any, batch: int) -> list[int]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) not in (1, batch):
        raise ValueError(f"{name} has {len(items)} answers for {batch} prompts; pass one, or one per prompt")
    out = []
    for a in items:
        if isinstance(a, torch.Tensor) and a.numel() == 1:
            a = int(a.item())
        if isinstance(a, (int, np.integer)) and not isinstance(a, bool):
            check_int(name, a)
            if not 0 <= a < model.cfg.d_vocab:
                raise ValueError(f"{name}={a} is not a token id of this model (0..{model.cfg.d_vocab - 1})")
            out.append(int(a))
        elif isinstance(a, str):
            ids = model.to_tokens(a, prepend_bos=False).tokens[0].tolist() if a else []
            if len(ids) != 1:
                pieces = [model.decode_token(i) for i in ids]
                raise NotSingleTokenError(
                    f"{name}={a!r} is {len(ids)} tokens {pieces} for this tokenizer, not one; the logit "
                    "difference needs single-token answers: pass one token (e.g. with its leading space) "
                    "or its id"
                )
            out.append(ids[0])
        else:
            raise TypeError(f"{name}={a!r} must be a str (one token) or an int token id")
    return out * batch if len(out) == 1 else out


def prepare(model: Any, clean: Any, corrupt: Any, metric: Any, answers: Any) -> Prepared:
    """Check the prompt pair and build the metric."""
    from interp.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be an interp.Model, got {type(model).__name__}")
    c, k = _tokens(model, "clean", clean), _tokens(model, "corrupt", corrupt)
    if c.shape != k.shape:
        raise PromptMismatchError(
            f"clean is {c.shape[0]} prompt(s) of {c.shape[1]} tokens but corrupt is {k.shape[0]} of "
            f"{k.shape[1]}; patching needs the same number of prompts and tokens in both (make the corrupt "
            "prompt differ only in the tokens you change, e.g. one name for another of the same length)"
        )
    if metric is not None:
        if not callable(metric):
            raise TypeError(f"metric={metric!r} must be a callable on logits [batch, pos, d_vocab] or None")
        if answers is not None:
            raise ValueError("pass answers= (for the default logit-difference metric) or metric=, not both")
        return Prepared(c, k, metric, False, None, getattr(metric, "__name__", "metric"))
    if answers is None:  # resolved from the clean and corrupt runs' own logits (see ``resolve``)
        return Prepared(c, k, None, True, None, "logit_diff")
    if not (isinstance(answers, (tuple, list)) and len(answers) == 2):
        raise TypeError(f"answers={answers!r} must be a pair (clean_answer, corrupt_answer) of tokens")
    good = _answer_ids(model, "answers[0]", answers[0], c.shape[0])
    bad = _answer_ids(model, "answers[1]", answers[1], c.shape[0])
    return _with_answers(Prepared(c, k, None, True, None, "logit_diff"), good, bad)


def resolve(model: Any, prep: Prepared, logits_clean: Tensor, logits_corrupt: Tensor) -> Prepared:
    """``answers=None``: the clean and corrupt runs' top next tokens (from their logits)."""
    if prep.metric is not None:
        return prep
    good = logits_clean[:, -1].argmax(-1).tolist()
    bad = logits_corrupt[:, -1].detach().argmax(-1).tolist()
    if any(a == b for a, b in zip(good, bad)):
        raise ValueError(
            "answers=None uses the clean and corrupt runs' top next tokens, but they agree "
            f"({model.decode_token(good[0])!r}); pass answers=(clean_answer, corrupt_answer) or a metric"
        )
    return _with_answers(prep, good, bad)


def _with_answers(prep: Prepared, good: list[int], bad: list[int]) -> Prepared:
    g, b = torch.tensor(good), torch.tensor(bad)

    def logit_diff(logits: Tensor) -> Tensor:
        last = logits[:, -1]
        rows = torch.arange(last.shape[0], device=last.device)
        return last[rows, g.to(last.device)] - last[rows, b.to(last.device)]

    return Prepared(prep.clean, prep.corrupt, logit_diff, True, (good, bad), "logit_diff")


def evaluate(metric: Callable[[Tensor], Tensor], logits: Tensor, batch: int) -> Tensor:
    """The metric of each run in ``logits`` ``[runs * batch, pos, d_vocab]`` (runs of ``batch``
    prompts), averaged over prompts: ``[runs]`` float64 (graph kept when logits need grad).

    Raises:
        ValueError: the metric returns a value of the wrong shape, or NaN / inf (no effect can
            be measured from it: a ratio of two such numbers is not a finding).
    """
    out = []
    for i in range(0, logits.shape[0], batch):
        v = metric(logits[i:i + batch])
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v, dtype=torch.float64)
        if v.dim() > 1 or (v.dim() == 1 and v.numel() != batch):
            raise ValueError(
                f"metric returned shape {list(v.shape)} for logits of shape {list(logits[i:i + batch].shape)}; "
                f"it must return a scalar or one value per prompt ([{batch}])"
            )
        if not bool(torch.isfinite(v.detach()).all()):
            where = ("the logits hold NaN or inf too: the model's forward overflows or its weights hold NaN/inf"
                     if not bool(torch.isfinite(logits[i:i + batch].detach()).all()) else
                     "the logits are finite, so the metric itself makes it (e.g. a log of 0, 0/0, or NaN in "
                     "its own constants)")
            raise ValueError(f"metric returned {v.detach().flatten()[:4].tolist()} on logits of shape "
                             f"{list(logits[i:i + batch].shape)}: a metric must give finite numbers; {where}")
        out.append(v.double().mean())
    return torch.stack(out)


def check_by(by: Any) -> list[str]:
    items = [by] if isinstance(by, str) else list(by) if isinstance(by, (list, tuple)) else None
    if not items:
        raise TypeError(f"by={by!r} must be one of {', '.join(BY)} or a list of them")
    out: list[str] = []
    for b in items:
        check_choice("by", b, BY)
        for k in (("attn", "mlp") if b == "layer" else (b,)):
            if k not in out:
                out.append(k)
    return out


def check_positions(positions: Any, n_pos: int) -> list[int] | str | None:
    """``None``, ``"all"``, ``"each"``, an int or a list of ints (normalised)."""
    if positions is None or positions in ("all", "each"):
        return positions
    if isinstance(positions, str):
        raise ValueError(f"positions={positions!r} must be None, 'all', 'each', an int or a list of ints")
    return check_indices("positions", positions, n_pos, "position")


def components(model: Any, kinds: Sequence[str], layers: Any, positions: Any, n_pos: int) -> list[Component]:
    """Every component to patch, in frame order. ``positions=None``: each position for the
    stream (``resid``, ``subspace``), all positions together for the others."""
    c = model.cfg
    lays = check_indices("layers", layers, c.n_layers, "layer")
    pos = check_positions(positions, n_pos)
    out = []
    for kind in kinds:
        p = pos if pos is not None else ("each" if kind in ("resid", "subspace") else "all")
        plist: list[int | None] = [None] if p == "all" else list(range(n_pos)) if p == "each" else list(p)
        size = {"head": c.n_heads, "neuron": c.d_mlp}.get(kind)
        for ly in lays:
            for idx in (range(size) if size else [-1]):
                out += [Component(kind, ly, idx, q) for q in plist]
    return out


def frame(comps: Sequence[Component], patched: np.ndarray, clean: float, corrupt: float,
          str_tokens: list[str], sub_name: str = "subspace") -> pd.DataFrame:
    """The tidy result: one row per component (and position)."""
    denom = clean - corrupt
    if not math.isfinite(denom) or abs(denom) <= 1e-9 * max(1.0, abs(clean), abs(corrupt)):
        warnings.warn(f"the metric is the same on the clean and corrupt runs ({clean:.6g}); effect is NaN: "
                      "choose prompts (or answers) that the model treats differently", stacklevel=3)
        effect = np.full(len(comps), np.nan)
    else:
        effect = (np.asarray(patched, dtype=np.float64) - corrupt) / denom

    def ints(values: list[int | None]) -> pd.Series:
        return pd.Series(pd.array(values, dtype="Int64"))

    df = pd.DataFrame({
        "component": [x.label(sub_name) for x in comps],
        "kind": [x.kind for x in comps],
        "layer": np.array([x.layer for x in comps], dtype=np.int64),
        "head": ints([x.index if x.kind == "head" else None for x in comps]),
        "neuron": ints([x.index if x.kind == "neuron" else None for x in comps]),
        "pos": ints([x.pos for x in comps]),
        "token": pd.array([None if x.pos is None else str_tokens[x.pos] for x in comps], dtype="string"),
        "effect": effect,
        "metric_patched": np.asarray(patched, dtype=np.float64),
        "metric_clean": float(clean),
        "metric_corrupt": float(corrupt),
    }, columns=COLUMNS)
    return df
