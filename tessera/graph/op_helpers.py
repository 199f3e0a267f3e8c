"""Building blocks for declaring operators: broadcasting, common shape rules, and
one-line declarations of elementwise operators."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim, Sym
from tessera.graph.tensor_type import TensorType


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    """Numpy broadcasting of one dim pair. A symbolic dim against a constant > 1 is taken to
    equal the constant; two different symbols broadcast to the first (checked at run time)."""
    if a == 1:
        return b
    if b == 1 or a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ShapeInferenceError(f"cannot broadcast dims {a} and {b}")
    if isinstance(a, Sym) and isinstance(b, int):
        return b
    return a


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = [1] * (rank - len(s)) + list(s)
        for i, d in enumerate(padded):
            try:
                out[i] = broadcast_dims(out[i], d)
            except ShapeInferenceError:
                raise ShapeInferenceError(
                    f"shapes {[tuple(map(str, x)) for x in shapes]} do not broadcast"
                ) from None
    return tuple(out)


def numel(shape: Sequence[Dim]) -> Dim:
    n: Dim = 1
    for d in shape:
        n = n * d
    return n


def norm_axis(axis: int, rank: int, ctx: InferContext | None = None) -> int:
    if not -rank <= axis < max(rank, 1):
        msg = f"axis {axis} out of range for rank {rank}"
        raise ctx.error(msg) if ctx else ShapeInferenceError(msg)
    return axis % max(rank, 1)


def same_as_input(ctx: InferContext) -> list[TensorType]:
    return [ctx.type(0)]


def broadcast_infer(dtype: DType | None = None) -> Callable[[InferContext], list[TensorType]]:
    """Shape rule of n-ary broadcasting ops; output dtype is the first input's unless given."""

    def infer(ctx: InferContext) -> list[TensorType]:
        ts = [t for t in ctx.types if t is not None]
        try:
            shape = broadcast_shapes(*(t.shape for t in ts))
        except ShapeInferenceError as e:
            raise ctx.error(str(e)) from None
        return [TensorType(dtype or ts[0].dtype, shape)]

    return infer


def elementwise_flops(per_element: int = 1) -> Callable[[InferContext, list[TensorType]], Dim]:
    return lambda ctx, outs: numel(outs[0].shape) * per_element


def _keep_dtype(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap a NumPy function so the result has the first input's dtype (NumPy may upcast)."""

    def wrapped(*xs: np.ndarray, **kw: Any) -> np.ndarray:
        return np.asarray(fn(*xs, **kw)).astype(xs[0].dtype, copy=False)

    return wrapped


def unary(
    name: str,
    fn: Callable[..., np.ndarray],
    flops: int = 1,
    attrs: dict[str, Attr] | None = None,
    doc: str = "",
    float_math: bool = False,
) -> OpDef:
    """Declare an elementwise unary op. ``fn(x, **attrs)`` is its NumPy reference.
    ``float_math``: compute in float64 for accuracy, then cast back (exp, erf, tanh...)."""

    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n_out: int) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        if float_math and x.dtype.kind == "f":
            y = fn(x.astype(np.float64), **a)
        else:
            y = fn(x, **a)
        return [np.asarray(y).astype(x.dtype, copy=False)]

    return register(
        OpDef(name, same_as_input, ref, attrs or {}, (1, 1), (1, 1), elementwise_flops(flops), doc=doc)
    )


def binary(
    name: str,
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    out_dtype: DType | None = None,
    flops: int = 1,
    attrs: dict[str, Attr] | None = None,
    propagate: Callable[[Dim, Dim], Dim] | None = None,
    doc: str = "",
) -> OpDef:
    """Declare a broadcasting binary op. ``out_dtype`` None keeps the input dtype
    (comparisons pass ``DType.bool``). ``propagate`` applies the op to symbolic dims."""

    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n_out: int) -> list[np.ndarray]:
        x, y = inputs
        assert x is not None and y is not None
        r = np.asarray(fn(x, y, **a) if a else fn(x, y))
        return [r.astype(out_dtype.np if out_dtype else x.dtype, copy=False)]

    prop = None
    if propagate is not None:
        p = propagate

        def prop(ctx: InferContext) -> list[tuple[Dim, ...] | None]:
            a, b = ctx.dims_value(0), ctx.dims_value(1)
            if a is None or b is None or (len(a) != len(b) and 1 not in (len(a), len(b))):
                return [None]
            n = max(len(a), len(b))
            a = a * n if len(a) == 1 else a
            b = b * n if len(b) == 1 else b
            try:
                return [tuple(p(x, y) for x, y in zip(a, b, strict=True))]
            except (TypeError, ZeroDivisionError):
                return [None]

    return register(
        OpDef(name, broadcast_infer(out_dtype), ref, attrs or {}, (2, 2), (1, 1), elementwise_flops(flops),
              propagate=prop, doc=doc)
    )
