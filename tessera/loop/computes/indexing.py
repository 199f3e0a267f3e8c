"""Compute definitions: indexing (Gather, GatherElements, GatherND, Slice, OneHot, ScatterElements,
ScatterND, TopK).

Index tensors may be run-time values: the definition loads them, wraps negative indices
(ONNX) and clamps into the axis so that a bad index cannot read out of bounds; the index is
also checked at run time (:mod:`tessera.loop.computes.index_check`): an index outside
``[-n, n-1]`` fails the run with an error naming the node, as the reference raises. OneHot
maps such an index to all-off, as ONNX says. Slice bounds are compile-time constants."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tessera.errors import CompileError
from tessera.graph.ops.indexing import slice_range
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.index_check import index_check
from tessera.loop.computes.nn import clamp, pad_value
from tessera.loop.computes.shape import const_ints
from tessera.loop.expr import BOOL, Expr, Var, binop, cast, const, is_int, logical_and, maximum, minimum, select
from tessera.loop.te import Tensor, compute, reduce, reduce_axis


def wrap_index(v: Expr, n: int, ctx: ComputeContext, op: str, axis: int) -> Expr:
    """An index value read from a tensor, as an in-bounds i64 index into ``axis`` (of length
    ``n``) of ``ctx``'s node (an ``op``); a value outside ``[-n, n-1]`` is reported at run time."""
    v = cast(v, "i64")
    # no node name here: it would enter the workload key (tuning records are shared across models);
    # the compiler names the kernel's node when the run fails (tsr_note_where)
    what = f"an index is out of range for axis {axis} of size {n}"
    return clamp(index_check(select(v.lt(0), v + n, v), n, what), 0, n - 1)


@compute_def("Gather", "injective")
def _gather(ctx: ComputeContext) -> list[Tensor]:
    data, ind = ctx.input(0), ctx.input(1)
    axis = int(ctx.attrs["axis"]) % data.ndim
    q = ind.ndim

    def body(*o: Expr) -> Expr:
        k = wrap_index(ind[o[axis:axis + q]], data.shape[axis], ctx, "Gather", axis)
        return data[(*o[:axis], k, *o[axis + q:])]

    return [compute(ctx.out_shape(), body, "gather")]


@compute_def("GatherElements", "injective")
def _gather_elements(ctx: ComputeContext) -> list[Tensor]:
    data, ind = ctx.input(0), ctx.input(1)
    axis = int(ctx.attrs["axis"]) % data.ndim

    def body(*o: Expr) -> Expr:
        k = wrap_index(ind[o], data.shape[axis], ctx, "GatherElements", axis)
        return data[(*o[:axis], k, *o[axis + 1:])]

    return [compute(ctx.out_shape(), body, "gather_elements")]


@compute_def("GatherND", "injective")
def _gather_nd(ctx: ComputeContext) -> list[Tensor]:
    data, ind = ctx.input(0), ctx.input(1)
    b = int(ctx.attrs["batch_dims"])
    m = ind.shape[-1]
    q = ind.ndim - 1  # output = ind.shape[:-1] + data.shape[b + m:]

    def body(*o: Expr) -> Expr:
        pos = o[:q]
        picked = [wrap_index(ind[(*pos, const(j))], data.shape[b + j], ctx, "GatherND", b + j) for j in range(m)]
        return data[(*o[:b], *picked, *o[q:])]

    return [compute(ctx.out_shape(), body, "gather_nd")]


@compute_def("Slice", "injective", const_inputs=(1, 2, 3, 4))
def _slice(ctx: ComputeContext) -> list[Tensor]:
    data = ctx.input(0)
    starts = const_ints(ctx, 1, "Slice", "starts")
    ends = const_ints(ctx, 2, "Slice", "ends")
    if starts is None or ends is None:
        raise CompileError("Slice: starts and ends are required")
    axes = const_ints(ctx, 3, "Slice", "axes") or list(range(len(starts)))
    steps = const_ints(ctx, 4, "Slice", "steps") or [1] * len(starts)
    first = [0] * data.ndim
    step = [1] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        ax %= data.ndim
        first[ax], _, _ = slice_range(s, e, st, data.shape[ax])
        step[ax] = st

    def body(*o: Expr) -> Expr:
        return data[tuple(i * st + f for i, st, f in zip(o, step, first, strict=True))]

    return [compute(ctx.out_shape(), body, "slice")]


@compute_def("OneHot", "injective", const_inputs=(1,))
def _one_hot(ctx: ComputeContext) -> list[Tensor]:
    ind, values = ctx.input(0), ctx.input(2)
    out = ctx.out_shape()
    axis = int(ctx.attrs["axis"]) % len(out)
    depth = out[axis]

    def body(*o: Expr) -> Expr:
        v = cast(ind[(*o[:axis], *o[axis + 1:])], "i64")
        v = select(v.lt(0), v + depth, v)
        return select(v.eq(o[axis]), values[const(1)], values[const(0)])

    return [compute(out, body, "one_hot")]


# ---- scatters ------------------------------------------------------------------------------------
# An output element is its data element combined with every update that lands on it: a reduction
# over the update positions that could hit it, guarded by "the index equals my position". With
# reduction "none" the last such update (in index order, as the reference) wins: a max-reduction
# finds its position. Cost: O(outputs x candidate updates); no write conflicts to order.

_COMBINERS = {"add": ("sum", 0.0), "mul": ("prod", 1.0), "max": ("max", -np.inf), "min": ("min", np.inf)}
Candidates = Callable[[tuple[Expr, ...]], tuple[Expr, Expr, list[tuple[Var, int]]]]


def _scatter_reduced(data: Tensor, reduction: str, candidates: Candidates) -> Tensor:
    """Each data element combined with the reduction of the updates that hit it;
    ``candidates(o)`` gives (hit, update value, reduction axes) for output index ``o``."""
    combiner, identity = _COMBINERS[reduction]
    ident = pad_value(data.dtype, identity) if combiner in ("max", "min") else const(identity, data.dtype)

    def gathered(*o: Expr) -> Expr:
        hit, v, axes = candidates(o)
        return reduce(combiner, select(hit, v, ident), *axes)

    r = compute(data.shape, gathered, "scatter_updates")
    fn = {"sum": lambda a, b: a + b, "prod": lambda a, b: a * b, "max": maximum, "min": minimum}[combiner]
    if combiner != "sum" or is_int(data.dtype) or data.dtype == BOOL:
        return compute(data.shape, lambda *o: fn(data[o], r[o]), "scatter")

    # a sum starts from +0: an element no update hits keeps its own value (-0 included)
    def any_hit(*o: Expr) -> Expr:
        hit, _, axes = candidates(o)
        return reduce("max", select(hit, const(1, "i64"), const(0, "i64")), *axes)

    touched = compute(data.shape, any_hit, "scatter_touched")
    return compute(data.shape, lambda *o: select(touched[o].gt(0), data[o] + r[o], data[o]), "scatter")


def _scatter_last(data: Tensor, extents: list[int], hit_at: Callable[[tuple[Expr, ...], tuple[Expr, ...]], Expr],
                  upd_at: Callable[[tuple[Expr, ...], tuple[Expr, ...]], Expr]) -> Tensor:
    """Reduction "none": the last candidate ``u`` (over ``extents``, C order) that hits each
    output element, or -1; then that update, or the data element."""
    strides = [int(np.prod(extents[k + 1:])) for k in range(len(extents))]

    def last(*o: Expr) -> Expr:
        axes = [reduce_axis(n, "u") for n in extents]
        u = tuple(a[0] for a in axes)
        lin: Expr = const(0)
        for x, s in zip(u, strides, strict=True):
            lin = lin + x * s
        return reduce("max", select(hit_at(o, u), cast(lin, "i64"), const(-1, "i64")), *axes)

    found = compute(data.shape, last, "scatter_last")

    def body(*o: Expr) -> Expr:
        f = found[o]
        u = tuple(clamp(f // s % n if k else f // s, 0, n - 1)
                  for k, (s, n) in enumerate(zip(strides, extents, strict=True)))
        return select(f.ge(0), upd_at(o, u), data[o])

    return compute(data.shape, body, "scatter")


@compute_def("ScatterElements", "reduction")
def _scatter_elements(ctx: ComputeContext) -> list[Tensor]:
    data, ind, upd = ctx.input(0), ctx.input(1), ctx.input(2)
    axis = int(ctx.attrs["axis"]) % data.ndim
    reduction = ctx.attrs["reduction"]

    def at(o: tuple[Expr, ...], u: tuple[Expr, ...]) -> tuple[Expr, ...]:
        # the update whose non-axis coordinates are the output's (clamped; ``hit`` guards the range)
        return tuple(u[0] if d == axis else clamp(o[d], 0, ind.shape[d] - 1) for d in range(data.ndim))

    def hit(o: tuple[Expr, ...], u: tuple[Expr, ...]) -> Expr:
        inside = [o[d].lt(ind.shape[d]) for d in range(data.ndim) if d != axis and ind.shape[d] < data.shape[d]]
        k = wrap_index(ind[at(o, u)], data.shape[axis], ctx, "ScatterElements", axis)
        return logical_and(*inside, k.eq(o[axis]))

    if reduction == "none":
        return [_scatter_last(data, [ind.shape[axis]], hit, lambda o, u: upd[at(o, u)])]

    def candidates(o: tuple[Expr, ...]) -> tuple[Expr, Expr, list[tuple[Var, int]]]:
        r = reduce_axis(ind.shape[axis], "u")
        return hit(o, (r[0],)), upd[at(o, (r[0],))], [r]

    return [_scatter_reduced(data, reduction, candidates)]


@compute_def("ScatterND", "reduction")
def _scatter_nd(ctx: ComputeContext) -> list[Tensor]:
    data, ind, upd = ctx.input(0), ctx.input(1), ctx.input(2)
    m = ind.shape[-1]
    rows = list(ind.shape[:-1])
    reduction = ctx.attrs["reduction"]

    def hit(o: tuple[Expr, ...], u: tuple[Expr, ...]) -> Expr:
        ks = [wrap_index(ind[(*u, const(j))], data.shape[j], ctx, "ScatterND", j) for j in range(m)]
        return logical_and(*(k.eq(o[j]) for j, k in enumerate(ks)))

    def upd_at(o: tuple[Expr, ...], u: tuple[Expr, ...]) -> Expr:
        return upd[(*u, *o[m:])]

    if reduction == "none":
        return [_scatter_last(data, rows, hit, upd_at)]

    def candidates(o: tuple[Expr, ...]) -> tuple[Expr, Expr, list[tuple[Var, int]]]:
        axes = [reduce_axis(n, "u") for n in rows]
        u = tuple(a[0] for a in axes)
        return hit(o, u), upd_at(o, u), axes

    return [_scatter_reduced(data, reduction, candidates)]


# ---- TopK ----------------------------------------------------------------------------------------


@compute_def("TopK", "reduction", const_inputs=(1,))
def _top_k(ctx: ComputeContext) -> list[Tensor]:
    """The k largest (smallest) elements along the axis, ties by lower index: each element's rank
    is how many elements precede it in that order (a count over the axis); output ``r`` is the
    element of rank ``r``. O(n^2) per row: meant for the small k-selections of models.

    NaN is ordered above every number (ONNX, onnxruntime and NumPy's sort): first with
    ``largest``, last otherwise, NaNs among themselves by index. The order is total, so the
    ranks of a row are a permutation of 0..n-1. float32 values are compared as float64 keys in
    which NaN is +inf and +inf a finite value above float32's range: plain compares, which
    vectorize (a compound NaN test in the n^2 loop made TopK 10x slower)."""
    x = ctx.input(0)
    axis = int(ctx.attrs["axis"]) % x.ndim
    n = x.shape[axis]
    largest = bool(ctx.attrs["largest"])
    src = x
    if x.dtype == "f32":
        def key_of(*i: Expr) -> Expr:
            v = x[i]
            wide = select(v.eq(const(float("inf"), "f32")), const(1e300, "f64"), cast(v, "f64"))
            one = reduce_axis(1, "once")  # a one-tap reduction: a stage of its own, not inlined into the n^2 loop
            return reduce("max", select(v.ne(v), const(float("inf"), "f64"), wide), one)

        src = compute(x.shape, key_of, "topk_key")
    compound = not is_int(x.dtype) and x.dtype not in (BOOL, "f32")  # f64 (and half) values

    def rank(*i: Expr) -> Expr:
        j = reduce_axis(n, "j")
        other = src[(*i[:axis], j[0], *i[axis + 1:])]
        mine = src[i]
        better = other.gt(mine) if largest else other.lt(mine)
        same = other.eq(mine)
        if compound:  # x != x is isnan(x), x == x is not
            o_nan, m_nan = other.ne(other), mine.ne(mine)
            if largest:  # a NaN precedes a number
                better = binop("or", better, logical_and(o_nan, mine.eq(mine)))
            else:  # a number precedes a NaN
                better = binop("or", better, logical_and(m_nan, other.eq(other)))
            same = binop("or", same, logical_and(o_nan, m_nan))
        before = binop("or", better, logical_and(same, j[0].lt(i[axis])))
        return reduce("sum", select(before, const(1, "i64"), const(0, "i64")), j)

    ranks = compute(x.shape, rank, "topk_rank")

    def index(*o: Expr) -> Expr:
        i = reduce_axis(n, "i")
        at = (*o[:axis], i[0], *o[axis + 1:])
        return reduce("sum", select(ranks[at].eq(o[axis]), cast(i[0], "i64"), const(0, "i64")), i)

    order = compute(ctx.out_shape(), index, "topk_index")
    values = compute(ctx.out_shape(), lambda *o: x[(*o[:axis], clamp(order[o], 0, n - 1), *o[axis + 1:])], "topk")
    return [values, order]
