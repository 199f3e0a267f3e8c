"""Compute definitions: matrix products (MatMul, Gemm, Einsum)."""

from __future__ import annotations

from tessera.errors import CompileError
from tessera.graph.ops.linalg import parse_einsum
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.common import broadcast_load
from tessera.loop.expr import Expr, const
from tessera.loop.te import Tensor, compute, reduce_axis, rsum


def batch_index(t_batch: tuple[int, ...], batch: tuple[Expr, ...]) -> tuple[Expr, ...]:
    """Index of an operand's batch dims (right-aligned, size-1 dims broadcast) in the output batch."""
    own = batch[len(batch) - len(t_batch):] if t_batch else ()
    return tuple(const(0) if d == 1 else x for d, x in zip(t_batch, own, strict=True))


@compute_def("MatMul", "anchor")
def _matmul(ctx: ComputeContext) -> list[Tensor]:
    a, b = ctx.input(0), ctx.input(1)
    if a.ndim < 1 or b.ndim < 1:
        raise CompileError("MatMul operands must have rank >= 1")
    out = ctx.out_shape()
    k_extent = a.shape[-1]
    # numpy.matmul: a 1-D A is a row vector, a 1-D B a column vector; those axes are absent from the output.
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    n_batch = len(out) - (0 if a_vec else 1) - (0 if b_vec else 1)

    def body(*idx: Expr) -> Expr:
        k = reduce_axis(k_extent, "k")
        batch = idx[:n_batch]
        rest = list(idx[n_batch:])
        m = None if a_vec else rest.pop(0)
        n = None if b_vec else rest.pop(0)
        ai = (k[0],) if a_vec else (*batch_index(a.shape[:-2], batch), m, k[0])
        bi = (k[0],) if b_vec else (*batch_index(b.shape[:-2], batch), k[0], n)
        return rsum(a[ai] * b[bi], k)

    return [compute(out, body, "matmul")]


@compute_def("Gemm", "anchor")
def _gemm(ctx: ComputeContext) -> list[Tensor]:
    a, b = ctx.input(0), ctx.input(1)
    c = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    ta, tb = bool(ctx.attrs["transA"]), bool(ctx.attrs["transB"])
    alpha, beta = float(ctx.attrs["alpha"]), float(ctx.attrs["beta"])
    out = ctx.out_shape()
    k_extent = a.shape[0] if ta else a.shape[1]

    def body(m: Expr, n: Expr) -> Expr:
        k = reduce_axis(k_extent, "k")
        av = a[k[0], m] if ta else a[m, k[0]]
        bv = b[n, k[0]] if tb else b[k[0], n]
        return rsum(av * bv, k)

    prod = compute(out, body, "gemm")
    if alpha == 1.0 and (c is None or beta == 0.0):
        return [prod]
    dt = prod.dtype

    def epilogue(m: Expr, n: Expr) -> Expr:
        v = prod[m, n] if alpha == 1.0 else prod[m, n] * const(alpha, dt)
        if c is None or beta == 0.0:
            return v
        cv = broadcast_load(c, (m, n))
        return v + (cv if beta == 1.0 else cv * const(beta, dt))

    return [compute(out, epilogue, "gemm_out")]


@compute_def("Einsum", "anchor")
def _einsum(ctx: ComputeContext) -> list[Tensor]:
    xs = [t for t in ctx.inputs if t is not None]
    terms, out_labels = parse_einsum(ctx.attrs["equation"], [t.ndim for t in xs])
    # Expand each ellipsis into right-aligned tokens "#0", "#1", ... shared by all operands.
    n_ell = max((t.ndim - (len(s) - 1) for s, t in zip(terms, xs, strict=True) if "." in s), default=0)
    ell = [f"#{i}" for i in range(n_ell)]

    def expand(term: str, rank: int) -> list[str]:
        labels: list[str] = []
        for ch in term:
            if ch == ".":
                k = rank - (len(term) - 1)
                labels.extend(ell[n_ell - k:])
            else:
                labels.append(ch)
        return labels

    operands = [expand(s, t.ndim) for s, t in zip(terms, xs, strict=True)]
    out = expand(out_labels, len(ctx.out_shape()))
    sizes: dict[str, int] = {}
    for labels, t in zip(operands, xs, strict=True):
        for lab, d in zip(labels, t.shape, strict=True):
            if d != 1 or lab not in sizes:
                sizes[lab] = d
    contracted = [lab for lab in dict.fromkeys(lab for ls in operands for lab in ls) if lab not in out]

    def body(*idx: Expr) -> Expr:
        env: dict[str, Expr] = dict(zip(out, idx, strict=True))
        axes = [reduce_axis(sizes[lab], "r") for lab in contracted]
        env.update({lab: ax[0] for lab, ax in zip(contracted, axes, strict=True)})
        prod: Expr | None = None
        for labels, t in zip(operands, xs, strict=True):
            v = t[tuple(const(0) if d == 1 else env[lab] for lab, d in zip(labels, t.shape, strict=True))]
            prod = v if prod is None else prod * v
        assert prod is not None
        return rsum(prod, *axes) if axes else prod

    return [compute(ctx.out_shape(), body, "einsum")]
