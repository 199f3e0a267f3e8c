"""Compute definitions: windowed and global pooling (MaxPool, AveragePool, LpPool, Global*Pool)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tessera.graph.ops.nn import Window, make_window
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.nn import pad_value, padded_input, window_taps
from tessera.loop.expr import Expr, binop, call, cast, const, logical_and, maximum, minimum, select
from tessera.loop.te import Tensor, compute, reduce_axis, rmax, rmin, rsum

ElemFn = Callable[[Expr], Expr]


def _window(ctx: ComputeContext) -> Window:
    return make_window(ctx.attrs, ctx.attrs["kernel_shape"], bool(ctx.attrs["ceil_mode"]))


def _window_reduce(x: Tensor, win: Window, combiner: str, fill: float, shape: Sequence[int], name: str,
                   elem: ElemFn | None = None) -> Tensor:
    """``combiner`` over each window of ``elem(x)`` (x itself by default), padding with ``fill``."""
    xp, _ = padded_input(x, win, pad_value(x.dtype, fill))
    red = rmax if combiner == "max" else rsum

    def body(n: Expr, c: Expr, *o: Expr) -> Expr:
        taps, pos = window_taps(win, o)
        v = xp[(n, c, *pos)]
        return red(elem(v) if elem is not None else v, *taps)

    return compute(shape, body, name)


@compute_def("MaxPool", "reduction")
def _maxpool(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    win = _window(ctx)
    best = _window_reduce(x, win, "max", float("-inf"), ctx.out_shape(), "maxpool")
    if len(ctx.out_types) < 2 or ctx.out_types[1] is None:
        return [best]
    return [best, _maxpool_indices(x, win, best, int(ctx.attrs["storage_order"]))]


def _maxpool_indices(x: Tensor, win: Window, best: Tensor, storage_order: int) -> Tensor:
    """MaxPool's Indices: the flat (unpadded; row-major, or column-major with ``storage_order``)
    position of the first tap, in kernel order, that holds the window's maximum."""
    xp, geo = padded_input(x, win, pad_value(x.dtype, float("-inf")))
    spatial = [int(d) for d in x.shape[2:]]
    order = range(len(spatial)) if storage_order == 0 else reversed(range(len(spatial)))
    strides = [0] * len(spatial)
    step = 1
    for i in reversed(list(order)):
        strides[i] = step
        step *= spatial[i]
    kernel = [int(k) for k in win.kernel]
    tap_strides = [int(np.prod(kernel[i + 1:])) for i in range(len(kernel))]
    n_taps = int(np.prod(kernel))

    def first_tap(n: Expr, c: Expr, *o: Expr) -> Expr:
        taps, pos = window_taps(win, o)
        lin: Expr = const(0)
        for t, ts in zip(taps, tap_strides, strict=True):
            lin = lin + t[0] * ts
        v, m = xp[(n, c, *pos)], best[(n, c, *o)]
        hit = binop("or", v.eq(m), v.ne(v))  # v is NaN only when the maximum is: the first NaN
        for i, (p, (pb, _, _), size) in enumerate(zip(pos, geo, spatial, strict=True)):
            # a padded tap (-inf) is never the index, even where every real tap is -inf
            if pb:
                hit = logical_and(hit, p.ge(pb))
            if pb + size < int(xp.shape[2 + i]):
                hit = logical_and(hit, p.lt(pb + size))
        return rmin(select(hit, cast(lin, "i64"), const(n_taps, "i64")), *taps)

    first = compute(best.shape, first_tap, "maxpool_first_tap")

    def index(n: Expr, c: Expr, *o: Expr) -> Expr:
        t = minimum(first[(n, c, *o)], const(n_taps - 1, "i64"))
        flat = (n * x.shape[1] + c) * step
        for i, (oi, (pb, _, _)) in enumerate(zip(o, geo, strict=True)):
            k = t // tap_strides[i] % kernel[i]
            flat = flat + (oi * win.strides[i] + k * win.dilations[i] - pb) * strides[i]
        return cast(flat, "i64")

    return compute(best.shape, index, "maxpool_indices")


def _tap_count(win: Window, i: int, lo: int, hi: int, out: int, o: Expr) -> Expr:
    """How many taps of the window at output ``o`` (axis ``i``) fall in padded positions [lo, hi)."""
    k, s, d = int(win.kernel[i]), win.strides[i], win.dilations[i]
    table = [sum(1 for t in range(k) if lo <= p * s + t * d < hi) for p in range(out)]
    if len(set(table)) == 1:
        return const(table[0])
    start = o * s
    k_lo = (maximum(const(lo) - start, 0) + (d - 1)) // d
    k_hi = minimum((maximum(const(hi) - start, 0) + (d - 1)) // d, k)
    return maximum(k_hi - k_lo, 0)


@compute_def("AveragePool", "reduction")
def _avgpool(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    win = _window(ctx)
    out = ctx.out_shape()
    total = _window_reduce(x, win, "sum", 0.0, out, "avgpool_sum")
    include_pad = bool(ctx.attrs["count_include_pad"])
    bounds = []
    for i, size in enumerate(x.shape[2:]):
        pb, pe, _ = win.resolve(int(size), i)
        # Pads count with count_include_pad; the extra end padding of ceil_mode never does.
        bounds.append((0, pb + size + pe) if include_pad else (pb, pb + size))

    def body(n: Expr, c: Expr, *o: Expr) -> Expr:
        count: Expr = const(1)
        for i, (oi, (lo, hi)) in enumerate(zip(o, bounds, strict=True)):
            count = count * _tap_count(win, i, lo, hi, out[2 + i], oi)
        return total[(n, c, *o)] / cast(maximum(count, 1), x.dtype)

    return [compute(out, body, "avgpool")]


def _lp_power(p: int, dtype: str) -> ElemFn:
    if p == 2:
        return lambda v: v * v
    if p == 1:
        return lambda v: call("abs", v)
    return lambda v: call("pow", call("abs", v), const(float(p), dtype))


def _lp_root(v: Expr, p: int) -> Expr:
    if p == 2:
        return call("sqrt", v)
    if p == 1:
        return v
    return call("pow", v, const(1.0 / p, v.dtype))


@compute_def("LpPool", "reduction")
def _lppool(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    p = int(ctx.attrs["p"])
    total = _window_reduce(x, _window(ctx), "sum", 0.0, ctx.out_shape(), "lppool_sum", _lp_power(p, x.dtype))
    return [compute(total.shape, lambda *i: _lp_root(total[i], p), "lppool")]


def _global_reduce(x: Tensor, combiner: str, name: str, elem: ElemFn | None = None) -> Tensor:
    spatial = x.shape[2:]
    red = rmax if combiner == "max" else rsum

    def body(n: Expr, c: Expr, *_: Expr) -> Expr:
        axes = [reduce_axis(d, "s") for d in spatial]
        v = x[(n, c, *(a[0] for a in axes))]
        return red(elem(v) if elem is not None else v, *axes)

    return compute((*x.shape[:2], *([1] * len(spatial))), body, name)


@compute_def("GlobalAveragePool", "reduction")
def _global_avgpool(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    total = _global_reduce(x, "sum", "gap_sum")
    count = 1
    for d in x.shape[2:]:
        count *= d
    return [compute(total.shape, lambda *i: total[i] / const(float(count), x.dtype), "global_avgpool")]


@compute_def("GlobalMaxPool", "reduction")
def _global_maxpool(ctx: ComputeContext) -> list[Tensor]:
    return [_global_reduce(ctx.input(0), "max", "global_maxpool")]


@compute_def("GlobalLpPool", "reduction")
def _global_lppool(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    p = int(ctx.attrs["p"])
    total = _global_reduce(x, "sum", "glp_sum", _lp_power(p, x.dtype))
    return [compute(total.shape, lambda *i: _lp_root(total[i], p), "global_lppool")]
