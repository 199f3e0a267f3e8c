"""Operators: shape manipulation (Reshape, Transpose, Concat, Split, Pad, Shape, ...).

Shape rules keep symbolic dims exact. Operators whose target shape is an input (Reshape,
Expand, Tile, ConstantOfShape, Pad...) read it with ``ctx.dims_value`` so that shapes computed
at run time by ``Shape -> Gather -> Concat`` chains stay symbolic; when that value is not
known at all, the data-dependent dims become fresh symbols.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import broadcast_shapes, norm_axis, numel
from tessera.graph.registry import Attr, InferContext, InferFn, OpDef, PropagateFn, RefFn, SymValue, register
from tessera.graph.symbolic import Dim, Sym
from tessera.graph.tensor_type import TensorType

Arrays = list[np.ndarray | None]
Types = list[TensorType]
Values = list[SymValue | None]


# ---- helpers shared with indexing.py --------------------------------------------------------


def exact_div(num: Dim, den: Dim) -> Dim | None:
    """``num / den`` for a division known to be exact, e.g. the -1 of a valid Reshape.

    ``None`` when it cannot be expressed: a symbolic divisor must be a single monomial
    (``batch*64``) dividing every term; an int divisor of a symbolic ``num`` that does not
    divide its coefficients gives an opaque floor division."""
    if isinstance(den, int):
        if den == 0:
            return None
        if isinstance(num, int):
            return num // den if num % den == 0 else None
        return num // den
    if isinstance(num, int) or len(den.terms) != 1:
        return None
    ((mono, coef),) = den.terms.items()
    out: dict[Any, int] = {}
    for m, c in num.terms.items():
        rest = list(m)
        for a in mono:
            if a not in rest:
                return None
            rest.remove(a)
        if c % coef:
            return None
        out[tuple(rest)] = out.get(tuple(rest), 0) + c // coef
    return Sym(out) + 0  # adding 0 normalizes a constant result to int


def div_factors(num: Sequence[Dim], den: Sequence[Dim]) -> Dim | None:
    """``prod(num) / prod(den)``, first cancelling factors equal on both sides."""
    rest = list(num)
    left: list[Dim] = []
    for d in den:
        if d in rest:
            rest.remove(d)
        else:
            left.append(d)
    return exact_div(numel(rest), numel(left))


def dims_const(ctx: InferContext, i: int) -> list[int] | None:
    """An optional int input's value when every element is a concrete int."""
    if not ctx.has_input(i):
        return None
    v = ctx.dims_value(i)
    if v is None or not all(isinstance(x, int) for x in v):
        return None
    return [int(x) for x in v]


def ints_of(x: np.ndarray | None) -> list[int] | None:
    return None if x is None else [int(v) for v in np.asarray(x).reshape(-1)]


def norm_axes(axes: Sequence[int], rank: int, ctx: InferContext) -> list[int]:
    out = [norm_axis(int(a), rank, ctx) for a in axes]
    if len(set(out)) != len(out):
        raise ctx.error(f"repeated axes {list(axes)}")
    return out


def fresh_shape(ctx: InferContext, n: int, hint: str = "d") -> tuple[Dim, ...]:
    return tuple(ctx.fresh_dim(f"{hint}{i}") for i in range(n))


def value_length(ctx: InferContext, i: int, what: str) -> int:
    """Static length of a 1-D (or scalar) int input, e.g. the rank a shape tensor describes."""
    t = ctx.type(i)
    if t.rank > 1:
        raise ctx.error(f"{what} must be 1-D, got {t}")
    n = numel(t.shape)
    if not isinstance(n, int):
        raise ctx.error(f"{what} has unknown length {n}; cannot infer the output rank")
    return n


def passthrough(ctx: InferContext) -> Values:
    """Propagation of ops that keep element order (Reshape, Squeeze, Identity...)."""
    v = ctx.dims_value(0)
    return [tuple(v) if v is not None else None]


def _check_nonneg(ctx: InferContext, shape: Sequence[Dim]) -> tuple[Dim, ...]:
    for d in shape:
        if isinstance(d, int) and d < 0:
            raise ctx.error(f"negative output dim in {[str(x) for x in shape]}")
    return tuple(shape)


def declare(name: str, infer: InferFn, ref: RefFn, attrs: dict[str, Attr] | None = None,
            ins: tuple[int, int] = (1, 1), outs: tuple[int, int] = (1, 1), propagate: PropagateFn | None = None,
            doc: str = "") -> OpDef:
    """Register an op; its value propagation (if any) folds all-int results to constants."""
    return register(OpDef(name, infer, ref, attrs or {}, ins, outs, propagate=propagate, doc=doc))


# ---- Reshape / Flatten / Squeeze / Unsqueeze / Identity / Transpose -------------------------


def _reshape_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    n = value_length(ctx, 1, "shape")
    target = ctx.dims_value(1)
    if target is None:
        return [TensorType(t.dtype, fresh_shape(ctx, n))]
    out: list[Dim] = []
    infer_at = -1
    for i, d in enumerate(target):
        if isinstance(d, int) and d == 0 and not ctx.attrs["allowzero"]:
            if i >= t.rank:
                raise ctx.error(f"shape {list(map(str, target))} copies dim {i} of a rank-{t.rank} input")
            d = t.shape[i]
        elif isinstance(d, int) and d == -1:
            if infer_at >= 0:
                raise ctx.error(f"shape {list(map(str, target))} has more than one -1")
            infer_at = i
        elif isinstance(d, int) and d < 0:
            raise ctx.error(f"invalid dim {d} in shape {list(map(str, target))}")
        out.append(d)
    if infer_at >= 0:
        others = [d for i, d in enumerate(out) if i != infer_at]
        q = div_factors(t.shape, others)
        if q is None:
            n_in, n_other = numel(t.shape), numel(others)
            if isinstance(n_in, int) and isinstance(n_other, int):
                raise ctx.error(f"cannot reshape {t} to {list(map(str, target))}: "
                                f"{n_in} elements do not divide into {n_other}")
            q = ctx.fresh_dim("reshape")
        out[infer_at] = q
    else:
        n_in, n_out = numel(t.shape), numel(out)
        ratio = exact_div(n_in, n_out) if n_out != 0 else None
        if (isinstance(n_in, int) and isinstance(n_out, int) and n_in != n_out) or (
            isinstance(ratio, int) and ratio != 1
        ):
            raise ctx.error(f"cannot reshape {t} ({n_in} elements) to {list(map(str, out))} ({n_out} elements)")
    return [TensorType(t.dtype, _check_nonneg(ctx, out))]


def _reshape_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    data, shape = x[0], ints_of(x[1])
    assert data is not None and shape is not None
    if not a["allowzero"]:
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [data.reshape(shape)]


declare("Reshape", _reshape_infer, _reshape_ref, {"allowzero": Attr("int", 0)}, (2, 2), propagate=passthrough,
    doc="Reshape to the shape given by input 1 (0 copies, -1 infers).")


def _flatten_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    axis = ctx.attrs["axis"]
    if not -t.rank <= axis <= t.rank:
        raise ctx.error(f"axis {axis} out of range for rank {t.rank}")
    axis = axis + t.rank if axis < 0 else axis
    return [t.with_shape((numel(t.shape[:axis]), numel(t.shape[axis:])))]


def _flatten_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    axis = a["axis"] + d.ndim if a["axis"] < 0 else a["axis"]
    return [d.reshape(int(np.prod(d.shape[:axis])), int(np.prod(d.shape[axis:])))]


declare("Flatten", _flatten_infer, _flatten_ref, {"axis": Attr("int", 1)}, propagate=passthrough)


def _squeeze_axes(ctx: InferContext, t: TensorType) -> list[int] | None:
    if not ctx.has_input(1):
        return [i for i, d in enumerate(t.shape) if d == 1]
    axes = dims_const(ctx, 1)
    if axes is None:
        return None
    axes = norm_axes(axes, t.rank, ctx)
    for a in axes:
        if isinstance(t.shape[a], int) and t.shape[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of {t}: size is not 1")
    return axes


def _squeeze_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    axes = _squeeze_axes(ctx, t)
    if axes is None:  # axes computed at run time: only the output rank is known
        n = value_length(ctx, 1, "axes")
        if n > t.rank:
            raise ctx.error(f"{n} axes to squeeze from {t}")
        return [t.with_shape(fresh_shape(ctx, t.rank - n, "squeeze"))]
    return [t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in axes))]


def _squeeze_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    axes = ints_of(x[1]) if len(x) > 1 else None
    if axes is None:
        return [np.squeeze(d)]
    return [np.squeeze(d, axis=tuple(ax % d.ndim for ax in axes))]


declare("Squeeze", _squeeze_infer, _squeeze_ref, ins=(1, 2), propagate=passthrough)


def _unsqueeze_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    axes = dims_const(ctx, 1)
    if axes is None:  # axes computed at run time: only the output rank is known
        return [t.with_shape(fresh_shape(ctx, t.rank + value_length(ctx, 1, "axes"), "unsqueeze"))]
    rank = t.rank + len(axes)
    axes = norm_axes(axes, rank, ctx)
    it = iter(t.shape)
    return [t.with_shape(tuple(1 if i in axes else next(it) for i in range(rank)))]


def _unsqueeze_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d, axes = x[0], ints_of(x[1])
    assert d is not None and axes is not None
    rank = d.ndim + len(axes)
    return [np.expand_dims(d, tuple(sorted(ax % rank for ax in axes)))]


declare("Unsqueeze", _unsqueeze_infer, _unsqueeze_ref, ins=(2, 2), propagate=passthrough)

declare("Identity", lambda ctx: [ctx.type(0)], lambda x, a, n: [x[0]], propagate=passthrough)


def _transpose_perm(perm: list[int] | None, rank: int) -> list[int]:
    return list(range(rank))[::-1] if perm is None else [p % max(rank, 1) for p in perm]


def _transpose_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    perm = ctx.attrs["perm"]
    if perm is not None and sorted(perm) != list(range(t.rank)):
        raise ctx.error(f"attribute 'perm' {perm} is not a permutation of 0..{t.rank - 1}")
    perm = _transpose_perm(perm, t.rank)
    return [t.with_shape(tuple(t.shape[p] for p in perm))]


def _transpose_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    return [np.transpose(d, _transpose_perm(a["perm"], d.ndim))]


declare("Transpose", _transpose_infer, _transpose_ref, {"perm": Attr("ints", None)})


# ---- Concat / Split ---------------------------------------------------------------------------


def _concat_infer(ctx: InferContext) -> Types:
    ts = [ctx.type(i) for i in range(len(ctx.types))]
    rank = ts[0].rank
    if rank == 0:
        raise ctx.error("cannot concatenate scalars")
    axis = norm_axis(ctx.attrs["axis"], rank, ctx)
    out = list(ts[0].shape)
    for t in ts[1:]:
        if t.rank != rank:
            raise ctx.error(f"inputs have different ranks: {', '.join(map(str, ts))}")
        if t.dtype != ts[0].dtype:
            raise ctx.error(f"inputs have different dtypes: {', '.join(map(str, ts))}")
        for i, d in enumerate(t.shape):
            if i == axis:
                out[i] = out[i] + d
            elif isinstance(d, int) and isinstance(out[i], int) and d != out[i]:
                raise ctx.error(f"dim {i} differs between inputs: {', '.join(map(str, ts))}")
            elif isinstance(out[i], Sym) and isinstance(d, int):
                out[i] = d
    return [TensorType(ts[0].dtype, tuple(out))]


def _concat_prop(ctx: InferContext) -> Values:
    out: list[Dim] = []
    for i in range(len(ctx.types)):
        v = ctx.dims_value(i)
        if v is None or ctx.type(i).rank != 1:
            return [None]
        out += v
    return [tuple(out)]


declare("Concat", _concat_infer, lambda x, a, n: [np.concatenate(x, axis=a["axis"])], {"axis": Attr("int")},
    (1, -1), propagate=_concat_prop)


def _split_sizes(ctx: InferContext, dim: Dim) -> list[Dim]:
    n = ctx.num_outputs
    if ctx.has_input(1):
        sizes = ctx.dims_value(1)
        if sizes is None:
            return list(fresh_shape(ctx, n, "split"))
        if len(sizes) != n:
            raise ctx.error(f"split has {len(sizes)} entries for {n} outputs")
        total = sum(sizes, start=0)
        if isinstance(total, int) and isinstance(dim, int) and total != dim:
            raise ctx.error(f"split {list(map(str, sizes))} does not sum to dim {dim}")
        return list(sizes)
    k = ctx.attrs["num_outputs"]
    if k is not None:
        if k != n:
            raise ctx.error(f"num_outputs={k} but the node has {n} outputs")
        chunk = (dim + (k - 1)) // k
        return [chunk] * (k - 1) + [dim - chunk * (k - 1)]
    if isinstance(dim, int) and dim % n:
        raise ctx.error(f"dim {dim} does not split evenly into {n} outputs")
    return [dim // n] * n


def _split_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    axis = norm_axis(ctx.attrs["axis"], t.rank, ctx)
    sizes = _split_sizes(ctx, t.shape[axis])
    return [t.with_shape(_check_nonneg(ctx, t.shape[:axis] + (s,) + t.shape[axis + 1:])) for s in sizes]


def _split_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    axis = a["axis"] % d.ndim
    dim = d.shape[axis]
    sizes = ints_of(x[1]) if len(x) > 1 else None
    if sizes is None:
        if a["num_outputs"] is not None:
            chunk = -(-dim // n)
            sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        else:
            sizes = [dim // n] * n
    return np.split(d, np.cumsum(sizes)[:-1], axis=axis)


def _split_prop(ctx: InferContext) -> Values:
    v = ctx.dims_value(0)
    if v is None or ctx.type(0).rank != 1:
        return [None] * ctx.num_outputs
    try:
        sizes = _split_sizes(ctx, len(v))
    except ShapeInferenceError:
        return [None] * ctx.num_outputs
    if not all(isinstance(s, int) for s in sizes):
        return [None] * ctx.num_outputs
    out, pos = [], 0
    for s in sizes:
        out.append(tuple(v[pos:pos + int(s)]))
        pos += int(s)
    return out


declare("Split", _split_infer, _split_ref, {"axis": Attr("int", 0), "num_outputs": Attr("int", None)}, (1, 2),
    (1, -1), propagate=_split_prop)


# ---- Shape / Size ------------------------------------------------------------------------------


def _shape_range(rank: int, a: dict[str, Any]) -> tuple[int, int]:
    start, end = a["start"], a["end"]
    end = rank if end is None else end
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, max(start, end)


def _shape_infer(ctx: InferContext) -> Types:
    s, e = _shape_range(ctx.type(0).rank, ctx.attrs)
    return [TensorType(DType.int64, (e - s,))]


def _shape_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    s, e = _shape_range(d.ndim, a)
    return [np.array(d.shape[s:e], dtype=np.int64)]


def _shape_prop(ctx: InferContext) -> Values:
    t = ctx.type(0)
    s, e = _shape_range(t.rank, ctx.attrs)
    return [tuple(t.shape[s:e])]


declare("Shape", _shape_infer, _shape_ref, {"start": Attr("int", 0), "end": Attr("int", None)},
    propagate=_shape_prop)
declare("Size", lambda ctx: [TensorType(DType.int64, ())], lambda x, a, n: [np.array(np.asarray(x[0]).size, np.int64)],
    propagate=lambda ctx: [(numel(ctx.type(0).shape),)])


# ---- Expand / Tile / ConstantOfShape / Range / EyeLike / Trilu ---------------------------------


def _expand_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    target = ctx.dims_value(1)
    if target is None:
        n = value_length(ctx, 1, "shape")
        rank = max(n, t.rank)
        padded = (1,) * (rank - t.rank) + t.shape
        # A static dim > 1 survives broadcasting; a symbolic one may be 1 at run time.
        return [t.with_shape(tuple(d if isinstance(d, int) and d != 1 else ctx.fresh_dim(f"expand{i}")
                                   for i, d in enumerate(padded)))]
    try:
        return [t.with_shape(broadcast_shapes(t.shape, target))]
    except ShapeInferenceError as e:
        raise ctx.error(str(e)) from None


def _expand_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d, shape = x[0], ints_of(x[1])
    assert d is not None and shape is not None
    out = np.broadcast_shapes(d.shape, tuple(shape))
    return [np.array(np.broadcast_to(d, out))]


def _expand_prop(ctx: InferContext) -> Values:
    v, target = ctx.dims_value(0), ctx.dims_value(1)
    if v is None or target is None or ctx.type(0).rank > 1 or len(target) > 1:
        return [None]
    if not target:
        return [tuple(v)]
    n = target[0]
    if len(v) == 1 and isinstance(n, int) and n >= 1:
        return [tuple(v) * n]
    return [tuple(v)] if n == 1 or n == len(v) else [None]


declare("Expand", _expand_infer, _expand_ref, ins=(2, 2), propagate=_expand_prop)


def _tile_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    reps = ctx.dims_value(1)
    if reps is None:
        return [t.with_shape(fresh_shape(ctx, t.rank, "tile"))]
    if len(reps) != t.rank:
        raise ctx.error(f"repeats has {len(reps)} entries for a rank-{t.rank} input")
    return [t.with_shape(_check_nonneg(ctx, [d * r for d, r in zip(t.shape, reps, strict=True)]))]


def _tile_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d, reps = x[0], ints_of(x[1])
    assert d is not None and reps is not None
    return [np.tile(d, reps) if d.ndim else d.copy()]


declare("Tile", _tile_infer, _tile_ref, ins=(2, 2))

_DEFAULT_FILL = np.zeros(1, np.float32)


def _cos_infer(ctx: InferContext) -> Types:
    value = ctx.attrs["value"]
    dtype = DType.from_np((value if value is not None else _DEFAULT_FILL).dtype)
    if value is not None and value.size != 1:
        raise ctx.error(f"value must hold one element, got shape {value.shape}")
    shape = ctx.dims_value(0)
    if shape is None:
        return [TensorType(dtype, fresh_shape(ctx, value_length(ctx, 0, "shape")))]
    return [TensorType(dtype, _check_nonneg(ctx, shape))]


def _cos_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    value = a["value"] if a["value"] is not None else _DEFAULT_FILL
    return [np.full(ints_of(x[0]) or [], value.reshape(-1)[0], dtype=value.dtype)]


declare("ConstantOfShape", _cos_infer, _cos_ref, {"value": Attr("tensor", None)})


def _range_len(start: Dim, limit: Dim, delta: Dim) -> Dim | None:
    if all(isinstance(v, int) for v in (start, limit, delta)):
        return max(-(-(limit - start) // delta), 0) if delta else None  # type: ignore[operator]
    if not isinstance(delta, int) or delta == 0:
        return None
    span = limit - start if delta > 0 else start - limit
    step = abs(delta)
    return (span + (step - 1)) // step  # assumes a non-empty range for symbolic bounds


def _range_infer(ctx: InferContext) -> Types:
    ts = [ctx.type(i) for i in range(3)]
    for t in ts:
        if t.rank != 0 or t.dtype != ts[0].dtype:
            raise ctx.error(f"start, limit and delta must be scalars of one dtype, got {', '.join(map(str, ts))}")
    consts = [ctx.const(i) for i in range(3)]
    if consts[2] is not None and not consts[2].all():
        raise ctx.error("delta must be non-zero")
    if all(c is not None for c in consts):
        try:
            count = _range_count(*consts)  # type: ignore[misc]
        except (ValueError, OverflowError) as e:
            raise ctx.error(f"start, limit and delta must be finite, got {[c.item() for c in consts]}") from e
        return [TensorType(ts[0].dtype, (count,))]
    n: Dim | None = None
    if ts[0].dtype.is_int:
        vals = [ctx.dims_value(i) for i in range(3)]
        if all(v is not None for v in vals):
            n = _range_len(*(v[0] for v in vals))  # type: ignore[index]
    return [TensorType(ts[0].dtype, (n if n is not None else ctx.fresh_dim("range"),))]


def _range_count(start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> int:
    """Number of elements of Range(start, limit, delta), computed without making them (ONNX's formula)."""
    if np.asarray(start).dtype.kind in "iu":
        s, l, d = int(start), int(limit), int(delta)
        return max(-(-(l - s) // d), 0)
    return max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)


def _range_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    start, limit, delta = (np.asarray(v) for v in x)  # type: ignore[arg-type]
    dtype = start.dtype
    count = _range_count(start, limit, delta)
    if dtype.kind in "iu":
        return [(int(start) + int(delta) * np.arange(count, dtype=np.int64)).astype(dtype)]
    return [(start + delta * np.arange(count, dtype=dtype)).astype(dtype)]


declare("Range", _range_infer, _range_ref, ins=(3, 3))


def _eyelike_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    if t.rank != 2:
        raise ctx.error(f"input must be 2-D, got {t}")
    return [TensorType(ctx.attrs["dtype"] or t.dtype, t.shape)]


def _eyelike_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    dtype = a["dtype"].np if a["dtype"] is not None else d.dtype
    return [np.eye(d.shape[0], d.shape[1], k=a["k"], dtype=dtype)]


declare("EyeLike", _eyelike_infer, _eyelike_ref, {"dtype": Attr("dtype", None), "k": Attr("int", 0)})


def _trilu_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    if t.rank < 2:
        raise ctx.error(f"input must have rank >= 2, got {t}")
    return [t]


def _trilu_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d = x[0]
    assert d is not None
    k = int(np.asarray(x[1]).reshape(-1)[0]) if len(x) > 1 and x[1] is not None else 0
    return [np.triu(d, k) if a["upper"] else np.tril(d, k)]


declare("Trilu", _trilu_infer, _trilu_ref, {"upper": Attr("int", 1, (0, 1))}, (1, 2))


# ---- Pad / CenterCropPad --------------------------------------------------------------------------

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad_axes(ctx: InferContext, rank: int) -> list[int] | None:
    if not ctx.has_input(3):
        return list(range(rank))
    axes = dims_const(ctx, 3)
    return None if axes is None else norm_axes(axes, rank, ctx)


def _pad_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    if ctx.attrs["mode"] not in _PAD_MODES:
        raise ctx.error(f"unknown mode {ctx.attrs['mode']!r} (known: {', '.join(_PAD_MODES)})")
    axes = _pad_axes(ctx, t.rank)
    pads = ctx.dims_value(1)
    if axes is None or pads is None:
        if axes is None:
            return [t.with_shape(fresh_shape(ctx, t.rank, "pad"))]
        return [t.with_shape(tuple(ctx.fresh_dim(f"pad{i}") if i in axes else d for i, d in enumerate(t.shape)))]
    if len(pads) != 2 * len(axes):
        raise ctx.error(f"pads has {len(pads)} entries for {len(axes)} axes (needs 2 per axis)")
    out = list(t.shape)
    for j, ax in enumerate(axes):
        out[ax] = out[ax] + pads[j] + pads[j + len(axes)]
    return [t.with_shape(_check_nonneg(ctx, out))]


def _pad_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d, pads = x[0], ints_of(x[1])
    assert d is not None and pads is not None
    cval = x[2] if len(x) > 2 and x[2] is not None and x[2].size else None
    axes = ints_of(x[3]) if len(x) > 3 else None
    axes = [ax % d.ndim for ax in axes] if axes is not None else list(range(d.ndim))
    widths = [[0, 0] for _ in range(d.ndim)]
    for j, ax in enumerate(axes):
        widths[ax] = [pads[j], pads[j + len(axes)]]
    # Negative pads crop; apply the crop first, then the (non-negative) padding.
    crop = tuple(slice(max(-b, 0), d.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(widths))
    d = d[crop]
    pos = [(max(b, 0), max(e, 0)) for b, e in widths]
    mode = _PAD_MODES[a["mode"]]
    if mode == "constant":
        fill = cval.reshape(-1)[0] if cval is not None else 0
        return [np.pad(d, pos, mode="constant", constant_values=fill).astype(d.dtype, copy=False)]
    return [np.pad(d, pos, mode=mode)]


declare("Pad", _pad_infer, _pad_ref, {"mode": Attr("str", "constant")}, (2, 4))


def _ccp_axes(ctx: InferContext | None, axes: list[int] | None, rank: int) -> list[int]:
    if axes is None:
        return list(range(rank))
    if ctx is not None:
        return norm_axes(axes, rank, ctx)
    return [ax % rank for ax in axes]


def _ccp_infer(ctx: InferContext) -> Types:
    t = ctx.type(0)
    axes = _ccp_axes(ctx, ctx.attrs["axes"], t.rank)
    shape = ctx.dims_value(1)
    if shape is None:
        return [t.with_shape(tuple(ctx.fresh_dim(f"crop{i}") if i in axes else d for i, d in enumerate(t.shape)))]
    if len(shape) != len(axes):
        raise ctx.error(f"shape has {len(shape)} entries for {len(axes)} axes")
    out = list(t.shape)
    for ax, s in zip(axes, shape, strict=True):
        out[ax] = s
    return [t.with_shape(_check_nonneg(ctx, out))]


def _ccp_ref(x: Arrays, a: dict[str, Any], n: int) -> list[np.ndarray]:
    d, shape = x[0], ints_of(x[1])
    assert d is not None and shape is not None
    axes = _ccp_axes(None, a["axes"], d.ndim)
    src = [slice(None)] * d.ndim
    dst = [slice(None)] * d.ndim
    out_shape = list(d.shape)
    for ax, s in zip(axes, shape, strict=True):
        dim = d.shape[ax]
        out_shape[ax] = s
        if dim >= s:
            lo = (dim - s) // 2
            src[ax] = slice(lo, lo + s)
        else:
            lo = (s - dim) // 2
            dst[ax] = slice(lo, lo + dim)
    out = np.zeros(out_shape, d.dtype)
    out[tuple(dst)] = d[tuple(src)]
    return [out]


declare("CenterCropPad", _ccp_infer, _ccp_ref, {"axes": Attr("ints", None)}, (2, 2))
