"""Compute definitions of the math families (elementwise, activation, reduce, normalization):
every definition, evaluated with the TE evaluator, must match the registry's reference
implementation (float32: rtol 1e-5 / atol 1e-6; float64: rtol 1e-10; integers and bools exact)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

import tessera.loop.computes.activation  # noqa: F401  (registers definitions until __init__ lists them)
import tessera.loop.computes.elementwise  # noqa: F401
import tessera.loop.computes.normalization  # noqa: F401
import tessera.loop.computes.reduce  # noqa: F401
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import all_ops, get_op, normalize_attrs
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.loop.compute import ComputeContext, get_compute
from tessera.loop.te import Tensor, placeholder
from tessera.loop.te_eval import evaluate

RNG = np.random.default_rng(1234)
FAMILIES = {"elementwise", "activation", "reduce", "normalization"}


# ---- input makers ----------------------------------------------------------------------------
def f32(*shape: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def f64(*shape: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape)


def ints(*shape: int, lo: int = -9, hi: int = 10, dtype: Any = np.int32) -> np.ndarray:
    return RNG.integers(lo, hi, shape).astype(dtype)


def nonzero(*shape: int, lo: int = 1, hi: int = 6, dtype: Any = np.int32) -> np.ndarray:
    v = RNG.integers(lo, hi, shape)
    return (v * RNG.choice([-1, 1], shape) if np.dtype(dtype).kind == "i" else v).astype(dtype)


def away0(*shape: int) -> np.ndarray:
    return (RNG.uniform(0.5, 3.0, shape) * RNG.choice([-1, 1], shape)).astype(np.float32)


def bools(*shape: int) -> np.ndarray:
    return RNG.random(shape) < 0.5


def ties(*shape: int) -> np.ndarray:
    """float32 values with many exact ties."""
    return RNG.integers(-2, 3, shape).astype(np.float32)


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


SPECIALS = np.array([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 3.25, -0.0], dtype=np.float32)


# ---- the check -------------------------------------------------------------------------------
def case(op: str, *xs: np.ndarray | None, consts: tuple[int, ...] = (), n_out: int = 1, id: str = "",
         **attrs: Any) -> Any:
    return pytest.param(op, list(xs), consts, n_out, attrs, id=f"{op}-{id}" if id else op)


def lower(op: str, xs: list[np.ndarray | None], consts: tuple[int, ...], n_out: int,
          attrs: dict[str, Any]) -> tuple[list[Tensor], list[Tensor | None], dict[str, Any], list[TensorType]]:
    """Shape-infer a one-node graph and call the op's compute definition."""
    g = Graph("t")
    names: list[str] = []
    types: list[TensorType | None] = []
    for i, x in enumerate(xs):
        if x is None:
            names.append("")
            types.append(None)
            continue
        t = TensorType(DType.from_np(x.dtype), x.shape)
        types.append(t)
        names.append(g.add_constant(f"c{i}", x) if i in consts else g.add_input(f"x{i}", t))
    node = Node(op, names, [f"y{j}" for j in range(n_out)], dict(attrs), "n")
    g.nodes.append(node)
    g.outputs = list(node.outputs)
    infer_shapes(g)
    nattrs = normalize_attrs(get_op(op), node)
    phs = [None if t is None else placeholder(t.shape, t.dtype.value, f"x{i}") for i, t in enumerate(types)]
    ctx = ComputeContext(phs, nattrs, types, [g.types[o] for o in node.outputs],
                         [x if i in consts else None for i, x in enumerate(xs)])
    cdef = get_compute(op)
    assert cdef is not None, f"{op} has no compute definition"
    return cdef.fn(ctx), phs, nattrs, ctx.out_types


def check(op: str, xs: list[np.ndarray | None], consts: tuple[int, ...], n_out: int, attrs: dict[str, Any]) -> None:
    outs, phs, nattrs, out_types = lower(op, xs, consts, n_out, attrs)
    assert len(outs) == n_out
    got = evaluate(outs, [(p, x) for p, x in zip(phs, xs, strict=True) if p is not None])
    want = get_op(op).reference(xs, nattrs, n_out)[:n_out]  # LayerNormalization always returns 3
    for g_, w, t in zip(got, want, out_types, strict=True):
        assert g_.dtype == w.dtype == t.dtype.np, (g_.dtype, w.dtype, t)
        assert g_.shape == w.shape == tuple(t.shape), (g_.shape, w.shape, t)
        if w.dtype == np.float64:
            np.testing.assert_allclose(g_, w, rtol=1e-10, atol=1e-12, equal_nan=True)
        elif w.dtype.kind == "f":
            np.testing.assert_allclose(g_, w, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            np.testing.assert_array_equal(g_, w)


# ---- cases -----------------------------------------------------------------------------------
_UNARY_FLOAT = {
    "Sqrt": (0.1, 4.0), "Log": (0.1, 4.0), "Exp": (-3, 3), "Erf": (-2.5, 2.5), "Tanh": (-3, 3),
    "Sigmoid": (-8, 8), "Sin": (-4, 4), "Cos": (-4, 4), "Tan": (-1.2, 1.2), "Asin": (-0.95, 0.95),
    "Acos": (-0.95, 0.95), "Atan": (-4, 4), "Sinh": (-3, 3), "Cosh": (-3, 3), "Asinh": (-4, 4),
    "Acosh": (1.05, 4.0), "Atanh": (-0.9, 0.9), "Floor": (-4, 4), "Ceil": (-4, 4), "Neg": (-4, 4),
    "Abs": (-4, 4), "Sign": (-4, 4), "Relu": (-4, 4),
}
ELEMENTWISE = [
    *(case(op, f32(3, 4, lo=lo, hi=hi)) for op, (lo, hi) in _UNARY_FLOAT.items()),
    case("Exp", f64(2, 3), id="f64"),
    case("Sign", np.array([-2.0, 0.0, 3.0, -0.0], np.float32), id="zero"),
    case("Reciprocal", away0(3, 4)),
    case("Round", np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1.2, -1.7, 3.5], np.float32), id="half-even"),
    *(case(op, ints(3, 4), id="i32") for op in ("Neg", "Abs", "Sign", "Relu")),
    case("Abs", ints(5, lo=0, hi=200, dtype=np.uint8), id="u8"),
    case("IsNaN", SPECIALS),
    case("IsInf", SPECIALS),
    case("IsInf", SPECIALS, detect_negative=0, id="pos"),
    case("IsInf", SPECIALS, detect_positive=0, id="neg"),
    case("IsInf", SPECIALS, detect_positive=0, detect_negative=0, id="none"),
    case("Add", f32(2, 3, 4), f32(3, 1), id="bcast"),
    case("Add", f32(2, 3), np.array(2.5, np.float32), id="scalar"),
    case("Add", ints(3, 4, dtype=np.int8, lo=-128, hi=128), ints(4, dtype=np.int8, lo=-128, hi=128), id="i8-wrap"),
    case("Sub", f32(4, 1), f32(1, 5), id="bcast"),
    case("Sub", ints(2, 3), ints(3), id="i32"),
    case("Mul", f32(2, 3, 4), f32(4)),
    case("Mul", f64(2, 3), f64(2, 3), id="f64"),
    case("Div", f32(2, 3), away0(2, 1), id="f32"),
    case("Div", ints(4, 5), nonzero(5), id="i32-trunc"),
    case("Div", ints(4, 5, lo=0, hi=250, dtype=np.uint8), nonzero(4, 1, dtype=np.uint8), id="u8"),
    case("Pow", f32(3, 4, lo=0.1, hi=3), f32(4, lo=-2, hi=2), id="f32"),
    case("Pow", f32(3, 4), ints(4, lo=0, hi=4, dtype=np.int64), id="f32-int"),
    case("Pow", np.array([2, -3, 1, -1, 5, 1, -1, 4], np.int32), np.array([3, 2, -2, -3, -1, 0, -2, 1], np.int32),
         id="int-int"),
    case("Pow", ints(2, 3, lo=1, hi=5), f32(3, lo=0, hi=2), id="int-float"),
    case("Pow", f32(2, 3, lo=0.1, hi=3), f64(3, lo=-2, hi=2), id="f32-f64"),
    case("Mod", ints(3, 4), nonzero(3, 4), id="int"),
    case("Mod", ints(3, 4), nonzero(4), fmod=1, id="int-fmod"),
    case("Mod", f32(3, 4, lo=-5, hi=5), away0(3, 4), id="float"),
    case("Mod", f32(3, 4, lo=-5, hi=5), away0(4), fmod=1, id="float-fmod"),
    case("Sum", f32(2, 3), f32(3), f32(2, 1), id="3"),
    case("Sum", ints(2, 3), id="1"),
    case("Mean", f32(2, 3), f32(3), f32(2, 1), id="3"),
    case("Max", ties(2, 3), ties(3), ties(2, 1), id="3"),
    case("Min", ints(2, 3), ints(3), id="i32"),
    case("Not", bools(3, 4)),
    case("And", bools(2, 3), bools(3)),
    case("Or", bools(2, 3), bools(2, 1)),
    case("Xor", bools(2, 3), bools(3)),
    *(case(op, ties(3, 4), ties(4)) for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")),
    case("Less", ints(3, 4, dtype=np.int64), ints(3, 1, dtype=np.int64), id="i64"),
    case("Equal", bools(3, 4), bools(4), id="bool"),
    case("BitwiseNot", ints(3, 4)),
    case("BitwiseNot", ints(3, 4, lo=0, hi=256, dtype=np.uint8), id="u8"),
    case("BitwiseAnd", ints(3, 4, lo=-100, hi=100), ints(4, lo=-100, hi=100)),
    case("BitwiseOr", ints(3, 4, lo=0, hi=256, dtype=np.uint8), ints(3, 4, lo=0, hi=256, dtype=np.uint8)),
    case("BitwiseXor", ints(3, 4, lo=-100, hi=100), ints(3, 1, lo=-100, hi=100)),
    case("BitShift", ints(3, 6, lo=0, hi=256, dtype=np.uint8), ints(6, lo=0, hi=10, dtype=np.uint8),
         direction="LEFT", id="u8-left"),
    case("BitShift", ints(3, 6, lo=0, hi=256, dtype=np.uint8), ints(6, lo=0, hi=10, dtype=np.uint8),
         direction="RIGHT", id="u8-right"),
    case("BitShift", ints(3, 8, lo=-1000, hi=1000), np.array([-1, 0, 1, 5, 31, 32, 40, 3], np.int32),
         direction="LEFT", id="i32-left"),
    case("BitShift", ints(3, 8, lo=-1000, hi=1000), np.array([-1, 0, 1, 5, 31, 32, 40, 3], np.int32),
         direction="RIGHT", id="i32-right"),
    case("Where", bools(2, 3, 4), f32(3, 1), f32(4), id="bcast"),
    case("Where", bools(4), ints(3, 4), ints(1), id="i32"),
    case("Cast", f32(3, 4, lo=-300, hi=300), to=DType.int32, id="f32-i32"),
    case("Cast", f32(3, 4, lo=0, hi=255), to=DType.uint8, id="f32-u8"),  # out of range is undefined in C
    case("Cast", np.array([0.0, -0.0, 1.5, np.nan, -2.0], np.float32), to=DType.bool, id="f32-bool"),
    case("Cast", ints(3, 4, dtype=np.int64), to=DType.float32, id="i64-f32"),
    case("Cast", ints(3, 4, lo=-1000, hi=1000), to=DType.int8, id="i32-i8-wrap"),
    case("Cast", bools(3, 4), to=DType.float32, id="bool-f32"),
    case("Cast", f64(3, 4), to=DType.float32, id="f64-f32"),
    case("Cast", f32(3, 4), to=DType.float32, id="identity"),
    case("CastLike", f32(3, 4, lo=-50, hi=50), ints(1, dtype=np.int64)),
    case("Clip", f32(3, 4), np.array(-1.0, np.float32), np.array(1.5, np.float32), id="both"),
    case("Clip", f32(3, 4), np.array([-1.0], np.float32), id="min"),
    case("Clip", f32(3, 4), None, np.array(0.5, np.float32), id="max"),
    case("Clip", f32(3, 4), np.array(1.0, np.float32), np.array(-1.0, np.float32), id="min>max"),
    case("Clip", ints(3, 4), np.array(-2, np.int32), np.array(3, np.int32), id="i32"),
    case("Clip", f32(3, 4), id="none"),
]

ACTIVATION = [
    *(case(op, f32(3, 5, lo=-4, hi=4)) for op in (
        "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid", "HardSwish", "Softsign", "Mish",
        "ThresholdedRelu", "Shrink", "Swish")),
    case("Softplus", np.array([-40, -5, -0.5, 0, 0.5, 5, 40], np.float32), id="wide"),
    case("Mish", np.array([-40, -5, -0.5, 0, 0.5, 5, 40], np.float32), id="wide"),
    case("LeakyRelu", f32(3, 5), alpha=0.2, id="alpha"),
    case("Elu", f32(3, 5), alpha=0.5, id="alpha"),
    case("Celu", f32(3, 5), alpha=2.0, id="alpha"),
    case("Gelu", f32(3, 5, lo=-5, hi=5), approximate="tanh", id="tanh"),
    case("Gelu", f64(3, 5, lo=-5, hi=5), id="f64"),
    case("Gelu", f64(3, 5, lo=-5, hi=5), approximate="tanh", id="f64-tanh"),
    case("HardSigmoid", f32(3, 5, lo=-6, hi=6), alpha=0.3, beta=0.4, id="attrs"),
    case("HardSwish", f32(3, 5, lo=-6, hi=6), id="wide"),
    case("ThresholdedRelu", f32(3, 5), alpha=0.5, id="alpha"),
    case("Shrink", f32(3, 5), bias=0.5, lambd=1.0, id="attrs"),
    case("Shrink", ints(3, 5), bias=1.5, lambd=2.0, id="i32"),
    case("Swish", f32(3, 5), alpha=1.5, id="alpha"),
    case("PRelu", f32(2, 3, 4, 4), f32(3, 1, 1), id="channel"),
    case("PRelu", f32(2, 3, 4), f32(1), id="scalar"),
    case("PRelu", ints(3, 4), ints(4), id="i32"),
    case("Softmax", f32(2, 3, 7)),
    case("Softmax", f32(2, 5, 3), axis=1, id="middle"),
    case("Softmax", f32(4, 3), axis=0, id="axis0"),
    case("Softmax", f32(6, lo=-50, hi=50), id="rank1"),
    case("Softmax", np.array([[1.0, -np.inf, 2.0], [-np.inf, -np.inf, -np.inf], [0.0, np.inf, 1.0]],
                             np.float32), id="inf"),
    case("Softmax", f64(2, 3, 7), axis=-2, id="f64"),
    case("LogSoftmax", f32(2, 3, 7)),
    case("LogSoftmax", f32(2, 5, 3), axis=1, id="middle"),
    case("Hardmax", ties(3, 6)),
    case("Hardmax", ties(2, 5, 3), axis=1, id="middle"),
    case("Hardmax", np.array([[1.0, np.nan, 3.0, np.nan]], np.float32), id="nan"),
]

def red(op: str, *xs: np.ndarray | None, **kw: Any) -> Any:
    """A reduction case: input 1 (axes / axis), when given, is a compile-time constant."""
    return case(op, *xs, consts=(1,) if len(xs) > 1 else (), **kw)


REDUCE = [
    *(red(op, f32(2, 3, 4), i64(1)) for op in (
        "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
        "ReduceLogSumExp")),
    red("ReduceProd", f32(2, 3, 4, lo=0.5, hi=1.5), i64(1)),
    red("ReduceLogSum", f32(2, 3, 4, lo=0.1, hi=2), i64(1)),
    red("ReduceSum", f32(2, 3, 4), i64(0, -1), keepdims=0, id="outer-nokeep"),
    red("ReduceSum", f32(2, 3, 4), id="all"),
    red("ReduceSum", f32(2, 3, 4), keepdims=0, id="all-nokeep"),
    red("ReduceSum", f32(2, 3, 4), np.zeros(0, np.int64), noop_with_empty_axes=1, id="noop"),
    red("ReduceSum", f32(2, 3, 4), np.zeros(0, np.int64), id="empty-all"),
    red("ReduceSum", ints(2, 3, 4, lo=-100, hi=100, dtype=np.int8), i64(2), id="i8-wrap"),
    red("ReduceMean", ints(2, 3, 4), i64(2), id="i32-trunc"),
    red("ReduceMean", f32(2, 3, 4), i64(-1, 0), keepdims=0, id="two"),
    red("ReduceMax", bools(3, 4), i64(1), id="bool"),
    red("ReduceMin", ints(3, 4), i64(0), keepdims=0, id="i32"),
    red("ReduceProd", ints(3, 4, lo=-3, hi=4), i64(1), id="i32"),
    red("ReduceL1", ints(3, 4), i64(1), id="i32"),
    red("ReduceL2", ints(3, 4), i64(1), id="i32"),
    red("ReduceLogSum", ints(3, 4, lo=1, hi=9), i64(1), id="i32"),
    # no integer ReduceLogSumExp case: the registry reference raises for integer inputs
    red("ReduceLogSumExp", f32(3, 4, lo=-80, hi=80), keepdims=0, id="all-wide"),
    red("ReduceLogSumExp", np.array([[1.0, -np.inf], [-np.inf, -np.inf]], np.float32), i64(1), id="inf"),
    red("ReduceSumSquare", f64(3, 4), i64(0), id="f64"),
    red("ArgMax", ties(3, 6), axis=1),
    red("ArgMax", ties(3, 6), axis=1, select_last_index=1, id="last"),
    red("ArgMax", ints(4, 3, 2), axis=0, keepdims=0, id="i32-nokeep"),
    red("ArgMin", ties(2, 5, 3), axis=1),
    red("ArgMin", ties(2, 5, 3), axis=-1, keepdims=0, select_last_index=1, id="last"),
    red("ArgMax", np.array([[1.0, np.nan, 3.0, np.nan]], np.float32), axis=1, id="nan"),
    red("CumSum", f32(3, 5), i64(1)),
    red("CumSum", f32(3, 5), i64(0), exclusive=1, id="exclusive"),
    red("CumSum", f32(3, 5), i64(-1), reverse=1, id="reverse"),
    red("CumSum", ints(2, 3, 4), np.array(1, np.int32), exclusive=1, reverse=1, id="i32-excl-rev"),
]

NORMALIZATION = [
    case("BatchNormalization", f32(2, 3, 4, 4), f32(3), f32(3), f32(3), f32(3, lo=0.1, hi=2)),
    case("BatchNormalization", f64(2, 3), f64(3), f64(3), f64(3), f64(3, lo=0.1, hi=2), epsilon=1e-3, id="f64-2d"),
    case("LayerNormalization", f32(2, 3, 8), f32(8), f32(8), id="last"),
    case("LayerNormalization", f32(2, 3, 4, lo=1, hi=5), f32(3, 4), axis=1, id="middle-nobias"),
    case("LayerNormalization", f32(2, 3, 4), f32(4), f32(1), axis=1, id="bcast-scale"),
    case("LayerNormalization", f32(2, 6), f32(6), f32(6), n_out=3, id="stats"),
    case("LayerNormalization", f32(2, 3, 4), f32(3, 4), f32(3, 4), axis=1, n_out=3, id="stats-middle"),
    case("LayerNormalization", f32(3, 4), f32(3, 4), axis=0, epsilon=1e-3, id="axis0"),
    case("RMSNormalization", f32(2, 3, 8), f32(8)),
    case("RMSNormalization", f32(2, 3, 4), f32(3, 4), axis=1, id="middle"),
    case("InstanceNormalization", f32(2, 3, 4, 5), f32(3), f32(3)),
    case("InstanceNormalization", f32(2, 3, 6), f32(3), f32(3), epsilon=1e-3, id="1d"),
    case("GroupNormalization", f32(2, 4, 3, 3), f32(4), f32(4), num_groups=2),
    case("GroupNormalization", f32(2, 6, 5), f32(6), f32(6), num_groups=1, id="one-group"),
    case("GroupNormalization", f32(2, 4, 5), f32(4), f32(4), num_groups=4, id="per-channel"),
    case("GroupNormalization", f32(3, 8), f32(8), f32(8), num_groups=2, id="no-spatial"),
    case("LpNormalization", f32(3, 5)),
    case("LpNormalization", np.concatenate([f32(2, 4), np.zeros((1, 4), np.float32)]), p=1, id="p1-zero-row"),
    case("LpNormalization", np.concatenate([f32(2, 4), np.zeros((1, 4), np.float32)]), id="p2-zero-row"),
    case("LpNormalization", f32(3, 4, 2), axis=1, id="middle"),
    case("MeanVarianceNormalization", f32(2, 3, 4, 4)),
    case("MeanVarianceNormalization", f32(2, 3, 4), axes=[1], id="middle"),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf/NaN cases divide by zero in the evaluator
@pytest.mark.parametrize(("op", "xs", "consts", "n_out", "attrs"), ELEMENTWISE + ACTIVATION + REDUCE + NORMALIZATION)
def test_matches_reference(op: str, xs: list[np.ndarray | None], consts: tuple[int, ...], n_out: int,
                           attrs: dict[str, Any]) -> None:
    check(op, xs, consts, n_out, attrs)


# ---- coverage, patterns, errors ----------------------------------------------------------
def _family_ops() -> list[str]:
    return [n for n, o in all_ops().items() if o.infer.__module__.rsplit(".", 1)[-1] in FAMILIES]


# Ops of these families deliberately without a compute definition (none at present).
NO_COMPUTE: set[str] = set()


def test_family_coverage() -> None:
    ops = _family_ops()
    assert len(ops) > 80  # the four registry modules hold ~90 ops
    missing = {op for op in ops if get_compute(op) is None}
    assert missing == NO_COMPUTE


def test_every_defined_op_is_tested() -> None:
    tested = {p.values[0] for p in ELEMENTWISE + ACTIVATION + REDUCE + NORMALIZATION}
    assert set(_family_ops()) - NO_COMPUTE - tested == set()


@pytest.mark.parametrize(("op", "pattern"), [
    ("Add", "elementwise"), ("Gelu", "elementwise"), ("Cast", "elementwise"), ("BatchNormalization", "elementwise"),
    ("Softmax", "reduction"), ("LayerNormalization", "reduction"), ("ReduceMean", "reduction"),
    ("ArgMax", "reduction"), ("CumSum", "opaque"),
])
def test_patterns(op: str, pattern: str) -> None:
    cdef = get_compute(op)
    assert cdef is not None and cdef.pattern == pattern


def test_softmax_is_three_stages() -> None:
    outs, *_ = lower("Softmax", [f32(2, 5, 3)], (), 1, {"axis": 1})
    from tessera.loop.te import topo_order

    stages = [t for t in topo_order(outs) if not t.is_placeholder]
    assert [t.tag for t in stages] == ["reduction", "reduction", "injective"]
    assert [t.shape for t in stages] == [(2, 3), (2, 3), (2, 5, 3)]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_computes_in_f32_and_rounds_once(dtype: Any) -> None:
    x = (f32(4, 5) * 100).astype(dtype)
    y = (f32(4, 5) * 100).astype(dtype)
    outs, phs, _, _ = lower("Add", [x, y], (), 1, {})
    assert outs[0].dtype == DType.from_np(dtype).value
    got = evaluate(outs, [(phs[0], x), (phs[1], y)])
    want = (x.astype(np.float32) + y.astype(np.float32)).astype(dtype)
    np.testing.assert_array_equal(got[0].view(np.uint16), want.view(np.uint16))


def test_half_arithmetic_is_rejected() -> None:
    from tessera.loop.compute import check_half_arithmetic
    from tessera.loop.te import compute

    x = placeholder((3,), "f16", "x")
    with pytest.raises(NotImplementedError, match="arithmetic on f16"):
        check_half_arithmetic([compute((3,), lambda i: x[i] + x[i])], "add")


def test_reduce_axes_must_be_constant() -> None:
    with pytest.raises(NotImplementedError, match="ReduceSum: axes .* must be a compile-time constant"):
        lower("ReduceSum", [f32(2, 3), i64(1)], (), 1, {})


@pytest.mark.parametrize("n_out", [1, 3])
def test_batchnorm_training_uses_batch_statistics(n_out: int) -> None:
    var = f32(3, lo=0.5, hi=2.0)
    check("BatchNormalization", [f32(2, 3, 4, 5), f32(3), f32(3), f32(3), var], (), n_out,
          {"training_mode": 1, "momentum": 0.8})
