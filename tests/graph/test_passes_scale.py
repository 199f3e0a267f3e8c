"""Graph-level algorithms at scale: 20,000-node graphs (no recursion, no quadratic pass),
million-character names (linear printing, parsing and saving), and declared shapes far beyond
the machine (checked, never allocated)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.passes import eliminate_common_subexpressions, eliminate_dead_code, fold_constants, optimize
from tessera.graph.passes.simplify_reshapes import simplify_reshapes
from tessera.graph.printer import format_graph
from tessera.graph.reference import run_reference
from tessera.graph.serialize import load_graph, save_graph
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.specialize import specialize
from tessera.graph.symbolic import Sym, parse_dim
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify
from tessera.limits import ResourceLimitError

OPS = ("Relu", "Add", "Identity", "Mul", "Reshape", "Neg", "Sub", "Dropout")


def _chain(n: int) -> Graph:
    """Elementwise ops, identities, no-op reshapes and inference dropouts, all in one chain."""
    g = Graph("big")
    g.add_input("x", TensorType(DType.float32, (Sym.var("batch"), 8)))
    g.add_input("y", TensorType(DType.float32, (Sym.var("batch"), 8)))
    g.add_constant("shape", np.array([-1, 8], np.int64))
    cur = "x"
    for k in range(n):
        op = OPS[k % len(OPS)]
        ins = {"Add": [cur, "y"], "Mul": [cur, "y"], "Sub": [cur, "y"], "Reshape": [cur, "shape"]}.get(op, [cur])
        g.nodes.append(Node(op, ins, [f"v{k}"], {}, f"n{k}"))
        cur = f"v{k}"
    g.outputs = [cur]
    return g


def _reference_chain(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    for k in range(n):
        op = OPS[k % len(OPS)]
        x = {"Relu": lambda v: np.maximum(v, 0), "Add": lambda v: v + y, "Mul": lambda v: v * y,
             "Neg": lambda v: -v, "Sub": lambda v: v - y}.get(op, lambda v: v)(x)
    return x


def test_20000_node_graph_through_every_graph_pass(tmp_path: Path) -> None:
    n = 20_000
    t0 = time.perf_counter()
    g = infer_shapes(_chain(n))
    verify(g)
    for p in (fold_constants, simplify_reshapes, eliminate_common_subexpressions, eliminate_dead_code):
        verify(p(g))
    opt = optimize(g)
    assert {nd.op for nd in opt.nodes} == {"Relu", "Add", "Mul", "Neg", "Sub"} and len(opt.nodes) == n * 5 // 8
    assert len(format_graph(g).splitlines()) == n + 3  # header, one constant, the nodes, closing brace
    save_graph(g, tmp_path / "big.tsr")
    h = load_graph(tmp_path / "big.tsr")
    assert str(h) == str(g)
    s = specialize(g, {"batch": 3})
    assert s.types[g.outputs[0]] == TensorType(DType.float32, (3, 8))
    rng = np.random.default_rng(0)
    x, y = (rng.uniform(0.5, 1.0, (3, 8)).astype(np.float32) for _ in range(2))
    got = run_reference(opt, {"x": x, "y": y})[g.outputs[0]]
    np.testing.assert_allclose(got, _reference_chain(x, y, n), rtol=1e-5)
    # about 10 s on a slow shared machine; fold_constants alone took 107 s when it was quadratic
    assert time.perf_counter() - t0 < 60


def test_deep_and_wide_graph_topologies() -> None:
    # a 20,000-node balanced reduction tree (wide) and the reverse node order (not topological)
    g = Graph("tree")
    g.add_input("x", TensorType(DType.float32, (2,)))
    level = ["x"] * 10_000
    k = 0
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2], strict=False):
            g.nodes.append(Node("Add", [a, b], [f"t{k}"], {}, f"t{k}"))
            nxt.append(f"t{k}")
            k += 1
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    g.outputs = level
    infer_shapes(g)
    verify(g)
    out = run_reference(optimize(g), {"x": np.array([1.0, 2.0], np.float32)})[level[0]]
    np.testing.assert_array_equal(out, np.array([10_000.0, 20_000.0], np.float32))


def test_million_character_names_are_linear(tmp_path: Path) -> None:
    n = 1_000_000  # a quadratic step would take hours at this length
    name, sym = "v" * n, "b" * n
    t0 = time.perf_counter()
    g = Graph("g" * n)
    g.add_input(name, TensorType(DType.float32, (Sym.var(sym), 4)))
    g.nodes.append(Node("Relu", [name], ["r" * n], {}, "n" * n))
    g.outputs = ["r" * n]
    infer_shapes(g)
    verify(optimize(g))
    text = format_graph(g)
    assert f"%{name}: f32[{sym},4]" in text and f"# {'n' * n}" in text
    assert TensorType.parse(f"f32[{sym}*2+1,4]").shape[0] == Sym.var(sym) * 2 + 1
    assert parse_dim(f"({sym}+3)//2") == (Sym.var(sym) + 3) // 2
    save_graph(g, tmp_path / "long.tsr")
    assert str(load_graph(tmp_path / "long.tsr")) == text
    assert time.perf_counter() - t0 < 10


def _huge_constant_of_shape() -> Graph:
    g = Graph("huge")
    g.add_input("x", TensorType(DType.float32, (1,)))
    g.add_constant("shape", np.array([1 << 40], np.int64))
    g.nodes.append(Node("ConstantOfShape", ["shape"], ["big"], {}, "fill"))
    g.nodes.append(Node("Add", ["big", "x"], ["y"], {}, "add"))
    g.outputs = ["y"]
    return infer_shapes(g)


def test_absurd_shapes_are_typed_not_allocated() -> None:
    g = _huge_constant_of_shape()
    assert g.types["big"] == TensorType(DType.float32, (1 << 40,))
    folded = fold_constants(g)  # 4 TiB is far above the folding bound: the node stays, nothing computed
    assert [nd.op for nd in folded.nodes] == ["ConstantOfShape", "Add"] and "big" not in folded.constants
    with pytest.raises(ResourceLimitError, match=r"output 'big' \(f32\[1099511627776\]\) of ConstantOfShape node "
                                                 r"'fill' needs 4\.0 TiB"):
        run_reference(g, {"x": np.ones(1, np.float32)})


def test_specialize_to_absurd_sizes_does_not_allocate() -> None:
    g = Graph("sym")
    g.add_input("x", TensorType(DType.float32, (Sym.var("batch"), 1024)))
    g.nodes.append(Node("Relu", ["x"], ["y"], {}, "relu"))
    g.outputs = ["y"]
    s = specialize(infer_shapes(g), {"batch": 1 << 40})
    assert s.types["y"] == TensorType(DType.float32, (1 << 40, 1024))
