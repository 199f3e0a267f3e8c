"""Operators: reductions (Reduce*), ArgMax/ArgMin and CumSum (ONNX semantics).

Reduce* take their axes as an optional second int64 input (opset 18). Missing or empty axes
reduce every axis, unless ``noop_with_empty_axes`` is set, which makes the op an identity.
Float reductions accumulate in float64 and round once to the input dtype; integer ones wrap
in the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import norm_axis, numel
from tessera.graph.ops.elementwise import BOOL, NUMERIC, check_dtype, float_compute, is_float_np
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

_INDEX = frozenset({DType.int32, DType.int64})
Axes = tuple[int, ...]


# ---- Reduce* -------------------------------------------------------------------------------
def _known_axes(ctx: InferContext, rank: int) -> Axes | None:
    """Normalized axes from input 1 (every axis when absent or empty); None if unknown."""
    if not ctx.has_input(1):
        return tuple(range(rank))
    v = ctx.dims_value(1)
    if v is None or not all(isinstance(d, int) for d in v):
        return None
    axes = tuple(norm_axis(int(d), rank, ctx) for d in v)  # type: ignore[arg-type]
    if len(set(axes)) != len(axes):
        raise ctx.error(f"repeated axes {list(v)}")
    return axes or tuple(range(rank))


def _axes_empty(ctx: InferContext) -> bool:
    if not ctx.has_input(1):
        return True
    t = ctx.type(1)
    v = ctx.dims_value(1)
    return (v is not None and len(v) == 0) or (t.rank == 1 and t.shape[0] == 0)


def _reduce_infer(allowed: frozenset[DType]) -> Callable[[InferContext], list[TensorType]]:
    def infer(ctx: InferContext) -> list[TensorType]:
        t = ctx.type(0)
        check_dtype(ctx, 0, allowed)
        keep = bool(ctx.attrs["keepdims"])
        if ctx.has_input(1):
            check_dtype(ctx, 1, _INDEX)
            if ctx.type(1).rank > 1:
                raise ctx.error(f"axes must be 0-D or 1-D, got {ctx.type(1)}")
        if ctx.attrs["noop_with_empty_axes"] and _axes_empty(ctx):
            return [t]
        axes = _known_axes(ctx, t.rank)
        if axes is not None:
            if keep:
                return [t.with_shape(tuple(1 if i in axes else d for i, d in enumerate(t.shape)))]
            return [t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in axes))]
        # Axes computed at run time: the rank is known, the sizes are not.
        if keep:
            dims = tuple(d if d == 1 else ctx.fresh_dim(f"r{i}") for i, d in enumerate(t.shape))
            return [t.with_shape(dims)]
        n_axes = ctx.type(1).shape[0] if ctx.type(1).rank == 1 else 1
        if not isinstance(n_axes, int):
            raise ctx.error("cannot infer the output rank: axes are unknown and keepdims=0")
        return [t.with_shape(tuple(ctx.fresh_dim(f"r{i}") for i in range(t.rank - n_axes)))]

    return infer


def _empty_fill(x: np.ndarray, largest: bool) -> Any:
    if x.dtype == np.bool_:
        return largest
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        return info.max if largest else info.min
    return np.inf if largest else -np.inf


def _sum(x: np.ndarray, axes: Axes, keep: bool) -> np.ndarray:
    return np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _logsumexp(x: np.ndarray, axes: Axes, keep: bool) -> np.ndarray:
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return s if keep else np.squeeze(s, axis=axes)


_REDUCERS: dict[str, tuple[Callable[[np.ndarray, Axes, bool], np.ndarray], int, frozenset[DType], str]] = {
    "ReduceSum": (_sum, 1, NUMERIC, "sum"),
    "ReduceMean": (lambda x, a, k: np.mean(x.astype(np.float64), axis=a, keepdims=k), 1, NUMERIC, "mean"),
    "ReduceMax": (lambda x, a, k: np.max(x, axis=a, keepdims=k, initial=_empty_fill(x, False)),
                  1, NUMERIC | BOOL, "maximum (empty: lowest value)"),
    "ReduceMin": (lambda x, a, k: np.min(x, axis=a, keepdims=k, initial=_empty_fill(x, True)),
                  1, NUMERIC | BOOL, "minimum (empty: highest value)"),
    "ReduceProd": (lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=x.dtype), 1, NUMERIC, "product"),
    "ReduceL1": (lambda x, a, k: _sum(np.abs(x), a, k), 2, NUMERIC, "sum of |x|"),
    "ReduceL2": (lambda x, a, k: np.sqrt(_sum(x * x, a, k).astype(np.float64)),
                 3, NUMERIC, "sqrt of the sum of squares"),
    "ReduceLogSum": (lambda x, a, k: np.log(_sum(x, a, k).astype(np.float64)), 2, NUMERIC, "log of the sum"),
    "ReduceLogSumExp": (_logsumexp, 4, NUMERIC, "log(sum(exp(x)))"),
    "ReduceSumSquare": (lambda x, a, k: _sum(x * x, a, k), 2, NUMERIC, "sum of squares"),
}


def _reduce_ref(fn: Callable[[np.ndarray, Axes, bool], np.ndarray]) -> Callable[..., list[np.ndarray]]:
    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        ax = inputs[1] if len(inputs) > 1 else None
        if ax is None or ax.size == 0:
            if a["noop_with_empty_axes"]:
                return [x.copy()]
            axes = tuple(range(x.ndim))
        else:
            axes = tuple(norm_axis(int(v), x.ndim) for v in ax.reshape(-1))
        with np.errstate(all="ignore"):
            y = np.asarray(fn(float_compute(x), axes, bool(a["keepdims"])))
        return [y.astype(x.dtype)]

    return ref


def _reduce_flops(per: int) -> Callable[[InferContext, list[TensorType]], Dim]:
    return lambda ctx, outs: numel(ctx.type(0).shape) * per


_REDUCE_ATTRS = {"keepdims": Attr("int", 1, (0, 1)), "noop_with_empty_axes": Attr("int", 0, (0, 1))}
for _name, (_fn, _per, _allowed, _what) in _REDUCERS.items():
    register(OpDef(_name, _reduce_infer(_allowed), _reduce_ref(_fn), dict(_REDUCE_ATTRS), (1, 2), (1, 1),
                   _reduce_flops(_per), doc=f"Reduce by {_what} over the axes given as input 1."))


# ---- ArgMax / ArgMin -----------------------------------------------------------------------
def _arg_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype(ctx, 0, NUMERIC)
    axis = norm_axis(ctx.attrs["axis"], t.rank, ctx)
    if ctx.attrs["keepdims"]:
        shape = tuple(1 if i == axis else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i != axis)
    return [TensorType(DType.int64, shape)]


def _arg_ref(fn: Callable[..., np.ndarray]) -> Callable[..., list[np.ndarray]]:
    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        x = float_compute(x)
        axis = norm_axis(a["axis"], x.ndim)
        if a["select_last_index"]:
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        if a["keepdims"]:
            idx = np.expand_dims(idx, axis)
        return [np.asarray(idx).astype(np.int64)]

    return ref


_ARG_ATTRS = {"axis": Attr("int", 0), "keepdims": Attr("int", 1, (0, 1)), "select_last_index": Attr("int", 0, (0, 1))}
for _name, _fn in (("ArgMax", np.argmax), ("ArgMin", np.argmin)):
    register(OpDef(_name, _arg_infer, _arg_ref(_fn), dict(_ARG_ATTRS), (1, 1), (1, 1), _reduce_flops(1),
                   doc=f"Index (int64) of the {_name[3:].lower()} along ``axis``."))


# ---- CumSum --------------------------------------------------------------------------------
def _cumsum_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype(ctx, 0, NUMERIC)
    check_dtype(ctx, 1, _INDEX)
    a = ctx.type(1)
    if a.rank > 1 or (a.is_static and a.numel != 1):
        raise ctx.error(f"axis must be a scalar, got {a}")
    v = ctx.dims_value(1)
    if v is not None and isinstance(v[0], int):
        norm_axis(v[0], t.rank, ctx)
    return [t]


def _cumsum_ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
    x, ax = inputs
    assert x is not None and ax is not None
    axis = norm_axis(int(ax.reshape(-1)[0]), x.ndim)
    y = float_compute(x)
    if a["reverse"]:
        y = np.flip(y, axis)
    acc_dtype = y.dtype if is_float_np(y.dtype) else x.dtype
    c = np.cumsum(y, axis=axis, dtype=acc_dtype)
    if a["exclusive"]:
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), np.delete(c, -1, axis=axis)], axis=axis) \
            if c.shape[axis] else c
    if a["reverse"]:
        c = np.flip(c, axis)
    return [np.ascontiguousarray(c).astype(x.dtype)]


register(OpDef("CumSum", _cumsum_infer, _cumsum_ref,
               {"exclusive": Attr("int", 0, (0, 1)), "reverse": Attr("int", 0, (0, 1))},
               (2, 2), (1, 1), _reduce_flops(1),
               doc="Cumulative sum along the axis given as input 1 (optionally exclusive/reversed)."))
