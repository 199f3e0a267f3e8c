"""Every operator with a compute definition, compiled for the host, gives the reference's answer
on special values: NaN, +-inf, +-0, denormals and float32's extremes (int ops: the int extremes).

Operators are grouped into a few graphs (one build each; builds are cached) whose inputs hold
the special values; each output is compared with the NumPy reference executor: NaN positions
and infinities exactly, zeros' signs exactly, other values within a stated tolerance.
``test_every_compute_op_is_covered`` keeps the table complete: a new operator with a compute
definition fails it until it is added here.

Sums over many terms (convolutions, matmuls, sum reductions, normalizations) get inputs without
float32's extremes: whether ``max + max - max`` overflows depends on the order of summation, in
float32 as in the reference's float64, so such a result is not a semantic property of the op.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest

import tessera
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.graph.registry import all_ops
from tests.compiler.helpers import GB

NAN, INF = np.float32(np.nan), np.float32(np.inf)
F32 = np.finfo(np.float32)
# one of each special value, plus ordinary ones so that rows mix them (24 values: 3 vectors of 8)
SPECIAL = np.array([NAN, INF, -INF, 0.0, -0.0, F32.smallest_subnormal, -F32.smallest_subnormal * 7, F32.tiny,
                    F32.max, -F32.max, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-3, -88.0, 89.0, 1e4, -0.75, 2.5, 7.0, -3.0,
                    0.25], np.float32)
# for sums: no values whose sum overflows (see the module docstring)
SUMMABLE = np.where(np.abs(SPECIAL) >= 1e4, np.float32(2.0), SPECIAL)
RTOL = 2e-5  # float32 math functions (vectorized libmvec versions included: a few ulp)
I32, I64 = np.iinfo(np.int32), np.iinfo(np.int64)


def _perm_rows(values: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """``n_rows`` permutations of ``values`` (every row holds every special value)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(values) for _ in range(n_rows)])


def _dt(a: np.ndarray) -> str:
    return str(DType.from_np(a.dtype))


class Group:
    """One compiled graph: its inputs' values and the operator behind each output."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.b = GB(name)
        self.feeds: dict[str, np.ndarray] = {}
        self.outs: dict[str, str] = {}
        self.rtol: dict[str, float] = {}

    def input(self, name: str, value: Any) -> str:
        value = np.asarray(value)
        self.feeds[name] = value
        return self.b.input(name, value.shape, _dt(value))

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        return self.b.const(f"c{len(self.b.g.constants)}", np.asarray(value, dtype))

    def op(self, op: str, inputs: list[str], n_out: int = 1, rtol: float | None = None, **attrs: Any) -> list[str]:
        k = len(self.outs)
        outs = [f"{op.lower()}_{k}_{j}" for j in range(n_out)]
        self.b.op(op, inputs, n_out, outs=outs, name=f"{op}_{k}", **attrs)
        for o in outs:
            self.outs[o] = op
            if rtol is not None:
                self.rtol[o] = rtol
        return outs

    def graph(self) -> Graph:
        return self.b.done(*self.outs)


# ---- the groups --------------------------------------------------------------------------------
UNARY_F = ("Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Celu", "Cos", "Cosh", "Elu", "Erf",
           "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log",
           "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh",
           "Softplus", "Softsign", "Sqrt", "Swish", "Tan", "Tanh", "ThresholdedRelu")


def _unary() -> Group:
    g = Group("sv_unary")
    x = g.input("x", _perm_rows(SPECIAL, 3, 0))
    for op in UNARY_F:
        g.op(op, [x])
    g.op("Gelu", [x], approximate="tanh")
    g.op("IsInf", [x], detect_negative=0)
    g.op("Clip", [x, g.const(-1.0, np.float32), g.const(2.0, np.float32)])
    g.op("Clip", [x])
    for to in ("f64", "f16", "bf16", "bool"):
        g.op("Cast", [x], to=DType.parse(to))
    g.op("CastLike", [x, g.const([0.0], np.float64)])
    g.op("Dropout", [x])
    return g


def _binary() -> Group:
    g = Group("sv_binary")
    n = len(SPECIAL)
    a = g.input("a", np.repeat(SPECIAL, n).reshape(n, n))  # every pair of special values
    b = g.input("b", np.tile(SPECIAL, n).reshape(n, n))
    for op in ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
               "PRelu", "Max", "Min", "Sum", "Mean"):
        g.op(op, [a, b])
    g.op("Mod", [a, b], fmod=1)
    g.op("Max", [a, b, a])
    g.op("Min", [b, a])
    g.op("Where", [g.input("cond", (np.arange(n * n) % 3 == 0).reshape(n, n)), a, b])
    g.op("Clip", [a, g.input("clo", np.float32(np.nan))])
    g.op("Clip", [a, g.input("clo2", np.float32(-1.0)), g.input("chi2", np.float32(1.0))])
    return g


def _rows() -> Group:
    """Row-wise operators on rows holding every special value, an all-NaN row and an all -inf row."""
    g = Group("sv_rows")
    rows = np.concatenate([_perm_rows(SPECIAL, 3, 1), np.full((1, 24), NAN), np.full((1, 24), -INF),
                           np.full((1, 24), INF)]).astype(np.float32)
    x = g.input("x", rows)
    s = g.input("s", np.concatenate([_perm_rows(SUMMABLE, 3, 2), np.full((1, 24), NAN), np.full((1, 24), -INF),
                                     np.full((1, 24), INF)]).astype(np.float32))
    ax = g.const([1])
    for op in ("ReduceMax", "ReduceMin"):
        g.op(op, [x, ax])
        g.op(op, [x, g.const([0])], keepdims=0)
    for op in ("ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
               "ReduceSumSquare"):
        g.op(op, [s, ax], rtol=1e-4)
    for op in ("ArgMax", "ArgMin"):
        g.op(op, [x], axis=1)
        g.op(op, [x], axis=1, select_last_index=1, keepdims=0)
    for largest in (1, 0):
        g.op("TopK", [x, g.const([5])], 2, axis=1, largest=largest)
        g.op("TopK", [x, g.const([24])], 2, axis=1, largest=largest)
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        g.op(op, [x], axis=1)
    g.op("CumSum", [s, g.const(1)], rtol=1e-4)
    g.op("LpNormalization", [s], axis=1, rtol=1e-4)
    g.op("LpNormalization", [s], axis=1, p=1, rtol=1e-4)
    w = g.input("w", _perm_rows(SUMMABLE, 24, 3)[:, :8].copy())
    g.op("MatMul", [s, w], rtol=1e-4)
    g.op("Gemm", [s, w, g.input("c", SUMMABLE[:8].copy())], rtol=1e-4, alpha=0.5, beta=2.0)
    g.op("Einsum", [s, w], rtol=1e-4, equation="ij,jk->ik")
    scale, bias = g.input("ln_s", SUMMABLE.copy()), g.input("ln_b", SUMMABLE[::-1].copy())
    g.op("LayerNormalization", [s, scale, bias], rtol=1e-4)
    g.op("RMSNormalization", [s, scale], rtol=1e-4)
    g.op("DynamicQuantizeLinear", [s], 3)
    g.op("QuantizeLinear", [x, g.const(0.5, np.float32), g.const(3, np.uint8)])
    g.op("QuantizeLinear", [x, g.const(0.25, np.float32), g.const(-3, np.int8)])
    g.op("DequantizeLinear", [g.input("q", np.array([0, 1, 127, 128, 255], np.uint8)), g.const(F32.max, np.float32),
                              g.const(128, np.uint8)])
    # data movement: every value must come through bit for bit
    g.op("Flatten", [x], axis=0)
    g.op("Transpose", [x], perm=[1, 0])
    g.op("Reshape", [x, g.const([12, 12])])
    g.op("Squeeze", [g.op("Unsqueeze", [x, g.const([0])])[0], g.const([0])])
    g.op("Slice", [x, g.const([1, 3]), g.const([5, 20]), g.const([0, 1]), g.const([1, 2])])
    g.op("Split", [x, g.const([3, 3])], 2, axis=0)
    g.op("Concat", [x, s], axis=1)
    g.op("Tile", [x, g.const([1, 2])])
    g.op("Expand", [g.input("row", SPECIAL.copy()), g.const([2, 24])])
    g.op("Pad", [x, g.const([0, 1, 0, 2]), g.const(NAN, np.float32)])
    g.op("Pad", [x, g.const([1, 2, 1, 2])], mode="reflect")
    idx = g.input("idx", np.array([[0, 5, -1], [23, 2, 2]], np.int64))
    g.op("Gather", [x, idx], axis=1)
    g.op("GatherElements", [x, g.input("gidx", np.array([[0, 23, 5], [1, 1, -2]], np.int64))], axis=1)
    g.op("GatherND", [x, g.input("nidx", np.array([[0, 3], [5, 23]], np.int64))])
    g.op("Trilu", [x], upper=0)
    g.op("EyeLike", [x], k=1)
    g.op("Shape", [x])
    g.op("Size", [x])
    g.op("ConstantOfShape", [g.const([2, 3])], value=np.array([NAN], np.float32))
    g.op("Range", [g.const(-1.5, np.float32), g.const(3.0, np.float32), g.const(0.5, np.float32)])
    g.op("OneHot", [g.input("hot", np.array([0, 2, -1], np.int64)), g.const(4),
                    g.input("hot_v", np.array([-INF, NAN], np.float32))])
    upd = g.input("upd", _perm_rows(SPECIAL, 2, 4)[:, :3].copy())
    g.op("ScatterElements", [x, g.input("sidx", np.array([[0, 4, 7], [1, 2, 3]], np.int64)), upd], axis=1)
    for red in ("max", "min", "mul", "add"):
        g.op("ScatterElements", [x, g.input(f"sidx_{red}", np.array([[0, 0, 0], [1, 2, 1]], np.int64)), upd],
             axis=1, reduction=red)
    g.op("ScatterND", [x, g.input("ndidx", np.array([[0], [4]], np.int64)), g.input("ndupd", rows[3:5].copy())])
    g.op("ScatterND", [x, g.input("ndidx2", np.array([[1, 3], [1, 3]], np.int64)),
                       g.input("ndupd2", np.array([NAN, 1.0], np.float32))], reduction="max")
    g.op("CenterCropPad", [x, g.const([4, 30])])
    return g


def _nn() -> Group:
    """NCHW operators on images holding every special value (sums: SUMMABLE values)."""
    g = Group("sv_nn")
    x = g.input("x", _perm_rows(SPECIAL, 6, 5).reshape(1, 4, 6, 6))
    s = g.input("s", _perm_rows(SUMMABLE, 6, 6).reshape(1, 4, 6, 6))
    w = g.input("w", _perm_rows(SUMMABLE, 3, 7).reshape(2, 4, 3, 3)[:, :, :, :].copy())
    g.op("Conv", [s, w, g.input("cb", np.array([NAN, 1.0], np.float32))], rtol=1e-4, pads=[1, 1, 1, 1])
    g.op("Conv", [s, g.input("wd", _perm_rows(SUMMABLE, 2, 8).reshape(-1)[:36].reshape(4, 1, 3, 3).copy())], rtol=1e-4,
         group=4, strides=[2, 2])
    g.op("ConvTranspose", [s, g.input("wt", _perm_rows(SUMMABLE, 3, 9).reshape(4, 2, 3, 3).copy())], rtol=1e-4)
    g.op("MaxPool", [x], 2, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    g.op("MaxPool", [x], kernel_shape=[2, 2], ceil_mode=1, strides=[2, 2])
    g.op("AveragePool", [s], rtol=1e-4, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.op("AveragePool", [s], rtol=1e-4, kernel_shape=[2, 2], count_include_pad=1, pads=[1, 1, 1, 1])
    g.op("LpPool", [s], rtol=1e-4, kernel_shape=[2, 2], strides=[2, 2])
    g.op("GlobalMaxPool", [x])
    g.op("GlobalAveragePool", [s], rtol=1e-4)
    g.op("GlobalLpPool", [s], rtol=1e-4)
    c4 = [g.input(f"bn{k}", v) for k, v in enumerate(
        (np.array([1.0, NAN, 2.0, -1.0], np.float32), np.array([0.0, 1.0, INF, 0.5], np.float32),
         np.array([0.0, 1.0, 2.0, -INF], np.float32), np.array([1.0, 0.0, 2.0, 0.5], np.float32)))]
    g.op("BatchNormalization", [x, *c4], rtol=1e-4)
    g.op("InstanceNormalization", [s, c4[0], c4[1]], rtol=1e-4)
    g.op("GroupNormalization", [s, c4[3], c4[2]], rtol=1e-4, num_groups=2)
    g.op("MeanVarianceNormalization", [s], rtol=1e-4)
    g.op("LRN", [s], rtol=1e-4, size=3)
    g.op("DepthToSpace", [x], blocksize=2)
    g.op("SpaceToDepth", [x], blocksize=2)
    for mode in ("nearest", "linear", "cubic"):
        g.op("Resize", [s, g.const([], np.float32), g.const([1, 1, 2, 1.5], np.float32)], rtol=1e-4, mode=mode)
    tiles = g.op("ExtractTiles", [x], kernel_shape=[3, 3], strides=[3, 3], pads=[0, 0, 0, 0])[0]
    flat = g.op("Reshape", [tiles, g.const([9, 16])])[0]
    g.op("AssembleTiles", [flat], tile=[3, 3], output_shape=[1, 4, 6, 6])
    g.op("ReduceMax", [x, g.const([1, 3])])
    return g


def _ints() -> Group:
    """Integer and bool operators on every pair of the int32 / int64 extremes and small values."""
    g = Group("sv_ints")
    small = [0, 1, -1, 2, -2, 7, 31, 32, 63]
    for dt, info in ((np.int32, I32), (np.int64, I64)):
        vals = np.array([info.min, info.max, info.min + 1, info.max - 1, *small], dt)
        n = len(vals)
        a = g.input(f"a_{dt.__name__}", np.repeat(vals, n).reshape(n, n))
        b = g.input(f"b_{dt.__name__}", np.tile(vals, n).reshape(n, n))
        for op in ("Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Sum", "Equal", "Less", "Greater", "BitwiseAnd",
                   "BitwiseOr", "BitwiseXor", "Pow"):
            g.op(op, [a, b])
        g.op("Mod", [a, b], fmod=1)
        g.op("BitShift", [a, b], direction="LEFT")
        g.op("BitShift", [a, b], direction="RIGHT")
        for op in ("Abs", "Neg", "Sign", "BitwiseNot", "Relu", "Identity"):
            g.op(op, [a])
        for to in ("f32", "f64", "i8", "u8", "i16", "u32", "u64", "i64", "bool", "f16"):
            g.op("Cast", [a], to=DType.parse(to))
        g.op("Clip", [a, g.const(-5, dt), g.const(info.max - 1, dt)])
        for op in ("ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd"):
            g.op(op, [a, g.const([1])])
        g.op("ArgMax", [a], axis=1)
        g.op("ArgMin", [a], axis=1)
        g.op("TopK", [a, g.const([4])], 2, axis=1)
        g.op("CumSum", [a, g.const(1)])
        g.op("MatMul", [a, b])
    # float to int: NaN and values out of range as defined by graph.ops.elementwise.float_to_int
    f = g.input("f", np.concatenate([_perm_rows(SPECIAL, 2, 10).reshape(-1), np.float32(
        [3e9, 5e9, -3e9, 2.0**31, -(2.0**31), 2.0**63, -(2.0**63), 1.9e19, 2.0**64, 255.9, 256.0, -0.9, -129.0])]))
    for to in ("i32", "i64", "i8", "u8", "i16", "u16", "u32", "u64"):
        g.op("Cast", [f], to=DType.parse(to))
    fv = g.input("fv", np.tile(g.feeds["f"][:32], (16, 64)))  # big and alone in its kernel: vectorized
    g.op("Cast", [fv], to=DType.parse("i32"))
    for to in ("i32", "i64", "u8", "u64"):
        g.op("Cast", [g.op("Cast", [f], to=DType.parse("f16"))[0]], to=DType.parse(to))
        g.op("Cast", [g.op("Cast", [f], to=DType.parse("f64"))[0]], to=DType.parse(to))
    p = g.input("p", np.array([True, False, True, False]))
    q = g.input("q", np.array([True, True, False, False]))
    for op in ("And", "Or", "Xor"):
        g.op(op, [p, q])
    g.op("Not", [p])
    u8 = g.input("u8", np.array([[0, 1, 127, 128], [255, 254, 3, 200]], np.uint8))
    i8 = g.input("i8", np.array([[-128, 127], [1, -1], [0, 5], [-7, 100]], np.int8))
    g.op("MatMulInteger", [u8, i8, g.const(255, np.uint8), g.const(-128, np.int8)])
    g.op("QLinearMatMul", [u8, g.const(1e-3, np.float32), g.const(128, np.uint8), g.input("u8b", np.array(
        [[0, 255], [255, 0], [128, 1], [7, 250]], np.uint8)), g.const(0.5, np.float32), g.const(0, np.uint8),
        g.const(1e-4, np.float32), g.const(3, np.uint8)])
    img = g.input("img", np.array([0, 255, 128, 1, 254, 127] * 6, np.uint8).reshape(1, 1, 6, 6))
    ker = g.input("ker", np.array([-128, 127, 0, 1, -1, 5, 100, -100, 3], np.int8).reshape(1, 1, 3, 3))
    g.op("ConvInteger", [img, ker, g.const(255, np.uint8)])
    g.op("QLinearConv", [img, g.const(1e-2, np.float32), g.const(0, np.uint8), ker, g.const(1e-2, np.float32),
                         g.const(0, np.int8), g.const(0.5, np.float32), g.const(128, np.uint8)])
    return g


def _wide() -> Group:
    """Long rows (vector folds, lane-parallel reductions, vectorized elementwise loops with tails):
    one special value per row at a different position, the rest ordinary."""
    g = Group("sv_wide")
    rng = np.random.default_rng(11)
    rows = rng.standard_normal((len(SPECIAL) + 2, 1003)).astype(np.float32)
    for r, v in enumerate(SPECIAL):
        rows[r, (r * 97) % 1003] = v
    rows[-2, :] = NAN
    rows[-1, ::3] = -INF
    x = g.input("x", rows)
    y = g.input("y", rows[::-1].copy())
    summable = g.input("summable", np.where(np.abs(rows) >= 1e4, np.float32(2.0), rows))
    ax = g.const([1])
    for op in ("ReduceMax", "ReduceMin"):
        g.op(op, [x, ax])
        g.op(op, [x, g.const([0])])
    g.op("ReduceSum", [summable, ax], rtol=1e-4)
    g.op("ReduceLogSumExp", [summable, ax], rtol=1e-4)
    for op in ("ArgMax", "ArgMin"):
        g.op(op, [x], axis=1)
        g.op(op, [x], axis=0)
    g.op("TopK", [x, g.const([4])], 2, axis=1)
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        g.op(op, [x], axis=1, rtol=1e-4)
    for op in ("Max", "Min", "Add", "Mul", "Div", "Greater", "Equal"):
        g.op(op, [x, y])
    for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Sign", "Round", "Abs", "Neg", "Sqrt", "Log"):
        g.op(op, [x])
    g.op("Clip", [x, g.const(-0.5, np.float32), g.const(0.5, np.float32)])
    ones, zeros = g.input("ln_s", np.ones(1003, np.float32)), g.input("ln_b", np.zeros(1003, np.float32))
    g.op("LayerNormalization", [summable, ones, zeros], rtol=1e-4)
    a = g.input("m", np.where(np.isfinite(rows), rows, 0)[:, :64].copy())
    g.op("MatMul", [a, g.input("mw", np.resize(rows[:, :40], (64, 40)))], rtol=1e-4)
    return g


GROUPS: tuple[Callable[[], Group], ...] = (_unary, _binary, _rows, _nn, _ints, _wide)


@cache
def _group(name: str) -> Group:
    return next(fn() for fn in GROUPS if fn.__name__ == name)


def _check(op: str, name: str, got: np.ndarray, want: np.ndarray, rtol: float) -> list[str]:
    """What differs between ``got`` and the reference's ``want`` (empty: they agree)."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return [f"{op} {name}: {got.dtype}{got.shape} != reference {want.dtype}{want.shape}"]
    if want.dtype.name not in ("float16", "bfloat16", "float32", "float64"):
        bad = got != want
        if not bad.any():
            return []
        return [f"{op} {name}: {int(bad.sum())} values differ, e.g. {got[bad][:4]} != {want[bad][:4]}"]
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    problems = []
    gn, wn = np.isnan(g64), np.isnan(w64)
    if (gn != wn).any():
        d = gn != wn
        problems.append(f"NaN at {np.argwhere(d)[:4].tolist()}: got {g64[d][:4]}, want {w64[d][:4]}")
    fin = ~gn & ~wn
    gi, wi = np.isinf(g64) & fin, np.isinf(w64) & fin
    if (gi != wi).any() or (g64[gi] != w64[gi]).any():
        bad = (gi | wi) & (g64 != w64)
        problems.append(f"inf at {np.argwhere(bad)[:4].tolist()}: got {g64[bad][:4]}, want {w64[bad][:4]}")
    both = fin & ~gi & ~wi
    tol = rtol * np.abs(w64) + 1e-37
    with np.errstate(invalid="ignore"):  # inf - inf outside ``both``
        bad = both & (np.abs(g64 - w64) > tol)
    if bad.any():
        problems.append(f"{int(bad.sum())} values beyond rtol {rtol}, e.g. got {g64[bad][:4]}, want {w64[bad][:4]}")
    zero = both & (w64 == 0) & (g64 == 0)
    if (np.signbit(g64[zero]) != np.signbit(w64[zero])).any():
        d = zero & (np.signbit(g64) != np.signbit(w64))
        problems.append(f"sign of zero differs at {np.argwhere(d)[:4].tolist()}")
    return [f"{op} {name}: {p}" for p in problems]


@pytest.mark.parametrize("group", [fn.__name__ for fn in GROUPS])
def test_special_values_match_reference(group: str, isolated_cache: object) -> None:
    grp = _group(group)
    g = grp.graph()
    with np.errstate(all="ignore"):
        want = run_reference(g, grp.feeds)
    model = tessera.compile(g, target="host", tuning=False, num_threads=1)
    got = model(*[grp.feeds[n] for n in g.inputs])
    problems = []
    for name, y in zip(g.outputs, got, strict=True):
        problems += _check(grp.outs[name], name, np.asarray(y), want[name], grp.rtol.get(name, RTOL))
    assert not problems, "\n".join(problems)


def test_every_compute_op_is_covered() -> None:
    import tessera.loop.computes  # noqa: F401  (attaches compute definitions)

    with_compute = {n for n, o in all_ops().items() if "compute" in o.extensions}
    covered = {op for fn in GROUPS for op in _group(fn.__name__).outs.values()}
    assert with_compute - covered == set(), "operators with a compute definition but no special-value case"


# ---- the cases of the review, pinned with onnxruntime's answers ----------------------------------
def _topk_model(row: list[float], k: int, largest: int, dtype: type) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    g = Group(f"sv_topk_{k}_{largest}")
    x = g.input("x", np.array([row], dtype))
    g.op("TopK", [x, g.const([k])], 2, axis=1, largest=largest)
    graph = g.graph()
    model = tessera.compile(graph, target="host", tuning=False, num_threads=1)
    return model(g.feeds["x"]), run_reference(graph, g.feeds)


@pytest.mark.parametrize(("row", "k", "largest", "values", "indices"), [
    ([1, 5, NAN, 8, 3, 0, 7, 4], 3, 1, [NAN, 8, 7], [2, 3, 6]),
    ([1, 5, NAN, 8, 3, 0, 7, 4], 3, 0, [0, 1, 3], [5, 0, 4]),
    ([NAN, 1, NAN, INF, -INF, 2, NAN, 0], 8, 1, [NAN, NAN, NAN, INF, 2, 1, 0, -INF], [0, 2, 6, 3, 5, 1, 7, 4]),
    ([NAN, 1, NAN, INF, -INF, 2, NAN, 0], 8, 0, [-INF, 0, 1, 2, INF, NAN, NAN, NAN], [4, 7, 1, 5, 3, 0, 2, 6]),
    ([NAN] * 8, 3, 1, [NAN] * 3, [0, 1, 2]),
    ([-0.0, 0.0, NAN, -INF, INF, 0.0, -0.0, 1], 8, 1, [NAN, INF, 1, -0.0, 0, 0, -0.0, -INF], [2, 4, 7, 0, 1, 5, 6, 3]),
    ([F32.max, INF, NAN, -INF, -F32.max], 5, 1, [NAN, INF, F32.max, -F32.max, -INF], [2, 1, 0, 4, 3]),
    ([F32.max, INF, NAN, -INF, -F32.max], 5, 0, [-INF, -F32.max, F32.max, INF, NAN], [3, 4, 0, 1, 2]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_orders_nan_as_largest_like_onnxruntime(row: list[float], k: int, largest: int, values: list[float],
                                                     indices: list[int], dtype: type, isolated_cache: object) -> None:
    (got_v, got_i), want = _topk_model(row, k, largest, dtype)
    ref_v, ref_i = want.values()
    for v in (got_v, ref_v):
        np.testing.assert_array_equal(v[0], np.array(values, dtype))  # NaN == NaN here
        assert np.signbit(v[0]).tolist() == np.signbit(np.array(values, dtype)).tolist()
    for i in (got_i, ref_i):
        assert i[0].tolist() == indices


def test_softmax_of_a_row_holding_inf_is_nan_like_onnxruntime(isolated_cache: object) -> None:
    """onnxruntime, ONNX's reference implementation and PyTorch: +inf in a row makes the row NaN
    (inf - inf); an all -inf row is NaN (0 / 0); -inf entries of a finite row weigh 0."""
    rows = np.array([[1, 2, INF, 3], [-INF] * 4, [1, -INF, 2, -INF], [0, 0, 0, 0]], np.float32)
    e = np.exp(np.float64(1.0))
    want = {"Softmax": np.array([[NAN] * 4, [NAN] * 4, [1 / (1 + e), 0, e / (1 + e), 0], [0.25] * 4]),
            "LogSoftmax": np.array([[NAN] * 4, [NAN] * 4, [-np.log1p(e), -INF, 1 - np.log1p(e), -INF],
                                    [np.log(0.25)] * 4])}
    g = Group("sv_softmax")
    x = g.input("x", rows)
    outs = {op: g.op(op, [x], axis=1)[0] for op in want}
    graph = g.graph()
    got = dict(zip(graph.outputs, tessera.compile(graph, target="host", tuning=False, num_threads=1)(rows),
                   strict=True))
    ref = run_reference(graph, g.feeds)
    for op, name in outs.items():
        for y in (got[name], ref[name]):
            np.testing.assert_allclose(y, want[op].astype(np.float32), rtol=1e-6, err_msg=op)  # NaN == NaN
