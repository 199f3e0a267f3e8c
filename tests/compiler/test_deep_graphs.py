"""A 2,000-op elementwise chain compiles for the host and matches the reference (no recursion
limit anywhere on the way), fused into kernels whose dataflow paths are at most MAX_FUSED_DEPTH ops."""

from __future__ import annotations

import math
import time

import numpy as np

import tessera
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.loop.expr import depth
from tessera.loop.fusion import MAX_FUSED_DEPTH, MAX_FUSED_SIZE, expression_cost, partition
from tessera.loop.instantiate import instantiate_group

# unary and binary (with the second input y) ops, mixed; tanh/sigmoid keep the values bounded
PATTERN = ("Tanh", "Add", "Sigmoid", "Mul", "Abs", "Sub", "Neg", "Max")


UNARY = ("Tanh", "Sigmoid", "Abs", "Neg", "Mish", "Gelu", "Elu", "Softplus", "HardSwish", "Selu")
# ops whose definitions read their input 2-3 times: a fused chain of them is a tree exponential in its length
MULTI_USE = ("Mish", "Tanh", "Gelu", "Elu", "Softplus", "Tanh", "HardSwish", "Selu", "Tanh")


def chain(n: int, pattern: tuple[str, ...] = PATTERN) -> Graph:
    g = Graph("chain")
    g.add_input("x", TensorType(DType.float32, (4, 16)))
    g.add_input("y", TensorType(DType.float32, (4, 16)))
    cur = "x"
    for k in range(n):
        op = pattern[k % len(pattern)]
        ins = [cur] if op in UNARY else [cur, "y"]
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


def test_chains_of_multi_use_ops_stay_small_trees(isolated_cache: object) -> None:
    g = chain(300, MULTI_USE)
    assert expression_cost(g, g.nodes[0])[1][0] == 3  # Mish reads x three times
    groups = partition(g)
    for grp in groups:
        for st in instantiate_group(g, grp).stages:
            assert _tree_size(st.body) <= MAX_FUSED_SIZE and depth(st.body) < 400
    rng = np.random.default_rng(1)
    x, y = (rng.standard_normal((4, 16)).astype(np.float32) for _ in range(2))
    want = run_reference(g, {"x": x, "y": y})[g.outputs[0]]
    got = tessera.compile(g)(x, y)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _tree_size(e: object) -> int:
    from tessera.loop.expr import children

    memo: dict[int, int] = {}
    stack = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if id(x) in memo:
            continue
        if not ready:
            stack.append((x, True))
            stack.extend((k, False) for k in children(x))  # type: ignore[arg-type]
            continue
        memo[id(x)] = 1 + sum(memo[id(k)] for k in children(x))  # type: ignore[arg-type]
    return memo[id(e)]


def test_partition_of_a_20000_op_chain_is_not_quadratic() -> None:
    g = chain(20_000)
    t0 = time.perf_counter()
    groups = partition(g)
    elapsed = time.perf_counter() - t0
    assert len(groups) == math.ceil(20_000 / MAX_FUSED_DEPTH)
    assert elapsed < 30, f"partition took {elapsed:.1f} s"  # about 3 s; the quadratic cycle check took a minute
