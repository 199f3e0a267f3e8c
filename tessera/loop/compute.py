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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera.graph.registry import extend_op, get_op
from tessera.graph.tensor_type import TensorType
from tessera.loop.te import Tensor

PATTERNS = ("elementwise", "injective", "reduction", "anchor", "opaque")


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


def compute_def(op: str, pattern: str, const_inputs: tuple[int, ...] = ()) -> Callable[[ComputeFn], ComputeFn]:
    """Decorator: register ``fn`` as the compute definition of operator ``op``."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}")

    def deco(fn: ComputeFn) -> ComputeFn:
        extend_op(op, "compute", ComputeDef(fn, pattern, const_inputs))
        return fn

    return deco


def get_compute(op: str) -> ComputeDef | None:
    _ensure_loaded()
    return get_op(op).extensions.get("compute")


def _ensure_loaded() -> None:
    import tessera.loop.computes  # noqa: F401  (registers every compute definition)
