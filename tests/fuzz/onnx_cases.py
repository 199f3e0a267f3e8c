"""Generated malformed ONNX models: small valid models built with ``onnx.helper``, then mutated.

A :class:`OnnxCase` names its base model and the mutations applied (that text is the minimal
reproducer hypothesis prints); its payload is the serialized, mutated model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import AttributeProto, ModelProto, TensorProto, numpy_helper
from onnx import helper as oh

F = TensorProto.FLOAT
I64 = TensorProto.INT64
OPSET = 17

# Values a mutation puts where an int belongs: the edges of int32/int64, negatives, zero, small, huge.
INTS = [-(2**63), -(2**31) - 1, -1000, -7, -3, -2, -1, 0, 1, 2, 3, 4, 7, 1000, 2**31, 2**40, 2**63 - 1]
FLOATS = [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 0.5, 1e30, -1e-45]
STRINGS = ["", "NOTSET", "SAME_UPPER", "VALID", "garbage", "\x00", "FLOAT", "x" * 300]
ATTR_NAMES = ["axis", "axes", "perm", "kernel_shape", "strides", "pads", "dilations", "group", "to", "keepdims",
              "largest", "sorted", "auto_pad", "ceil_mode", "storage_order", "allowzero", "noop_with_empty_axes",
              "transA", "epsilon", "bogus"]
OP_TYPES = ["Add", "MatMul", "Conv", "Relu", "Reshape", "Transpose", "Concat", "Gather", "Softmax", "TopK",
            "MaxPool", "ReduceSum", "Cast", "Identity", "Flatten", "Sub", "Where", "Slice", "Unsqueeze"]
STRICT_ATTRS = {"kernel_shape", "strides", "dilations", "pads", "perm", "axis"}
ELEM_TYPES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 23, 99, -1]
OPSETS = [0, 1, 5, 6, 7, 9, 10, 11, 12, 13, 16, 17, 18, 19, 21, 22, 99, 10**6, -1]


def _vi(name: str, dims: list[int] | None, elem: int = F) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, elem, dims)


def _init(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: tuple[TensorProto, ...] = ()) -> ModelProto:
    g = oh.make_graph(nodes, "fuzz", inputs, outputs, list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", OPSET)], ir_version=8)


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def add() -> ModelProto:
    return _model([oh.make_node("Add", ["x", "y"], ["z"], name="add")],
                  [_vi("x", [2, 3]), _vi("y", [3])], [_vi("z", [2, 3])])


def matmul_relu() -> ModelProto:
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"], name="mm"), oh.make_node("Relu", ["m"], ["y"], name="relu")]
    return _model(nodes, [_vi("x", [2, 8])], [_vi("y", [2, 4])], (_init("w", _w(8, 4)),))


def conv() -> ModelProto:
    node = oh.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                        strides=[1, 1], dilations=[1, 1], group=1)
    return _model([node], [_vi("x", [1, 2, 5, 5])], [_vi("y", [1, 3, 5, 5])],
                  (_init("w", _w(3, 2, 3, 3, seed=1)), _init("b", _w(3, seed=2))))


def reshape_transpose() -> ModelProto:
    nodes = [oh.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             oh.make_node("Transpose", ["r"], ["y"], name="transpose", perm=[1, 0])]
    return _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [4, 6])], (_init("shape", np.array([6, 4], np.int64)),))


def concat() -> ModelProto:
    return _model([oh.make_node("Concat", ["x", "y"], ["z"], name="concat", axis=1)],
                  [_vi("x", [2, 3]), _vi("y", [2, 2])], [_vi("z", [2, 5])])


def gather() -> ModelProto:
    return _model([oh.make_node("Gather", ["x", "idx"], ["y"], name="gather", axis=0)],
                  [_vi("x", [5, 3])], [_vi("y", [3, 3])], (_init("idx", np.array([0, 4, 2], np.int64)),))


def softmax() -> ModelProto:
    node = oh.make_node("Softmax", ["x"], ["y"], name="softmax", axis=-1)
    return _model([node], [_vi("x", [2, 5])], [_vi("y", [2, 5])])


def topk() -> ModelProto:
    node = oh.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=-1, largest=1, sorted=1)
    return _model([node], [_vi("x", [2, 8])], [_vi("v", [2, 3]), _vi("i", [2, 3], I64)],
                  (_init("k", np.array([3], np.int64)),))


def maxpool() -> ModelProto:
    node = oh.make_node("MaxPool", ["x"], ["y"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2])
    return _model([node], [_vi("x", [1, 1, 6, 6])], [_vi("y", [1, 1, 3, 3])])


def reducesum() -> ModelProto:
    node = oh.make_node("ReduceSum", ["x", "axes"], ["y"], name="reducesum", keepdims=1)
    return _model([node], [_vi("x", [2, 3, 4])], [_vi("y", [2, 1, 4])], (_init("axes", np.array([1], np.int64)),))


def cast() -> ModelProto:
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="relu"),
             oh.make_node("Cast", ["r"], ["y"], name="cast", to=TensorProto.INT32)]
    return _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3], TensorProto.INT32)])


def chain() -> ModelProto:
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             oh.make_node("Add", ["m", "b"], ["a"], name="add"),
             oh.make_node("Relu", ["a"], ["r"], name="relu"),
             oh.make_node("Softmax", ["r"], ["y"], name="softmax", axis=1)]
    inits = (_init("w", _w(4, 5, seed=3)), _init("b", _w(5, seed=4)))
    return _model(nodes, [_vi("x", [3, 4])], [_vi("y", [3, 5])], inits)


BASES: dict[str, Callable[[], ModelProto]] = {
    f.__name__: f for f in (add, matmul_relu, conv, reshape_transpose, concat, gather, softmax, topk, maxpool,
                            reducesum, cast, chain)
}
# Bases whose outputs stay meaningful with NaN/inf inputs (Cast of NaN to int is undefined everywhere).
SPECIAL_OK = sorted(set(BASES) - {"cast"})


# ---- mutations: each edits the model in place and returns what it did -------------------------

Draw = Callable[[st.SearchStrategy], object]


def _attr(name: str, draw: Draw) -> AttributeProto:
    kind = draw(st.sampled_from(["int", "ints", "float", "floats", "string", "empty_ints"]))
    if kind == "int":
        return oh.make_attribute(name, draw(st.sampled_from(INTS)))
    if kind == "ints":
        return oh.make_attribute(name, draw(st.lists(st.sampled_from(INTS), min_size=1, max_size=6)))
    if kind == "float":
        return oh.make_attribute(name, draw(st.sampled_from(FLOATS)))
    if kind == "floats":
        return oh.make_attribute(name, draw(st.lists(st.sampled_from(FLOATS), min_size=1, max_size=3)))
    if kind == "string":
        return oh.make_attribute(name, draw(st.sampled_from(STRINGS)))
    return oh.make_attribute(name, [], attr_type=AttributeProto.INTS)


def _node(m: ModelProto, draw: Draw) -> tuple[int, onnx.NodeProto]:
    i = draw(st.integers(0, len(m.graph.node) - 1))
    return i, m.graph.node[i]


def _names(m: ModelProto) -> list[str]:
    g = m.graph
    return [v.name for v in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]


def attr_value(m: ModelProto, draw: Draw) -> str:
    _, node = _node(m, draw)
    names = sorted({a.name for a in node.attribute} | set(ATTR_NAMES))
    name = draw(st.sampled_from(names))
    new = _attr(name, draw)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, new])
    return f"{node.name}.{name} = {oh.get_attribute_value(new)!r}" + (" [strict]" if name in STRICT_ATTRS else "")


def attr_drop(m: ModelProto, draw: Draw) -> str:
    _, node = _node(m, draw)
    if not node.attribute:
        return f"{node.name}: no attribute to drop"
    k = draw(st.integers(0, len(node.attribute) - 1))
    name = node.attribute[k].name
    del node.attribute[k]
    return f"{node.name}: drop attribute {name}"


def attr_duplicate(m: ModelProto, draw: Draw) -> str:
    _, node = _node(m, draw)
    name = node.attribute[0].name if node.attribute else "axis"
    node.attribute.append(_attr(name, draw))
    return f"{node.name}: attribute {name} given twice"


def inputs_edit(m: ModelProto, draw: Draw) -> str:
    i, node = _node(m, draw)
    how = draw(st.sampled_from(["drop", "extra", "empty", "dangling", "cycle", "swap"]))
    k = draw(st.integers(0, max(len(node.input) - 1, 0)))
    if how == "drop" and node.input:
        del node.input[k]
    elif how == "extra":
        node.input.append(draw(st.sampled_from(_names(m) + [""])))
    elif how == "empty" and node.input:
        node.input[k] = ""
    elif how == "dangling" and node.input:
        node.input[k] = "undefined_value"
    elif how == "cycle" and node.input:  # consume an output of this node or of a later one
        later = [o for n in m.graph.node[i:] for o in n.output] or ["undefined_value"]
        node.input[k] = draw(st.sampled_from(later))
    elif how == "swap" and len(node.input) > 1:
        node.input[0], node.input[-1] = node.input[-1], node.input[0]
    return f"{node.name}: inputs {how} (#{k}) -> {list(node.input)}"


def outputs_edit(m: ModelProto, draw: Draw) -> str:
    _, node = _node(m, draw)
    how = draw(st.sampled_from(["duplicate", "drop", "extra", "empty"]))
    if not node.output:
        node.output.append("")
    if how == "duplicate":  # SSA violation: redefine an existing value
        node.output[0] = draw(st.sampled_from(_names(m)))
    elif how == "drop" and len(node.output) > 0:
        del node.output[-1]
    elif how == "extra":
        node.output.append("extra_out")
    elif how == "empty":
        node.output[0] = ""
    return f"{node.name}: outputs {how} -> {list(node.output)}"


def op_type(m: ModelProto, draw: Draw) -> str:
    _, node = _node(m, draw)
    old = node.op_type
    node.op_type = draw(st.sampled_from(OP_TYPES))
    if draw(st.booleans()):
        node.domain = draw(st.sampled_from(["com.example", "ai.onnx.ml", "ai.onnx"]))
    return f"{node.name}: op {old} -> {node.domain + '::' if node.domain else ''}{node.op_type}"


def value_dtype(m: ModelProto, draw: Draw) -> str:
    g = m.graph
    where = draw(st.sampled_from(["input", "output", "initializer"] if g.initializer else ["input", "output"]))
    elem = draw(st.sampled_from(ELEM_TYPES))
    if where == "initializer":
        t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        t.data_type = elem
        return f"initializer {t.name}: data_type -> {elem}"
    vis = g.input if where == "input" else g.output
    vi = vis[draw(st.integers(0, len(vis) - 1))]
    vi.type.tensor_type.elem_type = elem
    return f"graph {where} {vi.name}: elem_type -> {elem}"


def input_shape(m: ModelProto, draw: Draw) -> str:
    vi = m.graph.input[draw(st.integers(0, len(m.graph.input) - 1))]
    shape = vi.type.tensor_type.shape
    how = draw(st.sampled_from(["dim", "dim", "param", "unknown", "rank+", "rank-", "no_shape"]))
    k = draw(st.integers(0, max(len(shape.dim) - 1, 0)))
    if how == "dim" and shape.dim:
        shape.dim[k].dim_value = draw(st.sampled_from([0, 1, -1, -5, 3, 7, 2**31, 2**40, 2**62]))
    elif how == "param" and shape.dim:
        shape.dim[k].dim_param = draw(st.sampled_from(["N", "", "a b", "\u00e9", "x" * 1000]))
    elif how == "unknown" and shape.dim:
        shape.dim[k].Clear()
    elif how == "rank+":
        shape.dim.add().dim_value = draw(st.sampled_from([1, 2, 0]))
    elif how == "rank-" and shape.dim:
        del shape.dim[k]
    elif how == "no_shape":
        vi.type.tensor_type.ClearField("shape")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in shape.dim]
    return f"graph input {vi.name}: shape {how} -> {dims if vi.type.tensor_type.HasField('shape') else None}"


def initializer_edit(m: ModelProto, draw: Draw) -> str:
    g = m.graph
    if not g.initializer:
        return "no initializer"
    t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
    how = draw(st.sampled_from(["values", "values", "dims", "truncate", "drop"]))
    if how == "values" and t.data_type == I64:  # the constant inputs: shape, k, indices, axes
        vals = draw(st.lists(st.sampled_from(INTS), min_size=0, max_size=4))
        t.CopyFrom(_init(t.name, np.array(vals, np.int64)))
        return f"initializer {t.name} = {vals}"
    if how == "values" and t.data_type == F and len(t.raw_data) >= 4:  # float weights: NaN, inf
        k = draw(st.integers(0, len(t.raw_data) // 4 - 1))
        v = draw(st.sampled_from(FLOATS))
        t.raw_data = t.raw_data[: 4 * k] + np.float32(v).tobytes() + t.raw_data[4 * k + 4 :]
        return f"initializer {t.name}: element {k} = {v}"
    if how == "dims":
        dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, -1, 2**31, 2**40]), min_size=0, max_size=4))
        del t.dims[:]
        t.dims.extend(dims)
        return f"initializer {t.name}: dims -> {dims}"
    if how == "truncate":
        t.raw_data = t.raw_data[: draw(st.integers(0, max(len(t.raw_data) - 1, 0)))]
        return f"initializer {t.name}: raw_data truncated to {len(t.raw_data)} bytes"
    name = t.name
    g.initializer.remove(t)
    return f"initializer {name} dropped"


def opset(m: ModelProto, draw: Draw) -> str:
    how = draw(st.sampled_from(["version", "version", "none", "twice", "ir_version"]))
    if not m.opset_import:
        m.opset_import.append(oh.make_opsetid("", OPSET))
    if how == "version":
        m.opset_import[0].version = draw(st.sampled_from(OPSETS))
        return f"opset -> {m.opset_import[0].version}"
    if how == "none":
        del m.opset_import[:]
        return "no opset_import"
    if how == "twice":
        m.opset_import.append(oh.make_opsetid("", draw(st.sampled_from(OPSETS))))
        return f"opset_import twice: {[o.version for o in m.opset_import]}"
    m.ir_version = draw(st.sampled_from([0, -1, 1, 3, 7, 10, 100]))
    return f"ir_version -> {m.ir_version}"


def graph_outputs(m: ModelProto, draw: Draw) -> str:
    g = m.graph
    how = draw(st.sampled_from(["undefined", "duplicate", "none", "input", "initializer"]))
    if not g.output:
        g.output.append(_vi("late_output", None))
    if how == "undefined":
        g.output[0].name = "never_defined"
    elif how == "duplicate":
        g.output.append(g.output[0])
    elif how == "none":
        del g.output[:]
    elif how == "input":
        g.output[0].name = g.input[0].name
    elif how == "initializer" and g.initializer:
        g.output[0].name = g.initializer[0].name
    return f"graph outputs {how} -> {[o.name for o in g.output]}"


MUTATIONS: dict[str, Callable[[ModelProto, Draw], str]] = {
    f.__name__: f for f in (attr_value, attr_drop, attr_duplicate, inputs_edit, outputs_edit, op_type, value_dtype,
                            input_shape, initializer_edit, opset, graph_outputs)
}
# Mutations after which a model often still imports and runs: the ones worth compiling.
COMPILABLE = ["attr_value", "attr_value", "initializer_edit", "input_shape", "opset", "attr_drop"]
BYTE_MUTATIONS = ["bitflip", "truncate", "splice"]


def corrupt(payload: bytes, draw: Draw) -> tuple[bytes, str]:
    how = draw(st.sampled_from(BYTE_MUTATIONS))
    data = bytearray(payload)
    if how == "bitflip":
        pos = draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=8))
        for p in pos:
            data[p // 8] ^= 1 << (p % 8)
        return bytes(data), f"flip bits {pos}"
    if how == "truncate":
        n = draw(st.integers(0, len(data) - 1))
        return bytes(data[:n]), f"truncate to {n} of {len(data)} bytes"
    at = draw(st.integers(0, len(data)))
    junk = draw(st.binary(min_size=1, max_size=16))
    return bytes(data[:at] + junk + data[at:]), f"insert {junk!r} at {at}"


@dataclass
class OnnxCase:
    base: str
    steps: list[str]
    payload: bytes
    special: bool  # NaN/inf/denormal inputs
    seed: int
    # The mutation set a window, permutation or axis attribute: where onnxruntime's shape inference
    # rejects the value, Tessera must reject it too (issue 17: Transpose perm taken mod rank, MaxPool kernel 0).
    strict: bool = False

    def __repr__(self) -> str:
        steps = "; ".join(self.steps) or "unmodified"
        return f"OnnxCase({self.base}: {steps}; special={self.special}, seed={self.seed})"


@st.composite
def onnx_cases(draw: Draw, mutations: list[str] | None = None, max_steps: int = 2,
               bytes_share: float = 0.15) -> OnnxCase:
    """A base model with 1..``max_steps`` mutations; ``bytes_share`` of the cases also get their
    serialized bytes corrupted."""
    special = draw(st.integers(0, 3)) == 0
    base = draw(st.sampled_from(SPECIAL_OK if special else sorted(BASES)))
    m = BASES[base]()
    kinds = draw(st.lists(st.sampled_from(mutations or sorted(MUTATIONS)), min_size=1, max_size=max_steps))
    steps = [MUTATIONS[kind](m, draw) for kind in kinds]
    payload = m.SerializeToString()
    if bytes_share and draw(st.integers(0, 99)) < bytes_share * 100:
        payload, what = corrupt(payload, draw)
        steps.append(what)
    strict = any(step.endswith("[strict]") for step in steps)
    return OnnxCase(base, steps, payload, special, draw(st.integers(0, 2**16)), strict)


def _set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, oh.make_attribute(name, value)])


def known_case(base: str, node: int, attr: str | None, value: object = None, opset: int | None = None,
               special: bool = False) -> OnnxCase:
    """A hand-written case (the silent acceptances issue 17 lists), run before the generated ones."""
    m = BASES[base]()
    steps = []
    if attr is not None:
        _set_attr(m.graph.node[node], attr, value)
        steps.append(f"{m.graph.node[node].name}.{attr} = {value!r}")
    if opset is not None:
        m.opset_import[0].version = opset
        steps.append(f"opset -> {opset}")
    return OnnxCase(base, steps, m.SerializeToString(), special, 0, strict=attr in STRICT_ATTRS)


KNOWN_CASES = [
    known_case("conv", 0, "kernel_shape", [0, 0]),
    known_case("maxpool", 0, "kernel_shape", [0, 0]),
    known_case("maxpool", 0, "strides", [0, 0]),
    known_case("reshape_transpose", 1, "perm", [0, 5]),
    known_case("reshape_transpose", 1, "perm", [0, 0]),
    known_case("softmax", 0, "axis", 5),
    known_case("concat", 0, "axis", -3),
    known_case("add", 0, None, opset=0),
    known_case("add", 0, None, opset=99),
    known_case("topk", 0, None, special=True),
    known_case("maxpool", 0, None, special=True),
    known_case("reducesum", 0, None, special=True),
]
