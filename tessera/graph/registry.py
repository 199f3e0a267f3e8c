"""The operator registry: every operator is declared here exactly once.

An :class:`OpDef` carries everything the rest of the compiler knows about an operator: its
attribute schema, its shape/dtype rule, its NumPy reference semantics (the correctness
oracle), its FLOP count and, for shape arithmetic, how it propagates symbolic values. Later
layers (lowering, targets) attach their own facts to the same entry through
:func:`extend_op`, so there is one place per fact.

Tessera's operator set follows ONNX semantics and names (``Conv``, ``MatMul``, ``Gemm``...):
it is the most widely specified vocabulary and lets ONNX's own conformance suite judge the
reference implementations. Static operands that ONNX passes as inputs (Reshape's shape,
Slice's starts) stay inputs; they are usually constants that passes read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.errors import GraphError, ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Node
from tessera.graph.symbolic import Dim, Sym
from tessera.graph.tensor_type import TensorType


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
ATTR_KINDS = ("int", "float", "str", "ints", "floats", "strs", "tensor", "dtype")


@dataclass(frozen=True)
class Attr:
    """Schema of one attribute: its kind (one of ATTR_KINDS), default (or REQUIRED) and, for a
    flag or an enumeration, the values it may take (None: any value of its kind)."""

    kind: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}")


# A symbolic value: the contents of a small int tensor, used for shape arithmetic.
SymValue = tuple[Dim, ...]


@dataclass
class InferContext:
    """What a shape rule sees: input types, attributes, and known input values."""

    node: Node
    types: list[TensorType | None]
    attrs: dict[str, Any]
    values: list[np.ndarray | SymValue | None]
    num_outputs: int
    _fresh: int = 0

    def type(self, i: int) -> TensorType:
        t = self.types[i] if i < len(self.types) else None
        if t is None:
            raise self.error(f"input {i} is required")
        return t

    def has_input(self, i: int) -> bool:
        return i < len(self.types) and self.types[i] is not None

    def const(self, i: int) -> np.ndarray | None:
        """The input's value if it is fully known at compile time."""
        v = self.values[i] if i < len(self.values) else None
        return v if isinstance(v, np.ndarray) else None

    def dims_value(self, i: int) -> list[Dim] | None:
        """A 0/1-D int input's value as a list of dims (concrete or symbolic), if known."""
        v = self.values[i] if i < len(self.values) else None
        if isinstance(v, np.ndarray):
            return [int(x) for x in v.reshape(-1)] if v.dtype.kind in "iub" else None
        if isinstance(v, tuple):
            return list(v)
        return None

    def fresh_dim(self, hint: str) -> Sym:
        """A new symbol for a data-dependent dim (e.g. a Reshape whose shape is computed).

        Named after the node (unique in an imported graph) and numbered within it."""
        base = "".join(c if c.isalnum() else "_" for c in (self.node.name or self.node.op))
        self._fresh += 1
        name = f"{hint}_{base}_{self._fresh}".strip("_")
        return Sym.var(name if name[0].isalpha() else f"d_{name}")

    def error(self, msg: str) -> ShapeInferenceError:
        return ShapeInferenceError(f"{self.node.op} node {self.node.name!r}: {msg}")


InferFn = Callable[[InferContext], list[TensorType]]
RefFn = Callable[[list[np.ndarray | None], dict[str, Any], int], list[np.ndarray]]
FlopsFn = Callable[[InferContext, list[TensorType]], Dim]
PropagateFn = Callable[[InferContext], list[SymValue | None]]


@dataclass
class OpDef:
    """Everything Tessera knows about one operator."""

    name: str
    infer: InferFn
    reference: RefFn
    attrs: dict[str, Attr] = field(default_factory=dict)
    num_inputs: tuple[int, int] = (1, 1)  # (min, max); max -1 = variadic
    num_outputs: tuple[int, int] = (1, 1)
    flops: FlopsFn | None = None
    propagate: PropagateFn | None = None
    doc: str = ""
    # Facts added by later layers (e.g. "compute" by lowering) via extend_op.
    extensions: dict[str, Any] = field(default_factory=dict)


_OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in _OPS:
        raise ValueError(f"operator {op.name} registered twice")
    _OPS[op.name] = op
    return op


def extend_op(name: str, key: str, value: Any) -> None:
    """Attach a later layer's fact (e.g. a compute definition) to a registered op."""
    get_op(name).extensions[key] = value


def get_op(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _OPS[name]
    except KeyError:
        raise GraphError(f"unknown operator {name!r}") from None


def has_op(name: str) -> bool:
    _ensure_loaded()
    return name in _OPS


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(sorted(_OPS.items()))


def _ensure_loaded() -> None:
    import tessera.graph.ops  # noqa: F401  (registers every operator)


_KIND_CHECK: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "ints": lambda v: isinstance(v, (list, tuple)) and all(_KIND_CHECK["int"](x) for x in v),
    "floats": lambda v: isinstance(v, (list, tuple)) and all(_KIND_CHECK["float"](x) for x in v),
    "strs": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
    "tensor": lambda v: isinstance(v, np.ndarray),
    "dtype": lambda v: isinstance(v, DType),
}
_KIND_CAST: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "ints": lambda v: [int(x) for x in v],
    "floats": lambda v: [float(x) for x in v],
    "strs": list,
}


def normalize_attrs(op: OpDef, node: Node) -> dict[str, Any]:
    """Check ``node.attrs`` against the op's schema; return them with defaults filled in."""
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        spec = op.attrs.get(key)
        if spec is None:
            raise GraphError(
                f"{op.name} node {node.name!r}: unknown attribute {key!r}"
                f" (known: {', '.join(sorted(op.attrs)) or 'none'})"
            )
        if not _KIND_CHECK[spec.kind](value):
            raise GraphError(
                f"{op.name} node {node.name!r}: attribute {key!r} must be {spec.kind}, got {value!r}"
            )
        out[key] = _KIND_CAST.get(spec.kind, lambda v: v)(value)
        if spec.choices is not None and out[key] not in spec.choices:
            raise GraphError(f"{op.name} node {node.name!r}: attribute {key!r} must be one of "
                             f"{list(spec.choices)}, got {value!r}")
    for key, spec in op.attrs.items():
        if key not in out:
            if spec.default is REQUIRED:
                raise GraphError(f"{op.name} node {node.name!r}: missing required attribute {key!r}")
            out[key] = spec.default
    return out


def check_arity(op: OpDef, node: Node) -> None:
    lo, hi = op.num_inputs
    n = len(node.inputs)
    while n and node.inputs[n - 1] == "":
        n -= 1
    if n < lo or (hi >= 0 and n > hi):
        raise GraphError(f"{op.name} node {node.name!r}: takes {lo}..{hi if hi >= 0 else 'n'} inputs, got {n}")
    lo, hi = op.num_outputs
    n = len(node.outputs)
    if n < lo or (hi >= 0 and n > hi):
        raise GraphError(
            f"{op.name} node {node.name!r}: has {lo}..{hi if hi >= 0 else 'n'} outputs, got {n}"
        )
