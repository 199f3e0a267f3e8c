"""Graph building state for the PyTorch frontend: emits Tessera nodes for FX nodes.

The converters in :mod:`tessera.frontend.torch_ops` use :class:`Builder` to emit nodes, make
constants, cast operands (PyTorch type promotion) and turn symbolic sizes (``SymInt`` FX
nodes) into small int64 tensors computed from ``Shape``, so the graph stays valid for every
value of the dynamic axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tessera.errors import GraphError, ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.shape_inference import EVAL_LIMIT, infer_node
from tessera.graph.symbolic import Dim, Sym

INT64_MAX = 2**63 - 1
_CONST_DEDUP_LIMIT = 64  # small constants (scalars, shape vectors) are shared


def torch_dtype(dt: Any) -> DType:
    """The Tessera DType of a torch.dtype."""
    import torch

    table = {
        torch.float64: DType.float64,
        torch.float32: DType.float32,
        torch.float16: DType.float16,
        torch.bfloat16: DType.bfloat16,
        torch.int8: DType.int8,
        torch.int16: DType.int16,
        torch.int32: DType.int32,
        torch.int64: DType.int64,
        torch.uint8: DType.uint8,
        torch.uint16: DType.uint16,
        torch.uint32: DType.uint32,
        torch.uint64: DType.uint64,
        torch.bool: DType.bool,
    }
    if dt not in table:
        raise GraphError(f"unsupported torch dtype {dt}")
    return table[dt]


def to_numpy(t: Any) -> np.ndarray:
    """A NumPy copy of a torch tensor (bfloat16 through ml_dtypes)."""
    import torch

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(DType.bfloat16.np).copy()
    return np.array(t.numpy(), copy=True)


def sympy_to_dim(expr: Any, names: dict[Any, str]) -> Dim | None:
    """Convert a SymPy size expression to a Dim; symbols are renamed through ``names``.

    Returns None for expressions Tessera's Dim cannot express."""
    import sympy
    from torch.utils._sympy.functions import FloorDiv, Mod, PythonMod

    if isinstance(expr, (int, np.integer)):
        return int(expr)
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return Sym.var(names.get(expr, str(expr)))
    args = [sympy_to_dim(a, names) for a in expr.args]
    if any(a is None for a in args):
        return None
    if isinstance(expr, sympy.Add):
        out: Dim = 0
        for a in args:
            out = out + a
        return out
    if isinstance(expr, sympy.Mul):
        out = 1
        for a in args:
            out = out * a
        return out
    if isinstance(expr, sympy.Pow) and isinstance(args[1], int) and args[1] >= 0:
        out = 1
        for _ in range(args[1]):
            out = out * args[0]
        return out
    if isinstance(expr, FloorDiv) and isinstance(args[1], int) and args[1] > 0:
        return args[0] // args[1]
    if isinstance(expr, (Mod, PythonMod)) and isinstance(args[1], int) and args[1] > 0:
        return args[0] % args[1]
    return None


class Builder:
    """Emits Tessera nodes while walking an FX graph; infers types as it goes."""

    def __init__(self, g: Graph, sym_names: dict[Any, str]) -> None:
        self.g = g
        self.sym_names = sym_names
        self.env: dict[str, Any] = {}  # FX node name -> value name, list of them, or None
        self.values: dict[str, Any] = {}  # known small values, for shape inference
        self.hint = "v"
        self._start = 0
        self._reserved = False
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    # ---- naming and emission ---------------------------------------------------------------
    def begin(self, fx_name: str) -> None:
        """Start translating FX node ``fx_name``; its result will carry that name."""
        self.hint = fx_name
        self._start = len(self.g.nodes)
        self._reserved = fx_name not in self.g.types
        if self._reserved:
            self.g.types[fx_name] = None  # type: ignore[assignment]

    def finish(self, result: Any) -> Any:
        """Rename the translated result to the FX node's name when it was made by this node."""
        fx_name = self.hint
        if not self._reserved:
            return result
        del self.g.types[fx_name]
        if not isinstance(result, str):
            return result
        new_nodes = self.g.nodes[self._start:]
        if not any(result in n.outputs for n in new_nodes):
            return result
        for n in new_nodes:
            n.inputs = [fx_name if i == result else i for i in n.inputs]
            n.outputs = [fx_name if o == result else o for o in n.outputs]
            if n.name == result:
                n.name = fx_name
        self.g.types[fx_name] = self.g.types.pop(result)
        if result in self.values:
            self.values[fx_name] = self.values.pop(result)
        return fx_name

    def name(self) -> str:
        name = self.g.fresh_name(self.hint)
        self.g.types[name] = None  # type: ignore[assignment]  # reserved; emit sets the type
        return name

    def emit(self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None,
             num_outputs: int = 1) -> list[str]:
        """Append one node; returns its output value names (types already inferred)."""
        outs = [self.name() for _ in range(num_outputs)]
        node = Node(op, list(inputs), outs, dict(attrs or {}), name=outs[0])
        self.g.nodes.append(node)
        try:
            types = infer_node(self.g, node, self.values)
        except ShapeInferenceError as e:
            raise GraphError(f"while translating FX node {self.hint!r}: {e}") from e
        for o, t in zip(outs, types, strict=True):
            self.g.types[o] = t
        return outs

    def op(self, op: str, *inputs: str, **attrs: Any) -> str:
        """Emit a single-output node."""
        return self.emit(op, inputs, attrs)[0]

    def dtype(self, value: str) -> DType:
        return self.g.types[value].dtype

    def rank(self, value: str) -> int:
        return self.g.types[value].rank

    # ---- constants ---------------------------------------------------------------------------
    def const(self, value: np.ndarray, hint: str = "const") -> str:
        value = np.asarray(value)
        key = None
        if value.size <= _CONST_DEDUP_LIMIT:
            key = (value.dtype.str, tuple(value.shape), value.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.g.fresh_name(hint)
        self.g.add_constant(name, value)
        if value.size <= EVAL_LIMIT:
            self.values[name] = value
        if key is not None:
            self._consts[key] = name
        return name

    def scalar(self, v: Any, dtype: DType) -> str:
        """A rank-0 constant of ``dtype``."""
        return self.const(np.array(v).astype(dtype.np), "scalar")

    def i64(self, values: Sequence[int]) -> str:
        return self.const(np.array(list(values), dtype=np.int64), "ints")

    def cast(self, value: str, dtype: DType) -> str:
        if self.dtype(value) == dtype:
            return value
        if value in self.g.constants:
            return self.const(self.g.constants[value].astype(dtype.np), "cast")
        return self.op("Cast", value, to=dtype)

    # ---- FX values ---------------------------------------------------------------------------
    def tensor(self, arg: Any, dtype: DType | None = None) -> str:
        """The value of an FX argument (tensor node, SymInt node or Python scalar) as a tensor;
        cast to ``dtype`` when given (scalars become rank-0 constants of that dtype)."""
        from torch.fx import Node as FxNode

        if isinstance(arg, FxNode):
            if is_sym_node(arg):
                v = self.sym_scalar(arg)
            else:
                v = self.env.get(arg.name)
                if not isinstance(v, str):
                    raise GraphError(f"FX value {arg.name!r} is not a single tensor")
            return self.cast(v, dtype) if dtype is not None else v
        if isinstance(arg, (bool, int, float)):
            if dtype is None:
                dtype = DType.bool if isinstance(arg, bool) else DType.int64 if isinstance(arg, int) \
                    else DType.float32
            return self.scalar(arg, dtype)
        raise GraphError(f"unsupported FX argument {arg!r}")

    def sym_vector(self, arg: Any) -> str:
        """A SymInt FX node (or int) as an int64 tensor of shape [1]."""
        from torch.fx import Node as FxNode

        if isinstance(arg, FxNode):
            v = self.env.get(arg.name)
            if isinstance(v, str):
                return v
            raise GraphError(f"FX value {arg.name!r} is not a symbolic size")
        return self.i64([int(arg)])

    def sym_scalar(self, arg: Any) -> str:
        """A SymInt FX node (or int) as a rank-0 int64 tensor."""
        from torch.fx import Node as FxNode

        if not isinstance(arg, FxNode):
            return self.scalar(int(arg), DType.int64)
        return self.op("Squeeze", self.sym_vector(arg), self.i64([0]))

    def ints(self, items: Sequence[Any]) -> str:
        """A list of ints and SymInt FX nodes as a 1-D int64 tensor (Concat when symbolic)."""
        from torch.fx import Node as FxNode

        if all(not isinstance(x, FxNode) for x in items):
            return self.i64([int(x) for x in items])
        parts: list[str] = []
        run: list[int] = []
        for x in items:
            if isinstance(x, FxNode):
                if run:
                    parts.append(self.i64(run))
                    run = []
                parts.append(self.sym_vector(x))
            else:
                run.append(int(x))
        if run:
            parts.append(self.i64(run))
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0)

    def meta_dims(self, val: Any) -> tuple[Dim | None, ...]:
        """The shape of an FX meta value as Dims (None where not expressible)."""
        import torch

        out: list[Dim | None] = []
        for d in val.shape:
            if isinstance(d, torch.SymInt):
                out.append(sympy_to_dim(d.node.expr, self.sym_names))
            else:
                out.append(int(d))
        return tuple(out)


def is_sym_node(arg: Any) -> bool:
    """Whether an FX node computes a symbolic scalar (SymInt/SymFloat/SymBool or plain int)."""
    import torch

    val = arg.meta.get("val") if hasattr(arg, "meta") else None
    return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool))
