"""Compute definitions: linear quantization (QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear) and integer products (MatMulInteger, ConvInteger, QLinearMatMul,
QLinearConv), matching the registry references in ``tessera.graph.ops.quantize``.

Products accumulate zero-point-shifted operands in int32 (exact for 8-bit operands up to 2**16
terms per output). Requantization multiplies the accumulator by ``x_scale * w_scale / y_scale``
in float64 (as the reference), rounds half to even, adds the output zero point and saturates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.ops.nn import make_window
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.linalg import batch_index
from tessera.loop.computes.nn import conv_body, padded_input
from tessera.loop.expr import Expr, call, cast, const, maximum, minimum, select
from tessera.loop.te import Tensor, compute, reduce_axis, rmax, rmin, rsum

ACC = "i32"


def _first(p: Tensor) -> Expr:
    return p[tuple(const(0) for _ in p.shape)]


def _single(p: Tensor) -> bool:
    return int(np.prod(p.shape)) == 1


def param_load(p: Tensor | None, idx: Sequence[Expr], axis: int, block: int) -> Expr | None:
    """A scale / zero point at output index ``idx``: per-tensor (scalar or one element),
    per-axis (1-D along ``axis``) or blocked (``block`` entries along ``axis`` share one)."""
    if p is None:
        return None
    if p.ndim == 0 or (_single(p) and block == 0):
        return _first(p)
    if block > 0:
        return p[tuple(i // block if k == axis else i for k, i in enumerate(idx))]
    return p[(idx[axis],)]


def saturate(v: Expr, dtype: str) -> Expr:
    """A float value (already rounded) clamped to ``dtype``'s integer range and converted."""
    info = np.iinfo(DType(dtype).np)
    return cast(minimum(maximum(v, const(float(info.min), v.dtype)), const(float(info.max), v.dtype)), dtype)


def _opt(ctx: ComputeContext, i: int) -> Tensor | None:
    return ctx.inputs[i] if len(ctx.inputs) > i else None


@compute_def("QuantizeLinear", "elementwise")
def _quantize(ctx: ComputeContext) -> list[Tensor]:
    x, scale, zp = ctx.input(0), ctx.input(1), _opt(ctx, 2)
    axis = int(ctx.attrs["axis"]) % x.ndim if x.ndim else 0
    block = int(ctx.attrs["block_size"])
    prec = ctx.attrs["precision"].value if ctx.attrs.get("precision") is not None else scale.dtype
    prec = "f32" if prec in ("f16", "bf16") else prec  # half precision is computed in float32
    out = ctx.out_dtype()

    def body(*i: Expr) -> Expr:
        s = param_load(scale, i, axis, block)
        assert s is not None
        q = cast(call("round", cast(x[i], prec) / cast(s, prec)), "f64")
        z = param_load(zp, i, axis, block)
        return saturate(q + cast(z, "f64") if z is not None else q, out)

    return [compute(ctx.out_shape(), body, "quantize")]


@compute_def("DequantizeLinear", "elementwise")
def _dequantize(ctx: ComputeContext) -> list[Tensor]:
    x, scale, zp = ctx.input(0), ctx.input(1), _opt(ctx, 2)
    axis = int(ctx.attrs["axis"]) % x.ndim if x.ndim else 0
    block = int(ctx.attrs["block_size"])
    out = ctx.out_dtype()

    def body(*i: Expr) -> Expr:
        v = cast(x[i], "i64")
        z = param_load(zp, i, axis, block)
        s = param_load(scale, i, axis, block)
        assert s is not None
        return cast(v - cast(z, "i64") if z is not None else v, out) * cast(s, out)

    return [compute(ctx.out_shape(), body, "dequantize")]


@compute_def("DynamicQuantizeLinear", "reduction")
def _dynamic_quantize(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    f = "f32"
    zero = const(0.0, f)

    def extreme(combine: Callable[..., Expr]) -> Callable[[], Expr]:
        def body() -> Expr:
            axes = [reduce_axis(n, "r") for n in x.shape]
            v = x[tuple(a[0] for a in axes)] if axes else x[()]
            v = select(v.ne(v), zero, v)  # NaN is left out of the range (as onnxruntime); 0 is in it anyway
            return combine(v, *axes) if axes else v
        return body

    lo_t = compute((), extreme(rmin), "dq_min")
    hi_t = compute((), extreme(rmax), "dq_max")
    # the range always includes 0; scale 0 (an all-zero input) quantizes to zero point 0
    scale = compute((), lambda: (maximum(hi_t[()], zero) - minimum(lo_t[()], zero)) / const(255.0, f), "dq_scale")

    def zp_of() -> Expr:
        s = scale[()]
        z = call("round", zero - minimum(lo_t[()], zero) / s)
        return saturate(select(s.eq(zero), zero, z), "u8")

    zp = compute((), zp_of, "dq_zero_point")

    def y_of(*i: Expr) -> Expr:
        s = scale[()]
        q = cast(call("round", x[i] / s), "f64") + cast(zp[()], "f64")
        return select(s.eq(zero), const(0, "u8"), saturate(q, "u8"))

    return [compute(x.shape, y_of, "dq_y"), scale, zp]


# ---- integer products ----------------------------------------------------------------------


def _shifted(t: Tensor, idx: tuple[Expr, ...], zp: Expr | None) -> Expr:
    v = cast(t[idx], ACC)
    return v - cast(zp, ACC) if zp is not None else v


def _per(p: Tensor | None, i: Expr) -> Expr | None:
    """A per-tensor or per-``i`` (1-D) parameter."""
    if p is None:
        return None
    return _first(p) if _single(p) else p[(i,)]


def _int_matmul(a: Tensor, b: Tensor, azp: Tensor | None, bzp: Tensor | None, out: tuple[int, ...]) -> Tensor:
    """(A - a_zp) @ (B - b_zp) in int32; a_zp per-tensor or per-row of A, b_zp per-tensor or per-column."""
    if a.ndim < 2 or b.ndim < 2:
        raise NotImplementedError("integer matmul of 1-D operands")
    n_batch = len(out) - 2

    def body(*idx: Expr) -> Expr:
        k = reduce_axis(a.shape[-1], "k")
        batch, m, n = idx[:n_batch], idx[n_batch], idx[n_batch + 1]
        av = _shifted(a, (*batch_index(a.shape[:-2], batch), m, k[0]), _per(azp, m))
        bv = _shifted(b, (*batch_index(b.shape[:-2], batch), k[0], n), _per(bzp, n))
        return rsum(av * bv, k)

    return compute(out, body, "int_matmul")


def _int_conv(x: Tensor, w: Tensor, xzp: Tensor | None, wzp: Tensor | None, ctx: ComputeContext,
              out: tuple[int, ...]) -> Tensor:
    """Integer convolution of zero-point-shifted operands (x_zp per-tensor, w_zp per output channel);
    padding reads the shifted input as 0, as the reference."""
    win = make_window(ctx.attrs, w.shape[2:])
    xs = compute(x.shape, lambda *i: _shifted(x, i, None if xzp is None else _first(xzp)), "x_shift")
    xp, _ = padded_input(xs, win, const(0, ACC))
    body = conv_body(xp, win, int(ctx.attrs["group"]), w.shape,
                     lambda co, ci, taps: _shifted(w, (co, ci, *taps), _per(wzp, co)))
    return compute(out, body, "int_conv")


@compute_def("MatMulInteger", "anchor")
def _matmul_integer(ctx: ComputeContext) -> list[Tensor]:
    return [_int_matmul(ctx.input(0), ctx.input(1), _opt(ctx, 2), _opt(ctx, 3), ctx.out_shape())]


@compute_def("ConvInteger", "anchor")
def _conv_integer(ctx: ComputeContext) -> list[Tensor]:
    return [_int_conv(ctx.input(0), ctx.input(1), _opt(ctx, 2), _opt(ctx, 3), ctx, ctx.out_shape())]


def _f64(e: Expr | None) -> Expr:
    assert e is not None
    return cast(e, "f64")


@compute_def("QLinearMatMul", "anchor")
def _qlinear_matmul(ctx: ComputeContext) -> list[Tensor]:
    a, a_s, azp, b, b_s, bzp, ys, yzp = (ctx.input(i) for i in range(8))
    out = ctx.out_shape()
    acc = _int_matmul(a, b, azp, bzp, out)
    m_axis, n_axis = len(out) - 2, len(out) - 1

    def body(*i: Expr) -> Expr:
        mult = _f64(_per(a_s, i[m_axis])) * _f64(_per(b_s, i[n_axis])) / _f64(_first(ys))
        return saturate(call("round", cast(acc[i], "f64") * mult) + _f64(_first(yzp)), yzp.dtype)

    return [compute(out, body, "qlinear_matmul")]


@compute_def("QLinearConv", "anchor")
def _qlinear_conv(ctx: ComputeContext) -> list[Tensor]:
    x, xs, xzp, w, ws, wzp, ys, yzp = (ctx.input(i) for i in range(8))
    bias = _opt(ctx, 8)
    out = ctx.out_shape()
    acc = _int_conv(x, w, xzp, wzp, ctx, out)

    def body(n: Expr, co: Expr, *o: Expr) -> Expr:
        v = cast(acc[(n, co, *o)], "f64")
        if bias is not None:
            v = v + cast(bias[(co,)], "f64")
        mult = _f64(_first(xs)) * _f64(_per(ws, co)) / _f64(_first(ys))
        return saturate(call("round", v * mult) + _f64(_first(yzp)), yzp.dtype)

    return [compute(out, body, "qlinear_conv")]
