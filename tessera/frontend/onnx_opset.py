"""Rewriting older ONNX operator forms into the newest opset's form.

Tessera's registry implements the newest ONNX semantics. Models exported with an older
default-domain opset use a few operators whose signature changed since then: static operands
that moved from attributes to inputs (Reshape, Split, Squeeze, Unsqueeze, Reduce*, Clip, Pad,
Slice, TopK, Dropout), renamed or replaced operators (Upsample, Scatter), Softmax-family
operators whose old semantics flatten the input to 2-D, and (before opset 7) the explicit
``broadcast``/``axis`` attributes of binary operators and PRelu's per-channel slope. Each
rewrite here produces nodes in the newest form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from tessera.errors import GraphError
from tessera.graph.ir import Node
from tessera.graph.registry import get_op, has_op
from tessera.graph.tensor_type import TensorType

# Operators that older opsets have and that are imported as another (registered) operator.
RENAMED = {"Upsample": "Resize", "Scatter": "ScatterElements"}

# Operators that are never graph nodes: the importer turns them into constants.
IMPORTED_AS_CONSTANT = {"Constant"}

# Binary operators that, before opset 7, broadcast only when asked (``broadcast=1``), with the
# second operand's dims aligned at ``axis``.
LEGACY_BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less",
)


class Builder(Protocol):
    """What a rewrite needs from the importer."""

    def const(self, hint: str, value: np.ndarray) -> str: ...
    def fresh(self, hint: str) -> str: ...
    def type_of(self, name: str) -> TensorType | None: ...
    def is_used(self, name: str) -> bool: ...
    def constant_value(self, name: str) -> np.ndarray | None: ...


Rewrite = Callable[[Builder, Node, int], list[Node]]


def _i64(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _attr_to_input(b: Builder, node: Node, attr: str, index: int, dtype: np.dtype | None = None) -> None:
    """Move attribute ``attr`` (if present) to input slot ``index`` as a constant."""
    if attr not in node.attrs:
        return
    value = node.attrs.pop(attr)
    arr = _i64(value) if dtype is None else np.asarray(value, dtype=dtype)
    name = b.const(f"{node.name}_{attr}", arr)
    while len(node.inputs) <= index:
        node.inputs.append("")
    node.inputs[index] = name


def _input_dtype(b: Builder, node: Node, index: int = 0) -> np.dtype:
    t = b.type_of(node.inputs[index])
    return t.dtype.np if t is not None else np.dtype(np.float32)


def _axes_to_input(b: Builder, node: Node, _opset: int) -> list[Node]:
    _attr_to_input(b, node, "axes", 1)
    return [node]


def _reshape(b: Builder, node: Node, _opset: int) -> list[Node]:
    _attr_to_input(b, node, "shape", 1)
    return [node]


def _split(b: Builder, node: Node, opset: int) -> list[Node]:
    _attr_to_input(b, node, "split", 1)
    has_split = len(node.inputs) > 1 and node.inputs[1] != ""
    if opset < 18 and not has_split and "num_outputs" in get_op("Split").attrs:
        node.attrs["num_outputs"] = len(node.outputs)
    return [node]


def _clip(b: Builder, node: Node, _opset: int) -> list[Node]:
    dt = _input_dtype(b, node)
    _attr_to_input(b, node, "min", 1, dt)
    _attr_to_input(b, node, "max", 2, dt)
    return [node]


def _pad(b: Builder, node: Node, _opset: int) -> list[Node]:
    if "paddings" in node.attrs:
        node.attrs["pads"] = node.attrs.pop("paddings")
    dt = _input_dtype(b, node)
    _attr_to_input(b, node, "pads", 1)
    _attr_to_input(b, node, "value", 2, dt)
    return [node]


def _slice(b: Builder, node: Node, _opset: int) -> list[Node]:
    _attr_to_input(b, node, "starts", 1)
    _attr_to_input(b, node, "ends", 2)
    _attr_to_input(b, node, "axes", 3)
    return [node]


def _topk(b: Builder, node: Node, _opset: int) -> list[Node]:
    _attr_to_input(b, node, "k", 1)
    return [node]


def _dropout(b: Builder, node: Node, _opset: int) -> list[Node]:
    node.attrs.pop("is_test", None)
    _attr_to_input(b, node, "ratio", 1, np.dtype(np.float32))
    return [node]


def _batchnorm(b: Builder, node: Node, _opset: int) -> list[Node]:
    node.attrs.pop("consumed_inputs", None)
    node.attrs.pop("is_test", None)
    spatial = node.attrs.pop("spatial", 1)
    if spatial != 1:
        raise GraphError(f"BatchNormalization node {node.name!r}: spatial=0 is not supported")
    if not node.attrs.get("training_mode", 0):
        # Old opsets list running statistics outputs that only exist in training; drop unused ones.
        extra = [o for o in node.outputs[1:] if o and b.is_used(o)]
        if not extra:
            node.outputs = node.outputs[:1]
    return [node]


def _legacy_broadcast(b: Builder, node: Node, _opset: int) -> list[Node]:
    broadcast = node.attrs.pop("broadcast", 0)
    axis = node.attrs.pop("axis", None)
    if not broadcast or axis is None:
        return [node]  # same shapes, or suffix-aligned (numpy) broadcasting
    ta, tb = b.type_of(node.inputs[0]), b.type_of(node.inputs[1])
    if ta is None or tb is None:
        raise GraphError(f"{node.op} node {node.name!r}: legacy broadcast needs typed inputs")
    axis = axis + ta.rank if axis < 0 else axis
    trailing = ta.rank - axis - tb.rank
    if trailing <= 0:
        return [node]
    return [_unsqueeze_input(b, node, 1, list(range(tb.rank, tb.rank + trailing))), node]


def _unsqueeze_input(b: Builder, node: Node, index: int, axes: list[int]) -> Node:
    """A new Unsqueeze node feeding input ``index`` of ``node`` (which is rewired to it)."""
    axes_name = b.const(f"{node.name}_in{index}_axes", _i64(axes))
    out = b.fresh(f"{node.name}_in{index}_unsqueezed")
    unsqueeze = Node("Unsqueeze", [node.inputs[index], axes_name], [out], {}, f"{node.name}_unsqueeze{index}")
    node.inputs[index] = out
    return unsqueeze


def _legacy_prelu(b: Builder, node: Node, _opset: int) -> list[Node]:
    # Before opset 7 a 1-D slope of length C applies per channel (axis 1).
    tx, ts = b.type_of(node.inputs[0]), b.type_of(node.inputs[1])
    if tx is None or ts is None or ts.rank != 1 or tx.rank <= 2 or ts.shape[0] == 1:
        return [node]
    return [_unsqueeze_input(b, node, 1, list(range(1, tx.rank - 1))), node]


def _legacy_gemm(b: Builder, node: Node, _opset: int) -> list[Node]:
    node.attrs.pop("broadcast", None)
    return [node]


def _legacy_concat(b: Builder, node: Node, _opset: int) -> list[Node]:
    node.attrs.setdefault("axis", 1)
    return [node]


def _softmax_family(b: Builder, node: Node, opset: int) -> list[Node]:
    if opset >= 13:
        return [node]
    # Before opset 13 these operators flatten the input to 2-D at ``axis`` (default 1).
    axis = int(node.attrs.pop("axis", 1))
    t = b.type_of(node.inputs[0])
    if t is None:
        raise GraphError(f"{node.op} node {node.name!r}: input {node.inputs[0]!r} has no type")
    rank = t.rank
    axis = axis + rank if axis < 0 else axis
    if axis == rank - 1 or rank <= 1:
        node.attrs["axis"] = -1
        return [node]
    flat, out2d = b.fresh(f"{node.name}_flat"), b.fresh(f"{node.name}_2d")
    nodes = [Node("Flatten", [node.inputs[0]], [flat], {"axis": axis}, f"{node.name}_flatten")]
    nodes.append(Node(node.op, [flat], [out2d], {"axis": -1}, node.name))
    if t.is_static:
        shape = b.const(f"{node.name}_shape", _i64(t.shape))
    else:
        shape = b.fresh(f"{node.name}_shape")
        nodes.append(Node("Shape", [node.inputs[0]], [shape], {}, f"{node.name}_shape"))
    nodes.append(Node("Reshape", [out2d, shape], list(node.outputs), {}, f"{node.name}_reshape"))
    return nodes


def _upsample(b: Builder, node: Node, _opset: int) -> list[Node]:
    mode = node.attrs.pop("mode", "nearest")
    mode = {"bilinear": "linear"}.get(mode, mode)
    if "scales" in node.attrs:
        scales = b.const(f"{node.name}_scales", np.asarray(node.attrs.pop("scales"), np.float32))
    else:
        scales = node.inputs[1]
    attrs: dict[str, object] = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return [Node("Resize", [node.inputs[0], "", scales], list(node.outputs), attrs, node.name)]


def _resize(b: Builder, node: Node, opset: int) -> list[Node]:
    if opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
        node.inputs = [node.inputs[0], "", node.inputs[1]]
        node.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
    return [node]


def _scatter(b: Builder, node: Node, _opset: int) -> list[Node]:
    node.op = "ScatterElements"
    return [node]


def _grid_sample(b: Builder, node: Node, opset: int) -> list[Node]:
    if opset < 20 and "mode" in node.attrs:
        node.attrs["mode"] = {"bilinear": "linear", "bicubic": "cubic"}.get(node.attrs["mode"], node.attrs["mode"])
    return [node]


def _roi_align(b: Builder, node: Node, opset: int) -> list[Node]:
    if opset < 16:
        node.attrs.setdefault("coordinate_transformation_mode", "output_half_pixel")
    return [node]


def _group_norm(b: Builder, node: Node, opset: int) -> list[Node]:
    if opset >= 21:
        return [node]
    # Opset 18 scales per group; opset 21 per channel: repeat constant scale/bias per channel.
    t = b.type_of(node.inputs[0])
    groups = int(node.attrs.get("num_groups", 0))
    if t is None or t.rank < 2 or not isinstance(t.shape[1], int) or groups <= 0:
        raise GraphError(f"GroupNormalization node {node.name!r}: opset-{opset} form needs a static channel dim")
    channels = t.shape[1]
    for i in (1, 2):
        value = b.constant_value(node.inputs[i]) if len(node.inputs) > i else None
        if value is None:
            raise GraphError(
                f"GroupNormalization node {node.name!r}: opset-{opset} form needs constant scale and bias"
            )
        node.inputs[i] = b.const(f"{node.name}_in{i}", np.repeat(value, channels // groups))
    return [node]


# op_type -> (rewrite, first opset in which the op already has the newest form)
REWRITES: dict[str, tuple[Rewrite, int]] = {
    "Reshape": (_reshape, 5),
    "Split": (_split, 18),
    "Squeeze": (_axes_to_input, 13),
    "Unsqueeze": (_axes_to_input, 13),
    "ReduceSum": (_axes_to_input, 13),
    **{
        f"Reduce{k}": (_axes_to_input, 18)
        for k in ("Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")
    },
    "Clip": (_clip, 11),
    "Pad": (_pad, 11),
    "Slice": (_slice, 10),
    "TopK": (_topk, 10),
    "Dropout": (_dropout, 12),
    "BatchNormalization": (_batchnorm, 10_000),  # always drop the unused training outputs
    "Softmax": (_softmax_family, 13),
    "LogSoftmax": (_softmax_family, 13),
    "Hardmax": (_softmax_family, 13),
    "Upsample": (_upsample, 10_000),
    "Resize": (_resize, 11),
    "Scatter": (_scatter, 10_000),
    "GridSample": (_grid_sample, 20),
    "RoiAlign": (_roi_align, 16),
    "GroupNormalization": (_group_norm, 21),
    **{op: (_legacy_broadcast, 7) for op in LEGACY_BROADCAST},
    "PRelu": (_legacy_prelu, 7),
    "Gemm": (_legacy_gemm, 7),
    "Concat": (_legacy_concat, 4),
}


def upgrade_node(b: Builder, node: Node, opset: int) -> list[Node]:
    """Rewrite one node of a model with default-domain ``opset`` into the newest form."""
    if opset < 6:
        node.attrs.pop("consumed_inputs", None)  # a pre-opset-6 memory-planning hint
    entry = REWRITES.get(node.op)
    if entry is None or opset >= entry[1]:
        return [node]
    return entry[0](b, node, opset)


def supported_op_type(op_type: str) -> bool:
    """Whether a default-domain op type can be imported (directly or via a rewrite)."""
    if op_type in IMPORTED_AS_CONSTANT:
        return True
    return has_op(RENAMED.get(op_type, op_type))
