"""Compute definitions: activation functions and the softmax family (ONNX semantics, matching
the registry references in ``tessera.graph.ops.activation``; Relu is with the elementwise ops).

Softmax, LogSoftmax and Hardmax are three-stage reductions along one axis: the maximum, then
the sum of ``exp(x - max)`` (Hardmax: the index of the first maximum), then the normalization.
"""

from __future__ import annotations

import math

from tessera.loop.compute import ComputeContext
from tessera.loop.computes.common import broadcast_load
from tessera.loop.computes.elementwise import fconst, math_compute, unary
from tessera.loop.computes.reduce import argext, axis_attr, reduce_over, stat_index
from tessera.loop.expr import Expr, call, cast, const, is_int, maximum, minimum, select
from tessera.loop.te import Tensor, compute


def softplus(x: Expr) -> Expr:
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    return maximum(x, fconst(0.0, x)) + call("log1p", call("exp", -call("abs", x)))


def elu(x: Expr, alpha: float) -> Expr:
    return select(x.gt(fconst(0.0, x)), x, fconst(alpha, x) * call("expm1", minimum(x, fconst(0.0, x))))


def clamp01(v: Expr) -> Expr:
    return minimum(maximum(v, fconst(0.0, v)), fconst(1.0, v))


def _gelu(x: Expr, approximate: str) -> Expr:
    half = fconst(0.5, x)
    if approximate == "tanh":
        inner = fconst(math.sqrt(2.0 / math.pi), x) * (x + fconst(0.044715, x) * (x * x * x))
        return half * x * (fconst(1.0, x) + call("tanh", inner))
    return half * x * (fconst(1.0, x) + call("erf", x * fconst(1.0 / math.sqrt(2.0), x)))


def _shrink(x: Expr, bias: float, lambd: float) -> Expr:
    # integers are shrunk in float64 and truncated back, like the reference
    v = cast(x, "f64") if is_int(x.dtype) else x
    lo = v.lt(fconst(-lambd, v))
    hi = v.gt(fconst(lambd, v))
    y = select(lo, v + fconst(bias, v), select(hi, v - fconst(bias, v), fconst(0.0, v)))
    return cast(y, x.dtype)


@math_compute("LeakyRelu", "elementwise")
def _leaky_relu(ctx: ComputeContext) -> list[Tensor]:
    a = ctx.attrs["alpha"]
    return unary(ctx, lambda x: select(x.ge(fconst(0.0, x)), x, fconst(a, x) * x), "leakyrelu")


@math_compute("Elu", "elementwise")
def _elu(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: elu(x, ctx.attrs["alpha"]), "elu")


@math_compute("Selu", "elementwise")
def _selu(ctx: ComputeContext) -> list[Tensor]:
    a, g = ctx.attrs["alpha"], ctx.attrs["gamma"]
    return unary(ctx, lambda x: fconst(g, x) * elu(x, a), "selu")


@math_compute("Celu", "elementwise")
def _celu(ctx: ComputeContext) -> list[Tensor]:
    a = ctx.attrs["alpha"]

    def body(x: Expr) -> Expr:
        neg = fconst(a, x) * call("expm1", x / fconst(a, x))
        return maximum(x, fconst(0.0, x)) + minimum(fconst(0.0, x), neg)

    return unary(ctx, body, "celu")


@math_compute("Gelu", "elementwise")
def _gelu_def(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: _gelu(x, ctx.attrs["approximate"]), "gelu")


@math_compute("HardSigmoid", "elementwise")
def _hard_sigmoid(ctx: ComputeContext) -> list[Tensor]:
    a, b = ctx.attrs["alpha"], ctx.attrs["beta"]
    return unary(ctx, lambda x: clamp01(fconst(a, x) * x + fconst(b, x)), "hardsigmoid")


@math_compute("HardSwish", "elementwise")
def _hard_swish(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: x * clamp01(x / fconst(6.0, x) + fconst(0.5, x)), "hardswish")


@math_compute("Softplus", "elementwise")
def _softplus(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, softplus, "softplus")


@math_compute("Softsign", "elementwise")
def _softsign(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: x / (fconst(1.0, x) + call("abs", x)), "softsign")


@math_compute("Mish", "elementwise")
def _mish(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: x * call("tanh", softplus(x)), "mish")


@math_compute("ThresholdedRelu", "elementwise")
def _thresholded_relu(ctx: ComputeContext) -> list[Tensor]:
    a = ctx.attrs["alpha"]
    return unary(ctx, lambda x: select(x.gt(fconst(a, x)), x, fconst(0.0, x)), "thresholdedrelu")


@math_compute("Shrink", "elementwise")
def _shrink_def(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: _shrink(x, ctx.attrs["bias"], ctx.attrs["lambd"]), "shrink")


@math_compute("Swish", "elementwise")
def _swish(ctx: ComputeContext) -> list[Tensor]:
    a = ctx.attrs["alpha"]
    return unary(ctx, lambda x: x * call("sigmoid", fconst(a, x) * x), "swish")


@math_compute("PRelu", "elementwise")
def _prelu(ctx: ComputeContext) -> list[Tensor]:
    x, slope = ctx.input(0), ctx.input(1)

    def body(*i: Expr) -> Expr:
        v = x[i]
        return select(v.ge(const(0, v.dtype)), v, v * broadcast_load(slope, i))

    return [compute(ctx.out_shape(), body, "prelu")]


# ---- softmax family ------------------------------------------------------------------------
def _softmax(ctx: ComputeContext, log: bool) -> list[Tensor]:
    x = ctx.input(0)
    axes = (axis_attr(ctx, x.ndim),)
    m = reduce_over(x, axes, "max", lambda f, o: x[f], "softmax_max")

    def shifted(i: tuple[Expr, ...]) -> Expr:
        mi = m[stat_index(i, axes)]  # -inf (an all -inf row) shifts by 0; +inf makes the row NaN, as the reference
        return x[i] - select(mi.eq(const(float("-inf"), mi.dtype)), const(0.0, mi.dtype), mi)

    s = reduce_over(x, axes, "sum", lambda f, o: call("exp", shifted(f)), "softmax_sum")

    def out(*i: Expr) -> Expr:
        total = s[stat_index(i, axes)]
        return shifted(i) - call("log", total) if log else call("exp", shifted(i)) / total

    return [compute(x.shape, out, "logsoftmax" if log else "softmax")]


@math_compute("Softmax", "reduction")
def _softmax_def(ctx: ComputeContext) -> list[Tensor]:
    return _softmax(ctx, log=False)


@math_compute("LogSoftmax", "reduction")
def _log_softmax_def(ctx: ComputeContext) -> list[Tensor]:
    return _softmax(ctx, log=True)


@math_compute("Hardmax", "reduction")
def _hardmax(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    axis = axis_attr(ctx, x.ndim)
    _, idx = argext(x, axis, "max", keep=False, last=False, name="hardmax_idx")

    def out(*i: Expr) -> Expr:
        hit = i[axis].eq(idx[stat_index(i, (axis,))])
        return select(hit, const(1.0, x.dtype), const(0.0, x.dtype))

    return [compute(x.shape, out, "hardmax")]
