"""ATen -> Tessera operator mapping for the PyTorch frontend (one entry per ATen overload).

Each converter gets the :class:`~tessera.frontend.torch_builder.Builder` and an FX node of the
core-ATen graph that ``torch.export`` + ``run_decompositions`` produce, emits Tessera nodes
with ONNX semantics, and returns the node's value (a value name, a list for tuple results,
or None for ops without a result). PyTorch type promotion is followed by reading the result
dtype from the FX node's ``meta['val']`` and casting operands to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tessera.errors import GraphError
from tessera.frontend.torch_builder import INT64_MAX, Builder, torch_dtype
from tessera.graph.dtypes import DType

Converter = Callable[[Builder, Any], Any]
CONVERTERS: dict[str, Converter] = {}


def target_key(target: Any) -> str:
    """The table key of an FX call_function target: ``aten.add.Tensor``, ``operator.mul``."""
    if getattr(target, "__module__", None) == "_operator":
        return f"operator.{target.__name__}"
    return str(target)


def register(*keys: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for k in keys:
            CONVERTERS[k] = fn
        return fn

    return deco


def arg(node: Any, i: int, name: str, default: Any = None) -> Any:
    """Positional argument ``i`` of an FX node, else keyword ``name``, else ``default``."""
    if i < len(node.args):
        return node.args[i]
    return node.kwargs.get(name, default)


def out_dtype(node: Any) -> DType:
    val = node.meta["val"]
    if isinstance(val, (list, tuple)):
        val = val[0]
    return torch_dtype(val.dtype)


def result_type(*args: Any) -> DType:
    """torch.result_type of FX arguments (tensor nodes, symbolic or Python scalars)."""
    import torch
    from torch.fx import Node as FxNode

    probes: list[Any] = []
    for a in args:
        if isinstance(a, FxNode):
            v = a.meta["val"]
            if isinstance(v, torch.Tensor):
                probes.append(torch.empty((1,) if v.dim() else (), dtype=v.dtype))
            elif isinstance(v, (torch.SymFloat, float)):
                probes.append(1.0)
            elif isinstance(v, (torch.SymBool, bool)):
                probes.append(True)
            else:
                probes.append(1)
        else:
            probes.append(a)
    acc = probes[0]
    if not isinstance(acc, torch.Tensor):
        acc = torch.tensor(acc)
    for p in probes[1:]:
        acc = torch.empty((), dtype=torch.result_type(acc, p))
    return torch_dtype(acc.dtype)


def rank_of(node: Any) -> int:
    return node.meta["val"].dim()


def norm_dim(d: int, rank: int) -> int:
    return d % rank if rank else 0


# ---- structural -----------------------------------------------------------------------------
@register("aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default",
      "aten.contiguous.default", "aten.dropout.default", "aten.alias_copy.default", "aten.detach_copy.default")
def _identity(b: Builder, node: Any) -> Any:
    return b.tensor(node.args[0])


@register("aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten.sym_constrain_range.default",
      "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg", "aten._assert_async.default")
def _no_result(b: Builder, node: Any) -> Any:
    return None


@register("operator.getitem")
def _getitem(b: Builder, node: Any) -> Any:
    src, i = node.args
    vals = b.env.get(src.name)
    if not isinstance(vals, list):
        raise GraphError(f"getitem on non-tuple FX value {src.name!r}")
    if vals[i] is None:
        raise GraphError(f"output {i} of {src.name!r} ({target_key(src.target)}) is not supported")
    return vals[i]


@register("aten._to_copy.default")
def _to_copy(b: Builder, node: Any) -> Any:
    return b.cast(b.tensor(node.args[0]), out_dtype(node))


# ---- symbolic sizes -------------------------------------------------------------------------
@register("aten.sym_size.int")
def _sym_size(b: Builder, node: Any) -> Any:
    x, dim = node.args
    d = norm_dim(dim, rank_of(x))
    return b.op("Shape", b.tensor(x), start=d, end=d + 1)


@register("aten._local_scalar_dense.default")
def _item(b: Builder, node: Any) -> Any:
    """``t.item()`` of a one-element tensor (Dynamo passes Python floats as 0-d tensors read this way):
    kept as a one-element vector, like the symbolic sizes, and used as a scalar where consumed."""
    return b.op("Reshape", b.tensor(node.args[0]), b.i64([1]))


@register("aten.sym_numel.default")
def _sym_numel(b: Builder, node: Any) -> Any:
    return b.op("Reshape", b.op("Size", b.tensor(node.args[0])), b.i64([1]))


def _sym_binary(op: str) -> Converter:
    def conv(b: Builder, node: Any) -> Any:
        x, y = node.args
        return b.op(op, b.sym_vector(x), b.sym_vector(y))

    return conv


# Sizes are non-negative, so ONNX's truncating integer Div is Python's floor division here.
for _k, _op in {"mul": "Mul", "add": "Add", "sub": "Sub", "floordiv": "Div", "mod": "Mod"}.items():
    CONVERTERS[f"operator.{_k}"] = _sym_binary(_op)
    CONVERTERS[f"aten.sym_{_k}.default"] = _sym_binary(_op)


# ---- elementwise ----------------------------------------------------------------------------
def _unary(op: str, float_only: bool = False) -> Converter:
    def conv(b: Builder, node: Any) -> Any:
        dt = out_dtype(node)
        return b.op(op, b.tensor(node.args[0], dt))

    return conv


for _name, _op in {
    "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf", "exp": "Exp", "log": "Log",
    "sqrt": "Sqrt", "neg": "Neg", "abs": "Abs", "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos",
    "tan": "Tan", "floor": "Floor", "ceil": "Ceil", "round": "Round", "sign": "Sign", "asin": "Asin",
    "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh", "acosh": "Acosh",
    "atanh": "Atanh", "hardswish": "HardSwish", "isnan": "IsNaN", "mish": "Mish",
}.items():
    CONVERTERS[f"aten.{_name}.default"] = _unary(_op)


@register("aten.isinf.default")
def _isinf(b: Builder, node: Any) -> Any:
    return b.op("IsInf", b.tensor(node.args[0]))


@register("aten.rsqrt.default")
def _rsqrt(b: Builder, node: Any) -> Any:
    return b.op("Reciprocal", b.op("Sqrt", b.tensor(node.args[0], out_dtype(node))))


@register("aten.log1p.default")
def _log1p(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    return b.op("Log", b.op("Add", b.tensor(node.args[0], dt), b.scalar(1, dt)))


@register("aten.expm1.default")
def _expm1(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    return b.op("Sub", b.op("Exp", b.tensor(node.args[0], dt)), b.scalar(1, dt))


@register("aten.trunc.default")
def _trunc(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    if not b.dtype(x).is_float:
        return x
    return b.op("Mul", b.op("Sign", x), b.op("Floor", b.op("Abs", x)))


@register("aten.gelu.default")
def _gelu(b: Builder, node: Any) -> Any:
    return b.op("Gelu", b.tensor(node.args[0]), approximate=str(arg(node, 1, "approximate", "none")))


@register("aten.silu.default")
def _silu(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    return b.op("Mul", x, b.op("Sigmoid", x))


@register("aten.hardtanh.default")
def _hardtanh(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    dt = b.dtype(x)
    lo, hi = arg(node, 1, "min_val", -1.0), arg(node, 2, "max_val", 1.0)
    return b.op("Clip", x, b.scalar(lo, dt), b.scalar(hi, dt))


@register("aten.hardsigmoid.default")
def _hardsigmoid(b: Builder, node: Any) -> Any:
    return b.op("HardSigmoid", b.tensor(node.args[0]), alpha=1.0 / 6.0, beta=0.5)


@register("aten.leaky_relu.default")
def _leaky_relu(b: Builder, node: Any) -> Any:
    return b.op("LeakyRelu", b.tensor(node.args[0]), alpha=float(arg(node, 1, "negative_slope", 0.01)))


@register("aten.elu.default")
def _elu(b: Builder, node: Any) -> Any:
    alpha, scale, in_scale = (arg(node, 1, "alpha", 1.0), arg(node, 2, "scale", 1.0),
                              arg(node, 3, "input_scale", 1.0))
    if scale != 1 or in_scale != 1:
        raise GraphError(f"aten.elu with scale={scale}, input_scale={in_scale} is not supported")
    return b.op("Elu", b.tensor(node.args[0]), alpha=float(alpha))


@register("aten.softplus.default")
def _softplus(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    dt = b.dtype(x)
    beta, threshold = float(arg(node, 1, "beta", 1.0)), float(arg(node, 2, "threshold", 20.0))
    bx = x if beta == 1 else b.op("Mul", x, b.scalar(beta, dt))
    soft = b.op("Softplus", bx)
    if beta != 1:
        soft = b.op("Div", soft, b.scalar(beta, dt))
    # PyTorch reverts to the identity where beta*x > threshold
    return b.op("Where", b.op("Greater", bx, b.scalar(threshold, dt)), x, soft)


def _binary(op: str, compare: bool = False) -> Converter:
    def conv(b: Builder, node: Any) -> Any:
        x, y = arg(node, 0, "self"), arg(node, 1, "other")
        dt = result_type(x, y) if compare else out_dtype(node)
        tx, ty = b.tensor(x, dt), b.tensor(y, dt)
        alpha = node.kwargs.get("alpha", arg(node, 2, "alpha", 1) if not compare else 1)
        if alpha != 1:
            ty = b.op("Mul", ty, b.scalar(alpha, dt))
        return b.op(op, tx, ty)

    return conv


for _name, _op in {"add": "Add", "sub": "Sub", "mul": "Mul", "maximum": "Max", "minimum": "Min"}.items():
    for _ov in ("Tensor", "Scalar", "default"):
        CONVERTERS[f"aten.{_name}.{_ov}"] = _binary(_op)
for _name, _op in {"eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
                   "ge": "GreaterOrEqual"}.items():
    for _ov in ("Tensor", "Scalar"):
        CONVERTERS[f"aten.{_name}.{_ov}"] = _binary(_op, compare=True)


@register("aten.ne.Tensor", "aten.ne.Scalar")
def _ne(b: Builder, node: Any) -> Any:
    return b.op("Not", _binary("Equal", compare=True)(b, node))


@register("aten.rsub.Tensor", "aten.rsub.Scalar")
def _rsub(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    x, y = b.tensor(node.args[0], dt), b.tensor(node.args[1], dt)
    alpha = arg(node, 2, "alpha", 1)
    if alpha != 1:
        x = b.op("Mul", x, b.scalar(alpha, dt))
    return b.op("Sub", y, x)


@register("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode",
      "aten.floor_divide.default", "aten.floor_divide.Scalar")
def _div(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    mode = node.kwargs.get("rounding_mode", arg(node, 2, "rounding_mode", None))
    if "floor_divide" in target_key(node.target):
        mode = "floor"
    x, y = b.tensor(node.args[0], dt), b.tensor(node.args[1], dt)
    if mode is None or (mode == "trunc" and not dt.is_float):
        return b.op("Div", x, y)
    if mode == "trunc":
        q = b.op("Div", x, y)
        return b.op("Mul", b.op("Sign", q), b.op("Floor", b.op("Abs", q)))
    if dt.is_float:
        return b.op("Floor", b.op("Div", x, y))
    # integer floor division: x - mod(x, y) is an exact multiple of y
    return b.op("Div", b.op("Sub", x, b.op("Mod", x, y)), y)


@register("aten.remainder.Tensor", "aten.remainder.Scalar")
def _remainder(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    x, y = b.tensor(node.args[0], dt), b.tensor(node.args[1], dt)
    if not dt.is_float:
        return b.op("Mod", x, y)
    return b.op("Sub", x, b.op("Mul", y, b.op("Floor", b.op("Div", x, y))))


@register("aten.fmod.Tensor", "aten.fmod.Scalar")
def _fmod(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    return b.op("Mod", b.tensor(node.args[0], dt), b.tensor(node.args[1], dt), fmod=1)


@register("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def _pow(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    return b.op("Pow", b.tensor(node.args[0], dt), b.tensor(node.args[1], dt))


def _logical(bool_op: str, int_op: str) -> Converter:
    def conv(b: Builder, node: Any) -> Any:
        dt = out_dtype(node)
        if "logical" in target_key(node.target):
            x, y = (b.op("Cast", b.tensor(a), to=DType.bool) if b.dtype(b.tensor(a)) != DType.bool
                    else b.tensor(a) for a in node.args[:2])
        else:
            x, y = b.tensor(node.args[0], dt), b.tensor(node.args[1], dt)
        return b.op(bool_op if b.dtype(x) == DType.bool else int_op, x, y)

    return conv


for _name, (_bop, _iop) in {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr"),
                            "xor": ("Xor", "BitwiseXor")}.items():
    for _ov in ("Tensor", "Scalar"):
        CONVERTERS[f"aten.bitwise_{_name}.{_ov}"] = _logical(_bop, _iop)
    CONVERTERS[f"aten.logical_{_name}.default"] = _logical(_bop, _iop)


@register("aten.bitwise_not.default", "aten.logical_not.default")
def _not(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    if "logical" in target_key(node.target) and b.dtype(x) != DType.bool:
        x = b.cast(x, DType.bool)
    return b.op("Not" if b.dtype(x) == DType.bool else "BitwiseNot", x)


@register("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    cond = b.cast(b.tensor(node.args[0]), DType.bool)
    return b.op("Where", cond, b.tensor(node.args[1], dt), b.tensor(node.args[2], dt))


@register("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    x, mask, value = node.args[:3]
    return b.op("Where", b.cast(b.tensor(mask), DType.bool), b.tensor(value, dt), b.tensor(x, dt))


@register("aten.clamp.default", "aten.clamp.Tensor", "aten.clamp_min.default", "aten.clamp_max.default",
      "aten.clamp_min.Tensor", "aten.clamp_max.Tensor")
def _clamp(b: Builder, node: Any) -> Any:
    from torch.fx import Node as FxNode

    dt = out_dtype(node)
    key = target_key(node.target)
    x = b.tensor(node.args[0], dt)
    if "clamp_min" in key:
        lo, hi = node.args[1], None
    elif "clamp_max" in key:
        lo, hi = None, node.args[1]
    else:
        lo, hi = arg(node, 1, "min"), arg(node, 2, "max")
    if isinstance(lo, FxNode) or isinstance(hi, FxNode):  # tensor bounds broadcast: Max/Min
        if lo is not None:
            x = b.op("Max", x, b.tensor(lo, dt))
        if hi is not None:
            x = b.op("Min", x, b.tensor(hi, dt))
        return x
    return b.emit("Clip", [x, b.scalar(lo, dt) if lo is not None else "",
                           b.scalar(hi, dt) if hi is not None else ""])[0]


# ---- creation ---------------------------------------------------------------------------------
def _filled(b: Builder, size: list[Any], value: Any, dt: DType) -> str:
    from torch.fx import Node as FxNode

    if all(not isinstance(s, FxNode) for s in size):
        return b.const(np.full([int(s) for s in size], value, dtype=dt.np), "full")
    return b.op("ConstantOfShape", b.ints(size), value=np.array([value], dtype=dt.np))


@register("aten.full.default", "aten.new_full.default")
def _full(b: Builder, node: Any) -> Any:
    new = "new_" in target_key(node.target)
    size, value = node.args[1 if new else 0], node.args[2 if new else 1]
    return _filled(b, list(size), value, out_dtype(node))


@register("aten.zeros.default", "aten.ones.default", "aten.empty.memory_format", "aten.new_zeros.default",
      "aten.new_ones.default", "aten.new_empty.default")
def _zeros_ones(b: Builder, node: Any) -> Any:
    key = target_key(node.target)
    size = node.args[1] if "new_" in key else node.args[0]
    return _filled(b, list(size), 1 if "ones" in key else 0, out_dtype(node))


@register("aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default",
      "aten.empty_like.default", "aten.fill.Scalar")
def _full_like(b: Builder, node: Any) -> Any:
    key = target_key(node.target)
    value = node.args[1] if ("full_like" in key or "fill" in key) else (1 if "ones" in key else 0)
    dt = out_dtype(node)
    dims = b.meta_dims(node.meta["val"])
    if all(isinstance(d, int) for d in dims):
        return b.const(np.full(dims, value, dtype=dt.np), "full")
    return b.op("ConstantOfShape", b.op("Shape", b.tensor(node.args[0])), value=np.array([value], dtype=dt.np))


@register("aten.scalar_tensor.default")
def _scalar_tensor(b: Builder, node: Any) -> Any:
    return b.tensor(node.args[0], out_dtype(node))


@register("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def _arange(b: Builder, node: Any) -> Any:
    from torch.fx import Node as FxNode

    dt = out_dtype(node)
    key = target_key(node.target)
    if key == "aten.arange.default":
        start, end, step = 0, node.args[0], 1
    else:
        start, end = node.args[0], node.args[1]
        step = arg(node, 2, "step", 1)
    parts = [start, end, step]
    if all(not isinstance(p, FxNode) for p in parts):
        return b.const(np.arange(start, end, step).astype(dt.np), "arange")
    return b.op("Range", *(b.tensor(p, dt) for p in parts))


# ---- shape manipulation ---------------------------------------------------------------------------
@register("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.view_copy.default")
def _view(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    shape = list(node.args[1])
    allowzero = int(any(isinstance(s, int) and s == 0 for s in shape))
    return b.op("Reshape", x, b.ints(shape), allowzero=allowzero)


@register("aten.permute.default", "aten.permute_copy.default")
def _permute(b: Builder, node: Any) -> Any:
    r = rank_of(node)
    return b.op("Transpose", b.tensor(node.args[0]), perm=[norm_dim(d, r) for d in node.args[1]])


@register("aten.t.default", "aten.transpose.int")
def _transpose(b: Builder, node: Any) -> Any:
    x = b.tensor(node.args[0])
    r = rank_of(node)
    if r < 2:
        return x
    d0, d1 = (node.args[1], node.args[2]) if len(node.args) > 2 else (0, 1)
    perm = list(range(r))
    perm[norm_dim(d0, r)], perm[norm_dim(d1, r)] = perm[norm_dim(d1, r)], perm[norm_dim(d0, r)]
    return b.op("Transpose", x, perm=perm)


@register("aten.expand.default", "aten.expand_copy.default")
def _expand(b: Builder, node: Any) -> Any:
    # -1 keeps a dim; under ONNX's bidirectional broadcasting a 1 does the same
    sizes = [1 if (isinstance(s, int) and s == -1) else s for s in node.args[1]]
    return b.op("Expand", b.tensor(node.args[0]), b.ints(sizes))


@register("aten.unsqueeze.default", "aten.unsqueeze_copy.default")
def _unsqueeze(b: Builder, node: Any) -> Any:
    return b.op("Unsqueeze", b.tensor(node.args[0]), b.i64([norm_dim(node.args[1], rank_of(node))]))


def _is_one(d: Any) -> bool:
    return isinstance(d, int) and d == 1


@register("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default", "aten.squeeze_copy.dim",
      "aten.squeeze_copy.dims")
def _squeeze(b: Builder, node: Any) -> Any:
    src = node.args[0]
    x = b.tensor(src)
    shape = src.meta["val"].shape
    r = len(shape)
    dims = node.args[1] if len(node.args) > 1 else list(range(r))
    dims = [dims] if isinstance(dims, int) else list(dims)
    # PyTorch silently keeps dims that are not 1; ONNX Squeeze would reject them
    axes = sorted({norm_dim(d, r) for d in dims if _is_one(shape[norm_dim(d, r)])})
    return b.op("Squeeze", x, b.i64(axes)) if axes else x


@register("aten.cat.default", "aten.concat.default")
def _cat(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    r = rank_of(node)
    tensors = [t for t in node.args[0] if not (t.meta["val"].dim() == 1 and r > 1
                                                 and t.meta["val"].shape[0] == 0)]
    dim = norm_dim(arg(node, 1, "dim", 0), r)
    vals = [b.tensor(t, dt) for t in tensors]
    return vals[0] if len(vals) == 1 else b.op("Concat", *vals, axis=dim)


def _split_sizes(b: Builder, node: Any, x: Any, sizes: list[int], dim: int) -> list[str]:
    r = x.meta["val"].dim()
    return b.emit("Split", [b.tensor(x), b.i64(sizes)], {"axis": norm_dim(dim, r)}, num_outputs=len(sizes))


@register("aten.split_with_sizes.default", "aten.split_with_sizes_copy.default", "aten.split.Tensor",
      "aten.split_copy.Tensor")
def _split(b: Builder, node: Any) -> Any:
    import torch

    x = node.args[0]
    dim = arg(node, 2, "dim", 0)
    outs = node.meta["val"]
    sizes = [o.shape[norm_dim(dim, o.dim())] for o in outs]
    if any(isinstance(s, torch.SymInt) for s in sizes):
        raise GraphError(f"{target_key(node.target)} along a symbolic dim is not supported")
    return _split_sizes(b, node, x, [int(s) for s in sizes], dim)


@register("aten.unbind.int", "aten.unbind_copy.int")
def _unbind(b: Builder, node: Any) -> Any:
    x = node.args[0]
    dim = norm_dim(arg(node, 1, "dim", 0), x.meta["val"].dim())
    n = x.meta["val"].shape[dim]
    if not isinstance(n, int):
        raise GraphError("aten.unbind along a symbolic dim is not supported")
    parts = _split_sizes(b, node, x, [1] * n, dim)
    return [b.op("Squeeze", p, b.i64([dim])) for p in parts]


@register("aten.slice.Tensor", "aten.slice_copy.Tensor")
def _slice(b: Builder, node: Any) -> Any:
    src = node.args[0]
    x = b.tensor(src)
    r = src.meta["val"].dim()
    dim = norm_dim(arg(node, 1, "dim", 0), r)
    start, end, step = arg(node, 2, "start", None), arg(node, 3, "end", None), arg(node, 4, "step", 1)
    start = 0 if start is None else start
    end = INT64_MAX if end is None else end
    if isinstance(start, int) and start == 0 and step == 1 and isinstance(end, int):
        in_dim = src.meta["val"].shape[dim]
        if end >= INT64_MAX or (isinstance(in_dim, int) and end >= in_dim):
            return x  # whole-axis slice: a no-op
    if isinstance(end, int):
        end = min(end, INT64_MAX)
    return b.op("Slice", x, b.ints([start]), b.ints([end]), b.i64([dim]), b.i64([step]))


@register("aten.flip.default")
def _flip(b: Builder, node: Any) -> Any:
    src = node.args[0]
    r = src.meta["val"].dim()
    dims = sorted({norm_dim(d, r) for d in node.args[1]})
    k = len(dims)
    x = b.tensor(src)
    if not k:
        return x
    return b.op("Slice", x, b.i64([-1] * k), b.i64([-INT64_MAX - 1] * k), b.i64(dims), b.i64([-1] * k))


@register("aten.repeat.default")
def _repeat(b: Builder, node: Any) -> Any:
    src, repeats = node.args[:2]
    x = b.tensor(src)
    extra = len(repeats) - src.meta["val"].dim()
    if extra > 0:
        x = b.op("Unsqueeze", x, b.i64(list(range(extra))))
    return b.op("Tile", x, b.ints(list(repeats)))


@register("aten.select.int", "aten.select_copy.int")
def _select(b: Builder, node: Any) -> Any:
    src, dim, index = node.args
    r = src.meta["val"].dim()
    return b.op("Gather", b.tensor(src), b.sym_scalar(index), axis=norm_dim(dim, r))


@register("aten.index_select.default")
def _index_select(b: Builder, node: Any) -> Any:
    src, dim, index = node.args
    return b.op("Gather", b.tensor(src), b.tensor(index), axis=norm_dim(dim, src.meta["val"].dim()))


@register("aten.embedding.default")
def _embedding(b: Builder, node: Any) -> Any:
    return b.op("Gather", b.tensor(node.args[0]), b.tensor(node.args[1]), axis=0)


@register("aten.gather.default")
def _gather(b: Builder, node: Any) -> Any:
    src, dim, index = node.args[:3]
    return b.op("GatherElements", b.tensor(src), b.tensor(index), axis=norm_dim(dim, src.meta["val"].dim()))


@register("aten.index.Tensor", "aten._unsafe_index.Tensor")
def _index(b: Builder, node: Any) -> Any:
    """Advanced indexing x[i0, i1, ...]: the indexed leading dims are flattened into one and a
    broadcast linear index gathers from it (negative indices are not wrapped)."""
    src, indices = node.args[:2]
    x = b.tensor(src)
    indices = list(indices)
    present = [i for i, t in enumerate(indices) if t is not None]
    r = src.meta["val"].dim()
    if len(present) == 1:
        i = present[0]
        return b.op("Gather", x, b.tensor(indices[i], DType.int64), axis=i)
    if present != list(range(len(present))):
        raise GraphError("aten.index with non-leading or non-adjacent index tensors is not supported")
    k = len(present)
    linear = b.tensor(indices[0], DType.int64)
    for i in range(1, k):
        size = b.op("Shape", x, start=i, end=i + 1)
        linear = b.op("Add", b.op("Mul", linear, b.op("Squeeze", size, b.i64([0]))),
                      b.tensor(indices[i], DType.int64))
    if k == r:
        flat = b.op("Reshape", x, b.i64([-1]))
    else:
        rest = b.op("Shape", x, start=k)
        flat = b.op("Reshape", x, b.op("Concat", b.i64([-1]), rest, axis=0))
    return b.op("Gather", flat, linear, axis=0)


@register("aten.constant_pad_nd.default")
def _constant_pad(b: Builder, node: Any) -> Any:
    src = node.args[0]
    pad = list(node.args[1])
    value = arg(node, 2, "value", 0)
    r = src.meta["val"].dim()
    begins, ends = [0] * r, [0] * r
    for j in range(len(pad) // 2):  # PyTorch lists (begin, end) pairs from the last dim backwards
        begins[r - 1 - j], ends[r - 1 - j] = pad[2 * j], pad[2 * j + 1]
    x = b.tensor(src)
    return b.op("Pad", x, b.ints(begins + ends), b.scalar(value, b.dtype(x)), mode="constant")


@register("aten.tril.default", "aten.triu.default")
def _trilu(b: Builder, node: Any) -> Any:
    upper = int("triu" in target_key(node.target))
    k = arg(node, 1, "diagonal", 0)
    return b.op("Trilu", b.tensor(node.args[0]), b.scalar(k, DType.int64), upper=upper)


@register("aten.cumsum.default")
def _cumsum(b: Builder, node: Any) -> Any:
    dt = out_dtype(node)
    dim = norm_dim(node.args[1], rank_of(node))
    return b.op("CumSum", b.tensor(node.args[0], dt), b.scalar(dim, DType.int64))


@register("aten.copy.default")
def _copy(b: Builder, node: Any) -> Any:
    dst, src = node.args[:2]
    dt = out_dtype(node)
    return b.op("Expand", b.tensor(src, dt), b.op("Shape", b.tensor(dst)))


# Reductions, linear algebra and neural-network layers live in their own module; importing it here
# completes CONVERTERS for every user of this table.
from tessera.frontend import torch_ops_nn  # noqa: E402,F401
