"""Specialize a graph with symbolic dims to concrete input shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tessera.errors import GraphError
from tessera.graph.ir import Graph
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.signature import bind_inputs
from tessera.graph.symbolic import evaluate


def specialize(g: Graph, shapes: Mapping[str, Sequence[int]] | Mapping[str, int]) -> Graph:
    """A copy of ``g`` whose inputs have static shapes and whose types are re-inferred.

    ``shapes`` maps input names to concrete shapes, or symbol names (``batch``) to sizes.
    Data-dependent dims (NonZero...) stay symbolic; everything the shapes determine becomes
    static because shape arithmetic is re-evaluated with concrete values."""
    out = g.copy()
    env: dict[str, int] = {k: int(v) for k, v in shapes.items() if isinstance(v, (int, np.integer))}
    for name in g.inputs:
        t = g.types[name]
        if name in shapes and not isinstance(shapes[name], (int, np.integer)):
            dims = tuple(int(d) for d in shapes[name])  # type: ignore[union-attr]
            if len(dims) != t.rank:
                raise GraphError(f"input {name!r} has rank {t.rank}, got shape {list(dims)}")
        else:
            try:
                dims = tuple(evaluate(d, env) for d in t.shape)
            except KeyError as e:
                raise GraphError(f"input {name!r}: no size given for symbolic dim {e.args[0]!r}") from None
        out.types[name] = t.with_shape(dims)
    for node in out.nodes:
        for o in node.outputs:
            out.types.pop(o, None)
    infer_shapes(out)
    # reuse the signature checker: declared symbolic dims must agree with the concrete shapes
    # zero-stride stand-ins: checks shapes without allocating them (a shape may ask for terabytes)
    bind_inputs(g, {n: np.broadcast_to(np.empty((), dtype=g.types[n].dtype.np), out.types[n].shape)
                    for n in g.inputs})
    return out


def specialize_like(g: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> Graph:
    """Specialize ``g`` to the shapes of example ``inputs`` (validated like a real call)."""
    feeds, _ = bind_inputs(g, inputs)
    return specialize(g, {n: v.shape for n, v in feeds.items()})


def bind_constant_inputs(g: Graph, values: Mapping[str, np.ndarray]) -> Graph:
    """A copy of ``g`` where the given inputs are constants with these values (specialization
    on values, e.g. a shape or axes operand passed as an input), types re-inferred."""
    out = g.copy()
    for name, value in values.items():
        if name not in out.inputs:
            raise GraphError(f"{name!r} is not an input of {g.name!r}")
        out.inputs.remove(name)
        out.add_constant(name, np.asarray(value, dtype=g.types[name].dtype.np))
    for node in out.nodes:
        for o in node.outputs:
            out.types.pop(o, None)
    return infer_shapes(out)
