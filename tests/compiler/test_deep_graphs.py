"""A 2,000-op elementwise chain compiles for the host and matches the reference (no recursion
limit anywhere on the way), fused into kernels whose dataflow paths are at most MAX_FUSED_DEPTH ops."""

from __future__ import annotations

import math

import numpy as np

import tessera
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.loop.fusion import MAX_FUSED_DEPTH, partition

# unary and binary (with the second input y) ops, mixed; tanh/sigmoid keep the values bounded
PATTERN = ("Tanh", "Add", "Sigmoid", "Mul", "Abs", "Sub", "Neg", "Max")


def chain(n: int) -> Graph:
    g = Graph("chain")
    g.add_input("x", TensorType(DType.float32, (4, 16)))
    g.add_input("y", TensorType(DType.float32, (4, 16)))
    cur = "x"
    for k in range(n):
        op = PATTERN[k % len(PATTERN)]
        ins = [cur] if op in ("Tanh", "Sigmoid", "Abs", "Neg") else [cur, "y"]
        g.nodes.append(Node(op, ins, [f"v{k}"], {}, f"n{k}"))
        cur = f"v{k}"
    g.outputs = [cur]
    return infer_shapes(g)


def _longest_path(nodes: list[Node]) -> int:
    produced: dict[str, int] = {}
    best = 0
    for n in nodes:  # group nodes are in topological order
        d = 1 + max((produced.get(i, 0) for i in n.inputs), default=0)
        produced.update((o, d) for o in n.outputs)
        best = max(best, d)
    return best


def test_fusion_splits_long_chains_at_the_depth_bound() -> None:
    g = chain(100)
    explain: list[str] = []
    groups = partition(g, explain)
    assert [len(grp.nodes) for grp in groups] == [32, 32, 32, 4]
    assert all(_longest_path(grp.nodes) <= MAX_FUSED_DEPTH for grp in groups)
    assert sum(f"fused chain would exceed {MAX_FUSED_DEPTH} ops" in line for line in explain) == 3


def test_2000_op_chain_compiles_and_matches_reference(isolated_cache: object) -> None:
    n = 2000
    g = chain(n)
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((4, 16)).astype(np.float32) for _ in range(2))
    want = run_reference(g, {"x": x, "y": y})[g.outputs[0]]
    model = tessera.compile(g)
    assert len(model.compilation.kernels) == math.ceil(n / MAX_FUSED_DEPTH)
    got = model(x, y)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
