"""Small workloads and a deterministic fake measurer for the auto-scheduler tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from tessera.graph.ir import Graph
from tessera.tune.harness import BuiltKernel
from tessera.tune.measure import MeasureResult
from tests.compiler.helpers import GB


def matmul_relu(m: int = 32, k: int = 64, n: int = 48, names: str = "a", layers: int = 1,
                const_weight: bool = True) -> Graph:
    """``layers`` identical MatMul+Relu layers (fresh weights each); ``names`` prefixes every name."""
    b = GB(f"{names}_mm", seed=len(names))
    y = b.input(f"{names}_x", (m, k))
    for i in range(layers):
        w = b.randc(f"{names}_w{i}", k, k if i < layers - 1 else n) if const_weight else \
            b.input(f"{names}_win{i}", (k, k if i < layers - 1 else n))
        y = b.op("MatMul", [y, w], name=f"{names}_matmul{i}")
        y = b.op("Relu", [y], name=f"{names}_relu{i}")
    return b.done(y)


def conv_relu(names: str = "c") -> Graph:
    b = GB(f"{names}_conv", seed=3)
    x = b.input(f"{names}_x", (1, 8, 10, 10))
    y = b.op("Conv", [x, b.randc(f"{names}_w", 16, 8, 3, 3, scale=0.3), b.randc(f"{names}_b", 16)],
             pads=[1, 1, 1, 1], name=f"{names}_conv")
    return b.done(b.op("Relu", [y], name=f"{names}_relu"))


def add_tanh(names: str = "e") -> Graph:
    b = GB(f"{names}_ew")
    x = b.input(f"{names}_x", (16, 64))
    y = b.op("Add", [x, b.randc(f"{names}_b", 64)], name=f"{names}_add")
    return b.done(b.op("Tanh", [y], name=f"{names}_tanh"))


class FakeMeasurer:
    """Renders candidates but never compiles or runs them: a candidate's time is a hash of its C
    source (deterministic); no outputs (nothing to check). Records what it was asked to run."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self._source: dict[int, str] = {}

    def build(self, jobs: Sequence[Callable[[], tuple[str, BuiltKernel]]]) -> list[BuiltKernel | Exception]:
        out: list[BuiltKernel | Exception] = []
        for job in jobs:
            source, built = job()
            self._source[id(built)] = source
            out.append(built)
        return out

    def run(self, built: BuiltKernel, reference: Sequence[object] | None) -> MeasureResult:
        source = self._source[id(built)]
        self.sources.append(source)
        h = int(hashlib.sha256(source.encode()).hexdigest()[:8], 16)
        return MeasureResult("ok", 1e-3 * (1 + h / 2**32))

    def close(self) -> None:
        pass
