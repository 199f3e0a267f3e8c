"""Operators: broadcasting arithmetic, comparisons, logic, and elementwise math."""

from __future__ import annotations

import numpy as np

from tessera.graph.op_helpers import binary, unary

binary("Add", np.add, propagate=lambda a, b: a + b)
binary("Sub", np.subtract, propagate=lambda a, b: a - b)
binary("Mul", np.multiply, propagate=lambda a, b: a * b)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":  # ONNX integer Div truncates toward zero
        return np.trunc(a.astype(np.float64) / b).astype(a.dtype)
    return np.divide(a, b)


binary("Div", _div, propagate=lambda a, b: a // b)
unary("Relu", lambda x: np.maximum(x, 0))
