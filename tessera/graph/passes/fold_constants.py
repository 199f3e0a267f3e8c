"""Constant folding, shape-arithmetic folding and removal of identity-like nodes."""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.errors import GraphError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.passes._rewrite import NONDETERMINISTIC, GraphEditor
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.shape_inference import EVAL_LIMIT, infer_node, known_values
from tessera.graph.tensor_type import TensorType

# Folded outputs larger than this (in bytes) are kept only if the inputs were at least as big,
# so that e.g. an Expand of a scalar to a huge tensor is not baked into the model.
DEFAULT_SIZE_LIMIT = 4 << 20


def fold_constants(g: Graph, size_limit: int = DEFAULT_SIZE_LIMIT) -> Graph:
    """Evaluate nodes whose inputs are all constants (with the registry's reference), fold
    values that shape inference knows concretely (``Shape`` of a static tensor and the
    arithmetic on it), and remove ``Identity`` and inference-mode ``Dropout`` nodes.

    Nondeterministic (random) operators are never folded. Graph output names are kept."""
    out = g.copy()
    ed = GraphEditor(out)
    values = known_values(out)
    for node in list(out.nodes):
        src = _passthrough(ed, node)
        if src is not None:
            dst = node.outputs[0]
            if ed.forward_value(node, dst, src):
                if src in values and dst in ed.outputs:  # src's producer now produces dst
                    values[dst] = values.pop(src)
                _delete(ed, node, keep_types=dst in ed.outputs)
                continue
        if node.op in NONDETERMINISTIC:
            _record(out, node, values)
            continue
        folded = _evaluate(out, node, size_limit)
        if folded is None:
            _record(out, node, values)
            folded = _known_values(out, node, values)
        if folded is not None:
            ed.remove(node)
            for name, arr in folded.items():
                out.constants[name] = arr
                if arr.size <= EVAL_LIMIT:
                    values[name] = arr
    return ed.finish()


def _passthrough(ed: GraphEditor, node: Node) -> str | None:
    """The input an identity-like node forwards unchanged, or None."""
    if node.op == "Identity" and len(node.inputs) == 1 and len(node.outputs) == 1:
        return node.inputs[0] or None
    if node.op == "Dropout" and node.inputs and node.inputs[0]:
        mask = node.outputs[1] if len(node.outputs) > 1 else ""
        if mask and ed.is_used(mask):
            return None
        training = node.inputs[2] if len(node.inputs) > 2 else ""
        consts = ed.g.constants
        if training and (training not in consts or bool(np.any(consts[training]))):
            return None
        return node.inputs[0]
    return None


def _delete(ed: GraphEditor, node: Node, keep_types: bool) -> None:
    """Remove a forwarded node; its secondary outputs (e.g. an unused Dropout mask) vanish."""
    ed.remove(node)
    for o in node.outputs[0 if not keep_types else 1:]:
        ed.g.types.pop(o, None)


def _fits_type(g: Graph, name: str, arr: np.ndarray) -> bool:
    try:
        t = TensorType(DType.from_np(arr.dtype), tuple(int(d) for d in arr.shape))
    except GraphError:
        return False
    return g.types.get(name) == t


def _evaluate(g: Graph, node: Node, size_limit: int) -> dict[str, np.ndarray] | None:
    """Run a node whose inputs are all constants; None if it cannot or should not be folded."""
    if not all(i in g.constants for i in node.inputs if i):
        return None
    args = [g.constants[i] if i else None for i in node.inputs]
    in_bytes = sum(a.nbytes for a in args if a is not None)
    declared = _declared_bytes(g, node)
    if declared is not None and declared > max(size_limit, in_bytes):
        return None  # too large to bake into the model: never even computed
    op = get_op(node.op)
    try:
        results = op.reference(args, normalize_attrs(op, node), len(node.outputs))
    except Exception:  # e.g. a data-dependent failure: leave it to run time
        return None
    folded = {o: np.asarray(v, order="C") for o, v in zip(node.outputs, results, strict=False) if o}
    if len(folded) != len([o for o in node.outputs if o]):
        return None
    if not all(_fits_type(g, o, v) for o, v in folded.items()):
        return None
    if sum(v.nbytes for v in folded.values()) > max(size_limit, in_bytes):
        return None
    return folded


def _declared_bytes(g: Graph, node: Node) -> int | None:
    """Bytes of the node's outputs by their recorded types; None if one is unknown or symbolic."""
    total = 0
    for o in node.outputs:
        if not o:
            continue
        t = g.types.get(o)
        if t is None or not t.is_static:
            return None
        total += int(np.prod([int(d) for d in t.shape], dtype=object)) * t.dtype.itemsize
    return total


def _record(g: Graph, node: Node, values: dict[str, Any]) -> None:
    """Run shape inference on the node to learn the values of its (small int) outputs."""
    try:
        infer_node(g, node, values)
    except GraphError:
        pass


def _known_values(g: Graph, node: Node, values: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The node's outputs as constants if inference knows all of them concretely."""
    folded: dict[str, np.ndarray] = {}
    for o in node.outputs:
        if not o:
            continue
        v, t = values.get(o), g.types.get(o)
        if v is None or t is None or not t.is_static:
            return None
        if isinstance(v, tuple):
            if not all(isinstance(d, int) for d in v):
                return None
            v = np.array(v, dtype=t.dtype.np)
            if v.size != int(np.prod(t.shape, dtype=np.int64)):
                return None
            v = v.reshape(tuple(int(d) for d in t.shape))
        if not isinstance(v, np.ndarray) or not _fits_type(g, o, v):
            return None
        folded[o] = v
    return folded or None
