"""Validation helpers for the public boundary: errors name the parameter, value and fix."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from interp.errors import IndexOutOfRangeError


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not supported; use one of {opts}")


def check_index(name: str, value: object, size: int, what: str) -> int:
    """Normalise a Python-style index into ``range(size)``; negative counts from the end.

    ``what`` names the axis for the message, e.g. "layer" or "head".
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy ints, e.g. read from a DataFrame column
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be an int {what} index")
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
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = [values]
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


def check_direction(name: str, d: torch.Tensor, d_model: int) -> torch.Tensor:
    """Check a direction tensor ``[..., d_model]`` is finite and non-zero; returns it as float."""
    if not isinstance(d, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [d_model] or [k, d_model], got {type(d).__name__}")
    if d.shape[-1] != d_model:
        raise ValueError(
            f"{name} has shape {tuple(d.shape)} but the model's d_model is {d_model}; "
            f"pass vectors of length {d_model}"
        )
    if not torch.isfinite(d).all():
        raise ValueError(f"{name} contains NaN or inf; pass finite vectors")
    if (d.reshape(-1, d_model).norm(dim=-1) == 0).any():
        raise ValueError(f"{name} contains a zero-norm vector, which has no direction; drop it")
    return d.float() if not d.is_floating_point() else d


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """An int (numpy ints too, never bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be an int")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
    return int(value)


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
