"""The reference executor: runs any graph with the registry's NumPy implementations.

It is the correctness oracle for every compiled path, so it favours clarity over speed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tessera.errors import GraphError
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.signature import bind_inputs
from tessera.graph.symbolic import evaluate
from tessera.graph.tensor_type import TensorType
from tessera.limits import ResourceLimitError, check_allocation


def run_reference(
    g: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], check_types: bool = True
) -> dict[str, np.ndarray]:
    """Run ``g`` on ``inputs`` (positional or by name); returns outputs by name."""
    feeds, dims = bind_inputs(g, inputs)
    env: dict[str, np.ndarray] = dict(g.constants)
    env.update(feeds)
    remaining = {}
    for n in g.nodes:
        for i in n.inputs:
            remaining[i] = remaining.get(i, 0) + 1
    keep = set(g.outputs)
    for node in g.nodes:
        _check_output_sizes(g, node, dims)
        env.update(run_node(node, [env[i] if i else None for i in node.inputs], g.types if check_types else None))
        for i in node.inputs:  # free intermediates as soon as they are dead
            if i:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in keep and i not in g.constants:
                    env.pop(i, None)
    return {o: env[o] for o in g.outputs}


def _check_output_sizes(g: Graph, node: Node, dims: Mapping[str, int]) -> None:
    """Refuse (ResourceLimitError) a node whose declared outputs need more memory than the machine has."""
    for o in node.outputs:
        t = g.types.get(o) if o else None
        if t is None:
            continue
        try:
            shape = [evaluate(d, dims) for d in t.shape]
        except KeyError:  # a data-dependent dim: known only once the node has run
            continue
        n = 1
        for d in shape:
            n *= max(int(d), 0)
        check_allocation(n * t.dtype.itemsize, f"output {o!r} ({t}) of {node.op} node {node.name!r}")


def run_node(
    node: Node, args: Sequence[np.ndarray | None], types: Mapping[str, TensorType] | None = None
) -> dict[str, np.ndarray]:
    """Run one node with its registry reference implementation (``args``: its input values, None
    for absent optional inputs); returns its outputs by name. With ``types``, each output must
    have its declared dtype and rank."""
    op = get_op(node.op)
    attrs = normalize_attrs(op, node)
    try:
        outs = op.reference(list(args), attrs, len(node.outputs))
    except MemoryError as e:
        raise ResourceLimitError(f"reference {node.op} node {node.name!r} ran out of memory ({e})") from None
    except Exception as e:
        raise GraphError(f"reference {node.op} node {node.name!r} failed: {type(e).__name__}: {e}") from e
    result: dict[str, np.ndarray] = {}
    for name, v in zip(node.outputs, outs, strict=False):
        if not name:
            continue
        v = np.asarray(v)
        if types is not None and name in types:
            t = types[name]
            if v.dtype != t.dtype.np or v.ndim != t.rank:
                raise GraphError(
                    f"reference {node.op} node {node.name!r} produced {v.dtype}{list(v.shape)} for {name!r} typed {t}"
                )
        result[name] = v
    return result
