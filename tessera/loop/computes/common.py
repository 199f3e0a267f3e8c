"""Helpers shared by compute definitions."""

from __future__ import annotations

from collections.abc import Sequence

from tessera.loop.expr import Expr, const
from tessera.loop.te import Tensor


def broadcast_load(t: Tensor, out_axes: Sequence[Expr]) -> Expr:
    """Load ``t`` at the output index ``out_axes`` with NumPy broadcasting."""
    rank = len(out_axes)
    idx = []
    for k, d in enumerate(t.shape):
        axis = out_axes[rank - t.ndim + k]
        idx.append(const(0) if d == 1 else axis)
    return t[tuple(idx)]
