"""Compute definitions of the quantization operators and integer products (TE evaluator vs the
registry references: integer outputs exact, float outputs rtol 1e-6), and compiled C kernels
for quantized products, scatters and float16/bfloat16 arithmetic (inputs larger than the ONNX
backend's value-specialization limit, so the kernels really run) vs the reference executor."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from tessera.compiler import compile as compile_model
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.loop.compute import ComputeContext, get_compute
from tessera.loop.te import placeholder
from tessera.loop.te_eval import evaluate

RNG = np.random.default_rng(3)


def graph(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any], n_out: int = 1) -> Graph:
    g = Graph(op.lower())
    names = ["" if v is None else g.add_input(f"x{i}", TensorType(DType.from_np(v.dtype), v.shape))
             for i, v in enumerate(inputs)]
    g.nodes.append(Node(op, names, [f"y{k}" for k in range(n_out)], attrs, "node"))
    g.outputs = [f"y{k}" for k in range(n_out)]
    return infer_shapes(g)


def check_te(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None, n_out: int = 1) -> None:
    g = graph(op, inputs, attrs or {}, n_out)
    node = g.nodes[0]
    nattrs = normalize_attrs(get_op(op), node)
    phs = [None if v is None else placeholder(v.shape, DType.from_np(v.dtype).value, f"in{i}")
           for i, v in enumerate(inputs)]
    cdef = get_compute(op)
    assert cdef is not None
    ctx = ComputeContext(phs, nattrs, [g.types[n] if n else None for n in node.inputs],
                         [g.types[o] for o in node.outputs], [None] * len(inputs), "node")
    got = evaluate(cdef.fn(ctx), [(p, v) for p, v in zip(phs, inputs, strict=True) if p is not None])
    want = get_op(op).reference(list(inputs), nattrs, n_out)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


def u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape).astype(np.uint8)


def i8(*shape: int) -> np.ndarray:
    return RNG.integers(-128, 128, shape).astype(np.int8)


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def scalar(v: Any, dtype: Any) -> np.ndarray:
    return np.array(v, dtype)


@pytest.mark.parametrize(("zp", "axis", "block"), [
    (scalar(128, np.uint8), 1, 0), (scalar(-3, np.int8), 1, 0), (None, 1, 0),
    (np.array([0, 10, -10], np.int16), 1, 0), (RNG.integers(0, 9, (2, 3, 2)).astype(np.uint16), 2, 3),
])
def test_quantize_linear(zp: np.ndarray | None, axis: int, block: int) -> None:
    x = f32(2, 3, 6, scale=300.0)
    scale = (np.abs(f32(*zp.shape)) + 0.5) if zp is not None and zp.ndim else np.float32(2.5)
    check_te("QuantizeLinear", [x, np.asarray(scale, np.float32), zp], {"axis": axis, "block_size": block})


@pytest.mark.parametrize(("x", "zp", "axis"), [
    (u8(2, 3, 4), scalar(128, np.uint8), 1), (i8(2, 3, 4), np.array([1, -2, 3], np.int8), 1),
    (RNG.integers(-1000, 1000, (2, 4)).astype(np.int32), None, 0),
])
def test_dequantize_linear(x: np.ndarray, zp: np.ndarray | None, axis: int) -> None:
    scale = np.abs(f32(*zp.shape)) + 0.1 if zp is not None and zp.ndim else np.float32(0.02)
    check_te("DequantizeLinear", [x, np.asarray(scale, np.float32), zp], {"axis": axis})


@pytest.mark.parametrize("x", [f32(3, 4, scale=5.0), np.abs(f32(7)), -np.abs(f32(2, 2)), np.zeros((3,), np.float32)])
def test_dynamic_quantize_linear(x: np.ndarray) -> None:
    check_te("DynamicQuantizeLinear", [x], n_out=3)


def test_integer_products() -> None:
    a, b = u8(2, 3, 5), u8(5, 4)
    check_te("MatMulInteger", [a, b, np.array([1, 2, 3], np.uint8), np.array([4, 5, 6, 7], np.uint8)])
    check_te("MatMulInteger", [i8(3, 5), i8(5, 2)])
    x, w = u8(1, 4, 5, 5), u8(6, 2, 3, 3)
    check_te("ConvInteger", [x, w, scalar(7, np.uint8), RNG.integers(0, 9, 6).astype(np.uint8)],
             {"pads": [1, 1, 1, 1], "group": 2})


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_products(per_channel: bool) -> None:
    a, b = u8(2, 3, 6), u8(6, 4)
    a_s = np.abs(f32(3)) * 0.01 + 0.01 if per_channel else np.float32(0.02)
    b_s = np.abs(f32(4)) * 0.01 + 0.01 if per_channel else np.float32(0.03)
    bzp = u8(4) if per_channel else scalar(100, np.uint8)
    azp = u8(3) if per_channel else scalar(120, np.uint8)
    check_te("QLinearMatMul", [a, np.asarray(a_s, np.float32), azp, b, np.asarray(b_s, np.float32), bzp,
                               np.float32(0.05), scalar(128, np.uint8)])
    x, w = u8(1, 3, 6, 6), i8(4, 3, 3, 3)
    ws = np.abs(f32(4)) * 0.01 + 0.001 if per_channel else np.float32(0.004)
    bias = RNG.integers(-500, 500, 4).astype(np.int32)
    check_te("QLinearConv", [x, np.float32(0.05), scalar(110, np.uint8), w, np.asarray(ws, np.float32),
                             np.zeros(4 if per_channel else (), np.int8), np.float32(0.2), scalar(-5, np.int8),
                             bias], {"pads": [1, 1, 1, 1], "strides": [2, 2]})


# ---- compiled C kernels ----------------------------------------------------------------------

def check_compiled(g: Graph, feeds: list[np.ndarray], exact: bool = True) -> None:
    model = compile_model(g, "host")
    got = model(*feeds)
    want = run_reference(g, feeds)
    for a, name in zip(got, g.outputs, strict=True):
        b = want[name]
        assert a.dtype == b.dtype and a.shape == b.shape
        if exact:
            np.testing.assert_array_equal(a.view(np.uint8), np.ascontiguousarray(b).view(np.uint8))
        else:
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_compiled_qlinear_matmul_and_dequantize() -> None:
    a, b = u8(2, 16, 24), u8(24, 8)
    feeds = [a, np.float32(0.02), scalar(120, np.uint8), b, np.float32(0.03), scalar(100, np.uint8),
             np.float32(0.05), scalar(128, np.uint8)]
    check_compiled(graph("QLinearMatMul", feeds, {}), feeds)
    x = f32(4, 50, scale=40.0)
    feeds = [x, np.float32(0.3), scalar(-3, np.int8)]
    check_compiled(graph("QuantizeLinear", feeds, {}), feeds)


def test_compiled_scatters() -> None:
    data, idx, upd = f32(30, 8), RNG.integers(-30, 30, (50, 8)), f32(50, 8)
    for reduction in ("none", "add"):
        feeds = [data, idx, upd]
        check_compiled(graph("ScatterElements", feeds, {"axis": 0, "reduction": reduction}), feeds,
                       exact=reduction == "none")
    feeds = [data, RNG.integers(0, 30, (40, 1)), f32(40, 8)]
    check_compiled(graph("ScatterND", feeds, {"reduction": "max"}), feeds)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_compiled_half_precision(dtype: Any) -> None:
    x, y = f32(8, 40, scale=3.0).astype(dtype), f32(40, 12).astype(dtype)
    g = Graph("half")
    xa = g.add_input("x", TensorType(DType.from_np(np.dtype(dtype)), x.shape))
    ya = g.add_input("y", TensorType(DType.from_np(np.dtype(dtype)), y.shape))
    g.nodes += [Node("MatMul", [xa, ya], ["m"], {}, "mm"), Node("Softmax", ["m"], ["s"], {"axis": -1}, "sm"),
                Node("Cast", ["x"], ["c"], {"to": DType.float32}, "cast")]
    g.outputs = ["s", "c"]
    infer_shapes(g)
    model = compile_model(g, "host")
    s, c = model(x, y)
    assert s.dtype == np.dtype(dtype) and c.dtype == np.float32
    np.testing.assert_array_equal(c, x.astype(np.float32))
    want = run_reference(g, [x, y])["s"].astype(np.float32)
    tol = 1e-2 if dtype == np.float16 else 4e-2  # one rounding of the f32 result; the reference rounds per op
    np.testing.assert_allclose(s.astype(np.float32), want, rtol=tol, atol=tol)
