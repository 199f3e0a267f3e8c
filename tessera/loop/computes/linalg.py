"""Compute definitions: matrix products."""

from __future__ import annotations

from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.expr import const
from tessera.loop.te import Tensor, compute, reduce_axis, rsum


@compute_def("MatMul", "anchor")
def _matmul(ctx: ComputeContext) -> list[Tensor]:
    a, b = ctx.input(0), ctx.input(1)
    out = ctx.out_shape()
    k_extent = a.shape[-1]
    assert a.ndim >= 2 and b.ndim >= 2, "1-D MatMul operands are reshaped by the definition's caller"

    def body(*idx):
        k = reduce_axis(k_extent, "k")
        batch = idx[:-2]
        ai = tuple(const(0) if d == 1 else x for d, x in zip(a.shape[:-2], batch[len(batch) - (a.ndim - 2):],
                                                             strict=True))
        bi = tuple(const(0) if d == 1 else x for d, x in zip(b.shape[:-2], batch[len(batch) - (b.ndim - 2):],
                                                             strict=True))
        return rsum(a[(*ai, idx[-2], k[0])] * b[(*bi, k[0], idx[-1])], k)

    return [compute(out, body, "matmul")]
