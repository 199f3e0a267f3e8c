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


class GraphEditor:
    """In-place rewrites of a working copy ``g`` in time linear in the edits: value producers and
    users are indexed, removed or replaced nodes are marked and dropped by :meth:`finish`.

    Passes iterate over a snapshot of ``g.nodes``; ``g.nodes`` itself is only rebuilt by
    ``finish``, so a pass must not read it in between."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.slots: list[Node | None] = list(g.nodes)
        self.slot: dict[int, int] = {id(n): k for k, n in enumerate(g.nodes)}
        self.producer: dict[str, Node] = {o: n for n in g.nodes for o in n.outputs if o}
        self.users: dict[str, list[Node]] = {}
        for n in g.nodes:
            self._add_uses(n)
        self.outputs = set(g.outputs)
        self.inputs = set(g.inputs)

    def _add_uses(self, n: Node) -> None:
        for i in n.inputs:
            if i:
                self.users.setdefault(i, []).append(n)

    def is_used(self, value: str) -> bool:
        """Whether a live node reads ``value`` or it is a graph output."""
        return value in self.outputs or any(id(n) in self.slot and value in n.inputs
                                            for n in self.users.get(value, ()))

    def remove(self, node: Node) -> None:
        k = self.slot.pop(id(node), None)
        if k is not None:
            self.slots[k] = None
        for o in node.outputs:
            if o and self.producer.get(o) is node:
                del self.producer[o]

    def replace(self, old: Node, new: Node) -> None:
        """Put ``new`` in ``old``'s place (same position in the node order)."""
        k = self.slot.pop(id(old))
        self.slots[k] = new
        self.slot[id(new)] = k
        for o in old.outputs:
            if o and self.producer.get(o) is old:
                del self.producer[o]
        for o in new.outputs:
            if o:
                self.producer[o] = new
        self._add_uses(new)

    def rename_uses(self, old: str, new: str, skip: Node | None = None) -> None:
        """Make every node input that reads ``old`` read ``new`` instead."""
        moved = []
        for n in self.users.pop(old, ()):
            if n is skip:
                moved.append(n)  # still reads ``old``
                continue
            if old in n.inputs:
                n.inputs = [new if i == old else i for i in n.inputs]
                self.users.setdefault(new, []).append(n)
        if moved:
            self.users[old] = moved

    def forward_value(self, node: Node, old: str, new: str) -> bool:
        """Prepare to delete ``node`` whose output ``old`` equals value ``new`` (same type).

        Consumers of ``old`` are pointed at ``new``. When ``old`` is a graph output its name must
        survive, so ``new``'s producer is renamed to produce ``old`` instead; when that is not
        possible (``new`` is a graph input, a constant or itself a graph output) nothing changes
        and False is returned: the caller must keep the node."""
        if old not in self.outputs:
            self.rename_uses(old, new)
            return True
        if new in self.g.constants or new in self.inputs or new in self.outputs:
            return False
        producer = self.producer.get(new)
        if producer is None or producer is node:
            return False
        producer.outputs = [old if o == new else o for o in producer.outputs]
        del self.producer[new]
        self.producer[old] = producer
        self.rename_uses(new, old, skip=node)
        self.g.types.pop(new, None)
        return True

    def finish(self) -> Graph:
        """Write the edited node list back to ``g`` and return it."""
        self.g.nodes = [n for n in self.slots if n is not None]
        return self.g


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
