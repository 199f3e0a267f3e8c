"""Operators: normalization (BatchNormalization, LayerNormalization, InstanceNormalization,
GroupNormalization, RMSNormalization, LpNormalization, MeanVarianceNormalization).

References compute statistics in float64 and cast results to the declared dtypes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import broadcast_shapes, norm_axis, numel, same_as_input
from tessera.graph.ops.linalg import dims_conflict
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

Arrays = list[np.ndarray | None]

# ONNX TensorProto codes accepted by stash_type (the precision statistics are kept in).
_STASH = {1: DType.float32, 10: DType.float16, 11: DType.float64, 16: DType.bfloat16}
_EPS = Attr("float", 1e-5)


def _s(shape: tuple[Dim, ...]) -> list[str]:
    return [str(d) for d in shape]


def _need_float(ctx: InferContext) -> TensorType:
    x = ctx.type(0)
    if not x.dtype.is_float:
        raise ctx.error(f"needs a float input, got {x.dtype}")
    return x


def _check_vector(ctx: InferContext, i: int, what: str, n: Dim) -> None:
    t = ctx.type(i)
    if t.rank != 1 or dims_conflict(t.shape[0], n):
        raise ctx.error(f"{what} must have shape ({n},), got {_s(t.shape)}")


def _unidirectional(ctx: InferContext, i: int, what: str, target: tuple[Dim, ...]) -> None:
    """Input ``i`` must broadcast to ``target`` without changing it."""
    t = ctx.type(i)
    try:
        out = broadcast_shapes(target, t.shape)
    except ShapeInferenceError:
        out = None
    if out is None or len(out) != len(target) or any(dims_conflict(a, b) for a, b in zip(out, target, strict=True)):
        raise ctx.error(f"{what}{_s(t.shape)} does not broadcast to {_s(target)}")


def _stash_dtype(ctx: InferContext) -> DType:
    st = ctx.attrs["stash_type"]
    if st not in _STASH:
        raise ctx.error(f"stash_type must be one of {sorted(_STASH)} (ONNX float type codes), got {st}")
    return _STASH[st]


def _norm_flops(per: int) -> Callable[[InferContext, list[TensorType]], Dim]:
    return lambda ctx, outs: numel(ctx.type(0).shape) * per


# ---- BatchNormalization --------------------------------------------------------------------


def _bn_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    if x.rank < 2:
        raise ctx.error(f"needs (N, C, ...), got {_s(x.shape)}")
    c = x.shape[1]
    for i, what in enumerate(("scale", "B", "input_mean", "input_var"), start=1):
        _check_vector(ctx, i, what, c)
    if not ctx.attrs["training_mode"] and ctx.num_outputs > 1:
        raise ctx.error("running_mean/running_var outputs exist only with training_mode=1")
    stat = TensorType(ctx.type(3).dtype, (c,))
    return [x, stat, TensorType(ctx.type(4).dtype, (c,))]


def _bn_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale, bias, mean, var = (np.asarray(v) for v in inputs[:5])
    xf = x.astype(np.float64)
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    eps = attrs["epsilon"]
    if attrs["training_mode"]:
        axes = (0, *range(2, x.ndim))
        cur_mean = xf.mean(axis=axes)
        cur_var = xf.var(axis=axes)
        mom = attrs["momentum"]
        run_mean = mean.astype(np.float64) * mom + cur_mean * (1 - mom)
        run_var = var.astype(np.float64) * mom + cur_var * (1 - mom)
        m, v = cur_mean, cur_var
    else:
        m, v = mean.astype(np.float64), var.astype(np.float64)
    y = (xf - m.reshape(bshape)) / np.sqrt(v.reshape(bshape) + eps)
    y = y * scale.astype(np.float64).reshape(bshape) + bias.astype(np.float64).reshape(bshape)
    out = [y.astype(x.dtype)]
    if attrs["training_mode"] and n_out > 1:
        out += [run_mean.astype(mean.dtype), run_var.astype(var.dtype)]
    return out


register(OpDef(
    "BatchNormalization", _bn_infer, _bn_ref,
    {"epsilon": _EPS, "momentum": Attr("float", 0.9), "training_mode": Attr("int", 0)},
    (5, 5), (1, 3), _norm_flops(4),
    doc="Per-channel (x - mean) / sqrt(var + eps) * scale + B; training_mode uses batch statistics.",
))


# ---- LayerNormalization / RMSNormalization -------------------------------------------------


def _ln_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    axis = norm_axis(ctx.attrs["axis"], x.rank, ctx)
    _unidirectional(ctx, 1, "Scale", x.shape[axis:])
    if ctx.has_input(2):
        _unidirectional(ctx, 2, "B", x.shape[axis:])
    stat = TensorType(_stash_dtype(ctx), (*x.shape[:axis], *([1] * (x.rank - axis))))
    return [x, stat, stat]


def _ln_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    assert x is not None and scale is not None
    axis = attrs["axis"] % max(x.ndim, 1)
    axes = tuple(range(axis, x.ndim))
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(((xf - mean) ** 2).mean(axis=axes, keepdims=True) + attrs["epsilon"])
    y = (xf - mean) * inv * scale.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    st = _STASH[attrs["stash_type"]].np
    return [y.astype(x.dtype), mean.astype(st), inv.astype(st)]


register(OpDef(
    "LayerNormalization", _ln_infer, _ln_ref,
    {"axis": Attr("int", -1), "epsilon": _EPS, "stash_type": Attr("int", 1)},
    (2, 3), (1, 3), _norm_flops(8),
    doc="Normalize over dims [axis, rank); optional Mean and InvStdDev outputs.",
))


def _rms_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    axis = norm_axis(ctx.attrs["axis"], x.rank, ctx)
    _unidirectional(ctx, 1, "scale", x.shape[axis:])
    _stash_dtype(ctx)
    return [x]


def _rms_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    assert x is not None and scale is not None
    axes = tuple(range(attrs["axis"] % max(x.ndim, 1), x.ndim))
    xf = x.astype(np.float64)
    rms = np.sqrt((xf * xf).mean(axis=axes, keepdims=True) + attrs["epsilon"])
    return [(xf / rms * scale.astype(np.float64)).astype(x.dtype)]


register(OpDef(
    "RMSNormalization", _rms_infer, _rms_ref,
    {"axis": Attr("int", -1), "epsilon": _EPS, "stash_type": Attr("int", 1)},
    (2, 2), (1, 1), _norm_flops(4), doc="x / sqrt(mean(x^2 over [axis, rank)) + eps) * scale.",
))


# ---- InstanceNormalization / GroupNormalization --------------------------------------------


def _inst_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    if x.rank < 3:
        raise ctx.error(f"needs (N, C, D1...), got {_s(x.shape)}")
    _check_vector(ctx, 1, "scale", x.shape[1])
    _check_vector(ctx, 2, "B", x.shape[1])
    return [x]


def _group_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, groups: int, eps: float) -> np.ndarray:
    n, c = x.shape[:2]
    xf = x.astype(np.float64).reshape(n, groups, -1)
    mean = xf.mean(axis=2, keepdims=True)
    var = xf.var(axis=2, keepdims=True)
    y = ((xf - mean) / np.sqrt(var + eps)).reshape(x.shape)
    bshape = (1, c) + (1,) * (x.ndim - 2)
    y = y * scale.astype(np.float64).reshape(bshape) + bias.astype(np.float64).reshape(bshape)
    return y.astype(x.dtype)


def _inst_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale, bias = inputs[:3]
    assert x is not None and scale is not None and bias is not None
    return [_group_norm(x, scale, bias, x.shape[1], attrs["epsilon"])]


register(OpDef("InstanceNormalization", _inst_infer, _inst_ref, {"epsilon": _EPS}, (3, 3), (1, 1),
               _norm_flops(6), doc="Normalize each (n, c) slice over spatial dims, then scale + B."))


def _gn_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    if x.rank < 2:
        raise ctx.error(f"needs (N, C, ...), got {_s(x.shape)}")
    g = ctx.attrs["num_groups"]
    c = x.shape[1]
    if g < 1 or (isinstance(c, int) and c % g):
        raise ctx.error(f"num_groups {g} must divide the {c} channels")
    _check_vector(ctx, 1, "scale", c)
    _check_vector(ctx, 2, "bias", c)
    _stash_dtype(ctx)
    return [x]


def _gn_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, scale, bias = inputs[:3]
    assert x is not None and scale is not None and bias is not None
    return [_group_norm(x, scale, bias, attrs["num_groups"], attrs["epsilon"])]


register(OpDef(
    "GroupNormalization", _gn_infer, _gn_ref,
    {"num_groups": Attr("int"), "epsilon": _EPS, "stash_type": Attr("int", 1)},
    (3, 3), (1, 1), _norm_flops(6),
    doc="Normalize over channel groups, then per-channel scale and bias (opset 21).",
))


# ---- LpNormalization / MeanVarianceNormalization -------------------------------------------


def _lpn_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    norm_axis(ctx.attrs["axis"], x.rank, ctx)
    if ctx.attrs["p"] not in (1, 2):
        raise ctx.error(f"p must be 1 or 2, got {ctx.attrs['p']}")
    return [x]


def _lpn_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    xf = x.astype(np.float64)
    axis = attrs["axis"]
    if attrs["p"] == 1:
        norm = np.abs(xf).sum(axis=axis, keepdims=True)
    else:
        norm = np.sqrt((xf * xf).sum(axis=axis, keepdims=True))
    y = np.divide(xf, norm, out=np.zeros_like(xf), where=norm != 0)
    return [y.astype(x.dtype)]


register(OpDef("LpNormalization", _lpn_infer, _lpn_ref, {"axis": Attr("int", -1), "p": Attr("int", 2, (1, 2))},
               (1, 1), (1, 1), _norm_flops(3), doc="x / ||x||_p along axis (0 where the norm is 0)."))


def _mvn_infer(ctx: InferContext) -> list[TensorType]:
    x = _need_float(ctx)
    for a in ctx.attrs["axes"]:
        norm_axis(a, x.rank, ctx)
    return same_as_input(ctx)


def _mvn_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    axes = tuple(a % x.ndim for a in attrs["axes"])
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    std = np.sqrt(np.maximum((xf * xf).mean(axis=axes, keepdims=True) - mean * mean, 0.0))
    return [((xf - mean) / (std + 1e-9)).astype(x.dtype)]


register(OpDef("MeanVarianceNormalization", _mvn_infer, _mvn_ref, {"axes": Attr("ints", [0, 2, 3])},
               (1, 1), (1, 1), _norm_flops(5), doc="(x - mean) / (std + 1e-9) over axes."))
