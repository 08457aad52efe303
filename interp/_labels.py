"""Component labels, the one grammar every analysis reads: ``L1H2`` (layer 1's head 2),
``L1N5`` (layer 1's neuron 5), ``L1_attn`` / ``L1_mlp`` (a layer's attention or MLP output)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from interp._checks import check_index

LABEL = re.compile(r"^L(-?\d+)(?:([HN])(-?\d+)|_(attn|mlp))$")
EXAMPLES = {"head": "'L1H2' (a head)", "neuron": "'L1N5' (a neuron)", "attn": "'L1_attn' (a layer's attention output)",
            "mlp": "'L1_mlp' (a layer's MLP output)"}


@dataclass(frozen=True)
class Component:
    """``kind`` ("head", "neuron", "attn" or "mlp"), ``layer``, and ``index`` (None for a layer's
    output). Negative numbers in a label count from the end, as in Python."""

    kind: str
    layer: int
    index: int | None

    @property
    def label(self) -> str:
        return label(self.kind, self.layer, self.index)


def label(kind: str, layer: int, index: int | None = None) -> str:
    """The label of a component: ``label("head", 1, 2) == "L1H2"``, ``label("mlp", 3) == "L3_mlp"``."""
    if kind in ("attn", "mlp"):
        return f"L{layer}_{kind}"
    return f"L{layer}{'H' if kind == 'head' else 'N'}{index}"


def split(text: Any) -> tuple[str, int, int | None] | None:
    """``(kind, layer, index)`` as written (not checked against a model), or None when ``text`` is
    not a label."""
    m = LABEL.match(text) if isinstance(text, str) else None
    if m is None:
        return None
    if m.group(4):
        return m.group(4), int(m.group(1)), None
    return ("head" if m.group(2) == "H" else "neuron"), int(m.group(1)), int(m.group(3))


def parse(name: str, text: Any, cfg: Any, kinds: tuple[str, ...] = ("head", "neuron")) -> Component:
    """The component ``text`` names in a model of config ``cfg``, one of ``kinds``.

    Raises:
        ValueError: not a label of one of ``kinds`` (the message names ``name``, the value and
            the forms it takes).
        IndexOutOfRangeError: a layer, head or neuron the model does not have.
    """
    got = split(text)
    if got is None or got[0] not in kinds:
        raise ValueError(f"{name} holds {text!r}; name components as " + ", ".join(EXAMPLES[k] for k in kinds))
    kind, layer, index = got
    layer = check_index(f"{name} {text!r}: layer", layer, cfg.n_layers, "layer")
    if index is None:
        return Component(kind, layer, None)
    size = cfg.n_heads if kind == "head" else cfg.d_mlp
    return Component(kind, layer, check_index(f"{name} {text!r}: {kind}", index, size, kind))
