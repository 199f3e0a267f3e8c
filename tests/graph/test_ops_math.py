"""Math operators (elementwise, activation, reduce): references vs NumPy/PyTorch, shape rules
with symbolic dims, symbolic value propagation, and attribute/dtype errors."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tessera.errors import GraphError, ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.registry import InferContext, get_op
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.symbolic import Sym
from tessera.graph.tensor_type import TensorType

B, S = Sym.var("batch"), Sym.var("seq")
RNG = np.random.default_rng(0)


def build(op: str, types: list[TensorType | None], attrs: dict[str, Any] | None = None,
          consts: dict[int, np.ndarray] | None = None, n_out: int = 1) -> Graph:
    """A one-node graph; inputs listed in ``consts`` are constants, None ones are omitted."""
    g = Graph("t")
    names = []
    for i, t in enumerate(types):
        if consts and i in consts:
            names.append(g.add_constant(f"c{i}", consts[i]))
        elif t is None:
            names.append("")
        else:
            names.append(g.add_input(f"x{i}", t))
    g.outputs = [f"y{j}" for j in range(n_out)]
    g.nodes.append(Node(op, names, list(g.outputs), dict(attrs or {}), "n"))
    return infer_shapes(g)


def run(op: str, *xs: np.ndarray | None, consts: tuple[int, ...] = (), **attrs: Any) -> np.ndarray:
    """Run one op through shape inference and the reference; checks the inferred type."""
    types = [None if x is None else TensorType(DType.from_np(x.dtype), x.shape) for x in xs]
    g = build(op, types, attrs, {i: xs[i] for i in consts})  # type: ignore[misc]
    feeds = {f"x{i}": x for i, x in enumerate(xs) if x is not None and i not in consts}
    y = run_reference(g, feeds)["y0"]
    t = g.types["y0"]
    assert y.dtype == t.dtype.np and y.shape == t.shape, (y.dtype, y.shape, t)
    return y


def f32(*shape: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def close(a: np.ndarray, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol)


# ---- unary math vs PyTorch (float32, tolerance rtol 1e-5 / atol 1e-6) ----------------------
UNARY = [
    ("Neg", torch.neg, (-3, 3)), ("Abs", torch.abs, (-3, 3)), ("Sqrt", torch.sqrt, (0, 5)),
    ("Reciprocal", torch.reciprocal, (0.5, 4)), ("Exp", torch.exp, (-5, 5)), ("Log", torch.log, (0.1, 9)),
    ("Erf", torch.erf, (-4, 4)), ("Tanh", torch.tanh, (-5, 5)), ("Sigmoid", torch.sigmoid, (-30, 30)),
    ("Sin", torch.sin, (-3, 3)), ("Cos", torch.cos, (-3, 3)), ("Tan", torch.tan, (-1.4, 1.4)),
    ("Asin", torch.asin, (-0.99, 0.99)), ("Acos", torch.acos, (-0.99, 0.99)), ("Atan", torch.atan, (-9, 9)),
    ("Sinh", torch.sinh, (-3, 3)), ("Cosh", torch.cosh, (-3, 3)), ("Asinh", torch.asinh, (-9, 9)),
    ("Acosh", torch.acosh, (1.01, 9)), ("Atanh", torch.atanh, (-0.99, 0.99)), ("Floor", torch.floor, (-3, 3)),
    ("Ceil", torch.ceil, (-3, 3)), ("Round", torch.round, (-5, 5)), ("Sign", torch.sign, (-3, 3)),
    ("Relu", torch.relu, (-3, 3)),
]


@pytest.mark.parametrize(("op", "fn", "rng"), UNARY, ids=[u[0] for u in UNARY])
def test_unary_vs_torch(op: str, fn: Any, rng: tuple[float, float]) -> None:
    x = f32(3, 17, lo=rng[0], hi=rng[1])
    close(run(op, x), fn(torch.from_numpy(x)))


def test_round_half_to_even_and_erf_accuracy() -> None:
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997], np.float32)
    np.testing.assert_array_equal(run("Round", x), [-2, -2, -0, 0, 2, 2, 0])
    xd = np.linspace(-6, 6, 101)
    np.testing.assert_array_equal(run("Erf", xd), [math.erf(v) for v in xd])  # exact in float64


@pytest.mark.parametrize("dt", [np.float16, ml_dtypes.bfloat16])
def test_narrow_floats_keep_dtype(dt: Any) -> None:
    x = f32(4, 8).astype(dt)
    y = run("Tanh", x)
    assert y.dtype == np.dtype(dt)
    expect = np.tanh(x.astype(np.float64)).astype(dt)  # one rounding of the exact result
    np.testing.assert_array_equal(y.astype(np.float32), expect.astype(np.float32))
    s = run("Add", x, x)
    np.testing.assert_array_equal(s.astype(np.float32), (x.astype(np.float32) * 2).astype(dt).astype(np.float32))


def test_isnan_isinf() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -0.0], np.float32)
    np.testing.assert_array_equal(run("IsNaN", x), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(run("IsInf", x), [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(run("IsInf", x, detect_negative=0), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(run("IsInf", x, detect_positive=0), [0, 0, 1, 0, 0])


# ---- binary / variadic ---------------------------------------------------------------------
@pytest.mark.parametrize(("op", "fn"), [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                                        ("Div", np.divide), ("Pow", np.power)])
def test_binary_float_broadcast(op: str, fn: Any) -> None:
    a, b = f32(2, 1, 5, lo=0.5, hi=2), f32(3, 1, lo=0.5, hi=2)
    y = run(op, a, b)
    assert y.shape == (2, 3, 5)
    close(y, fn(a.astype(np.float64), b.astype(np.float64)))


def test_integer_div_mod_pow() -> None:
    a = np.array([7, -7, 7, -7, 0], np.int64)
    b = np.array([2, 2, -2, -2, 3], np.int64)
    np.testing.assert_array_equal(run("Div", a, b), torch.div(torch.tensor(a), torch.tensor(b), rounding_mode="trunc"))
    np.testing.assert_array_equal(run("Mod", a, b), [1, 1, -1, -1, 0])  # sign of divisor
    np.testing.assert_array_equal(run("Mod", a, b, fmod=1), [1, -1, 1, -1, 0])  # sign of dividend
    np.testing.assert_array_equal(run("Div", np.array([2**62 + 1], np.int64), np.array([1], np.int64)),
                                  [2**62 + 1])  # exact, no float64 round trip
    np.testing.assert_array_equal(run("Pow", np.array([2, 3], np.int32), np.array([3, 2], np.int64)), [8, 9])
    y = run("Pow", np.array([2, 3], np.int64), np.array([0.5, 2.0], np.float32))
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [1, 9])  # output keeps the base dtype
    x = f32(10, lo=-5, hi=5)
    close(run("Mod", x, np.float32(1.5) * np.ones(10, np.float32), fmod=1), np.fmod(x, 1.5))


def test_variadic() -> None:
    a, b, c = f32(2, 3), f32(3), f32(1, 1)
    close(run("Max", a, b, c), np.maximum(np.maximum(a, b), c))
    close(run("Min", a, b, c), np.minimum(np.minimum(a, b), c))
    close(run("Sum", a, b, c), a + b + c)
    close(run("Mean", a, b, c), (a + b + c) / 3)
    close(run("Sum", a), a)
    assert run("Max", np.array([np.nan, 1], np.float32), np.array([0, 2], np.float32))[0] != 0  # NaN wins


def test_compare_logic_bitwise() -> None:
    a, b = np.array([1, 2, 3], np.int32), np.array([2, 2, 2], np.int32)
    for op, fn in [("Equal", np.equal), ("Less", np.less), ("Greater", np.greater),
                   ("LessOrEqual", np.less_equal), ("GreaterOrEqual", np.greater_equal),
                   ("BitwiseAnd", np.bitwise_and), ("BitwiseOr", np.bitwise_or), ("BitwiseXor", np.bitwise_xor)]:
        np.testing.assert_array_equal(run(op, a, b), fn(a, b))
    np.testing.assert_array_equal(run("BitwiseNot", np.array([0, 5], np.uint8)), [255, 250])
    p, q = np.array([True, True, False, False]), np.array([True, False, True, False])
    np.testing.assert_array_equal(run("And", p, q), p & q)
    np.testing.assert_array_equal(run("Or", p, q), p | q)
    np.testing.assert_array_equal(run("Xor", p, q), p ^ q)
    np.testing.assert_array_equal(run("Not", p), ~p)
    assert run("Equal", p, q).dtype == np.bool_


def test_bitshift() -> None:
    x, s = np.array([16, 4, 1, 255], np.uint8), np.array([1, 2, 8, 9], np.uint8)
    np.testing.assert_array_equal(run("BitShift", x, s, direction="RIGHT"), [8, 1, 0, 0])
    np.testing.assert_array_equal(run("BitShift", x, s, direction="LEFT"), [32, 16, 0, 0])
    xi = np.array([-16, -1, 16, -5], np.int8)
    si = np.array([2, 9, 9, -1], np.int8)
    np.testing.assert_array_equal(run("BitShift", xi, si, direction="RIGHT"), [-4, -1, 0, -1])


def test_cast_and_castlike() -> None:
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7, np.nan], np.float32)
    np.testing.assert_array_equal(run("Cast", x[:5], to=DType.int32), [-2, 0, 0, 0, 2])  # truncation
    np.testing.assert_array_equal(run("Cast", x, to=DType.bool), [1, 1, 0, 1, 1, 1])
    y = run("Cast", np.array([1.00390625, 1.01171875], np.float32), to=DType.bfloat16)
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(y.astype(np.float32), [1.0, 1.015625])  # round half to even
    np.testing.assert_array_equal(run("Cast", np.array([200], np.int16), to=DType.int8), [-56])
    z = run("CastLike", np.array([1, 0], np.int64), np.zeros(3, np.float16))
    assert z.dtype == np.float16


def test_clip_and_where() -> None:
    x = f32(4, 5)
    lo, hi = np.array(-1, np.float32), np.array(1.5, np.float32)
    close(run("Clip", x, lo, hi), np.clip(x, -1, 1.5))
    close(run("Clip", x, None, hi), np.minimum(x, 1.5))
    close(run("Clip", x, lo), np.maximum(x, -1))
    close(run("Clip", x), x)
    close(run("Clip", x, np.array(2, np.float32), np.array(1, np.float32)), np.ones_like(x))  # min > max
    np.testing.assert_array_equal(run("Clip", np.array([-5, 0, 9], np.int64), np.array(-1), np.array(3)),
                                  [-1, 0, 3])
    c = RNG.random((3, 1)) > 0.5
    a, b = f32(1, 4), f32(3, 4)
    y = run("Where", c, a, b)
    np.testing.assert_array_equal(y, np.where(c, a, b))
    assert y.shape == (3, 4)


# ---- activations vs PyTorch ----------------------------------------------------------------
ACT = [
    ("LeakyRelu", {"alpha": 0.2}, lambda t: F.leaky_relu(t, 0.2)),
    ("Elu", {"alpha": 0.7}, lambda t: F.elu(t, 0.7)),
    ("Selu", {}, F.selu),
    ("Celu", {"alpha": 1.3}, lambda t: F.celu(t, 1.3)),
    ("Gelu", {}, F.gelu),
    ("Gelu", {"approximate": "tanh"}, lambda t: F.gelu(t, approximate="tanh")),
    ("HardSigmoid", {"alpha": 1 / 6}, F.hardsigmoid),
    ("HardSwish", {}, F.hardswish),
    ("Softplus", {}, F.softplus),
    ("Softsign", {}, F.softsign),
    ("Mish", {}, F.mish),
    ("ThresholdedRelu", {"alpha": 0.5}, lambda t: F.threshold(t, 0.5, 0.0)),
    ("Shrink", {"lambd": 0.5, "bias": 0.5}, lambda t: F.softshrink(t, 0.5)),
    ("Shrink", {"lambd": 0.7}, lambda t: F.hardshrink(t, 0.7)),
    ("Swish", {}, F.silu),
]


@pytest.mark.parametrize(("op", "attrs", "fn"), ACT, ids=[f"{a[0]}{i}" for i, a in enumerate(ACT)])
def test_activation_vs_torch(op: str, attrs: dict[str, Any], fn: Any) -> None:
    x = f32(4, 33, lo=-8, hi=8)
    close(run(op, x, **attrs), fn(torch.from_numpy(x)))


def test_softplus_no_overflow_and_prelu() -> None:
    x = np.array([-1000.0, 0.0, 1000.0], np.float32)
    close(run("Softplus", x), [0.0, math.log(2), 1000.0])
    close(run("Sigmoid", x), [0.0, 0.5, 1.0])
    x4, slope = f32(2, 3, 4, 5), f32(3, 1, 1, lo=0, hi=1)
    close(run("PRelu", x4, slope), F.prelu(torch.from_numpy(x4), torch.from_numpy(slope.reshape(3))))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family(axis: int) -> None:
    x = f32(3, 4, 5, lo=-20, hi=20)
    t = torch.from_numpy(x)
    close(run("Softmax", x, axis=axis), torch.softmax(t, axis))
    close(run("LogSoftmax", x, axis=axis), torch.log_softmax(t, axis), atol=1e-5)
    h = run("Hardmax", x, axis=axis)
    np.testing.assert_array_equal(h, F.one_hot(t.argmax(axis), x.shape[axis]).movedim(-1, axis).numpy())
    big = np.array([[1000.0, 1000.0, -np.inf]], np.float32)
    close(run("Softmax", big), [[0.5, 0.5, 0.0]])


# ---- reductions ----------------------------------------------------------------------------
RED = [
    ("ReduceSum", lambda t, a, k: t.sum(a, keepdim=k)),
    ("ReduceMean", lambda t, a, k: t.mean(a, keepdim=k)),
    ("ReduceMax", lambda t, a, k: t.amax(a, keepdim=k)),
    ("ReduceMin", lambda t, a, k: t.amin(a, keepdim=k)),
    ("ReduceProd", lambda t, a, k: t.prod(a[0], keepdim=k) if len(a) == 1 else t.prod(a[1], k).prod(a[0], k)),
    ("ReduceL1", lambda t, a, k: t.abs().sum(a, keepdim=k)),
    ("ReduceL2", lambda t, a, k: t.square().sum(a, keepdim=k).sqrt()),
    ("ReduceLogSum", lambda t, a, k: t.sum(a, keepdim=k).log()),
    ("ReduceLogSumExp", lambda t, a, k: t.logsumexp(a, keepdim=k)),
    ("ReduceSumSquare", lambda t, a, k: t.square().sum(a, keepdim=k)),
]


@pytest.mark.parametrize(("op", "fn"), RED, ids=[r[0] for r in RED])
@pytest.mark.parametrize(("axes", "keep"), [((1,), 1), ((0, 2), 0), ((-1,), 0)])
def test_reduce_vs_torch(op: str, fn: Any, axes: tuple[int, ...], keep: int) -> None:
    x = f32(3, 4, 5, lo=0.5, hi=1.5)
    y = run(op, x, np.array(axes, np.int64), consts=(1,), keepdims=keep)
    close(y, fn(torch.from_numpy(x).double(), list(axes), bool(keep)), rtol=1e-5)


def test_reduce_axes_defaults_noop_empty_set() -> None:
    x = f32(2, 3)
    close(run("ReduceSum", x), x.sum(keepdims=True))
    close(run("ReduceSum", x, keepdims=0), x.sum())
    close(run("ReduceSum", x, np.zeros(0, np.int64), consts=(1,), noop_with_empty_axes=1), x)
    close(run("ReduceSum", x, noop_with_empty_axes=1), x)
    e = np.zeros((2, 0, 4), np.float32)
    ax = np.array([1], np.int64)
    close(run("ReduceSum", e, ax, consts=(1,)), np.zeros((2, 1, 4)))
    close(run("ReduceProd", e, ax, consts=(1,)), np.ones((2, 1, 4)))
    assert np.all(run("ReduceMax", e, ax, consts=(1,)) == -np.inf)
    assert np.all(run("ReduceMin", e, ax, consts=(1,)) == np.inf)
    assert np.all(run("ReduceLogSumExp", e, ax, consts=(1,)) == -np.inf)
    xi = np.array([[1, 2], [3, 4]], np.int32)
    np.testing.assert_array_equal(run("ReduceSum", xi, ax, consts=(1,), keepdims=0), [3, 7])
    np.testing.assert_array_equal(run("ReduceMax", np.array([[True, False]]), ax, consts=(1,)), [[True]])


def test_argmax_argmin_cumsum() -> None:
    x = np.array([[1, 3, 3, 0], [2, 2, 1, 1]], np.float32)
    np.testing.assert_array_equal(run("ArgMax", x, axis=1), [[1], [0]])
    np.testing.assert_array_equal(run("ArgMax", x, axis=1, select_last_index=1, keepdims=0), [2, 1])
    np.testing.assert_array_equal(run("ArgMin", x, axis=0, keepdims=0), [0, 1, 1, 0])
    np.testing.assert_array_equal(run("ArgMin", x, axis=-1, select_last_index=1), [[3], [3]])
    assert run("ArgMax", x).dtype == np.int64
    v = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    ax = np.array(1, np.int32)
    close(run("CumSum", v, ax), np.cumsum(v, 1))
    close(run("CumSum", v, ax, exclusive=1), [[0, 1, 3], [0, 4, 9]])
    close(run("CumSum", v, ax, reverse=1), [[6, 5, 3], [15, 11, 6]])
    close(run("CumSum", v, ax, reverse=1, exclusive=1), [[5, 3, 0], [11, 6, 0]])
    close(run("CumSum", v, np.array([0], np.int64)), np.cumsum(v, 0))


# ---- shape rules with symbolic dims --------------------------------------------------------
def out_type(op: str, types: list[TensorType | None], attrs: dict[str, Any] | None = None,
             consts: dict[int, np.ndarray] | None = None) -> TensorType:
    return build(op, types, attrs, consts).types["y0"]


def test_symbolic_shapes() -> None:
    f = DType.float32
    x = TensorType(f, (B, S, 768))
    assert out_type("Add", [x, TensorType(f, (1, 1, 768))]).shape == (B, S, 768)
    assert out_type("Mul", [TensorType(f, (B, 1, S)), TensorType(f, (S, 1))]).shape == (B, S, S)
    assert out_type("Where", [TensorType(DType.bool, (1, S)), TensorType(f, (B, 1)),
                              TensorType(f, ())]).shape == (B, S)
    assert out_type("Less", [x, x]) == TensorType(DType.bool, (B, S, 768))
    assert out_type("Max", [x, TensorType(f, (768,)), TensorType(f, (B, 1, 1))]).shape == (B, S, 768)
    axes = np.array([1, 2], np.int64)
    assert out_type("ReduceSum", [x, None], consts={1: axes}).shape == (B, 1, 1)
    assert out_type("ReduceMean", [x, None], {"keepdims": 0}, consts={1: axes}).shape == (B,)
    assert out_type("ReduceMax", [x]).shape == (1, 1, 1)
    assert out_type("ReduceMax", [x], {"keepdims": 0}).shape == ()
    assert out_type("ArgMax", [x], {"axis": -1, "keepdims": 0}) == TensorType(DType.int64, (B, S))
    assert out_type("Softmax", [x], {"axis": 1}) == x
    assert out_type("Cast", [x], {"to": DType.float16}) == TensorType(DType.float16, (B, S, 768))
    assert out_type("CastLike", [x, TensorType(DType.int8, (2,))]).dtype == DType.int8
    assert out_type("CumSum", [x, TensorType(DType.int64, ())]) == x


def test_reduce_with_runtime_axes() -> None:
    x = TensorType(DType.float32, (B, 1, 8))
    keep = out_type("ReduceSum", [x, TensorType(DType.int64, (1,))])
    assert keep.rank == 3 and keep.shape[1] == 1 and all(isinstance(d, Sym) for d in (keep.shape[0], keep.shape[2]))
    assert keep.shape[0] != keep.shape[2]
    assert out_type("ReduceSum", [x, TensorType(DType.int64, (2,))], {"keepdims": 0}).rank == 1
    with pytest.raises(ShapeInferenceError, match="cannot infer the output rank"):
        out_type("ReduceSum", [x, TensorType(DType.int64, (S,))], {"keepdims": 0})
    assert out_type("ReduceSum", [x, TensorType(DType.int64, (0,))], {"noop_with_empty_axes": 1}) == x


def _prop(op: str, values: list[Any], types: list[TensorType], attrs: dict[str, Any] | None = None) -> Any:
    opdef = get_op(op)
    node = Node(op, [f"x{i}" for i in range(len(types))], ["y"], attrs or {}, "n")
    full = {k: spec.default for k, spec in opdef.attrs.items()} | (attrs or {})
    assert opdef.propagate is not None
    return opdef.propagate(InferContext(node, list(types), full, values, 1))[0]


def test_symbolic_value_propagation() -> None:
    i64 = TensorType(DType.int64, (3,))
    shape = (B, S, 768)
    assert _prop("Mul", [shape, np.array([1, 2, 1])], [i64, i64]) == (B, S * 2, 768)
    assert _prop("Add", [shape, np.array(1)], [i64, TensorType(DType.int64, ())]) == (B + 1, S + 1, 769)
    assert _prop("Sub", [shape, shape], [i64, i64]) == (0, 0, 0)
    assert _prop("Div", [(S * 4, 768), np.array([2, -5])], [i64, i64]) == (S * 2, -153)  # trunc
    assert _prop("Div", [(S,), (B,)], [i64, i64]) is None
    assert _prop("Mod", [(S, 7), np.array([4, 4])], [i64, i64]) == (S % 4, 3)
    assert _prop("Max", [(S, 3), (S, 5)], [i64, i64]) == (S, 5)
    assert _prop("Max", [(S,), (B,)], [i64, i64]) is None
    assert _prop("Neg", [(S,)], [i64]) == (-S,)
    assert _prop("Cast", [(B, S)], [i64], {"to": DType.int32}) == (B, S)
    assert _prop("Cast", [(B, S)], [i64], {"to": DType.float32}) is None
    cond = TensorType(DType.bool, (2,))
    assert _prop("Where", [np.array([True, False]), (B, S), np.array(7)],
                 [cond, i64, TensorType(DType.int64, ())]) == (B, 7)
    f = TensorType(DType.float32, (2,))
    assert _prop("Where", [np.array([True, False]), np.array([np.inf, 1.0]), np.array(7.0)], [cond, f, f]) is None


def test_flops() -> None:
    g = build("Add", [TensorType(DType.float32, (B, 4)), TensorType(DType.float32, (4,))])
    op = get_op("Add")
    ctx = InferContext(g.nodes[0], [g.types["x0"], g.types["x1"]], {}, [None, None], 1)
    assert op.flops is not None and op.flops(ctx, [g.types["y0"]]) == B * 4
    r = get_op("ReduceSum")
    assert r.flops is not None and r.flops(ctx, [g.types["y0"]]) == B * 4


# ---- errors --------------------------------------------------------------------------------
F32 = TensorType(DType.float32, (2, 3))


@pytest.mark.parametrize(("op", "types", "attrs", "err", "msg"), [
    ("Gelu", [F32], {"approx": "tanh"}, GraphError, "unknown attribute 'approx'"),
    ("LeakyRelu", [F32], {"alpha": "big"}, GraphError, "attribute 'alpha' must be float"),
    ("BitShift", [TensorType(DType.uint8, (2,))] * 2, {}, GraphError, "missing required attribute 'direction'"),
    ("BitShift", [TensorType(DType.uint8, (2,))] * 2, {"direction": "UP"}, ShapeInferenceError, "one of"),
    ("Gelu", [F32], {"approximate": "erf"}, ShapeInferenceError, "'approximate' must be one of"),
    ("Mod", [F32, F32], {"fmod": 2}, ShapeInferenceError, "'fmod' must be one of"),
    ("Cast", [F32], {"to": 5}, GraphError, "attribute 'to' must be dtype"),
    ("Cast", [F32], {}, GraphError, "missing required attribute 'to'"),
    ("Sqrt", [TensorType(DType.int64, (2,))], {}, ShapeInferenceError, "dtype i64, expected float"),
    ("And", [F32, F32], {}, ShapeInferenceError, "expected bool"),
    ("Add", [F32, TensorType(DType.int64, (2, 3))], {}, ShapeInferenceError, "input dtypes differ"),
    ("Add", [F32, TensorType(DType.float32, (4,))], {}, ShapeInferenceError, "do not broadcast"),
    ("Where", [F32, F32, F32], {}, ShapeInferenceError, "expected bool"),
    ("Softmax", [F32], {"axis": 2}, ShapeInferenceError, "axis 2 out of range"),
    ("ArgMax", [F32], {"axis": -3}, ShapeInferenceError, "out of range"),
    ("PRelu", [F32, TensorType(DType.float32, (4,))], {}, ShapeInferenceError, "does not broadcast"),
    ("Clip", [F32, TensorType(DType.float32, (2,))], {}, ShapeInferenceError, "must be a scalar"),
    ("Sum", [], {}, GraphError, "takes 1..n inputs, got 0"),
    ("Neg", [TensorType(DType.uint8, (2,))], {}, ShapeInferenceError, "float or signed integer"),
])
def test_errors(op: str, types: list[TensorType], attrs: dict[str, Any], err: type, msg: str) -> None:
    with pytest.raises(err, match=msg):
        build(op, types, attrs)


def test_reduce_axes_errors() -> None:
    x = TensorType(DType.float32, (2, 3))
    with pytest.raises(ShapeInferenceError, match="axis 2 out of range"):
        build("ReduceSum", [x, None], consts={1: np.array([2], np.int64)})
    with pytest.raises(ShapeInferenceError, match="repeated axes"):
        build("ReduceSum", [x, None], consts={1: np.array([1, -1], np.int64)})
    with pytest.raises(ShapeInferenceError, match="expected"):
        build("ReduceSum", [x, None], consts={1: np.array([1.0], np.float32)})
    with pytest.raises(ShapeInferenceError, match="axis 3 out of range"):
        build("CumSum", [x, None], consts={1: np.array(3, np.int64)})
