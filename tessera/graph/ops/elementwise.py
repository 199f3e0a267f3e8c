"""Operators: broadcasting arithmetic, comparisons, logic, casts and elementwise math.

Semantics follow ONNX (newest opset). References compute float math in float64 (one rounding
back to the tensor's dtype) and float16/bfloat16 arithmetic in float32, which is exact for
``+ - * /`` before the final rounding. The helpers here (dtype classes, :func:`unary_op`,
:func:`float_compute`) are shared by the activation and reduction modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import broadcast_shapes, elementwise_flops
from tessera.graph.registry import Attr, InferContext, OpDef, SymValue, register
from tessera.graph.symbolic import Dim, Sym
from tessera.graph.tensor_type import TensorType

# ---- dtype classes -------------------------------------------------------------------------
FLOAT = frozenset(d for d in DType if d.is_float)
INT = frozenset(d for d in DType if d.is_int)
SIGNED_INT = frozenset({DType.int8, DType.int16, DType.int32, DType.int64})
NUMERIC = FLOAT | INT
BOOL = frozenset({DType.bool})
ANY = frozenset(DType)
_CLASS_NAMES = {FLOAT: "float", INT: "integer", NUMERIC: "numeric", BOOL: "bool",
                SIGNED_INT | FLOAT: "float or signed integer", ANY: "any"}

_BF16 = np.dtype(ml_dtypes.bfloat16)


def is_float_np(dt: np.dtype) -> bool:
    """Whether a NumPy dtype is a floating type (including ml_dtypes' bfloat16)."""
    return dt.kind == "f" or dt == _BF16


def check_dtype(ctx: InferContext, i: int, allowed: frozenset[DType]) -> DType:
    """The dtype of input ``i``; raises a ShapeInferenceError if it is not in ``allowed``."""
    dt = ctx.type(i).dtype
    if dt not in allowed:
        want = _CLASS_NAMES.get(allowed) or ", ".join(sorted(d.value for d in allowed))
        raise ctx.error(f"input {i} has dtype {dt.value}, expected {want}")
    return dt


def check_same_dtype(ctx: InferContext, idx: Sequence[int]) -> None:
    dts = [ctx.type(i).dtype for i in idx if ctx.has_input(i)]
    if any(d != dts[0] for d in dts):
        raise ctx.error(f"input dtypes differ: {', '.join(d.value for d in dts)}")


def check_choice(ctx: InferContext, name: str, choices: Sequence[Any]) -> None:
    if ctx.attrs[name] not in choices:
        raise ctx.error(f"attribute {name!r} must be one of {list(choices)}, got {ctx.attrs[name]!r}")


def float_compute(x: np.ndarray, wide: bool = True) -> np.ndarray:
    """``x`` widened for computing: float64 (``wide``) or float32 for narrow floats."""
    if not is_float_np(x.dtype):
        return x
    if wide:
        return x.astype(np.float64)
    return x.astype(np.float32) if x.dtype.itemsize < 4 else x


def _broadcast_or_error(ctx: InferContext, shapes: Sequence[Sequence[Dim]]) -> tuple[Dim, ...]:
    try:
        return broadcast_shapes(*shapes)
    except ShapeInferenceError as e:
        raise ctx.error(str(e)) from None


def _propagate_elementwise(fn: Callable[..., Dim]) -> Callable[[InferContext], list[SymValue | None]]:
    """Symbolic-value rule of an elementwise op on small int tensors (shape arithmetic)."""

    def prop(ctx: InferContext) -> list[SymValue | None]:
        n_in = len(ctx.types)
        if any(not ctx.has_input(i) or not ctx.type(i).dtype.is_int for i in range(n_in)):
            return [None]
        vals = [ctx.dims_value(i) for i in range(n_in)]
        if any(v is None for v in vals):
            return [None]
        n = max(len(v) for v in vals)  # type: ignore[arg-type]
        if any(len(v) not in (1, n) for v in vals):  # type: ignore[arg-type]
            return [None]
        cols = [v * n if len(v) == 1 else v for v in vals]  # type: ignore[operator, arg-type]
        try:
            return [tuple(fn(*xs) for xs in zip(*cols, strict=True))]
        except (TypeError, ZeroDivisionError, ValueError):
            return [None]

    return prop


# ---- declaration helpers -------------------------------------------------------------------
def unary_op(
    name: str,
    fn: Callable[..., np.ndarray],
    allowed: frozenset[DType] = FLOAT,
    out: DType | None = None,
    flops: int = 1,
    attrs: dict[str, Attr] | None = None,
    check: Callable[[InferContext], None] | None = None,
    wide: bool = True,
    propagate: Callable[[Dim], Dim] | None = None,
    doc: str = "",
) -> OpDef:
    """Declare an elementwise unary op; ``fn(x, **attrs)`` is its NumPy reference. Float
    inputs reach ``fn`` as float64 (``wide``) or at least float32; the result is cast to the
    output dtype (``out``, else the input's)."""

    def infer(ctx: InferContext) -> list[TensorType]:
        t = ctx.type(0)
        check_dtype(ctx, 0, allowed)
        if check is not None:
            check(ctx)
        return [TensorType(out or t.dtype, t.shape)]

    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n_out: int) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        with np.errstate(all="ignore"):
            y = np.asarray(fn(float_compute(x, wide), **a))
        return [y.astype(out.np if out else x.dtype, copy=False)]

    return register(OpDef(name, infer, ref, attrs or {}, (1, 1), (1, 1), elementwise_flops(flops),
                          propagate=_propagate_elementwise(propagate) if propagate else None, doc=doc))


def nary_op(
    name: str,
    fn: Callable[..., np.ndarray],
    allowed: frozenset[DType] = NUMERIC,
    out: DType | None = None,
    arity: tuple[int, int] = (2, 2),
    flops: int = 1,
    attrs: dict[str, Attr] | None = None,
    same_dtype: bool = True,
    wide: bool = False,
    check: Callable[[InferContext], None] | None = None,
    propagate: Callable[..., Dim] | None = None,
    doc: str = "",
) -> OpDef:
    """Declare a broadcasting elementwise op over 2 (or ``arity``) inputs. ``fn(*xs, **attrs)``
    is its reference; float inputs reach it widened (float64 if ``wide``, else at least
    float32). Output dtype: ``out``, else the first input's."""

    def infer(ctx: InferContext) -> list[TensorType]:
        ts = [ctx.type(i) for i in range(len(ctx.types))]
        for i in range(len(ts)):
            check_dtype(ctx, i, allowed)
        if same_dtype:
            check_same_dtype(ctx, range(len(ts)))
        if check is not None:
            check(ctx)
        return [TensorType(out or ts[0].dtype, _broadcast_or_error(ctx, [t.shape for t in ts]))]

    def ref(inputs: list[np.ndarray | None], a: dict[str, Any], n_out: int) -> list[np.ndarray]:
        xs = [x for x in inputs if x is not None]
        with np.errstate(all="ignore"):
            y = np.asarray(fn(*(float_compute(x, wide) for x in xs), **a))
        return [y.astype(out.np if out else xs[0].dtype, copy=False)]

    return register(OpDef(name, infer, ref, attrs or {}, arity, (1, 1), elementwise_flops(flops),
                          propagate=_propagate_elementwise(propagate) if propagate else None, doc=doc))


# ---- arithmetic ----------------------------------------------------------------------------
def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "u":
        return np.floor_divide(a, b)
    if a.dtype.kind == "i":  # ONNX integer Div truncates toward zero
        q = np.floor_divide(a, b)
        inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return np.where(inexact, q + 1, q)
    return np.divide(a, b)


def _div_dims(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)  # raises ZeroDivisionError for b == 0
        return q if (a < 0) == (b < 0) else -q
    return a // b  # Sym // int (dims are non-negative, so floor == trunc); Sym // Sym raises


nary_op("Add", np.add, propagate=lambda a, b: a + b)
nary_op("Sub", np.subtract, propagate=lambda a, b: a - b)
nary_op("Mul", np.multiply, propagate=lambda a, b: a * b)
nary_op("Div", _div, propagate=_div_dims)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        # Element by element: a non-negative exponent is exact with two's-complement wrap-around
        # (NumPy's integer power); a negative one truncates a ** b toward zero: 1 and -1 stay +-1,
        # every other base (0 included, whose power is undefined) gives 0.
        neg = b < 0
        with np.errstate(over="ignore"):
            y = np.power(a, np.where(neg, 0, b).astype(a.dtype))
        if neg.any():
            odd = np.abs(b.astype(np.int64) % 2) == 1
            minus_one = (a == -1) if a.dtype.kind == "i" else np.zeros(a.shape, bool)
            at_neg = np.where(a == 1, 1, np.where(minus_one, np.where(odd, -1, 1), 0)).astype(a.dtype)
            y = np.where(neg, at_neg, y)
        return y
    return np.power(a.astype(np.float64), b.astype(np.float64))


nary_op("Pow", _pow, allowed=NUMERIC, same_dtype=False, wide=True, flops=4,
        doc="X ** Y; the output has X's dtype (Y may have any numeric dtype).")


def _mod(a: np.ndarray, b: np.ndarray, fmod: int) -> np.ndarray:
    return np.fmod(a, b) if fmod else np.mod(a, b)


def _mod_dims(a: Dim, b: Dim) -> Dim:
    if not isinstance(b, int) or b == 0:
        raise TypeError("symbolic modulo needs a non-zero int divisor")
    return a % b


_mod_op = nary_op("Mod", _mod, attrs={"fmod": Attr("int", 0)}, wide=True,
                  check=lambda ctx: check_choice(ctx, "fmod", (0, 1)),
                  doc="fmod=0: remainder with the divisor's sign; fmod=1: C fmod (dividend's sign).")
_mod_dims_prop = _propagate_elementwise(_mod_dims)
_mod_op.propagate = lambda ctx: _mod_dims_prop(ctx) if ctx.attrs["fmod"] == 0 else [None]


def _variadic(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
              allowed: frozenset[DType], propagate: Callable[..., Dim] | None = None,
              mean: bool = False) -> None:
    def reduce_all(*xs: np.ndarray) -> np.ndarray:
        acc = xs[0]
        for x in xs[1:]:
            acc = fn(acc, x)
        acc = np.array(np.broadcast_to(acc, np.broadcast_shapes(*(x.shape for x in xs))))
        return acc / len(xs) if mean else acc

    nary_op(name, reduce_all, allowed=allowed, arity=(1, -1), propagate=propagate)


def _dim_max(*xs: Dim) -> Dim:
    if all(isinstance(x, int) for x in xs):
        return max(xs)  # type: ignore[type-var]
    if all(x == xs[0] for x in xs):
        return xs[0]
    raise TypeError("max of different symbols is unknown")


def _dim_min(*xs: Dim) -> Dim:
    if all(isinstance(x, int) for x in xs):
        return min(xs)  # type: ignore[type-var]
    if all(x == xs[0] for x in xs):
        return xs[0]
    raise TypeError("min of different symbols is unknown")


def _dim_sum(*xs: Dim) -> Dim:
    total: Dim = 0
    for x in xs:
        total = total + x
    return total


_variadic("Max", np.maximum, NUMERIC, propagate=_dim_max)
_variadic("Min", np.minimum, NUMERIC, propagate=_dim_min)
_variadic("Sum", np.add, NUMERIC, propagate=_dim_sum)
_variadic("Mean", np.add, FLOAT, mean=True)

# ---- unary math ----------------------------------------------------------------------------
_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Accurate erf in float64 (vectorized ``math.erf``; an oracle, not a fast kernel)."""
    return np.asarray(_erf_scalar(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


unary_op("Relu", lambda x: np.maximum(x, 0), allowed=FLOAT | SIGNED_INT,
         propagate=lambda a: a if isinstance(a, Sym) else max(a, 0))
unary_op("Neg", np.negative, allowed=FLOAT | SIGNED_INT, propagate=lambda a: -a)
unary_op("Abs", np.abs, allowed=NUMERIC, propagate=lambda a: a if isinstance(a, Sym) else abs(a))
unary_op("Sign", np.sign, allowed=NUMERIC)
unary_op("Sqrt", np.sqrt, flops=4)
unary_op("Reciprocal", np.reciprocal)
unary_op("Exp", np.exp, flops=4)
unary_op("Log", np.log, flops=4)
unary_op("Erf", erf, flops=8)
unary_op("Tanh", np.tanh, flops=4)
unary_op("Sigmoid", sigmoid, flops=4)
for _name, _fn in {
    "Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos,
    "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh, "Asinh": np.arcsinh,
    "Acosh": np.arccosh, "Atanh": np.arctanh,
}.items():
    unary_op(_name, _fn, flops=4)
unary_op("Floor", np.floor)
unary_op("Ceil", np.ceil)
unary_op("Round", np.round, doc="Round half to even.")
unary_op("IsNaN", np.isnan, out=DType.bool)


def _isinf(x: np.ndarray, detect_negative: int, detect_positive: int) -> np.ndarray:
    return (np.isposinf(x) & bool(detect_positive)) | (np.isneginf(x) & bool(detect_negative))


unary_op("IsInf", _isinf, out=DType.bool,
         attrs={"detect_negative": Attr("int", 1, (0, 1)), "detect_positive": Attr("int", 1, (0, 1))})

# ---- logic, comparison, bitwise ------------------------------------------------------------
unary_op("Not", np.logical_not, allowed=BOOL)
nary_op("And", np.logical_and, allowed=BOOL)
nary_op("Or", np.logical_or, allowed=BOOL)
nary_op("Xor", np.logical_xor, allowed=BOOL)
def _dim_equal(a: Dim, b: Dim) -> Dim:
    """Equality of two dims as 0/1; a symbolic dim is never negative, so it differs from a
    negative constant (exporters compare shapes with -1 to find "infer" entries)."""
    if isinstance(a, int) and isinstance(b, int):
        return int(a == b)
    if a == b:
        return 1
    if (isinstance(a, int) and a < 0) or (isinstance(b, int) and b < 0):
        return 0
    raise TypeError("undecidable")


nary_op("Equal", np.equal, allowed=ANY, out=DType.bool, propagate=_dim_equal)
nary_op("Less", np.less, out=DType.bool)
nary_op("Greater", np.greater, out=DType.bool)
nary_op("LessOrEqual", np.less_equal, out=DType.bool)
nary_op("GreaterOrEqual", np.greater_equal, out=DType.bool)
unary_op("BitwiseNot", np.invert, allowed=INT)
nary_op("BitwiseAnd", np.bitwise_and, allowed=INT)
nary_op("BitwiseOr", np.bitwise_or, allowed=INT)
nary_op("BitwiseXor", np.bitwise_xor, allowed=INT)


def _bitshift(x: np.ndarray, y: np.ndarray, direction: str) -> np.ndarray:
    bits = x.dtype.itemsize * 8
    y = np.broadcast_to(y, np.broadcast_shapes(x.shape, y.shape))
    out_of_range = (y < 0) | (y >= bits)
    s = np.where(out_of_range, 0, y).astype(x.dtype)
    if direction == "LEFT":
        return np.where(out_of_range, 0, np.left_shift(x, s))
    fill = np.where(x < 0, -1, 0) if x.dtype.kind == "i" else 0
    return np.where(out_of_range, fill, np.right_shift(x, s))


nary_op("BitShift", _bitshift, allowed=INT, attrs={"direction": Attr("str")},
        check=lambda ctx: check_choice(ctx, "direction", ("LEFT", "RIGHT")),
        doc="Logical shift for unsigned, arithmetic right shift for signed integers.")

# ---- selection and casts -------------------------------------------------------------------


def _where_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, BOOL)
    check_same_dtype(ctx, (1, 2))
    shape = _broadcast_or_error(ctx, [ctx.type(i).shape for i in range(3)])
    return [TensorType(ctx.type(1).dtype, shape)]


def _where_ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
    c, x, y = inputs
    assert c is not None and x is not None and y is not None
    return [np.asarray(np.where(c, x, y)).astype(x.dtype, copy=False)]


def _where_propagate(ctx: InferContext) -> list[SymValue | None]:
    cond = ctx.const(0)
    if cond is None or not ctx.type(1).dtype.is_int or not ctx.type(2).dtype.is_int:
        return [None]
    x, y = ctx.dims_value(1), ctx.dims_value(2)
    if x is None or y is None:
        return [None]
    c = [bool(v) for v in cond.reshape(-1)]
    n = max(len(c), len(x), len(y))
    if any(len(v) not in (1, n) for v in (c, x, y)):
        return [None]
    c, x, y = (v * n if len(v) == 1 else v for v in (c, x, y))
    return [tuple(a if k else b for k, a, b in zip(c, x, y, strict=True))]


register(OpDef("Where", _where_infer, _where_ref, {}, (3, 3), (1, 1), elementwise_flops(1),
               propagate=_where_propagate, doc="Select X where condition is true, else Y (broadcasting)."))

_CAST_ATTRS = {"saturate": Attr("int", 1), "round_mode": Attr("str", "up")}


def float_to_int(x: np.ndarray, to: np.dtype) -> np.ndarray:
    """Float to integer conversion, defined for every value (C and NumPy leave NaN and values out
    of range undefined or platform-dependent): truncation toward zero; NaN gives 0; a value
    beyond a signed type's range saturates to its min/max; to an unsigned type, a negative value
    wraps as its int64 value does (NumPy's behaviour: -1.0 -> 255 for uint8), below -2**63 it
    gives 0, and above the type's max saturates to max."""
    info = np.iinfo(to)
    t = np.trunc(np.asarray(x, dtype=np.float64))
    nan = np.isnan(t)
    if to.kind == "i":
        lo, hi = float(info.min), -float(info.min)  # [-2**(w-1), 2**(w-1)) is exact in float64
        safe = np.where(nan | (t < lo) | (t >= hi), 0.0, t).astype(to)
        return np.where(t >= hi, info.max, np.where(t < lo, info.min, safe)).astype(to)
    top = float(info.max) + 1.0  # 2**w, exact
    wraps = (t < 0) & (t >= -(2.0**63))
    safe = np.where(nan | (t < 0) | (t >= top), 0.0, t).astype(to)
    wrapped = np.where(wraps, t, 0.0).astype(np.int64).astype(to)
    return np.where(t >= top, info.max, np.where(wraps, wrapped, safe)).astype(to)


def cast_array(x: np.ndarray, to: np.dtype) -> np.ndarray:
    """ONNX Cast of one array: float to int truncates toward zero (NaN and values out of range:
    :func:`float_to_int`); to bool is ``x != 0``."""
    with np.errstate(all="ignore"):
        if to == np.bool_:
            return np.asarray(x != 0)
        if x.dtype == _BF16 and to.kind in "iu":
            x = x.astype(np.float32)
        if np.asarray(x).dtype.kind == "f" and to.kind in "iu":
            return float_to_int(x, to)
        return np.asarray(x).astype(to)


def _cast_infer(ctx: InferContext) -> list[TensorType]:
    return [ctx.type(0).with_dtype(ctx.attrs["to"])]


def _cast_propagate(ctx: InferContext) -> list[SymValue | None]:
    if not ctx.type(0).dtype.is_int or not ctx.attrs["to"].is_int:
        return [None]
    v = ctx.dims_value(0)
    return [None if v is None else tuple(v)]


def _castlike_infer(ctx: InferContext) -> list[TensorType]:
    return [ctx.type(0).with_dtype(ctx.type(1).dtype)]


register(OpDef("Cast", _cast_infer,
               lambda xs, a, n: [cast_array(xs[0], a["to"].np)],  # type: ignore[arg-type]
               {"to": Attr("dtype"), **_CAST_ATTRS}, (1, 1), (1, 1), elementwise_flops(1),
               propagate=_cast_propagate, doc="Convert to dtype ``to``."))
register(OpDef("CastLike", _castlike_infer,
               lambda xs, a, n: [cast_array(xs[0], xs[1].dtype)],  # type: ignore[union-attr, arg-type]
               dict(_CAST_ATTRS), (2, 2), (1, 1), elementwise_flops(1),
               doc="Convert input 0 to the dtype of input 1."))


def _clip_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype(ctx, 0, NUMERIC)
    check_same_dtype(ctx, (0, 1, 2))
    for i in (1, 2):
        if ctx.has_input(i):
            b = ctx.type(i)
            if b.rank > 1 or (b.is_static and b.numel != 1):
                raise ctx.error(f"input {i} (bound) must be a scalar, got shape {b}")
    return [t]


def _clip_ref(inputs: list[np.ndarray | None], a: dict[str, Any], n: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    lo = inputs[1] if len(inputs) > 1 else None
    hi = inputs[2] if len(inputs) > 2 else None
    y = x
    if lo is not None:
        y = np.maximum(y, lo.reshape(()))
    if hi is not None:  # applied last: when min > max every value becomes max
        y = np.minimum(y, hi.reshape(()))
    return [np.asarray(y).astype(x.dtype, copy=False)]


register(OpDef("Clip", _clip_infer, _clip_ref, {}, (1, 3), (1, 1), elementwise_flops(2),
               doc="Clamp to [min, max]; the bounds are optional scalar inputs."))
