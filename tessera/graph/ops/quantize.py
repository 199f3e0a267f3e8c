"""Operators: linear quantization (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear) and
integer / quantized compute (ConvInteger, QLinearConv, QLinearMatMul).

Scales and zero points are per-tensor (scalar), per-axis (1-D along ``axis``) or blocked
(same rank as the input, each entry repeated ``block_size`` times along ``axis``). Only the
integer storage types Tessera has are supported (int8/uint8/int16/uint16; int32 to dequantize).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import norm_axis, numel
from tessera.graph.ops.linalg import int_matmul, matmul_shape
from tessera.graph.ops.nn import conv_nd, conv_out_shape, make_window, window_attrs
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

Arrays = list[np.ndarray | None]
QUANT_TYPES = (DType.int8, DType.uint8, DType.int16, DType.uint16)


def expand_param(p: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """Broadcast a per-tensor / per-axis / blocked scale or zero point against ``shape``."""
    if p.ndim == 0 or (p.ndim == 1 and p.size == 1 and len(shape) != 1):
        return p.reshape(())
    axis = axis % len(shape)
    if block_size > 0:
        return np.repeat(p, block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)
    if p.ndim != 1:
        raise ValueError(f"per-axis parameter must be 1-D, got shape {p.shape}")
    return p.reshape([-1 if i == axis else 1 for i in range(len(shape))])


def _check_params(ctx: InferContext, x_i: int, scale_i: int, zp_i: int) -> None:
    """Scale (and zero point, same shape) must fit the granularity given by axis/block_size."""
    x, s = ctx.type(x_i), ctx.type(scale_i)
    block = ctx.attrs.get("block_size", 0)
    if ctx.has_input(zp_i) and ctx.type(zp_i).shape != s.shape:
        raise ctx.error(f"zero point {ctx.type(zp_i).shape} and scale {s.shape} shapes differ")
    if s.rank == 0 or (s.rank == 1 and s.shape[0] == 1 and block == 0):
        return
    axis = norm_axis(ctx.attrs.get("axis", 1), x.rank, ctx)
    if block > 0:
        ok = s.rank == x.rank and all(
            (a == b) if i != axis else not isinstance(a, int) or not isinstance(b, int)
            or (a - 1) // block + 1 == b
            for i, (a, b) in enumerate(zip(x.shape, s.shape, strict=True))
        )
    else:
        ok = s.rank == 1 and (s.shape[0] == x.shape[axis] or not isinstance(x.shape[axis], int))
    if not ok:
        raise ctx.error(f"scale shape {[str(d) for d in s.shape]} fits neither per-tensor, per-axis "
                        f"(axis={axis}) nor blocked (block_size={block}) for input {[str(d) for d in x.shape]}")


def _saturate(v: np.ndarray, dt: np.dtype) -> np.ndarray:
    info = np.iinfo(dt)
    return np.clip(v, info.min, info.max).astype(dt)


def quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, out: np.dtype,
             precision: np.dtype | None = None) -> np.ndarray:
    """saturate(round_half_even(x / scale) + zp), dividing in ``precision`` (scale's dtype)."""
    prec = precision or scale.dtype
    q = np.rint(x.astype(prec) / scale.astype(prec)).astype(np.float64)
    if zp is not None:
        q = q + zp.astype(np.float64)
    return _saturate(q, out)


# ---- QuantizeLinear ------------------------------------------------------------------------


def _q_out_dtype(ctx: InferContext) -> DType:
    dt = ctx.attrs["output_dtype"]
    if ctx.has_input(2):
        zdt = ctx.type(2).dtype
        if dt is not None and dt != zdt:
            raise ctx.error(f"output_dtype {dt} differs from the zero point's {zdt}")
        dt = zdt
    dt = dt or DType.uint8
    if dt not in QUANT_TYPES:
        raise ctx.error(f"unsupported quantized type {dt} (supported: {', '.join(map(str, QUANT_TYPES))})")
    return dt


def _quant_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if not x.dtype.is_float or not ctx.type(1).dtype.is_float:
        raise ctx.error(f"x and y_scale must be float, got {x.dtype} and {ctx.type(1).dtype}")
    _check_params(ctx, 0, 1, 2)
    return [TensorType(_q_out_dtype(ctx), x.shape)]


def _quant_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    zp = inputs[2] if len(inputs) > 2 else None
    assert x is not None and scale is not None
    out = zp.dtype if zp is not None else (attrs["output_dtype"] or DType.uint8).np
    args = (x.shape, attrs["axis"], attrs["block_size"]) if x.ndim else ((), 0, 0)
    s = expand_param(scale, *args)
    z = expand_param(zp, *args) if zp is not None else None
    prec = attrs["precision"].np if attrs["precision"] is not None else None
    return [quantize(x, s, z, out, prec)]


register(OpDef(
    "QuantizeLinear", _quant_infer, _quant_ref,
    {"axis": Attr("int", 1), "block_size": Attr("int", 0), "output_dtype": Attr("dtype", None),
     "precision": Attr("dtype", None), "saturate": Attr("int", 1)},
    (2, 3), (1, 1), lambda ctx, outs: numel(outs[0].shape) * 3,
    doc="y = saturate(round(x / y_scale) + y_zero_point); output type from the zero point.",
))


# ---- DequantizeLinear ----------------------------------------------------------------------


def _dq_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if x.dtype not in (*QUANT_TYPES, DType.int32):
        raise ctx.error(f"unsupported quantized type {x.dtype}")
    if ctx.has_input(2) and ctx.type(2).dtype != x.dtype:
        raise ctx.error(f"zero point is {ctx.type(2).dtype} but x is {x.dtype}")
    _check_params(ctx, 0, 1, 2)
    out = ctx.attrs["output_dtype"] or ctx.type(1).dtype
    if not out.is_float:
        raise ctx.error(f"output type must be float, got {out}")
    return [TensorType(out, x.shape)]


def _dq_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    zp = inputs[2] if len(inputs) > 2 else None
    assert x is not None and scale is not None
    out = attrs["output_dtype"].np if attrs["output_dtype"] is not None else scale.dtype
    args = (x.shape, attrs["axis"], attrs["block_size"]) if x.ndim else ((), 0, 0)
    v = x.astype(np.int64)
    if zp is not None:
        v = v - expand_param(zp, *args).astype(np.int64)
    return [(v.astype(out) * expand_param(scale, *args).astype(out)).astype(out)]


register(OpDef(
    "DequantizeLinear", _dq_infer, _dq_ref,
    {"axis": Attr("int", 1), "block_size": Attr("int", 0), "output_dtype": Attr("dtype", None)},
    (2, 3), (1, 1), lambda ctx, outs: numel(outs[0].shape) * 2,
    doc="y = (x - x_zero_point) * x_scale.",
))


# ---- DynamicQuantizeLinear -----------------------------------------------------------------


def _dyn_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if x.dtype != DType.float32:
        raise ctx.error(f"needs a float32 input, got {x.dtype}")
    return [TensorType(DType.uint8, x.shape), TensorType(DType.float32, ()), TensorType(DType.uint8, ())]


def _dyn_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    # NaNs are left out of the range, as onnxruntime does (fmin/fmax skip them)
    lo = np.float32(min(0.0, float(np.fmin.reduce(x, axis=None)) if x.size else 0.0))
    hi = np.float32(max(0.0, float(np.fmax.reduce(x, axis=None)) if x.size else 0.0))
    lo, hi = (np.float32(0.0) if np.isnan(v) else v for v in (lo, hi))
    scale = np.float32((hi - lo) / np.float32(255))
    if scale == 0:
        return [np.zeros(x.shape, np.uint8), np.array(scale, np.float32), np.array(0, np.uint8)]
    zp = _saturate(np.rint(np.float32(0) - lo / scale), np.dtype(np.uint8))
    return [quantize(x, np.array(scale), zp, np.dtype(np.uint8)), np.array(scale, np.float32), zp]


register(OpDef("DynamicQuantizeLinear", _dyn_infer, _dyn_ref, {}, (1, 1), (3, 3),
               lambda ctx, outs: numel(ctx.type(0).shape) * 5,
               doc="uint8 quantization with scale and zero point computed from the input's range."))


# ---- ConvInteger / QLinearConv -------------------------------------------------------------


def _int8ish(ctx: InferContext, *idx: int) -> None:
    for i in idx:
        if ctx.type(i).dtype not in (DType.int8, DType.uint8):
            raise ctx.error(f"input {i} must be int8 or uint8, got {ctx.type(i).dtype}")


def _conv_int(x: np.ndarray, w: np.ndarray, xzp: np.ndarray | None, wzp: np.ndarray | None,
              attrs: dict[str, Any]) -> np.ndarray:
    xi = x.astype(np.int64) - (xzp.astype(np.int64).reshape(()) if xzp is not None else 0)
    wi = w.astype(np.int64)
    if wzp is not None:
        wi = wi - wzp.astype(np.int64).reshape(-1, *([1] * (w.ndim - 1)))
    return conv_nd(xi, wi, make_window(attrs, w.shape[2:]), attrs["group"])


def _conv_flops(w_i: int) -> Callable[[InferContext, list[TensorType]], Dim]:
    return lambda ctx, outs: 2 * numel(outs[0].shape) * numel(ctx.type(w_i).shape[1:])


def _convint_infer(ctx: InferContext) -> list[TensorType]:
    _int8ish(ctx, 0, 1)
    return [TensorType(DType.int32, conv_out_shape(ctx, ctx.type(0), ctx.type(1), None))]


def _convint_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    xzp = inputs[2] if len(inputs) > 2 else None
    wzp = inputs[3] if len(inputs) > 3 else None
    return [_conv_int(x, w, xzp, wzp, attrs).astype(np.int32)]


_CONV_ATTRS = {"group": Attr("int", 1), **window_attrs(True)}
register(OpDef("ConvInteger", _convint_infer, _convint_ref, _CONV_ATTRS, (2, 4), (1, 1), _conv_flops(1),
               doc="Integer convolution with zero points; int32 result."))


def _qconv_infer(ctx: InferContext) -> list[TensorType]:
    _int8ish(ctx, 0, 3)
    yzp = ctx.type(7).dtype
    if yzp not in (DType.int8, DType.uint8):
        raise ctx.error(f"y_zero_point must be int8 or uint8, got {yzp}")
    bias = ctx.type(8) if ctx.has_input(8) else None
    return [TensorType(yzp, conv_out_shape(ctx, ctx.type(0), ctx.type(3), bias))]


def _requantize(acc: np.ndarray, multiplier: np.ndarray, yzp: np.ndarray) -> np.ndarray:
    return _saturate(np.rint(acc * multiplier) + yzp.astype(np.float64), yzp.dtype)


def _qconv_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, xs, xzp, w, ws, wzp, ys, yzp = inputs[:8]
    b = inputs[8] if len(inputs) > 8 else None
    assert x is not None and w is not None and yzp is not None
    acc = _conv_int(x, w, xzp, wzp, attrs).astype(np.float64)
    if b is not None:
        acc = acc + b.astype(np.float64).reshape(-1, *([1] * (x.ndim - 2)))
    wsc = np.asarray(ws, np.float64).reshape(-1, *([1] * (x.ndim - 2)))
    mult = np.float64(np.asarray(xs)) * wsc / np.float64(np.asarray(ys))
    return [_requantize(acc, mult, yzp)]


register(OpDef("QLinearConv", _qconv_infer, _qconv_ref, _CONV_ATTRS, (8, 9), (1, 1), _conv_flops(3),
               doc="Quantized convolution: integer conv, int32 bias, requantize to y's type."))


# ---- QLinearMatMul -------------------------------------------------------------------------


def _qmm_infer(ctx: InferContext) -> list[TensorType]:
    _int8ish(ctx, 0, 3, 7)
    return [TensorType(ctx.type(7).dtype, matmul_shape(ctx, ctx.type(0).shape, ctx.type(3).shape))]


def _qmm_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    a, a_s, azp, b, b_s, bzp, ys, yzp = inputs[:8]
    assert a is not None and b is not None and yzp is not None
    acc = int_matmul(a, b, azp, bzp).astype(np.float64)
    sa = np.asarray(a_s, np.float64)
    sa = sa.reshape(-1, 1) if sa.ndim == 1 and sa.size > 1 else sa
    mult = sa * np.asarray(b_s, np.float64) / np.asarray(ys, np.float64)
    return [_requantize(acc, mult, yzp)]


register(OpDef("QLinearMatMul", _qmm_infer, _qmm_ref, {}, (8, 8), (1, 1),
               lambda ctx, outs: 2 * numel(outs[0].shape) * ctx.type(0).shape[-1],
               doc="Quantized matmul: integer product of zero-point-shifted operands, requantized."))

