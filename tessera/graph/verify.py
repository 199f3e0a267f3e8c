"""Graph verifier: single assignment, defined-before-use (hence acyclic), arity, attribute
schema, and that every recorded type is what the operator's shape rule gives."""

from __future__ import annotations

from tessera.errors import GraphError
from tessera.graph.ir import Graph
from tessera.graph.shape_inference import infer_node, known_values


def verify(g: Graph) -> None:
    """Raise GraphError describing the first problem found; return None if ``g`` is valid."""
    defined: set[str] = set()

    def define(name: str, what: str) -> None:
        if name in defined:
            raise GraphError(f"value {name!r} is assigned more than once (again as {what})")
        defined.add(name)

    for i in g.inputs:
        define(i, "graph input")
        if i in g.constants:
            raise GraphError(f"graph input {i!r} is also a constant")
    for c in g.constants:
        define(c, "constant")
    for name in defined:
        if name not in g.types:
            raise GraphError(f"value {name!r} has no type")
    for c, arr in g.constants.items():
        t = g.types[c]
        if t.dtype.np != arr.dtype or t.shape != tuple(arr.shape):
            raise GraphError(f"constant {c!r} is {arr.dtype}{list(arr.shape)} but typed {t}")

    values = known_values(g)
    for node in g.nodes:
        for i in node.inputs:
            if i and i not in defined:
                raise GraphError(
                    f"{node.op} node {node.name!r} uses {i!r} before it is defined (undefined or cycle)"
                )
        inferred = infer_node(g, node, values)
        for o, t in zip(node.outputs, inferred, strict=False):
            if not o:
                continue
            define(o, f"output of {node.op} node {node.name!r}")
            if o not in g.types:
                raise GraphError(f"value {o!r} has no type")
            if g.types[o] != t:
                raise GraphError(
                    f"{node.op} node {node.name!r}: output {o!r} typed {g.types[o]} but rule gives {t}"
                )
    for o in g.outputs:
        if o not in defined:
            raise GraphError(f"graph output {o!r} is never defined")
