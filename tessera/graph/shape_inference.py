"""Type and shape inference over a whole graph, with symbolic value propagation.

Small integer tensors computed from shapes (``Shape -> Gather -> Concat -> Reshape`` chains
that exporters emit for dynamic axes) are tracked as tuples of symbolic dims so that the
shapes they feed stay exact instead of becoming unknown.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.errors import GraphError, ShapeInferenceError
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import InferContext, check_arity, get_op, normalize_attrs
from tessera.graph.tensor_type import TensorType
from tessera.limits import ResourceLimitError

# Constant inputs up to this many elements are evaluated during inference (shape arithmetic).
EVAL_LIMIT = 4096


def node_context(g: Graph, node: Node, values: dict[str, Any]) -> InferContext:
    op = get_op(node.op)
    check_arity(op, node)
    attrs = normalize_attrs(op, node)
    types: list[TensorType | None] = []
    for i in node.inputs:
        if not i:
            types.append(None)
        elif i not in g.types:
            raise GraphError(f"{node.op} node {node.name!r}: input {i!r} has no type (undefined value?)")
        else:
            types.append(g.types[i])
    vals = [values.get(i) if i else None for i in node.inputs]
    return InferContext(node, types, attrs, vals, len(node.outputs))


def infer_node(g: Graph, node: Node, values: dict[str, Any]) -> list[TensorType]:
    """Infer a node's output types; records known output values into ``values``."""
    op = get_op(node.op)
    ctx = node_context(g, node, values)
    try:
        out_types = op.infer(ctx)
    except ShapeInferenceError:
        raise
    except (ValueError, IndexError, TypeError, KeyError) as e:
        raise ctx.error(f"shape inference failed: {e}") from e
    except MemoryError as e:  # a rule that evaluated an absurdly large value
        raise ResourceLimitError(f"{node.op} node {node.name!r}: shape inference ran out of memory ({e})") from None
    if len(out_types) < len(node.outputs):
        raise ctx.error(f"rule gave {len(out_types)} output types for {len(node.outputs)} outputs")
    _record_values(op, ctx, node, values, out_types)
    return out_types[: len(node.outputs)]


def _record_values(
    op: Any, ctx: InferContext, node: Node, values: dict[str, Any], out_types: list[TensorType]
) -> None:
    ins = [values.get(i) if i else None for i in node.inputs]
    present = [v for i, v in zip(node.inputs, ins, strict=True) if i]
    if present and all(isinstance(v, np.ndarray) for v in present):
        # outputs larger than EVAL_LIMIT are not recorded: never compute them (Range to 8 TiB)
        small_out = all(not t.is_static or int(t.numel) <= EVAL_LIMIT for t in out_types[: len(node.outputs)])
        if small_out and all(v.size <= EVAL_LIMIT for v in present):
            try:
                outs = op.reference([v if i else None for i, v in zip(node.inputs, ins, strict=True)],
                                    ctx.attrs, len(node.outputs))
            except Exception:  # a value we cannot fold now is simply unknown
                return
            for name, v, t in zip(node.outputs, outs, out_types, strict=False):
                v = np.asarray(v)  # references may return NumPy scalars
                if name and v.size <= EVAL_LIMIT and v.dtype == t.dtype.np:
                    values[name] = v
            return
    if op.propagate is not None:
        for name, v, t in zip(node.outputs, op.propagate(ctx), out_types, strict=False):
            if not name or v is None:
                continue
            if all(isinstance(d, int) for d in v) and t.is_static and len(v) == t.numel:
                # A fully known value (Shape of a static tensor) becomes a real constant, so
                # downstream ops fold it by running their references.
                v = np.array(v, dtype=t.dtype.np).reshape(t.shape)
            values[name] = v


def known_values(g: Graph) -> dict[str, Any]:
    """The constants small enough to take part in shape arithmetic, by name."""
    return {k: v for k, v in g.constants.items() if v.size <= EVAL_LIMIT}


def infer_shapes(g: Graph) -> Graph:
    """(Re)compute ``g.types`` for every node output, in place; returns ``g``."""
    values = known_values(g)
    for node in g.nodes:
        for name, t in zip(node.outputs, infer_node(g, node, values), strict=False):
            if name:
                g.types[name] = t
    return g
