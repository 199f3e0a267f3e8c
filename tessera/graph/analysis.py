"""Whole-graph statistics: FLOPs, parameters, activation bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tessera.graph.ir import Graph
from tessera.graph.registry import get_op
from tessera.graph.shape_inference import EVAL_LIMIT, node_context
from tessera.graph.symbolic import Dim, evaluate


def count_flops(g: Graph, env: Mapping[str, int] | None = None) -> Dim:
    """Total FLOPs of one run (2 per multiply-add). Symbolic unless ``env`` binds the dims."""
    total: Dim = 0
    values: dict[str, Any] = {k: v for k, v in g.constants.items() if v.size <= EVAL_LIMIT}
    for node in g.nodes:
        op = get_op(node.op)
        if op.flops is None:
            continue
        ctx = node_context(g, node, values)
        outs = [g.types[o] for o in node.outputs if o]
        total = total + op.flops(ctx, outs)
    return evaluate(total, env) if env is not None else total
