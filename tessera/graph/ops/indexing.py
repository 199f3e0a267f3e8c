"""Operators: indexing (Gather*, Scatter*, Slice, OneHot, TopK, NonZero, Compress, Unique).

Indices follow ONNX: negative indices count from the end of the indexed axis. Output sizes
that depend on data (NonZero, Compress, Unique) are fresh symbols unless the input is a
known constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import norm_axis, numel
from tessera.graph.ops.shape import (
    Arrays,
    Types,
    Values,
    declare,
    dims_const,
    fresh_shape,
    ints_of,
    norm_axes,
    value_length,
)
from tessera.graph.registry import Attr, InferContext
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

# Slice bounds at least this large mean "to the end" (exporters use INT64_MAX / INT32_MAX).
_HUGE = 2**31 - 1
_REDUCTIONS = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _fix_negative(idx: np.ndarray, size: int) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


def _check_indices(idx: np.ndarray, size: int | np.ndarray, what: str) -> None:
    """Refuse wrapped indices outside ``[0, size)`` (``size`` may give one bound per last-axis column)."""
    if idx.size and (idx.min() < 0 or (idx >= size).any()):
        raise IndexError(f"{what} index out of range for a dim of size {size}")


# ---- Gather family ----------------------------------------------------------------------------


def _gather_infer(ctx: InferContext) -> Types:
    data, idx = ctx.type(0), ctx.type(1)
    if data.rank == 0:
        raise ctx.error("cannot gather from a scalar")
    if idx.dtype not in (DType.int32, DType.int64):
        raise ctx.error(f"indices must be int32 or int64, got {idx}")
    axis = norm_axis(ctx.attrs["axis"], data.rank, ctx)
    return [data.with_shape(data.shape[:axis] + idx.shape + data.shape[axis + 1:])]


def _gather_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, idx = x[0], x[1]
    assert data is not None and idx is not None
    axis = a["axis"] % data.ndim
    idx = _fix_negative(idx, data.shape[axis])
    _check_indices(idx, data.shape[axis], "Gather")
    return [np.take(data, idx, axis=axis)]


def _gather_prop(ctx: InferContext) -> Values:
    v, idx = ctx.dims_value(0), dims_const(ctx, 1)
    if v is None or idx is None or ctx.type(0).rank != 1 or ctx.type(1).rank > 1:
        return [None]
    n = len(v)
    if not all(-n <= i < n for i in idx):
        return [None]
    return [tuple(v[i] for i in idx)]


declare("Gather", _gather_infer, _gather_ref, {"axis": Attr("int", 0)}, (2, 2), propagate=_gather_prop)


def _gather_elements_infer(ctx: InferContext) -> Types:
    data, idx = ctx.type(0), ctx.type(1)
    if data.rank != idx.rank or data.rank == 0:
        raise ctx.error(f"data and indices must have the same rank >= 1, got {data} and {idx}")
    norm_axis(ctx.attrs["axis"], data.rank, ctx)
    return [data.with_shape(idx.shape)]


def _gather_elements_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, idx = x[0], x[1]
    assert data is not None and idx is not None
    axis = a["axis"] % data.ndim
    idx = _fix_negative(idx, data.shape[axis])
    _check_indices(idx, data.shape[axis], "GatherElements")
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    return [data[tuple(grid)]]


declare("GatherElements", _gather_elements_infer, _gather_elements_ref, {"axis": Attr("int", 0)}, (2, 2))


def _nd_depth(ctx: InferContext, b: int) -> int:
    data, idx = ctx.type(0), ctx.type(1)
    if idx.rank < 1 or not isinstance(idx.shape[-1], int):
        raise ctx.error(f"indices need a static last dim, got {idx}")
    m = idx.shape[-1]
    if b < 0 or b >= min(data.rank, idx.rank) or b + m > data.rank:
        raise ctx.error(f"batch_dims={b} and index depth {m} do not fit data {data} and indices {idx}")
    return m


def _gather_nd_infer(ctx: InferContext) -> Types:
    data, idx = ctx.type(0), ctx.type(1)
    b = ctx.attrs["batch_dims"]
    m = _nd_depth(ctx, b)
    return [data.with_shape(idx.shape[:-1] + data.shape[b + m:])]


def _gather_nd_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, idx = x[0], x[1]
    assert data is not None and idx is not None
    b, m = a["batch_dims"], idx.shape[-1]
    nb = int(np.prod(data.shape[:b]))
    d = data.reshape((nb,) + data.shape[b:])
    ii = idx.reshape((nb, -1, m)).astype(np.int64)
    parts = []
    for i in range(nb):
        rows = ii[i]
        rows = np.where(rows < 0, rows + np.array(d.shape[1:1 + m]), rows)
        _check_indices(rows, np.array(d.shape[1:1 + m]), "GatherND")
        parts.append(d[i][tuple(rows.T)])
    return [np.stack(parts).reshape(idx.shape[:-1] + data.shape[b + m:])]


declare("GatherND", _gather_nd_infer, _gather_nd_ref, {"batch_dims": Attr("int", 0)}, (2, 2))


# ---- Scatter family ------------------------------------------------------------------------------


def _scatter_infer(ctx: InferContext) -> Types:
    data, upd = ctx.type(0), ctx.type(2)
    if ctx.attrs["reduction"] not in _REDUCTIONS:
        raise ctx.error(f"unknown reduction {ctx.attrs['reduction']!r} (known: {', '.join(_REDUCTIONS)})")
    if upd.dtype != data.dtype:
        raise ctx.error(f"updates dtype {upd.dtype} differs from data dtype {data.dtype}")
    return [data]


def _scatter_elements_infer(ctx: InferContext) -> Types:
    data, idx, upd = ctx.type(0), ctx.type(1), ctx.type(2)
    if not data.rank == idx.rank == upd.rank or data.rank == 0:
        raise ctx.error(f"data, indices and updates must have one rank >= 1, got {data}, {idx}, {upd}")
    norm_axis(ctx.attrs["axis"], data.rank, ctx)
    return _scatter_infer(ctx)


def _scatter_elements_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, idx, upd = x[0], x[1], x[2]
    assert data is not None and idx is not None and upd is not None
    axis = a["axis"] % data.ndim
    idx = _fix_negative(idx, data.shape[axis])
    _check_indices(idx, data.shape[axis], "ScatterElements")
    grid = list(np.indices(idx.shape))
    grid[axis] = idx
    out = data.copy()
    fn = _REDUCTIONS[a["reduction"]]
    if fn is None:
        out[tuple(grid)] = upd
    else:
        fn.at(out, tuple(grid), upd)
    return [out]


declare("ScatterElements", _scatter_elements_infer, _scatter_elements_ref,
    {"axis": Attr("int", 0), "reduction": Attr("str", "none")}, (3, 3))


def _scatter_nd_infer(ctx: InferContext) -> Types:
    _nd_depth(ctx, 0)
    return _scatter_infer(ctx)


def _scatter_nd_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, idx, upd = x[0], x[1], x[2]
    assert data is not None and idx is not None and upd is not None
    m = idx.shape[-1]
    rows = idx.reshape(-1, m).astype(np.int64)
    rows = np.where(rows < 0, rows + np.array(data.shape[:m]), rows)
    _check_indices(rows, np.array(data.shape[:m]), "ScatterND")
    vals = upd.reshape((rows.shape[0],) + data.shape[m:])
    out = data.copy()
    fn = _REDUCTIONS[a["reduction"]]
    if fn is None:
        for r, v in zip(rows, vals, strict=True):
            out[tuple(r)] = v
    else:
        fn.at(out, tuple(rows.T), vals)
    return [out]


declare("ScatterND", _scatter_nd_infer, _scatter_nd_ref, {"reduction": Attr("str", "none")}, (3, 3))


# ---- Slice -------------------------------------------------------------------------------------


def slice_range(start: int, end: int, step: int, dim: int) -> tuple[int, int, int]:
    """ONNX clamping of one axis' bounds; returns (start, end, length) with end possibly -1."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        length = max(0, (end - start + step - 1) // step)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        length = max(0, (start - end - step - 1) // -step)
    return start, end, length


def _sym_bound(v: Dim, dim: Dim, step: int, is_end: bool) -> Dim:
    """One bound against a symbolic dim (or a symbolic bound): in-range values are assumed."""
    if not isinstance(v, int):
        return v
    if v >= _HUGE:
        return dim if step > 0 else dim - 1
    if v <= -_HUGE:
        return 0 if step > 0 else -1
    if isinstance(dim, int):
        lo, hi = (0, dim) if step > 0 else ((-1 if is_end else 0), dim - 1)
        return min(max(v + dim if v < 0 else v, lo), hi)
    return dim + v if v < 0 else v


def _slice_len(start: Dim, end: Dim, step: int, dim: Dim) -> Dim:
    if all(isinstance(v, int) for v in (start, end, dim)):
        return slice_range(start, end, step, dim)[2]  # type: ignore[arg-type]
    s, e = _sym_bound(start, dim, step, False), _sym_bound(end, dim, step, True)
    n = (e - s + (step - 1)) // step if step > 0 else (s - e + (-step - 1)) // -step
    return max(n, 0) if isinstance(n, int) else n


def _slice_params(ctx: InferContext, rank: int) -> tuple[list[Dim], list[Dim], list[int], list[int]] | None:
    starts, ends = ctx.dims_value(1), ctx.dims_value(2)
    n = value_length(ctx, 1, "starts")
    axes = dims_const(ctx, 3) if ctx.has_input(3) else list(range(n))
    steps = dims_const(ctx, 4) if ctx.has_input(4) else [1] * n
    if starts is None or ends is None or axes is None or steps is None:
        return None
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error("starts, ends, axes and steps must have one length")
    if 0 in steps:
        raise ctx.error("steps must be non-zero")
    return starts, ends, norm_axes(axes, rank, ctx), steps


def _slice_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    p = _slice_params(ctx, t.rank)
    if p is None:
        axes = dims_const(ctx, 3) if ctx.has_input(3) else list(range(value_length(ctx, 1, "starts")))
        if axes is None:
            return [t.with_shape(fresh_shape(ctx, t.rank, "slice"))]
        axes = norm_axes(axes, t.rank, ctx)
        return [t.with_shape(tuple(ctx.fresh_dim(f"slice{i}") if i in axes else d for i, d in enumerate(t.shape)))]
    out = list(t.shape)
    for s, e, ax, st in zip(*p, strict=True):
        out[ax] = _slice_len(s, e, st, t.shape[ax])
    return [t.with_shape(tuple(out))]


def _slice_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, starts, ends = x[0], ints_of(x[1]), ints_of(x[2])
    assert data is not None and starts is not None and ends is not None
    axes = ints_of(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = ints_of(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        dim = data.shape[ax % data.ndim]
        s, e, _ = slice_range(s, e, st, dim)
        index[ax % data.ndim] = slice(s, None if e < 0 else e, st)
    return [data[tuple(index)]]


def _slice_prop(ctx: InferContext) -> Values:
    v = ctx.dims_value(0)
    if v is None or ctx.type(0).rank != 1:
        return [None]
    p = _slice_params(ctx, 1)
    if p is None or not all(isinstance(b, int) for b in p[0] + p[1]):
        return [None]
    s, e, st = slice_range(int(p[0][0]), int(p[1][0]), p[3][0], len(v))[:2] + (p[3][0],)
    return [tuple(v[s:None if e < 0 else e:st])]


declare("Slice", _slice_infer, _slice_ref, ins=(3, 5), propagate=_slice_prop)


# ---- OneHot / TopK -----------------------------------------------------------------------------


def _onehot_infer(ctx: InferContext) -> Types:
    idx, vals = ctx.type(0), ctx.type(2)
    if vals.rank != 1 or (isinstance(vals.shape[0], int) and vals.shape[0] != 2):
        raise ctx.error(f"values must be a 2-element vector, got {vals}")
    rank = idx.rank + 1
    axis = norm_axis(ctx.attrs["axis"], rank, ctx)
    c = ctx.const(1)  # depth may be a float tensor
    depth = [int(c.reshape(-1)[0])] if c is not None and c.size == 1 else ctx.dims_value(1)
    d: Dim = depth[0] if depth is not None and len(depth) == 1 else ctx.fresh_dim("depth")
    if isinstance(d, int) and d < 1:
        raise ctx.error(f"depth must be positive, got {d}")
    return [TensorType(vals.dtype, idx.shape[:axis] + (d,) + idx.shape[axis:])]


def _onehot_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    idx, depth_v, vals = x[0], x[1], x[2]
    assert idx is not None and depth_v is not None and vals is not None
    depth = int(np.asarray(depth_v).reshape(-1)[0])
    ii = _fix_negative(idx, depth)
    hot = np.arange(depth) == ii[..., None]
    hot = np.moveaxis(hot, -1, a["axis"] % (idx.ndim + 1))
    return [np.where(hot, vals[1], vals[0]).astype(vals.dtype)]


declare("OneHot", _onehot_infer, _onehot_ref, {"axis": Attr("int", -1)}, (3, 3))


def _topk_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    if t.rank == 0:
        raise ctx.error("input must have rank >= 1")
    axis = norm_axis(ctx.attrs["axis"], t.rank, ctx)
    k_val = ctx.dims_value(1)
    k: Dim = k_val[0] if k_val is not None and len(k_val) == 1 else ctx.fresh_dim("k")
    dim = t.shape[axis]
    if isinstance(k, int) and (k < 0 or (isinstance(dim, int) and k > dim)):
        raise ctx.error(f"k={k} out of range for axis {axis} of {t}")
    shape = t.shape[:axis] + (k,) + t.shape[axis + 1:]
    return [t.with_shape(shape), TensorType(DType.int64, shape)]


def _topk_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, k_v = x[0], x[1]
    assert data is not None and k_v is not None
    k = int(np.asarray(k_v).reshape(-1)[0])
    axis = a["axis"] % data.ndim
    size = data.shape[axis]
    if a["largest"]:
        # Descending with ties broken by lower index: stable-sort the reversed axis, then flip.
        rev = np.flip(data, axis)
        order = size - 1 - np.flip(np.argsort(rev, axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(data, axis=axis, kind="stable")
    order = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(data, order, axis), order.astype(np.int64)]


declare("TopK", _topk_infer, _topk_ref, {"axis": Attr("int", -1), "largest": Attr("int", 1, (0, 1)),
                                           "sorted": Attr("int", 1, (0, 1))},
    (2, 2), (2, 2))


# ---- data-dependent sizes: NonZero / Compress / Unique --------------------------------------------


def _nonzero_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    return [np.array(np.nonzero(np.atleast_1d(d)), dtype=np.int64).reshape(max(d.ndim, 1), -1)]


def _nonzero_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    c = ctx.const(0)
    count: Dim = int(np.count_nonzero(c)) if c is not None else ctx.fresh_dim("nonzero")
    return [TensorType(DType.int64, (max(t.rank, 1), count))]


declare("NonZero", _nonzero_infer, _nonzero_ref)


def _compress_infer(ctx: InferContext) -> Types:
    t, cond = ctx.type(0), ctx.type(1)
    if cond.rank != 1 or cond.dtype != DType.bool:
        raise ctx.error(f"condition must be a 1-D bool tensor, got {cond}")
    c = ctx.const(1)
    count: Dim = int(np.count_nonzero(c)) if c is not None else ctx.fresh_dim("compress")
    axis = ctx.attrs["axis"]
    if axis is None:
        return [t.with_shape((count,))]
    axis = norm_axis(axis, t.rank, ctx)
    return [t.with_shape(t.shape[:axis] + (count,) + t.shape[axis + 1:])]


def _compress_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d, cond = x[0], x[1]
    assert d is not None and cond is not None
    return [np.compress(cond, d, axis=a["axis"])]


declare("Compress", _compress_infer, _compress_ref, {"axis": Attr("int", None)}, (2, 2))


def _unique_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    axis = ctx.attrs["axis"]
    if axis is not None:
        axis = norm_axis(axis, t.rank, ctx)
    c = ctx.const(0)
    u: Dim
    if c is not None:
        u = int(_unique_ref([c], ctx.attrs, 1)[0].shape[0 if axis is None else axis])
    else:
        u = ctx.fresh_dim("unique")
    y = (u,) if axis is None else t.shape[:axis] + (u,) + t.shape[axis + 1:]
    inv: Dim = numel(t.shape) if axis is None else t.shape[axis]
    i64 = DType.int64
    return [t.with_shape(y), TensorType(i64, (u,)), TensorType(i64, (inv,)), TensorType(i64, (u,))]


def _unique_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    axis = a["axis"]
    src = d.reshape(-1) if axis is None else d
    ax = 0 if axis is None else axis % d.ndim
    y, first, inv, counts = np.unique(src, return_index=True, return_inverse=True, return_counts=True, axis=ax)
    inv = inv.reshape(-1)
    if not a["sorted"]:
        order = np.argsort(first, kind="stable")
        y, first, counts = np.take(y, order, axis=ax), first[order], counts[order]
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        inv = remap[inv]
    outs = [y, first.astype(np.int64), inv.astype(np.int64), counts.astype(np.int64)]
    return outs[:n]


declare("Unique", _unique_infer, _unique_ref, {"sorted": Attr("int", 1), "axis": Attr("int", None)}, (1, 1), (1, 4))
