"""Compute definitions: indexing (Gather, GatherElements, GatherND, Slice, OneHot).

Index tensors may be run-time values: the definition loads them, wraps negative indices
(ONNX) and clamps into the axis so that a bad index cannot read out of bounds (the reference
raises instead). Slice bounds are compile-time constants."""

from __future__ import annotations

from tessera.errors import CompileError
from tessera.graph.ops.indexing import slice_range
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.nn import clamp
from tessera.loop.computes.shape import const_ints
from tessera.loop.expr import Expr, cast, const, select
from tessera.loop.te import Tensor, compute


def wrap_index(v: Expr, n: int) -> Expr:
    """An index value read from a tensor, as an in-bounds i64 index into an axis of length ``n``."""
    v = cast(v, "i64")
    return clamp(select(v.lt(0), v + n, v), 0, n - 1)


@compute_def("Gather", "injective")
def _gather(ctx: ComputeContext) -> list[Tensor]:
    data, ind = ctx.input(0), ctx.input(1)
    axis = int(ctx.attrs["axis"]) % data.ndim
    q = ind.ndim

    def body(*o: Expr) -> Expr:
        k = wrap_index(ind[o[axis:axis + q]], data.shape[axis])
        return data[(*o[:axis], k, *o[axis + q:])]

    return [compute(ctx.out_shape(), body, "gather")]


@compute_def("GatherElements", "injective")
def _gather_elements(ctx: ComputeContext) -> list[Tensor]:
    data, ind = ctx.input(0), ctx.input(1)
    axis = int(ctx.attrs["axis"]) % data.ndim

    def body(*o: Expr) -> Expr:
        k = wrap_index(ind[o], data.shape[axis])
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
        picked = [wrap_index(ind[(*pos, const(j))], data.shape[b + j]) for j in range(m)]
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
