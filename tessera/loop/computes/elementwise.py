"""Compute definitions: elementwise arithmetic, comparisons, logic, bitwise ops, casts and
unary math (ONNX semantics, matching the registry references in ``tessera.graph.ops.elementwise``).

Float math is expressed in the tensor's own dtype (the references compute in float64 and round
once; the difference stays within float32 rounding). Integer ``div`` truncates toward zero,
``mod`` takes the divisor's sign and ``fmod`` the dividend's. ``round`` rounds half to even.
float16/bfloat16 operands are computed in float32 and rounded on store (see
:func:`tessera.loop.compute.compute_half_in_f32`); Cast converts them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tessera.loop.compute import HALF_DTYPES, ComputeContext, ComputeFn, compute_def
from tessera.loop.computes.common import broadcast_load
from tessera.loop.expr import (
    BOOL,
    Call,
    Expr,
    binop,
    call,
    cast,
    const,
    is_int,
    maximum,
    minimum,
    select,
)
from tessera.loop.te import Tensor, compute

FLOATS = ("f32", "f64")


def math_compute(op: str, pattern: str, const_inputs: tuple[int, ...] = ()) -> Callable[[ComputeFn], ComputeFn]:
    """``compute_def`` of a math operator (float16/bfloat16 operands computed in float32)."""
    return compute_def(op, pattern, const_inputs)


def unary(ctx: ComputeContext, fn: Callable[[Expr], Expr], name: str) -> list[Tensor]:
    """``out[i] = fn(x[i])`` with the output dtype of the op's shape rule."""
    x = ctx.input(0)
    return [compute(ctx.out_shape(), lambda *i: fn(x[i]), name, dtype=ctx.out_dtype())]


def nary(ctx: ComputeContext, fn: Callable[..., Expr], name: str) -> list[Tensor]:
    """``out[i] = fn(*inputs[i])`` with NumPy broadcasting (omitted inputs are skipped)."""
    xs = [t for t in ctx.inputs if t is not None]
    return [compute(ctx.out_shape(), lambda *i: fn(*(broadcast_load(t, i) for t in xs)), name,
                    dtype=ctx.out_dtype())]


def fconst(v: float, like: Expr) -> Expr:
    """A float constant in ``like``'s dtype."""
    return const(v, like.dtype)


def typed_call(fn: str, dtype: str, *args: Expr) -> Expr:
    """A math function call whose result dtype differs from its first argument's."""
    return Call(fn, tuple(args), dtype)


# ---- arithmetic ----------------------------------------------------------------------------
_BINARY: dict[str, str] = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


def _binary_def(op: str, bop: str) -> None:
    @math_compute(op, "elementwise")
    def _fn(ctx: ComputeContext) -> list[Tensor]:
        return nary(ctx, lambda a, b: binop(bop, a, b), op.lower())


for _op, _bop in _BINARY.items():
    _binary_def(_op, _bop)


def _pow_expr(x: Expr, y: Expr) -> Expr:
    xi, yi = is_int(x.dtype), is_int(y.dtype)
    if xi and yi:
        # x ** -n for integer x: 1 and -1 stay +-1, any other base truncates to 0 (0 ** -n undefined)
        y = cast(y, x.dtype)
        zero = const(0, x.dtype)
        one = const(1, x.dtype)
        neg = select(binop("mod", y, 2).eq(0), one, const(-1, x.dtype))
        negexp = select(x.eq(1), one, select(x.eq(-1) if x.dtype[0] == "i" else const(False), neg, zero))
        return select(y.lt(zero), negexp, binop("pow", x, maximum(y, zero)))
    if xi:  # integer base, float exponent: float64 power truncated to the base's type
        return cast(binop("pow", cast(x, "f64"), cast(y, "f64")), x.dtype)
    if yi or y.dtype == x.dtype:
        return binop("pow", x, cast(y, x.dtype))
    return cast(binop("pow", cast(x, "f64"), cast(y, "f64")), x.dtype)  # f32 ** f64


@math_compute("Pow", "elementwise")
def _pow(ctx: ComputeContext) -> list[Tensor]:
    return nary(ctx, _pow_expr, "pow")


@math_compute("Mod", "elementwise")
def _mod(ctx: ComputeContext) -> list[Tensor]:
    if ctx.attrs["fmod"]:
        return nary(ctx, lambda a, b: call("fmod", a, b), "fmod")
    return nary(ctx, lambda a, b: binop("mod", a, b), "mod")


def _variadic_def(op: str, bop: str, mean: bool = False) -> None:
    @math_compute(op, "elementwise")
    def _fn(ctx: ComputeContext) -> list[Tensor]:
        def body(*xs: Expr) -> Expr:
            acc = xs[0]
            for x in xs[1:]:
                acc = binop(bop, acc, x)
            return acc / fconst(float(len(xs)), acc) if mean else acc

        return nary(ctx, body, op.lower())


_variadic_def("Sum", "add")
_variadic_def("Mean", "add", mean=True)
_variadic_def("Max", "max")
_variadic_def("Min", "min")


# ---- unary math ----------------------------------------------------------------------------
_UNARY_CALLS: dict[str, str] = {
    "Abs": "abs", "Sign": "sign", "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Erf": "erf", "Tanh": "tanh",
    "Sigmoid": "sigmoid", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos",
    "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh",
    "Floor": "floor", "Ceil": "ceil", "Round": "round", "BitwiseNot": "bitnot",
}


def _unary_call_def(op: str, fn: str) -> None:
    @math_compute(op, "elementwise")
    def _fn(ctx: ComputeContext) -> list[Tensor]:
        return unary(ctx, lambda x: call(fn, x), op.lower())


for _op, _fn in _UNARY_CALLS.items():
    _unary_call_def(_op, _fn)


@math_compute("Neg", "elementwise")
def _neg(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: call("neg", x), "neg")  # -x is 0 - x, which makes -(+0) +0


@math_compute("Reciprocal", "elementwise")
def _reciprocal(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: fconst(1.0, x) / x, "reciprocal")


@math_compute("Relu", "elementwise")
def _relu(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: maximum(x, const(0, x.dtype)), "relu")


@math_compute("IsNaN", "elementwise")
def _isnan(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: typed_call("isnan", BOOL, x), "isnan")


@math_compute("IsInf", "elementwise")
def _isinf(ctx: ComputeContext) -> list[Tensor]:
    pos, neg = bool(ctx.attrs["detect_positive"]), bool(ctx.attrs["detect_negative"])

    def body(x: Expr) -> Expr:
        inf = typed_call("isinf", BOOL, x)
        if pos and neg:
            return inf
        if pos:
            return binop("and", inf, x.gt(fconst(0.0, x)))
        if neg:
            return binop("and", inf, x.lt(fconst(0.0, x)))
        return const(False)

    return unary(ctx, body, "isinf")


# ---- logic, comparison, bitwise ------------------------------------------------------------
@math_compute("Not", "elementwise")
def _not(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: typed_call("not", BOOL, x), "not")


_LOGIC: dict[str, Callable[[Expr, Expr], Expr]] = {
    "And": lambda a, b: binop("and", a, b),
    "Or": lambda a, b: binop("or", a, b),
    "Xor": lambda a, b: a.ne(b),
    "Equal": lambda a, b: a.eq(b),
    "Less": lambda a, b: a.lt(b),
    "Greater": lambda a, b: a.gt(b),
    "LessOrEqual": lambda a, b: a.le(b),
    "GreaterOrEqual": lambda a, b: a.ge(b),
    "BitwiseAnd": lambda a, b: call("bitand", a, b),
    "BitwiseOr": lambda a, b: call("bitor", a, b),
    "BitwiseXor": lambda a, b: call("bitxor", a, b),
}


def _logic_def(op: str, fn: Callable[[Expr, Expr], Expr]) -> None:
    @math_compute(op, "elementwise")
    def _fn(ctx: ComputeContext) -> list[Tensor]:
        return nary(ctx, fn, op.lower())


for _op, _lfn in _LOGIC.items():
    _logic_def(_op, _lfn)


def _bits(dtype: str) -> int:
    return {"i8": 8, "u8": 8, "i16": 16, "u16": 16, "i32": 32, "u32": 32, "i64": 64, "u64": 64}[dtype]


@math_compute("BitShift", "elementwise")
def _bitshift(ctx: ComputeContext) -> list[Tensor]:
    left = ctx.attrs["direction"] == "LEFT"

    def body(x: Expr, y: Expr) -> Expr:
        zero = const(0, x.dtype)
        out_of_range = binop("or", y.lt(zero), y.ge(const(_bits(x.dtype), x.dtype)))
        if left:
            # the count masked into range and the result masked to 0 outside it, branch-free: GCC 12
            # -O3 -mavx2 vectorizes a shift under a select (c ? 0 : x << s) into wrong code
            ones = const(-1 if x.dtype[0] == "i" else 2 ** _bits(x.dtype) - 1, x.dtype)  # every bit set
            keep = select(out_of_range, zero, ones)
            return call("bitand", call("shl", x, call("bitand", y, const(_bits(x.dtype) - 1, x.dtype))), keep)
        s = select(out_of_range, zero, y)
        fill = select(x.lt(zero), const(-1, x.dtype), zero) if x.dtype[0] == "i" else zero
        return select(out_of_range, fill, call("shr", x, s))

    return nary(ctx, body, "bitshift")


# ---- selection and casts -------------------------------------------------------------------
@math_compute("Where", "elementwise")
def _where(ctx: ComputeContext) -> list[Tensor]:
    return nary(ctx, select, "where")


def cast_expr(x: Expr, dtype: str) -> Expr:
    """ONNX Cast of a value: to bool is ``x != 0``; float to int truncates toward zero. A
    float16/bfloat16 value is widened to float32 first (exact); conversions *to* them round once."""
    if x.dtype in HALF_DTYPES and dtype not in HALF_DTYPES:
        x = cast(x, "f32")
    if dtype == BOOL and x.dtype != BOOL:
        return x.ne(const(0, x.dtype))
    return cast(x, dtype)


@compute_def("Cast", "elementwise", half="native")
def _cast(ctx: ComputeContext) -> list[Tensor]:
    return unary(ctx, lambda x: cast_expr(x, ctx.out_dtype()), "cast")


@compute_def("CastLike", "elementwise", half="native")
def _castlike(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    return [compute(ctx.out_shape(), lambda *i: cast_expr(x[i], ctx.out_dtype()), "castlike")]


def scalar_load(t: Tensor) -> Expr:
    """The single element of a scalar or one-element tensor."""
    return t[tuple(const(0) for _ in t.shape)]


@math_compute("Clip", "elementwise")
def _clip(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    bounds: Sequence[Tensor | None] = [ctx.inputs[i] if i < len(ctx.inputs) else None for i in (1, 2)]
    lo, hi = bounds

    def body(*i: Expr) -> Expr:
        y = x[i]
        if lo is not None:
            y = maximum(y, scalar_load(lo))
        if hi is not None:  # applied last: when min > max every value becomes max
            y = minimum(y, scalar_load(hi))
        return y

    return [compute(ctx.out_shape(), body, "clip")]
