"""The page objects: named frames with a one-row summary, saved and loaded as one JSON file
(no model needed to read them back)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from interp._checks import check_instance
from interp.records import atomic_path


@dataclass
class Page:
    """A component's page: ``summary`` (one row per fact) and ``frames`` (name -> DataFrame).

    ``to_frame()`` is the summary as one row; each frame is also an attribute
    (``page.top``, ``page.promoted``, ...).
    """

    kind: ClassVar[str] = "component"
    label: str
    summary: dict[str, Any]
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getattr__(self, name: str) -> pd.DataFrame:
        frames = self.__dict__.get("frames", {})
        if name in frames:
            return frames[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (frames: {', '.join(frames)})")

    def to_frame(self) -> pd.DataFrame:
        """The summary as a one-row DataFrame."""
        return pd.DataFrame([self.summary])

    def save(self, path: str | Path) -> Path:
        """Write the page as one JSON file (atomically: a temporary file renamed into place)."""
        check_instance("path", path, (str, Path), "a str or Path naming a .json file")
        path = Path(path).expanduser()
        if not path.parent.is_dir():
            raise FileNotFoundError(f"path={str(path)!r}: the directory {str(path.parent)!r} does not exist; "
                                    "create it first")
        doc = dict(kind=self.kind, label=self.label, summary=self.summary,
                   frames={k: json.loads(v.to_json(orient="split", index=False)) for k, v in self.frames.items()})
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(doc, f)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Page:
        """Read a page written by ``save``."""
        check_instance("path", path, (str, Path), "a str or Path of a file written by page.save()")
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"path={str(path)!r} does not exist; pass a file written by page.save()")
        try:
            doc = json.loads(path.read_text())
            frames = {k: pd.DataFrame(v["data"], columns=v["columns"]) for k, v in doc["frames"].items()}
            kind, label, summary = doc["kind"], doc["label"], doc["summary"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"path={str(path)!r} is not a page written by page.save() ({e}); write it again") from e
        types = {c.kind: c for c in (NeuronPage, HeadPage)}
        if kind not in types:
            raise ValueError(f"path={str(path)!r} holds a page of kind {kind!r}; expected 'neuron' or 'head'")
        return types[kind](label=label, summary=summary, frames=frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r}, frames={list(self.frames)})"


class NeuronPage(Page):
    """A neuron's page. Frames: ``top`` / ``bottom`` (largest and most negative activations,
    one per context line), ``quantiles`` (the activation at each quantile, with an example
    near it), ``histogram`` (left, right, n_positions), ``promoted`` / ``suppressed`` (tokens whose
    logit its write raises / lowers), ``reads_from`` / ``writes_to`` (heads and neurons by
    weight composition)."""

    kind: ClassVar[str] = "neuron"


class HeadPage(Page):
    """A head's page. Frames: ``top`` (where it writes most, with the key it attends to),
    ``quantiles``, ``histogram`` (of its write norm), ``scores`` (its detector scores),
    ``ov`` (what attending to a token writes, read through the unembedding), ``qk`` (the keys a
    query token seeks), ``reads_from`` / ``writes_to`` (heads by Q/K/V composition)."""

    kind: ClassVar[str] = "head"
