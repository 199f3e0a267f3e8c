"""The graph IR: values, nodes, graphs.

A :class:`Graph` holds named values. Every value is produced exactly once: by being a graph
input, a constant (weights stored once in ``graph.constants``, outside the node list) or a
node output. ``graph.types`` maps every value name to its :class:`TensorType`. Node inputs
that an operator leaves optional are given as ``""``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.tensor_type import TensorType


@dataclass
class Node:
    """One operator application. ``attrs`` hold typed, static attributes."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def clone(self) -> Node:
        return Node(self.op, list(self.inputs), list(self.outputs), dict(self.attrs), self.name)


@dataclass
class Graph:
    """A dataflow graph of operator nodes over typed values."""

    name: str = "graph"
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    types: dict[str, TensorType] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    # ---- construction helpers -------------------------------------------------------------
    def add_input(self, name: str, ttype: TensorType) -> str:
        self.inputs.append(name)
        self.types[name] = ttype
        return name

    def add_constant(self, name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        self.constants[name] = value
        self.types[name] = TensorType(DType.from_np(value.dtype), tuple(int(d) for d in value.shape))
        return name

    def fresh_name(self, hint: str = "v") -> str:
        """A value name not yet used in this graph."""
        counter = self.__dict__.setdefault("_fresh", 0)
        while True:
            counter += 1
            name = f"{hint}_{counter}"
            if name not in self.types and name not in self.constants:
                self.__dict__["_fresh"] = counter
                return name

    # ---- queries ----------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            hist[n.op] = hist.get(n.op, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def num_parameters(self) -> int:
        return int(sum(int(c.size) for c in self.constants.values() if c.dtype.kind == "f"))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def copy(self) -> Graph:
        """A copy with cloned nodes; constant arrays are shared (treat them as immutable)."""
        return Graph(
            self.name,
            list(self.inputs),
            list(self.outputs),
            [n.clone() for n in self.nodes],
            dict(self.constants),
            dict(self.types),
            dict(self.metadata),
        )

    def __str__(self) -> str:
        from tessera.graph.printer import format_graph

        return format_graph(self)
