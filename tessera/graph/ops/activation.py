"""Operators: activation functions and the softmax family (ONNX semantics).

``Relu`` lives with the elementwise ops. References compute in float64 and round once to
the input dtype. Softmax, LogSoftmax and Hardmax use opset-13 semantics: along one axis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tessera.graph.op_helpers import elementwise_flops, norm_axis
from tessera.graph.ops.elementwise import (
    FLOAT,
    NUMERIC,
    check_choice,
    check_dtype,
    check_same_dtype,
    erf,
    float_compute,
    sigmoid,
    unary_op,
)
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Sym
from tessera.graph.tensor_type import TensorType


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _shrink(x: np.ndarray, bias: float, lambd: float) -> np.ndarray:
    xf = x.astype(np.float64)
    return np.where(xf < -lambd, xf + bias, np.where(xf > lambd, xf - bias, 0.0))


_F = {"alpha": Attr("float", 1.0)}
unary_op("LeakyRelu", lambda x, alpha: np.where(x >= 0, x, alpha * x), attrs={"alpha": Attr("float", 0.01)})
unary_op("Elu", _elu, attrs=dict(_F), flops=4)
unary_op("Selu", lambda x, alpha, gamma: gamma * _elu(x, alpha), flops=4,
         attrs={"alpha": Attr("float", 1.67326319217681884765625),
                "gamma": Attr("float", 1.05070102214813232421875)})
unary_op("Celu", lambda x, alpha: np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha)),
         attrs=dict(_F), flops=4)
unary_op("Gelu", _gelu, attrs={"approximate": Attr("str", "none")}, flops=8,
         check=lambda ctx: check_choice(ctx, "approximate", ("none", "tanh")))
unary_op("HardSigmoid", lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1), flops=3,
         attrs={"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)})
unary_op("HardSwish", lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1), flops=4)
unary_op("Softplus", _softplus, flops=4)
unary_op("Softsign", lambda x: x / (1.0 + np.abs(x)), flops=3)
unary_op("Mish", lambda x: x * np.tanh(_softplus(x)), flops=8)
unary_op("ThresholdedRelu", lambda x, alpha: np.where(x > alpha, x, 0.0), attrs=dict(_F))
unary_op("Shrink", _shrink, allowed=NUMERIC, flops=2,
         attrs={"bias": Attr("float", 0.0), "lambd": Attr("float", 0.5)})
unary_op("Swish", lambda x, alpha: x * sigmoid(alpha * x), attrs=dict(_F), flops=5)


# ---- PRelu: slope broadcasts one way, to X's shape -----------------------------------------
def _prelu_infer(ctx: InferContext) -> list[TensorType]:
    x, slope = ctx.type(0), ctx.type(1)
    check_dtype(ctx, 0, NUMERIC)
    check_same_dtype(ctx, (0, 1))
    if slope.rank > x.rank:
        raise ctx.error(f"slope {slope} does not broadcast to X {x}")
    for xd, sd in zip(x.shape[x.rank - slope.rank:], slope.shape, strict=True):
        if not (sd == 1 or sd == xd or isinstance(sd, Sym) or isinstance(xd, Sym)):
            raise ctx.error(f"slope {slope} does not broadcast to X {x}")
    return [x]


def _prelu_ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
    x, slope = inputs
    assert x is not None and slope is not None
    xf, sf = float_compute(x), float_compute(slope)
    return [np.asarray(np.where(xf >= 0, xf, xf * sf)).astype(x.dtype, copy=False)]


register(OpDef("PRelu", _prelu_infer, _prelu_ref, {}, (2, 2), (1, 1), elementwise_flops(1),
               doc="x if x >= 0 else slope * x; slope broadcasts to X."))


# ---- softmax family ------------------------------------------------------------------------
def _axis_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype(ctx, 0, FLOAT)
    norm_axis(ctx.attrs["axis"], t.rank, ctx)
    return [t]


def _softmax(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    # an all -inf row is shifted by 0 (0 / 0: NaN); a row holding +inf is NaN throughout (inf - inf),
    # as in onnxruntime, ONNX's reference implementation and PyTorch
    m = np.where(m == -np.inf, 0.0, m)
    z = x - m
    s = np.sum(np.exp(z), axis=axis, keepdims=True)
    return z - np.log(s) if log else np.exp(z) / s


def _hardmax(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    out = np.zeros(x.shape, dtype=np.float64)
    if x.size:
        np.put_along_axis(out, idx, 1.0, axis=axis)
    return out


def _declare_axis_op(name: str, fn: Any, log: bool, flops: int, doc: str) -> None:
    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axis = norm_axis(a["axis"], x.ndim)
        with np.errstate(all="ignore"):
            y = fn(float_compute(x), axis, log)
        return [np.asarray(y).astype(x.dtype, copy=False)]

    register(OpDef(name, _axis_infer, ref, {"axis": Attr("int", -1)}, (1, 1), (1, 1),
                   elementwise_flops(flops), doc=doc))


_declare_axis_op("Softmax", _softmax, False, 5, "exp(x) / sum(exp(x)) along ``axis``.")
_declare_axis_op("LogSoftmax", _softmax, True, 5, "x - log(sum(exp(x))) along ``axis``.")
_declare_axis_op("Hardmax", _hardmax, False, 1, "One-hot of the first maximum along ``axis``.")
