"""Compute definitions: Reduce*, ArgMax/ArgMin and CumSum (ONNX semantics, matching the
registry references in ``tessera.graph.ops.reduce``).

Reduce* take their axes from the constant input 1 (missing or empty: every axis, or identity
with ``noop_with_empty_axes``). Float sums are plain ``sum`` reductions in the tensor's dtype
(the reference accumulates in float64); integer sums wrap in the input dtype. Where the
reference leaves integers for float64 (mean, L2, log-sum, log-sum-exp) so do these.

The helpers :func:`reduce_over` and :func:`stat_index` are shared with the softmax family and
the normalizations: a *stage* is a reduction over some axes of ``x`` whose result is read back
at every element of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tessera.loop.compute import ComputeContext
from tessera.loop.computes.elementwise import fconst, math_compute, typed_call
from tessera.loop.expr import BOOL, Expr, Var, binop, call, cast, const, is_int, select
from tessera.loop.te import Tensor, compute, reduce, reduce_axis

Axes = tuple[int, ...]
StageBody = Callable[[tuple[Expr, ...], tuple[Expr, ...]], Expr]


# ---- stage helpers -------------------------------------------------------------------------
def reduced_shape(shape: Sequence[int], axes: Axes, keep: bool) -> tuple[int, ...]:
    if keep:
        return tuple(1 if d in axes else n for d, n in enumerate(shape))
    return tuple(n for d, n in enumerate(shape) if d not in axes)


def full_index(out: Sequence[Expr], axes: Axes, rank: int, keep: bool, rvars: Sequence[Var]) -> tuple[Expr, ...]:
    """The input index of output position ``out`` and reduction variables ``rvars`` (one per axis)."""
    idx: list[Expr] = []
    it = iter(out)
    for d in range(rank):
        if d in axes:
            idx.append(rvars[axes.index(d)])
            if keep:
                next(it)
        else:
            idx.append(next(it))
    return tuple(idx)


def stat_index(idx: Sequence[Expr], axes: Axes, keep: bool = False) -> tuple[Expr, ...]:
    """Where a stage reduced over ``axes`` is read at input position ``idx``."""
    if keep:
        return tuple(const(0) if d in axes else i for d, i in enumerate(idx))
    return tuple(i for d, i in enumerate(idx) if d not in axes)


def reduce_over(x: Tensor, axes: Axes, combiner: str, body: StageBody, name: str, keep: bool = False) -> Tensor:
    """``out[o] = combiner over axes of body(full_index, o)``: a stage of ``x``'s shape reduced
    over ``axes`` (kept as size 1 when ``keep``). ``body`` gets the input index and the output
    index (to read earlier stages of the same shape)."""
    axes = tuple(sorted(axes))

    def fn(*o: Expr) -> Expr:
        rs = [reduce_axis(x.shape[d]) for d in axes]
        full = full_index(o, axes, x.ndim, keep, [v for v, _ in rs])
        return reduce(combiner, body(full, o), *rs)

    return compute(reduced_shape(x.shape, axes, keep), fn, name)


def count(x: Tensor, axes: Axes) -> int:
    n = 1
    for d in axes:
        n *= x.shape[d]
    return n


def finite_or_zero(m: Expr) -> Expr:
    """``m`` if finite else 0: keeps ``x - max`` defined for rows holding infinities."""
    bad = binop("or", typed_call("isinf", BOOL, m), typed_call("isnan", BOOL, m))
    return select(bad, fconst(0.0, m), m)


def axis_attr(ctx: ComputeContext, rank: int) -> int:
    a = int(ctx.attrs["axis"])
    return a % max(rank, 1)


# ---- Reduce* -------------------------------------------------------------------------------
def _axes(ctx: ComputeContext, op: str) -> Axes | None:
    """Normalized reduction axes; None means the op is an identity (noop_with_empty_axes)."""
    x = ctx.input(0)
    has_axes = len(ctx.inputs) > 1 and ctx.inputs[1] is not None
    vals: list[int] = []
    if has_axes:
        c = ctx.const(1)
        if c is None:
            raise NotImplementedError(f"{op}: axes (input 1) must be a compile-time constant")
        vals = [int(v) for v in c.reshape(-1)]
    if not vals:
        return None if ctx.attrs["noop_with_empty_axes"] else tuple(range(x.ndim))
    return tuple(sorted(v % max(x.ndim, 1) for v in vals))


Post = Callable[[Expr], Expr]
_REDUCERS: dict[str, tuple[str, Callable[[Expr], Expr], Post | None]] = {
    # op: (combiner, per-element body, finishing function applied in float64 for integers)
    "ReduceSum": ("sum", lambda v: v, None),
    "ReduceMax": ("max", lambda v: v, None),
    "ReduceMin": ("min", lambda v: v, None),
    "ReduceProd": ("prod", lambda v: v, None),
    "ReduceL1": ("sum", lambda v: call("abs", v), None),
    "ReduceSumSquare": ("sum", lambda v: v * v, None),
    "ReduceL2": ("sum", lambda v: v * v, lambda s: call("sqrt", s)),
    "ReduceLogSum": ("sum", lambda v: v, lambda s: call("log", s)),
}


def _reduce_def(op: str, combiner: str, pre: Callable[[Expr], Expr], post: Post | None) -> None:
    @math_compute(op, "reduction", const_inputs=(1,))
    def _fn(ctx: ComputeContext) -> list[Tensor]:
        x = ctx.input(0)
        axes = _axes(ctx, op)
        if axes is None:
            return [compute(ctx.out_shape(), lambda *i: x[i], "identity")]
        keep = bool(ctx.attrs["keepdims"])
        s = reduce_over(x, axes, combiner, lambda f, o: pre(x[f]), op.lower(), keep)
        if post is None:
            return [s]
        out = ctx.out_dtype()

        def finish(*o: Expr) -> Expr:
            v = s[o]
            return cast(post(cast(v, "f64")), out) if is_int(out) else post(v)

        return [compute(ctx.out_shape(), finish, op.lower())]


for _op, (_comb, _pre, _post) in _REDUCERS.items():
    _reduce_def(_op, _comb, _pre, _post)


@math_compute("ReduceMean", "reduction", const_inputs=(1,))
def _reduce_mean(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    axes = _axes(ctx, "ReduceMean")
    if axes is None:
        return [compute(ctx.out_shape(), lambda *i: x[i], "identity")]
    keep = bool(ctx.attrs["keepdims"])
    out = ctx.out_dtype()
    work = "f64" if is_int(out) else out  # the reference averages integers in float64
    s = reduce_over(x, axes, "sum", lambda f, o: cast(x[f], work), "reducemean_sum", keep)
    n = count(x, axes)
    return [compute(ctx.out_shape(), lambda *o: cast(s[o] / const(float(n), work), out), "reducemean")]


@math_compute("ReduceLogSumExp", "reduction", const_inputs=(1,))
def _reduce_lse(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    axes = _axes(ctx, "ReduceLogSumExp")
    if axes is None:
        return [compute(ctx.out_shape(), lambda *i: x[i], "identity")]
    keep = bool(ctx.attrs["keepdims"])
    out = ctx.out_dtype()
    work = "f64" if is_int(out) else out

    def load(f: tuple[Expr, ...]) -> Expr:
        return cast(x[f], work)

    m = reduce_over(x, axes, "max", lambda f, o: load(f), "lse_max", keep)
    s = reduce_over(x, axes, "sum", lambda f, o: call("exp", load(f) - finite_or_zero(m[o])), "lse_sum", keep)
    return [compute(ctx.out_shape(), lambda *o: cast(call("log", s[o]) + finite_or_zero(m[o]), out), "lse")]


# ---- ArgMax / ArgMin -----------------------------------------------------------------------
def argext(x: Tensor, axis: int, combiner: str, keep: bool, last: bool, name: str) -> list[Tensor]:
    """Index (i64) of the first (or ``last``) extreme value along ``axis``; a NaN counts as the
    extreme, like NumPy's argmax/argmin."""
    axes = (axis,)
    m = reduce_over(x, axes, combiner, lambda f, o: x[f], f"{name}_val", keep)
    n = x.shape[axis]

    def body(f: tuple[Expr, ...], o: tuple[Expr, ...]) -> Expr:
        v = x[f]
        hit = v.eq(m[o])
        if not is_int(v.dtype):
            hit = binop("or", hit, typed_call("isnan", BOOL, v))
        k = f[axis]
        return select(hit, k, const(-1)) if last else select(hit, k, const(n))

    return [m, reduce_over(x, axes, "max" if last else "min", body, name, keep)]


def _arg_def(op: str, combiner: str) -> None:
    @math_compute(op, "reduction")
    def _fn(ctx: ComputeContext) -> list[Tensor]:
        x = ctx.input(0)
        axis = axis_attr(ctx, x.ndim)
        _, idx = argext(x, axis, combiner, bool(ctx.attrs["keepdims"]), bool(ctx.attrs["select_last_index"]),
                        op.lower())
        return [idx]


_arg_def("ArgMax", "max")
_arg_def("ArgMin", "min")


# ---- CumSum --------------------------------------------------------------------------------
@math_compute("CumSum", "opaque", const_inputs=(1,))
def _cumsum(ctx: ComputeContext) -> list[Tensor]:
    # A masked sum over the whole axis: quadratic in the axis length, so never fused.
    x = ctx.input(0)
    c = ctx.const(1)
    if c is None:
        raise NotImplementedError("CumSum: axis (input 1) must be a compile-time constant")
    axis = int(c.reshape(-1)[0]) % max(x.ndim, 1)
    excl, rev = bool(ctx.attrs["exclusive"]), bool(ctx.attrs["reverse"])
    zero = const(0, x.dtype)

    def body(*i: Expr) -> Expr:
        k, n = reduce_axis(x.shape[axis], "k")
        src = (*i[:axis], k, *i[axis + 1:])
        a, b = (i[axis], k) if rev else (k, i[axis])
        take = a.lt(b) if excl else a.le(b)
        return reduce("sum", select(take, x[src], zero), (k, n))

    return [compute(ctx.out_shape(), body, "cumsum")]

