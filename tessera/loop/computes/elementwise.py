"""Compute definitions: elementwise operators."""

from __future__ import annotations

from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.common import broadcast_load
from tessera.loop.expr import const, maximum
from tessera.loop.te import Tensor, compute


@compute_def("Add", "elementwise")
def _add(ctx: ComputeContext) -> list[Tensor]:
    a, b = ctx.input(0), ctx.input(1)
    return [compute(ctx.out_shape(), lambda *i: broadcast_load(a, i) + broadcast_load(b, i), "add")]


@compute_def("Relu", "elementwise")
def _relu(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    return [compute(ctx.out_shape(), lambda *i: maximum(x[i], const(0, x.dtype)), "relu")]
