"""Simplification of reshape and transpose chains."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tessera.graph.ir import Graph, Node
from tessera.graph.passes._rewrite import GraphEditor, const_ints, infers_as, op_attrs
from tessera.graph.symbolic import Dim

# Operators that only change a tensor's shape, never its data order.
RESHAPE_LIKE = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})


def simplify_reshapes(g: Graph) -> Graph:
    """Remove no-op reshapes and transposes and collapse chains of them.

    * a Reshape/Squeeze/Unsqueeze/Flatten/Expand whose output type equals its input type, and
      a Transpose with the identity permutation, are removed;
    * ``Transpose(Transpose(x, p1), p2)`` becomes ``Transpose(x, p1[p2])`` (or ``x``);
    * a chain of Reshape/Squeeze/Unsqueeze/Flatten becomes one ``Reshape`` of the chain's
      input, when the final shape can be written as a constant target (static dims, ``0`` for a
      symbolic dim kept in place, at most one ``-1``).

    Intermediate nodes left without consumers are removed by dead code elimination."""
    out = g.copy()
    ed = GraphEditor(out)
    producers = ed.producer
    for node in list(out.nodes):
        x = node.inputs[0] if node.inputs else ""
        if not x or len(node.outputs) != 1 or node.outputs[0] not in out.types or x not in out.types:
            continue
        y = node.outputs[0]
        if node.op in RESHAPE_LIKE:
            if out.types[x] == out.types[y]:
                _remove(ed, node, y, x)
                continue
            inner = producers.get(x)
            if inner is not None and inner.op in RESHAPE_LIKE and inner.inputs[0]:
                if out.types.get(inner.inputs[0]) == out.types[y]:
                    _remove(ed, node, y, inner.inputs[0])
                else:
                    _collapse_reshapes(ed, node, inner.inputs[0])
        elif node.op == "Expand" and out.types[x] == out.types[y]:  # broadcasts nothing
            _remove(ed, node, y, x)
        elif node.op == "Transpose":
            perm = _perm(node, out.types[x].rank)
            inner = producers.get(x)
            if perm == list(range(len(perm))):
                _remove(ed, node, y, x)
            elif inner is not None and inner.op == "Transpose" and inner.inputs[0] in out.types:
                src = inner.inputs[0]
                inner_perm = _perm(inner, out.types[src].rank)
                perm = [inner_perm[p] for p in perm]
                if perm == list(range(len(perm))):
                    _remove(ed, node, y, src)
                    continue
                new = Node("Transpose", [src], [y], {"perm": perm}, node.name)
                if infers_as(out, new, [out.types[y]]):
                    ed.replace(node, new)
    return ed.finish()


def _perm(node: Node, rank: int) -> list[int]:
    perm = op_attrs(node).get("perm")
    return [int(p) % max(rank, 1) for p in perm] if perm else list(range(rank))[::-1]


def _remove(ed: GraphEditor, node: Node, y: str, x: str) -> None:
    if ed.forward_value(node, y, x):
        ed.remove(node)
        if y not in ed.outputs:
            ed.g.types.pop(y, None)


def _collapse_reshapes(ed: GraphEditor, node: Node, src: str) -> None:
    """Replace a reshape-like ``node`` fed by another reshape-like node by one Reshape of
    ``src`` (the inner node's input), trying candidate constant targets in order."""
    g = ed.g
    y = node.outputs[0]
    out_shape, in_shape = g.types[y].shape, g.types[src].shape
    candidates: list[tuple[list[int], int]] = []
    if all(isinstance(d, int) for d in out_shape):
        candidates.append(([int(d) for d in out_shape], 1 if 0 in out_shape else 0))
    if node.op == "Reshape" and len(node.inputs) > 1:
        shape = const_ints(g, node.inputs[1])
        allowzero = int(op_attrs(node).get("allowzero", 0))
        if shape is not None and (allowzero or 0 not in shape):
            candidates.append((shape, allowzero))
    target = _symbolic_target(in_shape, out_shape)
    if target is not None:
        candidates.append((target, 0))
    for shape, allowzero in candidates:
        const = g.fresh_name(f"{y}_shape")
        g.add_constant(const, np.array(shape, dtype=np.int64))
        attrs = {"allowzero": 1} if allowzero else {}
        new = Node("Reshape", [src, const], [y], attrs, node.name)
        if infers_as(g, new, [g.types[y]]):
            ed.replace(node, new)
            return
        del g.constants[const], g.types[const]


def _symbolic_target(in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> list[int] | None:
    """A Reshape target for ``out_shape``: ints as is, ``0`` where a symbolic dim stays in
    place, ``-1`` for one other symbolic dim; None when that cannot express it."""
    target: list[int] = []
    for i, d in enumerate(out_shape):
        if isinstance(d, int):
            if d == 0:
                return None
            target.append(d)
        elif i < len(in_shape) and in_shape[i] == d:
            target.append(0)
        elif -1 not in target:
            target.append(-1)
        else:
            return None
    return target
