"""Binding and checking a compiled model's call arguments against its input specs (one place for
every executor: native library, emulated target, accelerator simulator)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tessera.errors import InputCountError, InputDtypeError, InputShapeError
from tessera.runtime.program import TensorSpec


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def bind_inputs(model_name: str, specs: Sequence[TensorSpec], args: tuple[Any, ...]) -> list[Any]:
    """Inputs given positionally or as one mapping by input name, in spec order."""
    names = [s.name for s in specs]
    if len(args) == 1 and isinstance(args[0], Mapping):
        given = args[0]
        missing = [n for n in names if n not in given]
        unknown = [str(k) for k in given if k not in names]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise InputCountError(f"model {model_name!r} takes inputs ({', '.join(names)}): {'; '.join(parts)}")
        return [given[n] for n in names]
    if len(args) != len(specs):
        raise InputCountError(
            f"model {model_name!r} takes {len(specs)} input(s) ({', '.join(names)}), got {len(args)}"
        )
    return list(args)


def check_input(spec: TensorSpec, value: Any) -> np.ndarray:
    """``value`` as an array of the spec's dtype and shape. Arrays must match the dtype exactly;
    Python scalars and lists are converted when the conversion is a same-kind cast."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise InputDtypeError(f"input {spec.name!r}: cannot convert {type(value).__name__} to an array") from e
        if arr.dtype != spec.np_dtype and np.can_cast(arr.dtype, spec.np_dtype, "same_kind"):
            arr = arr.astype(spec.np_dtype)
    if arr.dtype != spec.np_dtype:
        raise InputDtypeError(f"input {spec.name!r}: expected dtype {spec.dtype}, got {arr.dtype}")
    if arr.shape != spec.shape:
        raise InputShapeError(
            f"input {spec.name!r}: expected shape {shape_str(spec.shape)}, got {shape_str(arr.shape)}"
        )
    return arr
