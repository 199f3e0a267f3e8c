"""From a fused group's tensor expressions to the stages that get their own loop nests.

Injective and elementwise tensors are inlined into their consumers (compute_inline). A
reduction whose only consumer reads it element-for-element at the consumer's own index is
*attached* to that consumer: it is accumulated in a local tile and the consumer's
expression becomes the epilogue applied when the tile is stored (cache_write + compute_at).
Every other reduction is materialized as a stage of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tessera.loop.expr import Const, Expr, Load, Reduce, Var, substitute, transform, walk
from tessera.loop.te import Tensor, topo_order


@dataclass(eq=False)
class Stage:
    """A materialized tensor with its body rewritten to load only placeholders and stages.

    ``reduce`` is the reduction computed into the accumulator (the tensor's own Reduce
    body, or an attached producer's); ``body`` then refers to it through ``acc_ref``."""

    tensor: Tensor
    body: Expr
    reduce: Reduce | None = None
    acc_ref: Tensor | None = None  # the Load target standing for the accumulator in ``body``
    is_output: bool = False

    @property
    def name(self) -> str:
        return self.tensor.name


def stage_flops(st: Stage) -> int:
    """Arithmetic operations of one stage (a multiply-add counts 2; elementwise: one per element)."""
    out = math.prod(st.tensor.shape)
    if st.reduce is None:
        return out
    return out * math.prod(st.reduce.extents) * (2 if st.reduce.combiner == "sum" else 1)


def kernel_flops(stages: Iterable[Stage]) -> int:
    """Arithmetic operations of a kernel: the sum over its stages."""
    return sum(stage_flops(st) for st in stages)


def _loads_of(e: Expr, t: Tensor) -> list[Load]:
    return [x for x in walk(e) if isinstance(x, Load) and x.tensor is t]


def _inline(body: Expr, inlined: dict[int, Tensor]) -> Expr:
    """``body`` with every load of an inlined tensor replaced by that tensor's (inlined) body
    at the load's indices; iterative (``expand``), so chains of any length inline."""
    def rule(x: Expr) -> Expr | None:
        if isinstance(x, Load) and id(x.tensor) in inlined:
            t = inlined[id(x.tensor)]
            assert t.body is not None
            env = {ax.name: idx for ax, idx in zip(t.axes, x.indices, strict=True)}
            return substitute(t.body, env)
        return None

    return transform(body, rule, expand=True)


def build_stages(outputs: list[Tensor]) -> list[Stage]:
    """Stages of the group computing ``outputs``, producers first."""
    order = [t for t in topo_order(outputs) if not t.is_placeholder]
    out_ids = {id(t) for t in outputs}
    materialized = [t for t in order if id(t) in out_ids or isinstance(t.body, Reduce)]
    mat_ids = {id(t) for t in materialized}
    inlined = {id(t): t for t in order if id(t) not in mat_ids}
    bodies: dict[int, Expr] = {}
    for t in materialized:
        assert t.body is not None
        b = t.body
        bodies[id(t)] = _inline_reduce(b, inlined) if isinstance(b, Reduce) else _inline(b, inlined)

    attached: dict[int, Tensor] = {}  # consumer id -> reduction accumulated in its tile
    for r in materialized:
        if id(r) in out_ids or not isinstance(r.body, Reduce):
            continue
        users = [t for t in materialized if t is not r and _loads_of(bodies[id(t)], r)]
        if len(users) == 1 and id(users[0]) not in attached and _attachable(r, users[0], bodies[id(users[0])]):
            attached[id(users[0])] = r

    stages: list[Stage] = []
    attached_ids = {id(r) for r in attached.values()}
    for t in materialized:
        if id(t) in attached_ids:
            continue
        body = bodies[id(t)]
        if isinstance(body, Reduce):
            # a bare reduction: the epilogue is the identity on the accumulator
            stages.append(Stage(t, Load(t, t.axes, t.dtype), body, t, id(t) in out_ids))
            continue
        red = attached.get(id(t))
        reduce = None
        if red is not None:
            rb = bodies[id(red)]
            assert isinstance(rb, Reduce)
            env = {ax.name: ca for ax, ca in zip(red.axes, t.axes, strict=True)}
            reduce = Reduce(rb.combiner, substitute(rb.body, env), rb.axes, rb.extents, rb.dtype)
        stages.append(Stage(t, body, reduce, red, id(t) in out_ids))
    return stages


def _inline_reduce(r: Reduce, inlined: dict[int, Tensor]) -> Reduce:
    return Reduce(r.combiner, _inline(r.body, inlined), r.axes, r.extents, r.dtype)


def _attachable(red: Tensor, consumer: Tensor, body: Expr) -> bool:
    """The consumer (with inlined ``body``) reads ``red`` only at its own index, same shape."""
    if isinstance(body, Reduce) or consumer.shape != red.shape:
        return False
    loads = _loads_of(body, red)
    return bool(loads) and all(
        all(_same_index(i, a, n) for i, a, n in zip(ld.indices, consumer.axes, consumer.shape, strict=True))
        for ld in loads
    )


def _same_index(i: Expr, axis: Var, extent: int) -> bool:
    """``i`` is the consumer's own ``axis`` (a broadcast constant 0 counts on an extent-1 axis)."""
    if isinstance(i, Var):
        return i == axis
    return extent == 1 and isinstance(i, Const) and i.value == 0
