"""Whole-graph statistics: FLOPs, parameters, activation bytes."""

from __future__ import annotations

from collections.abc import Mapping

from tessera.graph.ir import Graph
from tessera.graph.registry import get_op
from tessera.graph.shape_inference import known_values, node_context
from tessera.graph.symbolic import Dim, evaluate


def count_flops(g: Graph, env: Mapping[str, int] | None = None) -> Dim:
    """Total FLOPs of one run (2 per multiply-add). Symbolic unless ``env`` binds the dims."""
    total: Dim = 0
    values = known_values(g)
    for node in g.nodes:
        op = get_op(node.op)
        if op.flops is None:
            continue
        ctx = node_context(g, node, values)
        outs = [g.types[o] for o in node.outputs if o]
        total = total + op.flops(ctx, outs)
    return evaluate(total, env) if env is not None else total
