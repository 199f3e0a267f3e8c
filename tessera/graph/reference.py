"""The reference executor: runs any graph with the registry's NumPy implementations.

It is the correctness oracle for every compiled path, so it favours clarity over speed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tessera.errors import GraphError
from tessera.graph.ir import Graph
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.signature import bind_inputs


def run_reference(
    g: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], check_types: bool = True
) -> dict[str, np.ndarray]:
    """Run ``g`` on ``inputs`` (positional or by name); returns outputs by name."""
    feeds, _ = bind_inputs(g, inputs)
    env: dict[str, np.ndarray] = dict(g.constants)
    env.update(feeds)
    remaining = {}
    for n in g.nodes:
        for i in n.inputs:
            remaining[i] = remaining.get(i, 0) + 1
    keep = set(g.outputs)
    for node in g.nodes:
        op = get_op(node.op)
        attrs = normalize_attrs(op, node)
        args = [env[i] if i else None for i in node.inputs]
        try:
            outs = op.reference(args, attrs, len(node.outputs))
        except Exception as e:
            raise GraphError(f"reference {node.op} node {node.name!r} failed: {type(e).__name__}: {e}") from e
        for name, v in zip(node.outputs, outs, strict=False):
            if not name:
                continue
            v = np.asarray(v)
            if check_types and name in g.types:
                t = g.types[name]
                if v.dtype != t.dtype.np or v.ndim != t.rank:
                    raise GraphError(
                        f"reference {node.op} node {node.name!r} produced {v.dtype}{list(v.shape)} "
                        f"for {name!r} typed {t}"
                    )
            env[name] = v
        for i in node.inputs:  # free intermediates as soon as they are dead
            if i:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in keep and i not in g.constants:
                    env.pop(i, None)
    return {o: env[o] for o in g.outputs}
