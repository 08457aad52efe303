"""Validation helpers for the public boundary: errors name the parameter, value and fix.

Every public function validates its arguments through these, so one family of bad input
(a number given as a string, a NaN where a finite number is needed, a complex tensor as a
direction, a rank-deficient basis, records of two models) fails the same way everywhere:

- ``check_int`` / ``check_float`` / ``check_bool``: numbers and flags. numpy scalars and
  one-element tensors are accepted wherever a Python number is; strings, bools-as-numbers,
  NaN and inf are refused (``TypeError`` for the wrong kind, ``ValueError`` for a bad value).
- ``check_index`` / ``check_indices``: Python-style indices into layers, heads, neurons.
- ``check_direction`` / ``check_basis``: float tensors ``[..., d_model]``; integer tensors are
  converted exactly, complex and bool ones refused; a basis must have full rank.
- ``check_instance`` / ``check_same_model``: the right object, and records of one model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from interp._linalg import svdvals
from interp.errors import IndexOutOfRangeError, ModelMismatchError


def _scalar(value: object) -> object:
    """A one-element tensor or a numpy scalar as the Python number it holds."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value.item()
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        return item()
    return value


def _as_number_hint(name: str, value: str) -> str:
    """``; pass name=8, not '8'`` when the string parses as a number."""
    try:
        num = float(value)
    except ValueError:
        return f"; pass a number (unquoted), e.g. {name}=1"
    shown = int(num) if num.is_integer() and "." not in value and "e" not in value.lower() else num
    return f"; pass the number itself, {name}={shown!r}, not the string {value!r}"


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable or uncomparable values are not choices
        ok = False
    if not ok or isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not supported; use one of {opts}")


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """An int (numpy ints and one-element integer tensors too, never bool or str), within
    ``[minimum, maximum]`` when given; ``None`` passes through when ``allow_none``."""
    if value is None and allow_none:
        return None
    value = _scalar(value)
    if isinstance(value, str):
        raise TypeError(f"{name}={value!r} must be an int, not a string{_as_number_hint(name, value)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ""
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            hint = f"; pass {name}={int(value)}"
        none = " or None" if allow_none else ""
        raise TypeError(f"{name}={value!r} must be an int{none}{hint}")
    value = int(value)
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        if maximum is None:
            want = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        elif minimum is None:
            want = f"an int <= {maximum}"
        else:
            want = f"an int in {minimum}..{maximum}"
        raise ValueError(f"{name}={value!r} must be {want}" + ("" if not allow_none else " (or None)"))
    return value


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    """``check_int`` with ``minimum=1``: batch sizes, token budgets, counts."""
    return check_int(name, value, minimum=1, allow_none=allow_none)


def check_float(name: str, value: object, *, minimum: float | None = None, maximum: float | None = None,
                min_open: bool = False, max_open: bool = False, allow_none: bool = False) -> float | None:
    """A finite real number (ints, numpy numbers and one-element tensors too, never bool or
    str), within the bounds when given (``min_open``/``max_open``: the bound itself excluded)."""
    if value is None and allow_none:
        return None
    value = _scalar(value)
    if isinstance(value, str):
        raise TypeError(f"{name}={value!r} must be a number, not a string{_as_number_hint(name, value)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        none = " or None" if allow_none else ""
        raise TypeError(f"{name}={value!r} must be a real number{none}, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number; pass a finite number "
                         f"{_range(minimum, maximum, min_open, max_open)}".rstrip())
    low = minimum is not None and (value <= minimum if min_open else value < minimum)
    high = maximum is not None and (value >= maximum if max_open else value > maximum)
    if low or high:
        raise ValueError(f"{name}={value!r} is out of range; pass a number {_range(minimum, maximum, min_open, max_open)}")
    return value


def _range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_bool(name: str, value: object) -> bool:
    """A bool (numpy bools too); ``0``/``1``/strings are refused, so ``progress="no"`` fails."""
    value = _scalar(value)
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False")
    return value


def check_instance(name: str, value: object, types: type | tuple[type, ...], what: str) -> None:
    """TypeError unless ``value`` is one of ``types``; ``what`` says what to pass, e.g.
    "a plotly.graph_objects.Figure"."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}" + (
            "" if value is not None else f"; pass {what}"))


def check_index(name: str, value: object, size: int, what: str) -> int:
    """Normalise a Python-style index into ``range(size)``; negative counts from the end.

    ``what`` names the axis for the message, e.g. "layer" or "head".
    """
    value = _scalar(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy ints, e.g. read from a DataFrame column
    if isinstance(value, bool) or not isinstance(value, int):
        hint = _as_number_hint(name, value) if isinstance(value, str) else ""
        raise TypeError(f"{name}={value!r} must be an int {what} index{hint}")
    if not -size <= value < size:
        raise IndexOutOfRangeError(
            f"{name}={value} out of range for a model with {size} {what}s "
            f"(use 0..{size - 1} or -{size}..-1)"
        )
    return value % size


def check_indices(name: str, values: Iterable[int] | int | None, size: int, what: str) -> list[int]:
    """Normalise ``None`` (all), an int or a sequence of ints; keeps order, drops repeats."""
    if values is None:
        return list(range(size))
    values = _scalar(values)
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, torch.Tensor):
        values = values.tolist() if not values.is_floating_point() else values.flatten().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name}={values!r} must be an int, a sequence of ints, or None")
    values = list(values)
    out: list[int] = []
    for v in values:
        try:
            i = check_index(name, v, size, what)
        except IndexOutOfRangeError as e:
            raise IndexOutOfRangeError(
                f"{name}={values} out of range for a model with {size} {what}s "
                f"(use 0..{size - 1} or -{size}..-1)"
            ) from e
        if i not in out:
            out.append(i)
    if not out:
        raise ValueError(f"{name}=[] selects nothing; pass None for all {what}s")
    return out


def _float_tensor(name: str, d: object, shape_hint: str) -> torch.Tensor:
    """A real float tensor from a tensor or numpy array; integer ids convert exactly."""
    if type(d).__module__ == "numpy" and hasattr(d, "dtype"):
        d = torch.as_tensor(d)
    if not isinstance(d, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_hint}, got {type(d).__name__}")
    if d.is_complex() or d.dtype == torch.bool:
        raise TypeError(
            f"{name} is a {d.dtype} tensor; directions live in the real residual stream: pass a real float "
            f"tensor of shape {shape_hint} (e.g. {name}.real.float())"
        )
    return d if d.is_floating_point() else d.to(torch.get_default_dtype())


def check_direction(name: str, d: object, d_model: int) -> torch.Tensor:
    """Check a direction tensor ``[..., d_model]`` is real, finite and non-zero; returns it as
    a float tensor (integer tensors convert exactly; complex and bool are refused)."""
    d = _float_tensor(name, d, "[d_model] or [k, d_model]")
    if d.dim() == 0 or d.shape[-1] != d_model:
        raise ValueError(
            f"{name} has shape {tuple(d.shape)} but the model's d_model is {d_model}; "
            f"pass vectors of length {d_model}"
        )
    if d.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(d.shape)}: no directions; pass at least one vector")
    if not torch.isfinite(d).all():
        raise ValueError(f"{name} contains NaN or inf; pass finite vectors")
    if (d.reshape(-1, d_model).norm(dim=-1) == 0).any():
        raise ValueError(f"{name} contains a zero-norm vector, which has no direction; drop it")
    return d


#: Directions whose singular value is below this fraction of the largest are dependent.
RANK_RTOL = 1e-6


def check_basis(name: str, directions: object, d_model: int | None = None, *, rows: bool = True) -> torch.Tensor:
    """Directions that span a subspace: ``[k, d_model]`` rows (``rows=False``: ``[d_model, k]``
    columns), real, finite, non-zero and linearly independent (full rank ``k``). A
    rank-deficient set is refused rather than silently reduced or completed by an arbitrary
    direction. Returns the rows ``[k, d_model]`` as a float tensor."""
    shape = "[k, d_model]" if rows else "[d_model, k]"
    d = _float_tensor(name, directions, shape)
    if d.dim() == 1 and rows:
        d = d[None]
    if d.dim() != 2:
        raise ValueError(f"{name} has shape {list(d.shape)}; pass {shape}" + ("" if not rows else " or [d_model]"))
    d = d if rows else d.T
    if d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"{name} has shape {list(d.shape if rows else d.T.shape)}: a zero-width subspace; "
                         "pass at least one direction")
    d = check_direction(name, d, d_model if d_model is not None else d.shape[-1])
    s = svdvals(d.double())
    rank = int((s > s[0] * RANK_RTOL).sum())
    if rank < d.shape[0]:
        raise ValueError(
            f"{name} holds {d.shape[0]} directions but they span only {rank} dimension(s) (linearly "
            f"dependent; smallest singular value {float(s[-1]):.1e} of the largest {float(s[0]):.1e}); pass "
            "independent directions, e.g. drop the repeated ones"
        )
    return d


def model_of(record: Any) -> tuple[str, str]:
    """``(model_id, model_name)`` of a record."""
    meta = getattr(record, "meta", {}) or {}
    return str(meta.get("model_id")), str(meta.get("model_name"))


def check_same_model(name: str, records: Sequence[Any], model: Any = None) -> None:
    """Raise ``ModelMismatchError`` unless every record (and ``model``, when given) has one
    ``model_id``: writes from two models cannot be merged into one analysis."""
    ids = [model_of(r) for r in records]
    if model is not None:
        want = (model.model_id, model.cfg.name)
        for i, got in enumerate(ids):
            if got[0] != want[0]:
                raise ModelMismatchError(
                    f"{name}[{i}] was recorded on {got[1]!r} (model id {got[0]}), not on model={want[1]!r} "
                    f"(model id {want[0]}); pass records of this model only, or the model they came from"
                )
        return
    for i, got in enumerate(ids[1:], 1):
        if got[0] != ids[0][0]:
            raise ModelMismatchError(
                f"{name}[0] and {name}[{i}] were recorded on different models ({ids[0][1]!r}, id {ids[0][0]}; "
                f"{got[1]!r}, id {got[0]}); one analysis takes the records of one model: pass them separately"
            )


def check_device(name: str, device: Any) -> torch.device | None:
    """``None`` or a device string / ``torch.device`` that exists on this machine."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name}={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0', ...") from e
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if dev.type in available and not available[dev.type]():
        raise ValueError(f"{name}={device!r} but no {dev.type} device is available here; pass {name}='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{name}={device!r} but this machine has {torch.cuda.device_count()} cuda device(s); "
            f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def check_stream(*, batch_size: object = 8, n_ctx: object = None, max_tokens: object = None,
                 progress: object = True, exclude_first: object = True) -> None:
    """The arguments of every function that streams a corpus through the model: a batch size
    and token budget >= 1, a row length ``n_ctx`` >= 2 (BOS plus one token) or None for the
    model's context, flags that are bools. ``n_ctx=0`` is refused, never read as "default"."""
    check_positive_int("batch_size", batch_size)
    check_int("n_ctx", n_ctx, minimum=2, allow_none=True)
    check_positive_int("max_tokens", max_tokens, allow_none=True)
    check_bool("progress", progress)
    check_bool("exclude_first", exclude_first)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get now (``MemAvailable`` on Linux, else the
    machine's physical memory), or None when the platform does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what: str, nbytes: int, fix: str) -> None:
    """Refuse, before allocating, a state of ``nbytes`` that the machine cannot hold.

    Raises:
        MemoryError: more than the memory available now; names what, the size and the fix.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise MemoryError(f"{what} would need {nbytes / 2**30:,.1f} GiB of memory, and {free / 2**30:,.1f} GiB is "
                          f"available; {fix}")


def check_fraction(name: str, value: object) -> float:
    """A finite number strictly between 0 and 1 (a held-out share, a false-positive rate)."""
    return check_float(name, value, minimum=0, maximum=1, min_open=True, max_open=True)


def one_model(name: str, records: Iterable[Any], model: Any = None) -> Iterable[Any]:
    """Yield ``records`` (a list or a stream), raising ``ModelMismatchError`` at the first one
    recorded on another model than the first (or than ``model``): an analysis reduces the
    records of one model, never a mix."""
    first: Any = None
    for i, r in enumerate(records):
        rid, rname = model_of(r)
        if model is not None and rid != model.model_id:
            raise ModelMismatchError(
                f"{name}[{i}] was recorded on {rname!r} (model id {rid}), not on model={model.cfg.name!r} "
                f"(model id {model.model_id}); pass records of this model only, or the model they came from"
            )
        if first is None:
            first = (rid, rname)
        elif rid != first[0]:
            raise ModelMismatchError(
                f"{name}[0] and {name}[{i}] were recorded on different models ({first[1]!r}, id {first[0]}; "
                f"{rname!r}, id {rid}); one analysis takes the records of one model: pass them separately"
            )
        yield r


#: What each kind of option takes, for ``options``.
_KINDS = {
    "count": lambda n, v: check_positive_int(n, v, allow_none=True),
    "index": lambda n, v: check_int(n, v, minimum=0, allow_none=True),
    "share": lambda n, v: check_float(n, v, minimum=0, maximum=1, allow_none=True),
    "text": lambda n, v: v if v is None or isinstance(v, str) else (_ for _ in ()).throw(
        TypeError(f"{n}={v!r} must be a str or None")),
}


def options(**kinds: str) -> Any:
    """Decorate a public function so that its named options are checked before its body runs:
    ``@options(k="count", batch="index", min_share="share", title="text")``. Kinds: ``count``
    (an int >= 1), ``index`` (an int >= 0), ``share`` (a finite number in [0, 1]), ``text``
    (a str); ``None`` passes where it is the option's default meaning."""
    import functools
    import inspect

    unknown = set(kinds.values()) - set(_KINDS)
    if unknown:
        raise ValueError(f"unknown option kinds {sorted(unknown)}; use {sorted(_KINDS)}")

    def wrap(fn: Any) -> Any:
        sig = inspect.signature(fn)
        own = {n: k for n, k in kinds.items() if n in sig.parameters}  # a renamed option is skipped, not fatal

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            for name, kind in own.items():
                if name in bound.arguments:
                    _KINDS[kind](name, bound.arguments[name])
            return fn(*args, **kwargs)

        return checked

    return wrap
