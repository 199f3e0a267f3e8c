"""Checking user-supplied inputs against a graph's (possibly symbolic) signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tessera.errors import InputCountError, InputDtypeError, InputShapeError
from tessera.graph.ir import Graph
from tessera.graph.symbolic import Sym, evaluate, symbol_name


def bind_inputs(
    g: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Match inputs (positional or by name) to ``g.inputs``; check count, dtype and shape.

    Returns the feeds by name and the binding of every symbolic dim to its concrete size."""
    if isinstance(inputs, Mapping):
        unknown = sorted(set(inputs) - set(g.inputs))
        missing = [n for n in g.inputs if n not in inputs]
        if unknown or missing:
            raise InputCountError(
                f"model expects inputs {g.inputs}; "
                + (f"unknown: {unknown} " if unknown else "")
                + (f"missing: {missing}" if missing else "")
            )
        feeds = {n: inputs[n] for n in g.inputs}
    else:
        if len(inputs) != len(g.inputs):
            raise InputCountError(f"model expects {len(g.inputs)} input(s) {g.inputs}, got {len(inputs)}")
        feeds = dict(zip(g.inputs, inputs, strict=True))
    env: dict[str, int] = {}
    out: dict[str, np.ndarray] = {}
    for name, value in feeds.items():
        t = g.types[name]
        arr = np.asarray(value)
        if arr.dtype != t.dtype.np:
            raise InputDtypeError(f"input {name!r}: expected dtype {t.dtype.name}, got {arr.dtype}")
        if arr.ndim != t.rank:
            raise InputShapeError(f"input {name!r}: expected shape {t}, got rank-{arr.ndim} {list(arr.shape)}")
        for axis, (d, n) in enumerate(zip(t.shape, arr.shape, strict=True)):
            if isinstance(d, int):
                if d != n:
                    raise InputShapeError(f"input {name!r}: expected shape {t}, got {list(arr.shape)} (axis {axis})")
            elif (sym := symbol_name(d)) is not None:
                if env.setdefault(sym, n) != n:
                    raise InputShapeError(
                        f"input {name!r}: axis {axis} is {sym!r}={env[sym]} elsewhere, got {n}"
                    )
        out[name] = arr
    for name in g.inputs:  # derived dims such as seq*2 must agree with the bound symbols
        t = g.types[name]
        for axis, d in enumerate(t.shape):
            if isinstance(d, Sym) and d.symbols <= env.keys():
                if evaluate(d, env) != out[name].shape[axis]:
                    raise InputShapeError(
                        f"input {name!r}: axis {axis} must be {d}={evaluate(d, env)}, got {out[name].shape[axis]}"
                    )
    return out, env
