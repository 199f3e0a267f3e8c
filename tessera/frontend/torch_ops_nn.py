"""ATen -> Tessera mapping, continued: reductions, linear algebra and neural-network layers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tessera.errors import GraphError
from tessera.frontend.torch_builder import Builder
from tessera.frontend.torch_ops import CONVERTERS, Converter, arg, norm_dim, out_dtype, rank_of, register, target_key
from tessera.graph.dtypes import DType


# ---- reductions -----------------------------------------------------------------------------
def _reduce_axes(node: Any, dims: Any) -> list[int] | None:
    r = node.args[0].meta["val"].dim()
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted({norm_dim(d, r) for d in dims})


_REDUCE_ALL = {"aten.mean.default", "aten.sum.default", "aten.max.default", "aten.min.default",
               "aten.prod.default"}


def _reduce(op: str) -> Converter:
    def conv(b: Builder, node: Any) -> Any:
        dt = out_dtype(node)
        key = target_key(node.target)
        if key in _REDUCE_ALL:
            axes, keep = None, 0
        else:
            axes = _reduce_axes(node, arg(node, 1, "dim", None))
            keep = int(bool(arg(node, 2, "keepdim", False)))
        x = b.tensor(node.args[0], dt)
        ins = [x] if axes is None else [x, b.i64(axes)]
        return b.emit(op, ins, {"keepdims": keep})[0]

    return conv


CONVERTERS.update({
    "aten.mean.dim": _reduce("ReduceMean"),
    "aten.mean.default": _reduce("ReduceMean"),
    "aten.sum.dim_IntList": _reduce("ReduceSum"),
    "aten.sum.default": _reduce("ReduceSum"),
    "aten.amax.default": _reduce("ReduceMax"),
    "aten.amin.default": _reduce("ReduceMin"),
    "aten.max.default": _reduce("ReduceMax"),
    "aten.min.default": _reduce("ReduceMin"),
    "aten.prod.dim_int": _reduce("ReduceProd"),
    "aten.prod.default": _reduce("ReduceProd"),
})


@register("aten.max.dim", "aten.min.dim")
def _max_dim(b: Builder, node: Any) -> Any:
    is_max = "max" in target_key(node.target)
    x = b.tensor(node.args[0])
    dim = norm_dim(node.args[1], node.args[0].meta["val"].dim())
    keep = int(bool(arg(node, 2, "keepdim", False)))
    vals = b.emit("ReduceMax" if is_max else "ReduceMin", [x, b.i64([dim])], {"keepdims": keep})[0]
    idx = b.op("ArgMax" if is_max else "ArgMin", x, axis=dim, keepdims=keep)
    return [vals, idx]


@register("aten.argmax.default", "aten.argmin.default")
def _argmax(b: Builder, node: Any) -> Any:
    op = "ArgMax" if "argmax" in target_key(node.target) else "ArgMin"
    x = b.tensor(node.args[0])
    dim = arg(node, 1, "dim", None)
    keep = int(bool(arg(node, 2, "keepdim", False)))
    if dim is None:
        out = b.op(op, b.op("Reshape", x, b.i64([-1])), axis=0, keepdims=0)
        if keep:
            out = b.op("Reshape", out, b.i64([1] * node.args[0].meta["val"].dim()))
        return out
    return b.op(op, x, axis=norm_dim(dim, node.args[0].meta["val"].dim()), keepdims=keep)


@register("aten.var.correction", "aten.var.dim")
def _var(b: Builder, node: Any) -> Any:
    src = node.args[0]
    x = b.tensor(src, out_dtype(node))
    dt = b.dtype(x)
    axes = _reduce_axes(node, arg(node, 1, "dim", None)) or list(range(src.meta["val"].dim()))
    if target_key(node.target) == "aten.var.dim":
        correction = 1 if arg(node, 2, "unbiased", True) else 0
        keep = int(bool(arg(node, 3, "keepdim", False)))
    else:
        correction = node.kwargs.get("correction", 1)
        correction = 1 if correction is None else correction
        keep = int(bool(node.kwargs.get("keepdim", arg(node, 3, "keepdim", False))))
    shape = src.meta["val"].shape
    if not all(isinstance(shape[a], int) for a in axes):
        raise GraphError("aten.var over symbolic dims is not supported")
    n = math.prod(int(shape[a]) for a in axes)
    mean = b.emit("ReduceMean", [x, b.i64(axes)], {"keepdims": 1})[0]
    d = b.op("Sub", x, mean)
    ss = b.emit("ReduceSum", [b.op("Mul", d, d), b.i64(axes)], {"keepdims": keep})[0]
    return b.op("Div", ss, b.scalar(max(n - correction, 0), dt))


@register("aten.linalg_vector_norm.default")
def _vector_norm(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    x = b.tensor(node.args[0], dt)
    ord_ = float(arg(node, 1, "ord", 2))
    axes = _reduce_axes(node, arg(node, 2, "dim", None))
    keep = int(bool(arg(node, 3, "keepdim", False)))
    axes_in = [] if axes is None else [b.i64(axes)]

    def red(op: str, v: str) -> str:
        return b.emit(op, [v, *axes_in], {"keepdims": keep})[0]

    if ord_ == 2:
        return red("ReduceL2", x)
    if ord_ == 1:
        return red("ReduceL1", x)
    if math.isinf(ord_):
        return red("ReduceMax" if ord_ > 0 else "ReduceMin", b.op("Abs", x))
    if ord_ == 0:
        return red("ReduceSum", b.cast(b.op("Not", b.op("Equal", x, b.scalar(0, dt))), dt))
    s = red("ReduceSum", b.op("Pow", b.op("Abs", x), b.scalar(ord_, dt)))
    return b.op("Pow", s, b.scalar(1.0 / ord_, dt))


@register("aten._softmax.default", "aten.softmax.int", "aten._log_softmax.default", "aten.log_softmax.int")
def _softmax(b: Builder, node: Any) -> Any:
    op = "LogSoftmax" if "log_softmax" in target_key(node.target) else "Softmax"
    return b.op(op, b.tensor(node.args[0], out_dtype(node)), axis=norm_dim(node.args[1], rank_of(node)))


# ---- linear algebra and neural-network layers --------------------------------------------------
@register("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _matmul(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    return b.op("MatMul", b.tensor(node.args[0], dt), b.tensor(node.args[1], dt))


@register("aten.addmm.default")
def _addmm(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    bias, m1, m2 = (b.tensor(a, dt) for a in node.args[:3])
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    return b.op("Gemm", m1, m2, bias, alpha=float(alpha), beta=float(beta))


@register("aten.baddbmm.default")
def _baddbmm(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    bias, b1, b2 = (b.tensor(a, dt) for a in node.args[:3])
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    prod = b.op("MatMul", b1, b2)
    if alpha != 1:
        prod = b.op("Mul", prod, b.scalar(alpha, dt))
    if beta == 0:
        return prod
    if beta != 1:
        bias = b.op("Mul", bias, b.scalar(beta, dt))
    return b.op("Add", bias, prod)


@register("aten.linear.default")
def _linear(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    x, w = b.tensor(node.args[0], dt), b.tensor(node.args[1], dt)
    y = b.op("MatMul", x, b.op("Transpose", w, perm=[1, 0]))
    bias = arg(node, 2, "bias", None)
    return b.op("Add", y, b.tensor(bias, dt)) if bias is not None else y


def _pairs(v: Any, n: int) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return [int(x) for x in (v * n if len(v) == 1 else v)]


@register("aten.convolution.default")
def _convolution(b: Builder, node: Any) -> Any:
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = node.args[:9]
    n = w.meta["val"].dim() - 2
    ins = [b.tensor(x), b.tensor(w)] + ([b.tensor(bias)] if bias is not None else [])
    pads = _pairs(padding, n)
    attrs: dict[str, Any] = {"strides": _pairs(stride, n), "pads": pads + pads,
                             "dilations": _pairs(dilation, n), "group": int(groups),
                             "kernel_shape": [int(k) for k in w.meta["val"].shape[2:]]}
    if transposed:
        attrs["output_padding"] = _pairs(output_padding, n)
        return b.op("ConvTranspose", *ins, **attrs)
    return b.op("Conv", *ins, **attrs)


def _channel_params(b: Builder, node: Any, weight: Any, bias: Any, channels: int, dt: DType) -> tuple[str, str]:
    w = b.tensor(weight, dt) if weight is not None else b.const(np.ones(channels, dt.np), "ones")
    c = b.tensor(bias, dt) if bias is not None else b.const(np.zeros(channels, dt.np), "zeros")
    return w, c


@register("aten._native_batch_norm_legit_no_training.default", "aten.native_batch_norm.default",
      "aten._native_batch_norm_legit.default")
def _batch_norm(b: Builder, node: Any) -> Any:
    key = target_key(node.target)
    x, weight, bias, mean, var = node.args[:5]
    if key == "aten._native_batch_norm_legit_no_training.default":
        eps = arg(node, 6, "eps", 1e-5)
    else:
        if arg(node, 5, "training", False):
            raise GraphError(f"{key} in training mode is not supported (export the module in eval mode)")
        eps = arg(node, 7, "eps", 1e-5)
    dt = out_dtype(node)
    channels = int(x.meta["val"].shape[1])
    w, c = _channel_params(b, node, weight, bias, channels, dt)
    y = b.op("BatchNormalization", b.tensor(x), w, c, b.tensor(mean, dt), b.tensor(var, dt), epsilon=float(eps))
    return [y, None, None]


@register("aten._native_batch_norm_legit_functional.default")
def _batch_norm_training(b: Builder, node: Any) -> Any:
    """Training-mode batch norm (AOTAutograd's forward graphs): batch statistics, and the updated
    running statistics as extra outputs (the unbiased variance goes into the running variance)."""
    x, weight, bias, rmean, rvar, training, momentum, eps = node.args[:8]
    if not training or not isinstance(momentum, int | float):
        raise GraphError("_native_batch_norm_legit_functional: only training mode with a constant momentum "
                         "is supported")
    val = x.meta["val"]
    r, channels = val.dim(), int(val.shape[1])
    dt = out_dtype(node)
    count = int(val.numel()) // max(channels, 1)
    if count < 2:
        raise GraphError(f"batch norm in training mode needs more than one value per channel, got {count}")
    axes = b.i64([0, *range(2, r)])
    xt = b.tensor(x)
    mean_k = b.emit("ReduceMean", [xt, axes], {"keepdims": 1})[0]
    centered = b.op("Sub", xt, mean_k)
    var_k = b.emit("ReduceMean", [b.op("Mul", centered, centered), axes], {"keepdims": 1})[0]
    invstd_k = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var_k, b.const(np.array(eps, dt.np), "eps"))))
    y = b.op("Mul", centered, invstd_k)
    per_channel = b.i64([1, channels] + [1] * (r - 2))
    if weight is not None:
        y = b.op("Mul", y, b.op("Reshape", b.tensor(weight, dt), per_channel))
    if bias is not None:
        y = b.op("Add", y, b.op("Reshape", b.tensor(bias, dt), per_channel))
    flat = b.i64([channels])
    mean, var, invstd = (b.op("Reshape", v, flat) for v in (mean_k, var_k, invstd_k))
    m = float(momentum)

    def blend(old: Any, new: str, scale: float) -> str:
        return b.op("Add", b.op("Mul", b.tensor(old, dt), b.const(np.array(1 - m, dt.np), "keep")),
                    b.op("Mul", new, b.const(np.array(m * scale, dt.np), "momentum")))

    return [y, mean, invstd, blend(rmean, mean, 1.0), blend(rvar, var, count / (count - 1))]


@register("aten.native_layer_norm.default")
def _layer_norm(b: Builder, node: Any) -> Any:
    x, shape, weight, bias, eps = node.args[:5]
    dt = out_dtype(node)
    shape = [int(s) for s in shape]
    r = x.meta["val"].dim()
    wanted = {u.args[1] for u in node.users if target_key(u.target) == "operator.getitem"}
    n_out = 3 if (wanted & {1, 2}) else 1
    w = b.tensor(weight, dt) if weight is not None else b.const(np.ones(shape, dt.np), "ones")
    ins = [b.tensor(x), w] + ([b.tensor(bias, dt)] if bias is not None else [])
    outs = b.emit("LayerNormalization", ins, {"axis": r - len(shape), "epsilon": float(eps)}, num_outputs=n_out)
    return outs + [None] * (3 - n_out)


@register("aten.native_group_norm.default")
def _group_norm(b: Builder, node: Any) -> Any:
    x, weight, bias, _n, channels, _hw, groups, eps = node.args[:8]
    dt = out_dtype(node)
    w, c = _channel_params(b, node, weight, bias, int(channels), dt)
    y = b.op("GroupNormalization", b.tensor(x), w, c, num_groups=int(groups), epsilon=float(eps))
    return [y, None, None]


def _pool_attrs(node: Any, n: int, kernel: Any, stride: Any, padding: Any) -> dict[str, Any]:
    k = _pairs(kernel, n)
    s = _pairs(stride, n) if stride not in (None, [], ()) else k
    p = _pairs(padding, n)
    return {"kernel_shape": k, "strides": s, "pads": p + p}


@register("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default", "aten.max_pool1d.default",
      "aten.max_pool3d_with_indices.default")
def _max_pool(b: Builder, node: Any) -> Any:
    x = node.args[0]
    n = x.meta["val"].dim() - 2
    attrs = _pool_attrs(node, n, node.args[1], arg(node, 2, "stride", None), arg(node, 3, "padding", 0))
    attrs["dilations"] = _pairs(arg(node, 4, "dilation", 1), n)
    attrs["ceil_mode"] = int(bool(arg(node, 5, "ceil_mode", False)))
    y = b.op("MaxPool", b.tensor(x), **attrs)
    # PyTorch's indices are per (N, C) plane while ONNX's flatten the whole tensor: not mapped
    return [y, None] if "with_indices" in target_key(node.target) else y


@register("aten.avg_pool2d.default", "aten.avg_pool1d.default", "aten.avg_pool3d.default")
def _avg_pool(b: Builder, node: Any) -> Any:
    x = node.args[0]
    n = x.meta["val"].dim() - 2
    if arg(node, 6, "divisor_override", None) is not None:
        raise GraphError("avg_pool with divisor_override is not supported")
    attrs = _pool_attrs(node, n, node.args[1], arg(node, 2, "stride", None), arg(node, 3, "padding", 0))
    attrs["ceil_mode"] = int(bool(arg(node, 4, "ceil_mode", False)))
    attrs["count_include_pad"] = int(bool(arg(node, 5, "count_include_pad", True)))
    return b.op("AveragePool", b.tensor(x), **attrs)


@register("aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool2d.default",
      "aten._adaptive_avg_pool3d.default", "aten.adaptive_avg_pool1d.default")
def _adaptive_avg_pool(b: Builder, node: Any) -> Any:
    x = node.args[0]
    shape = x.meta["val"].shape
    n = len(shape) - 2
    out = _pairs(node.args[1], n)
    if all(o == 1 for o in out):
        return b.op("GlobalAveragePool", b.tensor(x))
    ins = [shape[2 + i] for i in range(n)]
    if not all(isinstance(d, int) and d % o == 0 for d, o in zip(ins, out, strict=True)):
        raise GraphError(f"adaptive_avg_pool from {list(ins)} to {out} (non-divisible) is not supported")
    k = [int(d) // o for d, o in zip(ins, out, strict=True)]
    return b.op("AveragePool", b.tensor(x), kernel_shape=k, strides=k)


@register("aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec", "aten.upsample_nearest2d.default",
      "aten.upsample_bilinear2d.default")
def _upsample(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    key = target_key(node.target)
    out_dims = b.meta_dims(node.meta["val"])
    if not all(isinstance(d, int) for d in out_dims[2:]):
        raise GraphError(f"{key} to a symbolic size is not supported")
    sizes = b.op("Concat", b.op("Shape", x, start=0, end=2), b.i64([int(d) for d in out_dims[2:]]), axis=0)
    if "nearest" in key:
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:
        align = bool(arg(node, 2, "align_corners", False))
        attrs = {"mode": "linear",
                 "coordinate_transformation_mode": "align_corners" if align else "pytorch_half_pixel"}
    return b.emit("Resize", [x, "", "", sizes], attrs)[0]

