"""Shared helpers for graph rewrites: value renaming, node removal, type checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.errors import GraphError
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.shape_inference import EVAL_LIMIT, infer_node
from tessera.graph.tensor_type import TensorType

# Operators whose result is not a function of their inputs: never folded or merged.
NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
)


def rename_uses(g: Graph, old: str, new: str) -> None:
    """Make every node input that reads ``old`` read ``new`` instead (in place)."""
    for n in g.nodes:
        if old in n.inputs:
            n.inputs = [new if i == old else i for i in n.inputs]


def forward_value(g: Graph, node: Node, old: str, new: str) -> bool:
    """Prepare to delete ``node`` whose output ``old`` equals value ``new`` (same type).

    Consumers of ``old`` are pointed at ``new``. When ``old`` is a graph output its name must
    survive, so ``new``'s producer is renamed to produce ``old`` instead; when that is not
    possible (``new`` is a graph input, a constant or itself a graph output) nothing changes
    and False is returned: the caller must keep the node. Mutates ``g`` (a working copy)."""
    if old not in g.outputs:
        rename_uses(g, old, new)
        return True
    if new in g.constants or new in g.inputs or new in g.outputs:
        return False
    producer = next((n for n in g.nodes if new in n.outputs), None)
    if producer is None or producer is node:
        return False
    producer.outputs = [old if o == new else o for o in producer.outputs]
    for n in g.nodes:
        if n is not node and new in n.inputs:
            n.inputs = [old if i == new else i for i in n.inputs]
    g.types.pop(new, None)
    return True


def attr_key(value: Any) -> Any:
    """A hashable, exact key for an attribute value (arrays compared by dtype/shape/bytes)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(attr_key(v) for v in value))
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def infers_as(g: Graph, node: Node, expected: list[TensorType | None]) -> bool:
    """Whether ``node`` (not yet in ``g``) type-checks and yields ``expected`` output types.

    Used to validate a rewrite before committing it: a rewrite whose result the shape rules
    disagree with is skipped rather than producing a graph that fails verification."""
    values: dict[str, Any] = {
        i: g.constants[i] for i in node.inputs if i in g.constants and g.constants[i].size <= EVAL_LIMIT
    }
    try:
        got = infer_node(g, node, values)
    except GraphError:
        return False
    return all(e is None or e == t for e, t in zip(expected, got, strict=False))


def op_attrs(node: Node) -> dict[str, Any]:
    """The node's attributes with schema defaults filled in."""
    return normalize_attrs(get_op(node.op), node)


def const_ints(g: Graph, name: str) -> list[int] | None:
    """A constant integer input's values, or None if it is not a constant."""
    if not name or name not in g.constants:
        return None
    arr = g.constants[name]
    if arr.dtype.kind not in "iu":
        return None
    return [int(v) for v in arr.reshape(-1)]


def use_counts(g: Graph) -> dict[str, int]:
    """How many times each value is read, counting graph outputs as one read each."""
    counts: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            if i:
                counts[i] = counts.get(i, 0) + 1
    for o in g.outputs:
        counts[o] = counts.get(o, 0) + 1
    return counts
