"""Dead code elimination."""

from __future__ import annotations

from tessera.graph.ir import Graph


def eliminate_dead_code(g: Graph) -> Graph:
    """Remove nodes none of whose outputs reach a graph output; drop unused constants and the
    types of values that no longer exist. Graph inputs are kept (they are the signature)."""
    out = g.copy()
    live: set[str] = set(g.outputs)
    kept = []
    for node in reversed(out.nodes):
        if any(o and o in live for o in node.outputs):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    kept.reverse()
    out.nodes = kept
    out.constants = {k: v for k, v in out.constants.items() if k in live}
    defined = set(out.inputs) | set(out.constants) | {o for n in kept for o in n.outputs if o}
    out.types = {k: t for k, t in out.types.items() if k in defined}
    return out
