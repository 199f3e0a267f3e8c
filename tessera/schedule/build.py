"""Apply schedules to a group's stages and emit one loop-IR kernel."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tessera.loop.expr import (
    BinOp,
    Const,
    Expr,
    Load,
    Reduce,
    Var,
    binop,
    const,
    free_vars,
    loads_in,
    logical_and,
    select,
    simplify,
    substitute,
    transform,
)
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq, Stmt, Store
from tessera.loop.partition import partition_loops
from tessera.loop.stages import Stage
from tessera.loop.te import Tensor
from tessera.schedule.primitives import LoopNest, PackSpec, Step, replay


def stage_nest(stage: Stage) -> LoopNest:
    """The unscheduled loop nest of a stage: its axes, then its reduction axes."""
    spatial = [(a.name, n) for a, n in zip(stage.tensor.axes, stage.tensor.shape, strict=True)]
    red = stage.reduce
    reduce = [(a.name, n) for a, n in zip(red.axes, red.extents, strict=True)] if red else []
    return LoopNest.create(spatial, reduce)


def product_factors(e: Expr) -> list[Expr]:
    """Factors of a product tree (``a*b*c`` -> [a, b, c])."""
    if isinstance(e, BinOp) and e.op == "mul":
        return product_factors(e.a) + product_factors(e.b)
    return [e]


def _product(fs: Sequence[Expr]) -> Expr:
    out = fs[0]
    for f in fs[1:]:
        out = out * f
    return out


_INIT = {"sum": 0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}


def _init_value(combiner: str, dtype: str) -> Expr:
    v = _INIT[combiner]
    if dtype.startswith(("i", "u")) or dtype == "bool":
        import numpy as np

        from tessera.loop.te_eval import np_dtype

        info = np.iinfo(np_dtype(dtype)) if dtype != "bool" else None
        if combiner == "max":
            return const(info.min if info else 0, dtype)
        if combiner == "min":
            return const(info.max if info else 1, dtype)
        return const(int(v), dtype)
    return const(v, dtype)


def _combine(combiner: str, acc: Expr, x: Expr) -> Expr:
    return {"sum": lambda: acc + x, "prod": lambda: acc * x, "max": lambda: binop("max", acc, x),
            "min": lambda: binop("min", acc, x)}[combiner]()


class KernelBuilder:
    """Emits a kernel for ``stages``; buffers for placeholders, outputs and workspaces."""

    def __init__(self, name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 constants: dict[Tensor, Any] | None = None) -> None:
        """``constants`` gives the values of placeholders that are compile-time constants:
        packs of constant operands (pre-packed weights) are computed once, here."""
        self.name = name
        self.constants = constants or {}
        self.packed: list[tuple[Buffer, Any]] = []
        self.buffers: dict[int, Buffer] = {}
        self.params: list[Buffer] = []
        for k, t in enumerate(inputs):
            self._add(t, f"in{k}")
        for k, t in enumerate(outputs):
            self._add(t, f"out{k}")
        self.num_inputs = len(inputs)
        self.num_outputs = len(outputs)
        self.workspace: list[Buffer] = []
        self._local = 0

    def _add(self, t: Tensor, name: str) -> Buffer:
        b = Buffer(name, t.shape, t.dtype)
        self.buffers[id(t)] = b
        self.params.append(b)
        return b

    def _workspace(self, shape: tuple[int, ...], dtype: str) -> Buffer:
        b = Buffer(f"ws{len(self.workspace)}", shape, dtype)
        self.workspace.append(b)
        return b

    def buffer_of(self, t: Tensor) -> Buffer:
        if id(t) not in self.buffers:
            b = self._workspace(t.shape, t.dtype)
            self.buffers[id(t)] = b
        return self.buffers[id(t)]

    def _to_buffers(self, e: Expr, acc: tuple[Tensor, Buffer, tuple[Expr, ...]] | None = None) -> Expr:
        def rule(x: Expr) -> Expr | None:
            if isinstance(x, Load) and isinstance(x.tensor, Tensor):
                if acc is not None and x.tensor is acc[0]:
                    return Load(acc[1], acc[2], x.dtype)
                return Load(self.buffer_of(x.tensor), x.indices, x.dtype)
            return None

        return transform(e, rule)

    def build(self, stages: Sequence[Stage], schedules: dict[str, list[Step]]) -> Kernel:
        body: list[Stmt] = []
        for st in stages:
            if not st.is_output:
                self.buffer_of(st.tensor)
        for st in stages:
            nest = replay(stage_nest(st), schedules.get(st.name, []))
            body.extend(self._emit_stage(st, nest))
        k = Kernel(self.name, self.params + self.workspace + [b for b, _ in self.packed], Seq(body),
                   self.num_inputs)
        k.attrs["num_outputs"] = self.num_outputs
        k.attrs["workspace"] = len(self.workspace)
        k.attrs["packed_constants"] = [v for _, v in self.packed]
        # bounds checks of windowed reads leave the interior of their loops (compile and tuning alike)
        return partition_loops(k)

    # ---- one stage ------------------------------------------------------------------------
    def _emit_stage(self, st: Stage, nest: LoopNest) -> list[Stmt]:
        ranges = {lp.name: (0, lp.extent - 1) for lp in nest.loops}
        env = nest.axis_expr
        out_buf = self.buffer_of(st.tensor)
        out_idx = tuple(simplify(env[a.name], ranges) for a in st.tensor.axes)
        guards = nest.guards()
        pre: list[Stmt] = []

        if st.reduce is None:
            value = simplify(self._to_buffers(substitute(st.body, env)), ranges)
            store: Stmt = Store(out_buf, out_idx, value)
            return [_guarded_nest(nest.loops, store, guards, ranges)]

        red = st.reduce
        factors_raw = product_factors(red.body) if red.combiner == "sum" else [red.body]
        factors = [substitute(f, env) for f in factors_raw]
        packed: set[int] = set()
        for spec in nest.packs:
            buf, stmt, load_idx = self._pack(factors_raw[spec.factor], spec, nest)
            if stmt is not None:
                pre.append(stmt)
            factors[spec.factor] = Load(buf, load_idx, factors_raw[spec.factor].dtype)
            packed.add(spec.factor)
        unpacked_axes: set[str] = set()
        for k, f in enumerate(factors_raw):
            if k not in packed:
                unpacked_axes |= free_vars(f)
        rbody = simplify(self._to_buffers(_product(factors)), ranges)

        at = nest.cache_at
        if at is None:
            first_red = next(k for k, lp in enumerate(nest.loops) if lp.reduce)
            split = first_red
        else:
            split = 0 if at == "" else nest.find(at) + 1
        outer, inner = nest.loops[:split], nest.loops[split:]
        tile = [lp for lp in inner if not lp.reduce]
        self._local += 1
        acc = Buffer(f"acc{self._local}", tuple(lp.extent for lp in tile) or (1,), red.dtype, "local")
        tidx: tuple[Expr, ...] = tuple(Var(lp.name) for lp in tile) or (const(0),)
        init_val = _init_value(red.combiner, red.dtype)
        # guards in the main nest: reduce axes always; spatial axes only where an unpacked load uses them
        main_guards = [g for g in guards if g[0] in unpacked_axes]
        update = Store(acc, tidx, _combine(red.combiner, Load(acc, tidx, red.dtype), rbody))
        main = _guarded_nest(inner, update, main_guards, ranges)
        assert st.acc_ref is not None
        epi_val = simplify(self._to_buffers(substitute(st.body, env), (st.acc_ref, acc, tidx)), ranges)
        epi = _guarded_nest(tile, Store(out_buf, out_idx, epi_val), guards, ranges)
        blocks = [lp for lp in outer if lp.reduce]
        if not blocks:
            init = _nest(tile, Store(acc, tidx, init_val))
            return [*pre, _nest(outer, Allocate(acc, Seq([init, main, epi])))]
        # reduction blocks outside the tile: partial results live in the output between blocks,
        # the epilogue runs after the last block
        if out_buf.dtype != red.dtype:
            raise ValueError(f"stage {st.name}: blocking its reduction outside the accumulator needs the output "
                             f"dtype ({out_buf.dtype}) to equal the accumulator's ({red.dtype})")
        first = logical_and(*(Var(lp.name).eq(0) for lp in blocks))
        last = logical_and(*(Var(lp.name).eq(lp.extent - 1) for lp in blocks))
        in_bounds = logical_and(*(e.lt(n) for _, e, n in guards)) if guards else None
        partial: Expr = Load(out_buf, out_idx, red.dtype)
        if in_bounds is not None:
            partial = select(in_bounds, partial, init_val)
        init = _nest(tile, Store(acc, tidx, simplify(select(first, init_val, partial), ranges)))
        keep = _guarded_nest(tile, Store(out_buf, out_idx, Load(acc, tidx, red.dtype)), guards, ranges)
        not_last: Expr = Var(blocks[0].name).ne(blocks[0].extent - 1)
        for lp in blocks[1:]:
            not_last = binop("or", not_last, Var(lp.name).ne(lp.extent - 1))
        return [*pre, _nest(outer, Allocate(acc, Seq([init, main, If(last, epi), If(not_last, keep)])))]

    def _pack(self, factor: Expr, spec: PackSpec, nest: LoopNest) -> tuple[Buffer, Stmt | None, tuple[Expr, ...]]:
        """Materialize ``factor`` over the loops it uses (``spec.axis`` last, zero-padded).
        A factor of constants only is computed now and becomes a pre-packed weight."""
        f = substitute(factor, spec.axis_expr)
        used = free_vars(f)
        others = [n for n in spec.extents if n in used and n != spec.axis]
        order = [*others, spec.axis]  # logical axes; stored as [axis//tile, *others, axis%tile]
        tile = spec.tile
        shape = (spec.padded // tile, *(spec.extents[n] for n in others), tile)
        v = nest.final_expr(spec.axis, spec.sub_index)
        vr = {lp.name: (0, lp.extent - 1) for lp in nest.loops}
        load_idx = (simplify(v // tile, vr), *(nest.final_expr(n, spec.sub_index) for n in others),
                    simplify(v % tile, vr))
        tensors = {ld.tensor for ld in loads_in(f)}
        if tensors and all(isinstance(t, Tensor) and t in self.constants for t in tensors):
            import numpy as np

            from tessera.loop.te_eval import evaluate_expr, np_dtype

            env = {n: np.arange(spec.extents[n]).reshape([-1 if j == k else 1 for j in range(len(order))])
                   for k, n in enumerate(order)}
            val = evaluate_expr(f, env, {t: self.constants[t] for t in tensors})
            val = np.broadcast_to(val, [spec.extents[n] for n in order]).astype(np_dtype(factor.dtype))
            val = np.pad(val, [(0, 0)] * (len(order) - 1) + [(0, spec.padded - spec.extents[spec.axis])])
            val = np.moveaxis(val.reshape(*val.shape[:-1], spec.padded // tile, tile), -2, 0)
            buf = Buffer(f"cw{len(self.packed)}", shape, factor.dtype)
            self.packed.append((buf, np.ascontiguousarray(val)))
            return buf, None, load_idx
        buf = self._workspace(shape, factor.dtype)
        self._local += 1
        loop_vars = [Var(f"p{self._local}_{k}") for k in range(len(shape))]
        ranges = {lv.name: (0, e - 1) for lv, e in zip(loop_vars, shape, strict=True)}
        axis_val = loop_vars[0] * tile + loop_vars[-1]
        env = {n: lv for n, lv in zip(others, loop_vars[1:-1], strict=True)}
        env[spec.axis] = axis_val
        val = substitute(f, env)
        if spec.padded > spec.extents[spec.axis]:
            val = select(axis_val.lt(spec.extents[spec.axis]), val, const(0.0, factor.dtype))
        val = simplify(self._to_buffers(val), ranges)
        stmt: Stmt = Store(buf, tuple(loop_vars), val)
        # loop order (panel, lane, other axes): the lane's index arithmetic (often a div/mod of
        # a fused axis) is invariant in the inner loops, so the C compiler hoists it
        order_k = [0, len(shape) - 1, *range(1, len(shape) - 1)]
        for k in reversed(order_k):
            stmt = For(loop_vars[k], shape[k], "parallel" if k == 0 else "serial", stmt)
        return buf, stmt, load_idx


def _uses_axis(e: Expr, axis: str) -> bool:
    return axis in free_vars(e)


def _nest(loops: Sequence, body: Stmt) -> Stmt:
    for lp in reversed(loops):
        body = For(Var(lp.name), lp.extent, lp.kind, body)
    return body


def _guarded_nest(loops: Sequence, s: Stmt, guards: list[tuple[str, Expr, int]],
                  ranges: dict[str, tuple[int, int]]) -> Stmt:
    """``loops`` around ``s`` with each guard placed just inside the innermost loop it depends
    on (loop-invariant bounds checks stay out of inner, e.g. vectorized, loops)."""
    by_depth: dict[int, list[Expr]] = {}
    names = [lp.name for lp in loops]
    for _, e, n in guards:
        c = simplify(e.lt(n), ranges)
        if isinstance(c, Const) and c.value is True:
            continue
        used = free_vars(c)
        depth = max((k for k, nm in enumerate(names) if nm in used), default=-1)
        by_depth.setdefault(depth, []).append(c)
    body = s
    for k in range(len(loops) - 1, -2, -1):
        if k in by_depth:
            body = If(logical_and(*by_depth[k]), body)
        if k >= 0:
            lp = loops[k]
            body = For(Var(lp.name), lp.extent, lp.kind, body)
    return body


__all__ = ["KernelBuilder", "Reduce", "product_factors", "stage_nest"]
