"""Operators: matrix products (MatMul, Gemm, Einsum, MatMulInteger).

References accumulate in float64 (int64 for integers) and cast back to the declared dtype, so
they serve as an accurate oracle for compiled float32 kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import broadcast_shapes, numel
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

Arrays = list[np.ndarray | None]


def acc_dtype(dt: np.dtype) -> np.dtype:
    """The dtype references accumulate in: float64 for floats, int64 for integers."""
    return np.dtype(np.float64) if np.dtype(dt).kind == "f" or dt.name == "bfloat16" else np.dtype(np.int64)


def _acc(x: np.ndarray) -> np.ndarray:
    return x.astype(acc_dtype(x.dtype), copy=False)


def dims_conflict(a: Dim, b: Dim) -> bool:
    """True only when two dims are known to differ (both concrete and unequal)."""
    return isinstance(a, int) and isinstance(b, int) and a != b


def matmul_shape(ctx: InferContext, a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """numpy.matmul shape semantics: batched, broadcasting, 1-D operands promoted then dropped."""
    if not a or not b:
        raise ctx.error("MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if dims_conflict(a2[-1], b2[-2]):
        raise ctx.error(
            f"inner dims differ: A{[str(d) for d in a]} @ B{[str(d) for d in b]} ({a2[-1]} vs {b2[-2]})"
        )
    try:
        batch = broadcast_shapes(a2[:-2], b2[:-2])
    except ShapeInferenceError as e:
        raise ctx.error(f"batch dims: {e}") from None
    out: tuple[Dim, ...] = (*batch, a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) != 1 else out[:-1]
    return out


def _same_dtype(ctx: InferContext, *idx: int) -> DType:
    dts = {ctx.type(i).dtype for i in idx}
    if len(dts) != 1:
        raise ctx.error(f"operand dtypes differ: {sorted(str(d) for d in dts)}")
    return dts.pop()


# ---- MatMul --------------------------------------------------------------------------------


def _matmul_infer(ctx: InferContext) -> list[TensorType]:
    dt = _same_dtype(ctx, 0, 1)
    return [TensorType(dt, matmul_shape(ctx, ctx.type(0).shape, ctx.type(1).shape))]


def _matmul_flops(ctx: InferContext, outs: list[TensorType]) -> Dim:
    a = ctx.type(0).shape
    return 2 * numel(outs[0].shape) * a[-1]


def _matmul_ref(inputs: Arrays, attrs: dict[str, Any], n: int) -> list[np.ndarray]:
    a, b = inputs
    assert a is not None and b is not None
    return [np.matmul(_acc(a), _acc(b)).astype(a.dtype)]


register(OpDef("MatMul", _matmul_infer, _matmul_ref, {}, (2, 2), (1, 1), _matmul_flops,
               doc="numpy.matmul: batched and broadcasting matrix product."))


# ---- Gemm ----------------------------------------------------------------------------------


def _gemm_dims(ctx: InferContext) -> tuple[Dim, Dim, Dim]:
    a, b = ctx.type(0).shape, ctx.type(1).shape
    if len(a) != 2 or len(b) != 2:
        raise ctx.error(f"A and B must be 2-D, got ranks {len(a)} and {len(b)}")
    m, k = (a[1], a[0]) if ctx.attrs["transA"] else (a[0], a[1])
    k2, n = (b[1], b[0]) if ctx.attrs["transB"] else (b[0], b[1])
    if dims_conflict(k, k2):
        raise ctx.error(f"inner dims differ: {k} vs {k2} (transA={ctx.attrs['transA']}, "
                        f"transB={ctx.attrs['transB']})")
    return m, n, k


def _gemm_infer(ctx: InferContext) -> list[TensorType]:
    dt = _same_dtype(ctx, 0, 1)
    m, n, _ = _gemm_dims(ctx)
    if ctx.has_input(2):
        c = ctx.type(2).shape
        if len(c) > 2:
            raise ctx.error(f"C must have rank <= 2, got {len(c)}")
        try:
            out = broadcast_shapes((m, n), c)
        except ShapeInferenceError as e:
            raise ctx.error(f"C does not broadcast to (M, N): {e}") from None
        if any(dims_conflict(x, y) for x, y in zip(out, (m, n), strict=True)):
            raise ctx.error(f"C{[str(d) for d in c]} does not broadcast to ({m}, {n})")
    return [TensorType(dt, (m, n))]


def _gemm_flops(ctx: InferContext, outs: list[TensorType]) -> Dim:
    m, n, k = _gemm_dims(ctx)
    return 2 * m * n * k + (2 * m * n if ctx.has_input(2) else 0)


def _gemm_ref(inputs: Arrays, attrs: dict[str, Any], n: int) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    assert a is not None and b is not None
    x, y = _acc(a), _acc(b)
    if attrs["transA"]:
        x = x.T
    if attrs["transB"]:
        y = y.T
    r = attrs["alpha"] * (x @ y)
    if c is not None:
        r = r + attrs["beta"] * _acc(c)
    return [np.asarray(r).astype(a.dtype)]


register(OpDef(
    "Gemm", _gemm_infer, _gemm_ref,
    {"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0), "transA": Attr("int", 0, (0, 1)),
     "transB": Attr("int", 0, (0, 1))},
    (2, 3), (1, 1), _gemm_flops, doc="Y = alpha * A' @ B' + beta * C (C broadcast to (M, N)).",
))


# ---- Einsum --------------------------------------------------------------------------------


def parse_einsum(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Split an equation into per-input label strings and the output labels.

    An ellipsis is kept as the single character ``.``; the implicit output (no ``->``) is the
    ellipsis followed by the labels that occur exactly once, in alphabetical order."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = [t.replace("...", ".") for t in lhs.split(",")]
    if len(terms) != len(ranks):
        raise ValueError(f"equation {equation!r} has {len(terms)} operands, node has {len(ranks)} inputs")
    for t, r in zip(terms, ranks, strict=True):
        letters = [c for c in t if c != "."]
        if not all(c.isalpha() for c in letters) or t.count(".") > 1:
            raise ValueError(f"bad term {t!r} in equation {equation!r}")
        if ("." in t and len(letters) > r) or ("." not in t and len(letters) != r):
            raise ValueError(f"term {t!r} does not fit an operand of rank {r}")
    if arrow:
        out = rhs.replace("...", ".")
    else:
        counts: dict[str, int] = {}
        for t in terms:
            for c in t:
                if c != ".":
                    counts[c] = counts.get(c, 0) + 1
        has_ell = any("." in t for t in terms)
        out = ("." if has_ell else "") + "".join(sorted(c for c, k in counts.items() if k == 1))
    return terms, out


def _einsum_analyze(ctx: InferContext) -> tuple[DType, tuple[Dim, ...], dict[str, Dim], str]:
    """Output dtype and shape, the size of every label, and the output labels."""
    types = [ctx.type(i) for i in range(len(ctx.types))]
    dt = _same_dtype(ctx, *range(len(types)))
    try:
        terms, out = parse_einsum(ctx.attrs["equation"], [t.rank for t in types])
    except ValueError as e:
        raise ctx.error(str(e)) from None
    sizes: dict[str, Dim] = {}
    ell_shapes: list[tuple[Dim, ...]] = []
    for t, ty in zip(terms, types, strict=True):
        n_ell = ty.rank - (len(t) - t.count("."))
        dims = list(ty.shape)
        pos = 0
        for c in t:
            if c == ".":
                ell_shapes.append(tuple(dims[pos:pos + n_ell]))
                pos += n_ell
                continue
            d = dims[pos]
            pos += 1
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = d
            elif d != 1 and dims_conflict(prev, d):
                raise ctx.error(f"label {c!r} has sizes {prev} and {d}")
    try:
        ell = broadcast_shapes(*ell_shapes) if ell_shapes else ()
    except ShapeInferenceError as e:
        raise ctx.error(f"ellipsis dims: {e}") from None
    shape: list[Dim] = []
    for c in out:
        if c == ".":
            shape.extend(ell)
        elif c not in sizes:
            raise ctx.error(f"output label {c!r} does not occur in any input")
        else:
            shape.append(sizes[c])
    return dt, tuple(shape), sizes, out


def _einsum_infer(ctx: InferContext) -> list[TensorType]:
    dt, shape, _, _ = _einsum_analyze(ctx)
    return [TensorType(dt, shape)]


def _einsum_flops(ctx: InferContext, outs: list[TensorType]) -> Dim:
    # One multiply-add per operand pair over the whole iteration space (output x contracted).
    _, shape, sizes, out = _einsum_analyze(ctx)
    space = numel(shape)
    for c, d in sizes.items():
        if c not in out:
            space = space * d
    return 2 * space * max(len(ctx.types) - 1, 1)


def _einsum_ref(inputs: Arrays, attrs: dict[str, Any], n: int) -> list[np.ndarray]:
    xs = [x for x in inputs if x is not None]
    eq = attrs["equation"].replace(" ", "")
    r = np.einsum(eq, *[_acc(x) for x in xs], optimize=len(xs) > 2)
    return [np.asarray(r).astype(xs[0].dtype)]


register(OpDef("Einsum", _einsum_infer, _einsum_ref, {"equation": Attr("str")}, (1, -1), (1, 1),
               _einsum_flops, doc="Einstein summation (numpy.einsum semantics, ellipsis broadcasting)."))


# ---- MatMulInteger -------------------------------------------------------------------------


def _matmul_int_infer(ctx: InferContext) -> list[TensorType]:
    for i in (0, 1):
        if ctx.type(i).dtype not in (DType.int8, DType.uint8):
            raise ctx.error(f"input {i} must be int8 or uint8, got {ctx.type(i).dtype}")
    return [TensorType(DType.int32, matmul_shape(ctx, ctx.type(0).shape, ctx.type(1).shape))]


def int_matmul(a: np.ndarray, b: np.ndarray, azp: np.ndarray | None, bzp: np.ndarray | None) -> np.ndarray:
    """(A - a_zp) @ (B - b_zp) in int64; a_zp may be per-row of A, b_zp per-column of B."""
    x = a.astype(np.int64)
    y = b.astype(np.int64)
    if azp is not None:
        z = azp.astype(np.int64)
        x = x - (z.reshape(-1, 1) if z.ndim == 1 and z.size > 1 else z)
    if bzp is not None:
        y = y - bzp.astype(np.int64)
    return np.matmul(x, y)


def _matmul_int_ref(inputs: Arrays, attrs: dict[str, Any], n: int) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    azp = inputs[2] if len(inputs) > 2 else None
    bzp = inputs[3] if len(inputs) > 3 else None
    assert a is not None and b is not None
    return [int_matmul(a, b, azp, bzp).astype(np.int32)]


register(OpDef("MatMulInteger", _matmul_int_infer, _matmul_int_ref, {}, (2, 4), (1, 1), _matmul_flops,
               doc="Integer matmul with zero points; int32 result."))
