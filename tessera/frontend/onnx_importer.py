"""ONNX frontend: turns an ONNX model into a verified Tessera :class:`Graph`.

The whole model is checked for unsupported operators before anything is imported, so the
user sees every missing operator in one error. Initializers and ``Constant`` nodes become
graph constants, attributes become typed Python values, older opsets are rewritten into the
newest operator forms (:mod:`tessera.frontend.onnx_opset`), and every node's output type
comes from Tessera's own shape inference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, numpy_helper

from tessera.errors import GraphError, ModelLoadError
from tessera.frontend.common import symbol_name, unsupported_error
from tessera.frontend.onnx_opset import (
    IMPORTED_AS_CONSTANT,
    RENAMED,
    supported_op_type,
    upgrade_node,
)
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import get_op, has_op
from tessera.graph.shape_inference import EVAL_LIMIT, infer_node
from tessera.graph.symbolic import Dim, Sym
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify

DEFAULT_DOMAINS = ("", "ai.onnx")

_ELEM_TYPES: dict[int, DType] = {
    TensorProto.FLOAT: DType.float32,
    TensorProto.DOUBLE: DType.float64,
    TensorProto.FLOAT16: DType.float16,
    TensorProto.BFLOAT16: DType.bfloat16,
    TensorProto.INT8: DType.int8,
    TensorProto.INT16: DType.int16,
    TensorProto.INT32: DType.int32,
    TensorProto.INT64: DType.int64,
    TensorProto.UINT8: DType.uint8,
    TensorProto.UINT16: DType.uint16,
    TensorProto.UINT32: DType.uint32,
    TensorProto.UINT64: DType.uint64,
    TensorProto.BOOL: DType.bool,
}


def onnx_dtype(elem_type: int, what: str) -> DType:
    """Map an ONNX ``TensorProto.DataType`` enum to a DType; GraphError if unsupported."""
    try:
        return _ELEM_TYPES[elem_type]
    except KeyError:
        try:
            name = TensorProto.DataType.Name(elem_type)
        except ValueError:
            name = str(elem_type)
        raise GraphError(f"{what}: element type {name} is not supported") from None


# ---- loading ------------------------------------------------------------------------------


def load_model(model: str | Path | bytes | ModelProto) -> tuple[ModelProto, str]:
    """Load and sanity-check a model; returns it with a source label for messages."""
    if isinstance(model, ModelProto):
        proto, source = model, model.graph.name or "<ModelProto>"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        source = "<bytes>"
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as e:
            raise ModelLoadError(f"cannot load ONNX model from bytes: {_one_line(e)}") from None
    elif isinstance(model, (str, Path)):
        path = Path(model)
        source = str(path)
        if not path.exists():
            raise ModelLoadError(f"cannot load ONNX model {source}: file not found")
        if not path.is_file():
            raise ModelLoadError(f"cannot load ONNX model {source}: not a file")
        try:
            proto = onnx.load(str(path))
        except Exception as e:
            raise ModelLoadError(f"cannot load ONNX model {source}: {_one_line(e)}") from None
    else:
        raise TypeError(f"import_onnx expects a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.output:
        raise ModelLoadError(f"cannot load ONNX model {source}: not an ONNX model (no ir_version or graph)")
    _check(proto, source)
    if proto.functions:  # exporters wrap modules in model-local functions: inline them
        try:
            proto = onnx.inliner.inline_local_functions(proto)
        except Exception as e:
            raise ModelLoadError(f"cannot inline the local functions of {source}: {_one_line(e)}") from None
    return proto, source


# Checker complaints that mean the graph itself is broken. Others (newer opsets or IR
# versions, missing optional type fields, per-op schema strictness) do not stop the import:
# Tessera's own checks and shape inference judge the graph.
_STRUCTURAL = ("static single assignment", "single static assignment", "topologically sorted",
               "is not output of any previous", "Duplicate", "duplicate")


def _check_strings(proto: ModelProto, source: str) -> None:
    """Refuse a model whose string fields are not UTF-8: protobuf hands such a field back as bytes
    (ONNX is proto2, which does not validate), and every later use of the name would fail."""
    stack: list[Any] = [proto]
    while stack:
        msg = stack.pop()
        for field, value in msg.ListFields():
            if field.type == field.TYPE_MESSAGE:
                stack.extend([value] if hasattr(value, "ListFields") else value)
            elif field.type == field.TYPE_STRING:
                values = [value] if isinstance(value, str | bytes) else value
                if any(not isinstance(v, str) for v in values):
                    raise ModelLoadError(f"invalid ONNX model {source}: field {msg.DESCRIPTOR.name}.{field.name} "
                                         "is not UTF-8 text")


def _check(proto: ModelProto, source: str) -> None:
    """Run onnx.checker; reject the model only for structural errors (see _STRUCTURAL)."""
    _check_strings(proto, source)
    if proto.ByteSize() > 2**31 - 1:
        return  # the checker needs a path for models over 2 GB
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        if any(k in str(e) for k in _STRUCTURAL):
            raise ModelLoadError(f"invalid ONNX model {source}: {_one_line(e)}") from None
    except UnicodeDecodeError as e:  # a damaged name or string field: the checker decodes it as UTF-8
        raise ModelLoadError(f"invalid ONNX model {source}: a string field is not UTF-8 ({e.reason})") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ---- whole-model support check ----------------------------------------------------------


def _walk_nodes(graph: GraphProto, prefix: str = "") -> Iterator[tuple[NodeProto, str]]:
    """Every node of ``graph`` and of its subgraphs, with a display name."""
    for i, node in enumerate(graph.node):
        name = prefix + (node.name or f"{node.op_type}_{i}")
        yield node, name
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _walk_nodes(attr.g, f"{name}/{attr.name}/")
            elif attr.type == AttributeProto.GRAPHS:
                for k, sub in enumerate(attr.graphs):
                    yield from _walk_nodes(sub, f"{name}/{attr.name}[{k}]/")


def find_unsupported(proto: ModelProto) -> list[tuple[str, str]]:
    """``(op_type, node_name)`` for every node Tessera cannot import, subgraphs included."""
    found = []
    for node, name in _walk_nodes(proto.graph):
        if node.domain not in DEFAULT_DOMAINS:
            found.append((f"{node.domain}::{node.op_type}", name))
        elif not supported_op_type(node.op_type):
            found.append((node.op_type, name))
    return found


# Default-domain opsets Tessera imports: 1 up to the newest one the installed onnx package
# defines (older forms are rewritten to the newest, see onnx_opset; newer ones are unknown).
MIN_OPSET = 1


def max_opset() -> int:
    """The newest default-domain opset Tessera imports (the installed onnx package's newest)."""
    return int(onnx.defs.onnx_opset_version())


def default_opset(proto: ModelProto, source: str = "<model>") -> int:
    """The model's default-domain opset; ModelLoadError if it declares one Tessera does not support."""
    for imp in proto.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            v = int(imp.version)
            if not MIN_OPSET <= v <= max_opset():
                raise ModelLoadError(f"cannot load ONNX model {source}: default-domain opset {v} is not supported "
                                     f"(Tessera imports opsets {MIN_OPSET} to {max_opset()})")
            return v
    return 1 if proto.ir_version < 3 else 0


# ---- attributes and types ----------------------------------------------------------------


def _tensor(t: TensorProto, what: str) -> np.ndarray:
    if t.data_type not in _ELEM_TYPES:
        onnx_dtype(t.data_type, what)
    if t.data_location == TensorProto.EXTERNAL:
        # A model loaded from a file has its external data read (relative to the file) by onnx.load;
        # one given as bytes or a ModelProto has no directory to resolve it against (NumPy would
        # read it relative to the working directory): refuse instead.
        raise ModelLoadError(f"{what}: its data is stored in an external file, but the model was not loaded from "
                             "a path (bytes or a ModelProto have no directory to find it in); pass the model's "
                             "file path, or load it with onnx.load(path) first")
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise GraphError(f"{what}: cannot read tensor data ({_one_line(e)})") from None
    return np.asarray(arr, dtype=_ELEM_TYPES[t.data_type].np)  # (ascontiguousarray makes 0-D 1-D)


def _decode(s: bytes) -> str:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s.decode("latin-1")


def convert_attr(attr: AttributeProto, kind: str | None, what: str) -> Any:
    """An ONNX attribute as a typed Python value; ``kind`` is the registry schema kind."""
    t = attr.type
    if t == AttributeProto.INT:
        return onnx_dtype(attr.i, what) if kind == "dtype" else int(attr.i)
    if t == AttributeProto.FLOAT:
        return float(attr.f)
    if t == AttributeProto.STRING:
        if kind == "dtype":  # opset-1 Cast names the type ("FLOAT")
            try:
                return onnx_dtype(TensorProto.DataType.Value(_decode(attr.s).upper()), what)
            except ValueError:
                raise GraphError(f"{what}: unknown element type {_decode(attr.s)!r}") from None
        return _decode(attr.s)
    if t == AttributeProto.INTS:
        return [int(x) for x in attr.ints]
    if t == AttributeProto.FLOATS:
        return [float(x) for x in attr.floats]
    if t == AttributeProto.STRINGS:
        return [_decode(x) for x in attr.strings]
    if t == AttributeProto.TENSOR:
        return _tensor(attr.t, what)
    kind_name = AttributeProto.AttributeType.Name(t)
    raise GraphError(f"{what}: attribute kind {kind_name} is not supported")


def _dims(name: str, tt: onnx.TypeProto.Tensor) -> tuple[Dim, ...]:
    if not tt.HasField("shape"):
        raise GraphError(f"graph input {name!r} has no shape (unknown rank is not supported)")
    dims: list[Dim] = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise GraphError(f"graph input {name!r}: negative dim {d.dim_value} at axis {axis}")
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(Sym.var(symbol_name(d.dim_param)))
        else:
            dims.append(Sym.var(symbol_name(f"{name}_d{axis}", "v")))
    return tuple(dims)


def value_type(vi: onnx.ValueInfoProto, what: str) -> TensorType:
    """The TensorType of a graph input's ValueInfo."""
    which = vi.type.WhichOneof("value")
    if which != "tensor_type":
        raise GraphError(f"{what} {vi.name!r}: {which or 'untyped'} values are not supported (tensors only)")
    tt = vi.type.tensor_type
    return TensorType(onnx_dtype(tt.elem_type, f"{what} {vi.name!r}"), _dims(vi.name, tt))


# ---- the importer --------------------------------------------------------------------------


class _Importer:
    """Builds the graph node by node, inferring types as it goes (rewrites need ranks)."""

    def __init__(self, proto: ModelProto, source: str) -> None:
        self.proto = proto
        self.source = source
        self.opset = default_opset(proto, source)
        gp = proto.graph
        name = gp.name or (Path(source).stem if source and not source.startswith("<") else "graph")
        self.g = Graph(name=name)
        self.values: dict[str, Any] = {}
        self.names: set[str] = {v for n in gp.node for v in (*n.input, *n.output)}
        self.names |= {v.name for v in (*gp.input, *gp.output)} | {t.name for t in gp.initializer}
        self.uses: dict[str, int] = {}
        for n in gp.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        for o in gp.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1

    # Builder protocol used by the opset rewrites
    def fresh(self, hint: str) -> str:
        base, k = symbol_name(hint, "v"), 0
        name = base
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self._add_constant(name, value)
        return name

    def type_of(self, name: str) -> TensorType | None:
        return self.g.types.get(name)

    def is_used(self, name: str) -> bool:
        return self.uses.get(name, 0) > 0

    def constant_value(self, name: str) -> np.ndarray | None:
        return self.g.constants.get(name)

    def _add_constant(self, name: str, value: np.ndarray) -> None:
        if name in self.g.types:
            raise GraphError(f"value {name!r} is defined more than once")
        self.g.add_constant(name, value)
        if value.size <= EVAL_LIMIT:
            self.values[name] = value

    # steps
    def run(self) -> Graph:
        gp, g = self.proto.graph, self.g
        if gp.sparse_initializer:
            raise GraphError("sparse initializers are not supported")
        for t in gp.initializer:
            self._add_constant(t.name, _tensor(t, f"initializer {t.name!r}"))
        for vi in gp.input:
            if vi.name not in g.constants:  # inputs that have initializers are weights
                g.add_input(vi.name, value_type(vi, "graph input"))
        for index, node in self._sorted_nodes():
            self._import_node(index, node)
        self._outputs()
        g.metadata.update(
            source=self.source,
            onnx_opset=str(self.opset),
            onnx_ir_version=str(self.proto.ir_version),
            producer=f"{self.proto.producer_name} {self.proto.producer_version}".strip(),
        )
        verify(g)
        return g

    def _sorted_nodes(self) -> list[tuple[int, NodeProto]]:
        """Nodes in a topological order (models should already be sorted; some are not)."""
        gp = self.proto.graph
        known = {t.name for t in gp.initializer} | {i.name for i in gp.input} | {""}
        pending = list(enumerate(gp.node))
        out: list[tuple[int, NodeProto]] = []
        while pending:
            rest = []
            for index, node in pending:
                if all(i in known for i in node.input):
                    out.append((index, node))
                    known.update(node.output)
                else:
                    rest.append((index, node))
            if len(rest) == len(pending):
                index, node = rest[0]
                missing = [i for i in node.input if i not in known]
                raise GraphError(
                    f"{node.op_type} node {node.name or f'{node.op_type}_{index}'!r} uses undefined "
                    f"value(s) {missing} (or the graph has a cycle)"
                )
            pending = rest
        return out

    def _import_node(self, index: int, np_: NodeProto) -> None:
        name = np_.name or f"{np_.op_type}_{index}"
        if np_.op_type in IMPORTED_AS_CONSTANT:
            self._constant_node(name, np_)
            return
        target = RENAMED.get(np_.op_type, np_.op_type)
        schema = get_op(target).attrs if has_op(target) else {}
        attrs = {}
        for a in np_.attribute:
            spec = schema.get(a.name)
            attrs[a.name] = convert_attr(a, spec.kind if spec else None, f"{np_.op_type} node {name!r}")
        node = Node(np_.op_type, list(np_.input), list(np_.output), attrs, name)
        for n in upgrade_node(self, node, self.opset):
            self._emit(n)

    def _emit(self, node: Node) -> None:
        for o in node.outputs:
            if o and o in self.g.types:
                raise GraphError(f"{node.op} node {node.name!r}: value {o!r} is defined more than once")
        for name, t in zip(node.outputs, infer_node(self.g, node, self.values), strict=False):
            if name:
                self.g.types[name] = t
        self.g.nodes.append(node)

    def _constant_node(self, name: str, np_: NodeProto) -> None:
        what = f"Constant node {name!r}"
        if len(np_.attribute) != 1:
            raise GraphError(f"{what}: expected exactly one value attribute")
        a = np_.attribute[0]
        if a.name == "value":
            value = _tensor(a.t, what)
        elif a.name == "value_float":
            value = np.asarray(a.f, np.float32)
        elif a.name == "value_floats":
            value = np.asarray(list(a.floats), np.float32)
        elif a.name == "value_int":
            value = np.asarray(a.i, np.int64)
        elif a.name == "value_ints":
            value = np.asarray(list(a.ints), np.int64)
        else:  # value_string(s), sparse_value
            raise GraphError(f"{what}: {a.name} constants are not supported")
        self._add_constant(np_.output[0], value)

    def _outputs(self) -> None:
        g = self.g
        for vi in self.proto.graph.output:
            if vi.name not in g.types:
                raise GraphError(f"graph output {vi.name!r} is never defined")
            g.outputs.append(vi.name)
            which = vi.type.WhichOneof("value")
            if which is None:
                continue
            if which != "tensor_type":
                raise GraphError(f"graph output {vi.name!r}: {which} values are not supported (tensors only)")
            elem = vi.type.tensor_type.elem_type
            if elem == TensorProto.UNDEFINED:
                continue
            declared = onnx_dtype(elem, f"graph output {vi.name!r}")
            actual = g.types[vi.name].dtype
            if declared != actual:
                raise GraphError(
                    f"graph output {vi.name!r}: the model declares {declared.name} but Tessera infers "
                    f"{actual.name}"
                )


def import_onnx(model: str | Path | bytes | ModelProto) -> Graph:
    """Import an ONNX model (file path, serialized bytes or ModelProto) as a verified Graph.

    Raises ModelLoadError (unreadable/invalid model), UnsupportedOperatorError (listing every
    unsupported operator in the model at once) or GraphError (unsupported types, bad graph)."""
    proto, source = load_model(model)
    unsupported = find_unsupported(proto)
    if unsupported:
        raise unsupported_error(unsupported, source)
    return _Importer(proto, source).run()
