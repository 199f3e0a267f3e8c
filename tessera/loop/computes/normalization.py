"""Compute definitions: normalizations (ONNX semantics, matching the registry references in
``tessera.graph.ops.normalization``).

Statistics are reduction stages: a sum for the mean, then a sum of squared deviations from it
(two-pass variance), read back at every element by the final normalize-scale-shift stage.
BatchNormalization with ``training_mode=1`` normalizes with the batch statistics and also
outputs the updated running mean and variance.
"""

from __future__ import annotations

from collections.abc import Callable

from tessera.loop.compute import ComputeContext
from tessera.loop.computes.common import broadcast_load
from tessera.loop.computes.elementwise import fconst, math_compute
from tessera.loop.computes.reduce import axis_attr, count, reduce_over, stat_index
from tessera.loop.expr import Expr, call, const, select
from tessera.loop.te import Tensor, compute, reduce_axis, rsum

Axes = tuple[int, ...]


def _moments(x: Tensor, axes: Axes, name: str) -> tuple[Callable[[tuple[Expr, ...]], Expr],
                                                            Callable[[tuple[Expr, ...]], Expr]]:
    """Mean and (biased) variance of ``x`` over ``axes``, as functions of an input index."""
    n = float(count(x, axes))
    s = reduce_over(x, axes, "sum", lambda f, o: x[f], f"{name}_sum")

    def dev(f: tuple[Expr, ...], o: tuple[Expr, ...]) -> Expr:
        d = x[f] - s[o] / const(n, x.dtype)
        return d * d

    v = reduce_over(x, axes, "sum", dev, f"{name}_var")
    return (lambda i: s[stat_index(i, axes)] / const(n, x.dtype),
            lambda i: v[stat_index(i, axes)] / const(n, x.dtype))


# ---- BatchNormalization --------------------------------------------------------------------
@math_compute("BatchNormalization", "elementwise")
def _batch_norm(ctx: ComputeContext) -> list[Tensor]:
    x, scale, bias, mean, var = (ctx.input(k) for k in range(5))
    eps = ctx.attrs["epsilon"]
    if ctx.attrs["training_mode"]:
        return _batch_norm_training(ctx, x, scale, bias, mean, var)

    def body(*i: Expr) -> Expr:
        c = (i[1],)
        norm = (x[i] - mean[c]) / call("sqrt", var[c] + fconst(eps, var[c]))
        return norm * scale[c] + bias[c]

    return [compute(ctx.out_shape(), body, "batchnorm", dtype=ctx.out_dtype())]


def _batch_norm_training(ctx: ComputeContext, x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor,
                         var: Tensor) -> list[Tensor]:
    """Normalize with the batch's mean and (biased) variance over all axes but the channel's;
    outputs 2 and 3 are ``running * momentum + batch * (1 - momentum)``."""
    axes = (0, *range(2, x.ndim))
    cur_mean, cur_var = _moments(x, axes, "batchnorm")
    eps, mom = ctx.attrs["epsilon"], float(ctx.attrs["momentum"])

    def body(*i: Expr) -> Expr:
        c = (i[1],)
        return (x[i] - cur_mean(i)) / call("sqrt", cur_var(i) + fconst(eps, x[i])) * scale[c] + bias[c]

    outs = [compute(ctx.out_shape(), body, "batchnorm", dtype=ctx.out_dtype())]

    def running(run: Tensor, cur: Callable[[tuple[Expr, ...]], Expr]) -> Tensor:
        def fn(c: Expr) -> Expr:
            at = tuple(c if d == 1 else const(0) for d in range(x.ndim))
            return run[(c,)] * fconst(mom, run[(c,)]) + cur(at) * fconst(1.0 - mom, run[(c,)])
        return compute(run.shape, fn, "batchnorm_running")

    if len(ctx.out_types) > 1:
        outs.append(running(mean, cur_mean))
    if len(ctx.out_types) > 2:
        outs.append(running(var, cur_var))
    return outs


# ---- LayerNormalization / RMSNormalization -------------------------------------------------
@math_compute("LayerNormalization", "reduction")
def _layer_norm(ctx: ComputeContext) -> list[Tensor]:
    x, scale = ctx.input(0), ctx.input(1)
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    axis = axis_attr(ctx, x.ndim)
    axes = tuple(range(axis, x.ndim))
    eps = ctx.attrs["epsilon"]
    mean, var = _moments(x, axes, "layernorm")

    def inv_std(i: tuple[Expr, ...]) -> Expr:
        return call("rsqrt", var(i) + const(eps, x.dtype))

    def body(*i: Expr) -> Expr:
        y = (x[i] - mean(i)) * inv_std(i) * broadcast_load(scale, i)
        return y + broadcast_load(bias, i) if bias is not None else y

    outs = [compute(ctx.out_shape(), body, "layernorm")]
    # optional Mean / InvStdDev outputs: shape (*x.shape[:axis], 1, ..., 1)
    stats = (mean, inv_std)
    for k in range(1, min(len(ctx.out_types), 3)):
        fn = stats[k - 1]
        outs.append(compute(ctx.out_shape(k), lambda *o, fn=fn: fn((*o[:axis], *(const(0) for _ in axes))),
                            "layernorm_stat", dtype=ctx.out_dtype(k)))
    return outs


@math_compute("RMSNormalization", "reduction")
def _rms_norm(ctx: ComputeContext) -> list[Tensor]:
    x, scale = ctx.input(0), ctx.input(1)
    axes = tuple(range(axis_attr(ctx, x.ndim), x.ndim))
    n = float(count(x, axes))
    eps = ctx.attrs["epsilon"]
    ss = reduce_over(x, axes, "sum", lambda f, o: x[f] * x[f], "rmsnorm_sumsq")

    def body(*i: Expr) -> Expr:
        rms = call("sqrt", ss[stat_index(i, axes)] / const(n, x.dtype) + const(eps, x.dtype))
        return x[i] / rms * broadcast_load(scale, i)

    return [compute(ctx.out_shape(), body, "rmsnorm")]


# ---- InstanceNormalization / GroupNormalization --------------------------------------------
def _group_norm(ctx: ComputeContext, groups: int, name: str) -> list[Tensor]:
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    n_batch, channels = x.shape[0], x.shape[1]
    spatial = x.shape[2:]
    cpg = channels // groups
    m = float(cpg * count(x, tuple(range(2, x.ndim))))
    eps = ctx.attrs["epsilon"]

    def stage(body: Callable[[tuple[Expr, ...], Expr, Expr], Expr], stage_name: str) -> Tensor:
        """``out[n, g] = sum over the group's channels and all spatial positions of body``."""

        def fn(nb: Expr, g: Expr) -> Expr:
            rs = [reduce_axis(d) for d in spatial]
            if cpg > 1:
                cg = reduce_axis(cpg, "c")
                rs.append(cg)
                c: Expr = g * cpg + cg[0]
            else:
                c = g
            idx = (nb, c, *(v for v, _ in rs[:len(spatial)]))
            return rsum(body(idx, nb, g), *rs)

        return compute((n_batch, groups), fn, stage_name)

    s = stage(lambda i, nb, g: x[i], f"{name}_sum")

    def dev(i: tuple[Expr, ...], nb: Expr, g: Expr) -> Expr:
        d = x[i] - s[nb, g] / const(m, x.dtype)
        return d * d

    v = stage(dev, f"{name}_var")

    def body(*i: Expr) -> Expr:
        c = i[1]
        gi = (i[0], c // cpg if cpg > 1 else c)
        norm = (x[i] - s[gi] / const(m, x.dtype)) / call("sqrt", v[gi] / const(m, x.dtype) + const(eps, x.dtype))
        return norm * scale[c] + bias[c]

    return [compute(ctx.out_shape(), body, name)]


@math_compute("InstanceNormalization", "reduction")
def _instance_norm(ctx: ComputeContext) -> list[Tensor]:
    return _group_norm(ctx, ctx.input(0).shape[1], "instancenorm")


@math_compute("GroupNormalization", "reduction")
def _group_norm_def(ctx: ComputeContext) -> list[Tensor]:
    return _group_norm(ctx, int(ctx.attrs["num_groups"]), "groupnorm")


# ---- LpNormalization / MeanVarianceNormalization -------------------------------------------
@math_compute("LpNormalization", "reduction")
def _lp_norm(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    axes = (axis_attr(ctx, x.ndim),)
    p = int(ctx.attrs["p"])
    if p == 1:
        s = reduce_over(x, axes, "sum", lambda f, o: call("abs", x[f]), "lpnorm_l1")
    else:
        s = reduce_over(x, axes, "sum", lambda f, o: x[f] * x[f], "lpnorm_sumsq")

    def body(*i: Expr) -> Expr:
        v = s[stat_index(i, axes)]
        norm = v if p == 1 else call("sqrt", v)
        zero = const(0.0, x.dtype)
        nonzero = norm.ne(zero)
        return select(nonzero, x[i] / select(nonzero, norm, const(1.0, x.dtype)), zero)

    return [compute(ctx.out_shape(), body, "lpnorm")]


@math_compute("MeanVarianceNormalization", "reduction")
def _mvn(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    axes = tuple(sorted({int(a) % max(x.ndim, 1) for a in ctx.attrs["axes"]}))
    mean, var = _moments(x, axes, "mvn")

    def body(*i: Expr) -> Expr:
        return (x[i] - mean(i)) / (call("sqrt", var(i)) + const(1e-9, x.dtype))

    return [compute(ctx.out_shape(), body, "mvn")]

