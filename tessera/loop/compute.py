"""Compute definitions: each operator's *what*, attached to its single registry entry.

``@compute_def("Relu", pattern="elementwise")`` registers ``fn(ctx) -> list[te.Tensor]`` under
the op's registry entry (key ``"compute"``). The pattern drives fusion:

- ``elementwise``: output[i] depends on inputs at the same index (broadcast allowed);
- ``injective``: every output element is one input element (transpose, slice, reshape, pad,
  gather with constant indices...); fusion inlines these;
- ``reduction``: reduces over axes (sums, softmax stages, layer norm);
- ``anchor``: a reduction heavy enough to be a kernel's core (matmul, convolution) whose
  elementwise consumers fuse into its epilogue;
- ``opaque``: never fused.

float16 and bfloat16 are storage types: a definition computes in float32 and rounds once when
it stores (:func:`compute_half_in_f32`, applied to every definition registered with
``half="widen"``, the default). Definitions that only convert (Cast) register ``half="native"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.registry import extend_op, get_op
from tessera.graph.tensor_type import TensorType
from tessera.loop.expr import BinOp, Call, Cast, Reduce, cast, children, walk
from tessera.loop.te import Tensor, compute, topo_order

PATTERNS = ("elementwise", "injective", "reduction", "anchor", "opaque")
HALF_DTYPES = ("f16", "bf16")  # stored in 16 bits, computed in float32


@dataclass
class ComputeContext:
    """What a compute definition sees: TE input tensors (None for omitted optional inputs),
    normalized attributes, static input/output types, and constant input values."""

    inputs: list[Tensor | None]
    attrs: dict[str, Any]
    in_types: list[TensorType | None]
    out_types: list[TensorType]
    consts: list[np.ndarray | None]
    name: str = ""

    def const(self, i: int) -> np.ndarray | None:
        return self.consts[i] if i < len(self.consts) else None

    def input(self, i: int) -> Tensor:
        t = self.inputs[i] if i < len(self.inputs) else None
        if t is None:
            raise ValueError(f"input {i} is required")
        return t

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return tuple(int(d) for d in self.out_types[i].shape)

    def out_dtype(self, i: int = 0) -> str:
        return self.out_types[i].dtype.value


ComputeFn = Callable[[ComputeContext], list[Tensor]]


@dataclass(frozen=True)
class ComputeDef:
    fn: ComputeFn
    pattern: str
    # inputs that must be compile-time constants (e.g. Reshape's shape), by position
    const_inputs: tuple[int, ...] = ()


def compute_def(op: str, pattern: str, const_inputs: tuple[int, ...] = (),
                half: str = "widen") -> Callable[[ComputeFn], ComputeFn]:
    """Decorator: register ``fn`` as the compute definition of operator ``op``. ``half="widen"``
    runs ``fn`` on float32 views of float16/bfloat16 operands (:func:`compute_half_in_f32`);
    ``"native"`` passes them through (the definition must only convert them)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}")
    if half not in ("widen", "native"):
        raise ValueError(f"unknown half-precision mode {half!r}")

    def deco(fn: ComputeFn) -> ComputeFn:
        registered = compute_half_in_f32(fn) if half == "widen" else fn
        extend_op(op, "compute", ComputeDef(registered, pattern, const_inputs))
        return fn

    return deco


def _wide_type(t: TensorType | None) -> TensorType | None:
    return t.with_dtype(DType.float32) if t is not None and t.dtype.value in HALF_DTYPES else t


def compute_half_in_f32(fn: ComputeFn) -> ComputeFn:
    """``fn`` with float16/bfloat16 inputs read as float32, run at float32, and each half
    output rounded once on store. Ops without half operands call ``fn`` unchanged."""

    def run(ctx: ComputeContext) -> list[Tensor]:
        types = [t for t in (*ctx.in_types, *ctx.out_types) if t is not None]
        if not any(t.dtype.value in HALF_DTYPES for t in types):
            return fn(ctx)
        inputs = [t if t is None or t.dtype not in HALF_DTYPES
                  else compute(t.shape, lambda *i, s=t: cast(s[i], "f32"), "widen") for t in ctx.inputs]
        consts = [c.astype("float32") if c is not None and c.dtype.itemsize == 2 and c.dtype.kind not in "iub"
                  else c for c in ctx.consts]
        wide = ComputeContext(inputs, ctx.attrs, [_wide_type(t) for t in ctx.in_types],
                              [_wide_type(t) for t in ctx.out_types], consts, ctx.name)  # type: ignore[arg-type]
        outs = fn(wide)
        narrowed = []
        for o, t in zip(outs, ctx.out_types, strict=False):
            dt = t.dtype.value
            if dt in HALF_DTYPES and o.dtype != dt:
                o = compute(o.shape, lambda *i, s=o, d=dt: cast(s[i], d), "narrow")
            narrowed.append(o)
        check_half_arithmetic(narrowed, ctx.name)
        return narrowed + outs[len(narrowed):]

    run.__name__ = getattr(fn, "__name__", "compute")
    run.__doc__ = fn.__doc__
    return run


def check_half_arithmetic(outputs: list[Tensor], name: str = "") -> None:
    """Raise NotImplementedError if a tensor computes on float16/bfloat16 values directly
    (anything but loading, selecting or converting them): code generators store half values
    as bits and only convert them."""
    for t in topo_order(outputs):
        if t.body is None:
            continue
        for e in walk(t.body):
            if isinstance(e, (BinOp, Call, Reduce)) and any(c.dtype in HALF_DTYPES for c in children(e)):
                raise NotImplementedError(f"{name}: arithmetic on {e.dtype} values (compute in float32 instead)")
            if isinstance(e, Cast) and e.value.dtype in HALF_DTYPES and e.dtype not in ("f32", *HALF_DTYPES):
                raise NotImplementedError(f"{name}: {e.value.dtype} is converted to float32 only")


def get_compute(op: str) -> ComputeDef | None:
    _ensure_loaded()
    return get_op(op).extensions.get("compute")


def _ensure_loaded() -> None:
    import tessera.loop.computes  # noqa: F401  (registers every compute definition)
