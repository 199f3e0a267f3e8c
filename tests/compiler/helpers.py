"""End-to-end compiler test helpers: a small graph builder and compile-run-compare checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tessera.compiler import Compilation, compile_graph
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.runtime import CompiledModel

RTOL_F32 = 1e-5


class GB:
    """Terse graph building: ``b.input``, ``b.const``, ``b.op``, then ``b.done(outputs)``."""

    def __init__(self, name: str = "g", seed: int = 0) -> None:
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)
        self._n = 0

    def input(self, name: str, shape: tuple[int, ...], dtype: str = "f32") -> str:
        return self.g.add_input(name, TensorType(DType.parse(dtype), shape))

    def const(self, name: str, value: Any) -> str:
        return self.g.add_constant(name, np.asarray(value))

    def randc(self, name: str, *shape: int, scale: float = 1.0) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op: str, inputs: list[str], n_out: int = 1, name: str | None = None,
           outs: list[str] | None = None, **attrs: Any) -> str:
        self._n += 1
        names = outs or [f"{op.lower()}{self._n}_{k}" for k in range(n_out)]
        self.g.nodes.append(Node(op, inputs, names, attrs, name or f"{op.lower()}{self._n}"))
        return names[0]

    def done(self, *outputs: str) -> Graph:
        self.g.outputs = list(outputs)
        return infer_shapes(self.g)


def random_feeds(g: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs matching the graph's declared input types (ints in [0, 10), bools 50/50)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        t = g.types[name]
        shape = tuple(int(d) for d in t.shape)
        if t.dtype.is_float:
            feeds[name] = rng.standard_normal(shape).astype(t.dtype.np)
        elif t.dtype is DType.bool:
            feeds[name] = rng.random(shape) < 0.5
        else:
            feeds[name] = rng.integers(0, 10, shape).astype(t.dtype.np)
    return feeds


def assert_matches(got: list[np.ndarray], want: Mapping[str, np.ndarray], names: list[str],
                   rtol: float = RTOL_F32) -> None:
    """Outputs equal the reference: exactly for ints/bools; for floats within ``rtol`` of each
    element, plus ``rtol`` x the output's largest magnitude (sums of rounded products near zero)."""
    assert len(got) == len(names)
    for y, name in zip(got, names, strict=True):
        ref = want[name]
        assert y.dtype == ref.dtype, (name, y.dtype, ref.dtype)
        assert y.shape == ref.shape, (name, y.shape, ref.shape)
        if ref.dtype.kind == "f":
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            np.testing.assert_allclose(y, ref, rtol=rtol, atol=rtol * max(scale, 1e-30), err_msg=name)
        else:
            np.testing.assert_array_equal(y, ref, err_msg=name)


def compile_and_check(g: Graph, feeds: Mapping[str, np.ndarray] | None = None, target: str = "x86-avx2",
                      rtol: float = RTOL_F32, **kw: Any) -> Compilation:
    """Compile ``g`` for a natively runnable ``target``, run it and compare with the reference."""
    feeds = dict(feeds) if feeds is not None else random_feeds(g)
    want = run_reference(g, feeds)
    comp = compile_graph(g, target, **kw)
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    assert_matches(model(*[feeds[n] for n in g.inputs]), want, list(g.outputs), rtol)
    return comp
