"""Shared pieces of the NPU tests: a terse graph builder, small models, and a brand-new chip description."""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType


class GB:
    """``b.input``, ``b.randc``, ``b.op``, then ``b.done(outputs)``."""

    def __init__(self, name: str = "g", seed: int = 0) -> None:
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)
        self._n = 0

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        return self.g.add_input(name, TensorType(DType.float32, shape))

    def const(self, name: str, value: Any) -> str:
        return self.g.add_constant(name, np.asarray(value))

    def randc(self, name: str, *shape: int, scale: float = 1.0) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op: str, inputs: list[str], **attrs: Any) -> str:
        self._n += 1
        out = f"{op.lower()}{self._n}"
        self.g.nodes.append(Node(op, inputs, [out], attrs, f"{op.lower()}_{self._n}"))
        return out

    def done(self, *outputs: str) -> Graph:
        self.g.outputs = list(outputs)
        return infer_shapes(self.g)


def mlp(m: int = 8, k: int = 40, h: int = 72, n: int = 24, seed: int = 0) -> Graph:
    """Gemm+bias+relu, MatMul+Add bias, Relu: two offloadable layers with fused epilogues."""
    b = GB("mlp", seed)
    x = b.input("x", (m, k))
    y = b.op("Gemm", [x, b.randc("w1", h, k, scale=k ** -0.5), b.randc("b1", h, scale=0.1)], transB=1)
    y = b.op("Relu", [y])
    y = b.op("MatMul", [y, b.randc("w2", h, n, scale=h ** -0.5)])
    y = b.op("Add", [y, b.randc("b2", n, scale=0.1)])
    return b.done(y)


def small_cnn(seed: int = 0) -> Graph:
    """Conv(pad)+bias+relu, strided conv, residual Add, global pool, Gemm: host and device ops mixed."""
    b = GB("small_cnn", seed)
    x = b.input("x", (1, 3, 12, 10))
    y = b.op("Conv", [x, b.randc("w1", 16, 3, 3, 3, scale=0.3), b.randc("c1", 16, scale=0.1)], pads=[1, 1, 1, 1])
    y = b.op("Relu", [y])
    z = b.op("Conv", [y, b.randc("w2", 16, 16, 3, 3, scale=0.1)], pads=[1, 1, 1, 1])
    y = b.op("Add", [y, z])
    y = b.op("Conv", [y, b.randc("w3", 24, 16, 1, 1, scale=0.25), b.randc("c3", 24, scale=0.1)], strides=[2, 2])
    y = b.op("Relu", [y])
    y = b.op("GlobalAveragePool", [y])
    y = b.op("Flatten", [y])
    y = b.op("Gemm", [y, b.randc("w4", 10, 24, scale=0.2), b.randc("c4", 10)], transB=1)
    return b.done(y)


def attention(seq: int = 16, heads: int = 2, d: int = 8, seed: int = 0) -> Graph:
    """Batched Q @ K^T, softmax, @ V with runtime operands on both sides."""
    b = GB("attention", seed)
    q = b.input("q", (heads, seq, d))
    k = b.input("k", (heads, d, seq))
    v = b.input("v", (heads, seq, d))
    s = b.op("MatMul", [q, k])
    p = b.op("Softmax", [s], axis=-1)
    return b.done(b.op("MatMul", [p, v]))


def feeds(g: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(tuple(int(d) for d in g.types[n].shape)).astype(np.float32) for n in g.inputs}


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    """Relative L2 error."""
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


def cosine(y: np.ndarray, ref: np.ndarray) -> float:
    a, r = y.reshape(-1).astype(np.float64), ref.reshape(-1).astype(np.float64)
    na, nr = np.linalg.norm(a), np.linalg.norm(r)
    return float((a / na) @ (r / nr)) if na > 0 and nr > 0 else float(na == nr)


def tiny_chip_toml(description: str = "8x8 int8 array, 64 KiB scratchpad, no vector unit", *,
                   dataflows: tuple[str, ...] = ("weight-stationary", "output-stationary"),
                   store_ops: tuple[str, ...] = ("relu", "scale", "cast"), padding: bool = True) -> str:
    """A description no shipped generation resembles: an 8x8 int8 array, 64 KiB scratchpad, no
    vector unit, decoupled load/compute/store queues."""
    return f"""
name = "tiny-8x8"
description = "{description}"
[chip]
clock_ghz = 0.5
cores = 1
[matrix]
kind = "systolic"
rows = 8
cols = 8
dataflows = [{", ".join(f'"{d}"' for d in dataflows)}]
dtypes = [["i8", "i32"]]
fill_latency = 16
double_buffered_weights = false
[memory.scratchpad]
bytes = 65536
banks = 2
row_bytes = 8
[memory.accumulator]
bytes = 16384
banks = 2
row_bytes = 32
[dram]
bytes_per_cycle = 8
latency = 40
burst_bytes = 32
[dma]
max_rows = 256
padding = {"true" if padding else "false"}
store_ops = [{", ".join(f'"{o}"' for o in store_ops)}]
[execution]
queues = ["load", "compute", "store"]
decoupled = true
tokens = 8
"""
