"""Loop partitioning: split a loop where its body's index conditions become constant.

Windowed computations (pooling, padded convolutions) read their input through bounds checks:
``select(0 <= 2*oh + kh - 1 && ..., x[max(2*oh + kh - 1, 0)], pad)``. Each check is an integer
*decision* (a comparison, or which operand a ``min``/``max`` picks) that is affine in the loop
variables. For a serial loop ``v`` every decision that is affine in ``v`` is constant, for all
values of the other variables in their ranges, outside a small sub-range of ``v`` (the first and
last few output rows). The loop is split at those points into prologue / interior / epilogue loops;
in each piece the decisions constant over the piece are replaced by their value, so the interior
runs without selects or clamps. Like TVM's LoopPartition, with constant split points only.

Parallel, vectorized and unrolled loops are kept whole (the pass partitions the serial loops
inside them); a loop is split only when its largest condition-free piece covers at least half of it
(and ``MIN_INTERIOR`` iterations), and no statement is copied more than ``MAX_COPIES`` times. When
the loop's iterations are independent the interior piece is emitted first. Decisions on fused
(div/mod) axes are not affine: such kernels keep their checks (a schedule that keeps the spatial
axes apart gets them removed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tessera.loop.expr import (
    BinOp,
    Const,
    Expr,
    Ranges,
    Var,
    bounds,
    children,
    const,
    free_vars,
    is_int,
    linear_form,
    loads_in,
    simplify,
    substitute,
    transform,
)
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq, Stmt, Store, walk_stmts

MIN_INTERIOR = 4  # a split must leave a condition-free piece at least this long ...
MIN_INTERIOR_FRACTION = 0.5  # ... covering at least this fraction of the loop
MAX_COPIES = 27  # at most this many copies of any statement (3 partitioned loops around it)

# Decision ops: with d = a - b, the decision is constant ("low") when max(d) <= A and ("high")
# when min(d) >= B.
_THRESHOLDS: dict[str, tuple[int, int]] = {
    "lt": (-1, 0), "le": (0, 1), "eq": (-1, 1), "ne": (-1, 1), "min": (0, 0), "max": (0, 0)}
# Decisions that place cuts: bounds checks and clamps. (In)equalities are folded where constant but
# cut nothing: ``k == 0`` / ``k == last`` of a blocked reduction would peel whole micro-kernels for
# branches taken once per block.
_CUT_OPS = ("lt", "le", "min", "max")


def partition_loops(kernel: Kernel) -> Kernel:
    """``kernel`` with its serial loops partitioned where that removes index conditions from most
    iterations, and every index decision that is constant over its loop ranges folded. A kernel
    with an empty loop (a zero-sized tensor) computes nothing and is returned as it is."""
    if any(isinstance(s, For) and s.extent <= 0 for s in walk_stmts(kernel.body)):
        return kernel
    body = _Partitioner().stmt(kernel.body, {}, 1)
    return Kernel(kernel.name, kernel.params, body, kernel.num_inputs, dict(kernel.attrs))


def decide(x: Expr, ranges: Ranges) -> Expr | None:
    """The value of an integer comparison, or the chosen operand of an integer ``min``/``max``,
    when it is the same for every value of the variables in ``ranges``; None otherwise. Bounds
    the difference of the operands as a linear form (tighter than bounding each operand)."""
    if not _is_decision(x):
        return None
    assert isinstance(x, BinOp)
    lf = linear_form(x.a - x.b)
    if lf is None:
        return None
    d = _form_bounds(lf[0], lf[1], ranges)
    if d is None:
        return None
    lo_t, hi_t = _THRESHOLDS[x.op]
    if d[1] <= lo_t:
        side = "low"
    elif d[0] >= hi_t:
        side = "high"
    elif d == (0, 0):
        side = "zero"
    else:
        return None
    return _decided(x, side)


def fold_decisions(e: Expr, ranges: Ranges) -> Expr:
    """``e`` with every decision that ``decide`` settles replaced, then simplified."""
    return simplify(transform(e, lambda x: decide(x, ranges)), ranges)


# ---- helpers ---------------------------------------------------------------------------------


def _is_decision(x: Expr) -> bool:
    return (isinstance(x, BinOp) and x.op in _THRESHOLDS and is_int(x.a.dtype) and x.a.dtype != "bool"
            and is_int(x.b.dtype) and x.b.dtype != "bool")


def _decided(x: BinOp, side: str) -> Expr:
    if x.op in ("min", "max"):
        a_smaller = side in ("low", "zero")
        return x.a if a_smaller == (x.op == "min") else x.b
    if x.op in ("lt", "le"):
        return const(side == "low")
    equal = side == "zero"
    return const(equal if x.op == "eq" else not equal)


def _form_bounds(terms: Mapping[Expr, int], offset: int, ranges: Ranges) -> tuple[int, int] | None:
    lo = hi = offset
    for atom, k in terms.items():
        b = bounds(atom, ranges)
        if b is None:
            return None
        lo += k * (b[0] if k > 0 else b[1])
        hi += k * (b[1] if k > 0 else b[0])
    return lo, hi


def _undecided(x: BinOp, var: str, ranges: Ranges) -> tuple[int, int] | None:
    """The values ``[lo, hi]`` of ``var`` (possibly empty, lo > hi) where decision ``x`` is not
    constant over the other variables' ranges; the decision is constant on each side of it.
    None when ``x`` does not depend on ``var`` affinely (or has unbounded terms)."""
    lf = linear_form(x.a - x.b)
    if lf is None:
        return None
    terms, offset = lf
    v = Var(var)
    c = terms.get(v, 0)
    if c == 0:
        return None
    rest = {a: k for a, k in terms.items() if a != v}
    if any(var in free_vars(a) for a in rest):
        return None
    r = _form_bounds(rest, offset, ranges)
    if r is None:
        return None
    lo_t, hi_t = _THRESHOLDS[x.op]
    # undecided iff c*v + max(rest) > lo_t and c*v + min(rest) < hi_t, i.e. c*v in (low, high)
    low, high = lo_t - r[1], hi_t - r[0]
    if c > 0:
        return low // c + 1, -((-high) // c) - 1
    return high // c + 1, -((-low) // c) - 1


def _map_stmt(s: Stmt, fn: Callable[[Expr], Expr], bound: str | None = None) -> Stmt:
    """``s`` with ``fn`` applied to every expression (stops below a loop that rebinds ``bound``)."""
    if isinstance(s, Store):
        return Store(s.buffer, tuple(fn(i) for i in s.indices), fn(s.value))
    if isinstance(s, Seq):
        return Seq([_map_stmt(b, fn, bound) for b in s.body])
    if isinstance(s, If):
        return If(fn(s.cond), _map_stmt(s.then, fn, bound))
    if isinstance(s, Allocate):
        return Allocate(s.buffer, _map_stmt(s.body, fn, bound))
    if isinstance(s, For):
        if s.var.name == bound:
            return s
        return For(s.var, s.extent, s.kind, _map_stmt(s.body, fn, bound))
    raise TypeError(f"loop partitioning: unknown statement {type(s).__name__}")


def _shift(s: Stmt, var: Var, offset: int) -> Stmt:
    """``s`` with ``var`` replaced by ``var + offset``."""
    env = {var.name: var + offset}
    return _map_stmt(s, lambda e: substitute(e, env), var.name)


def _split_cuts(s: Stmt, var: str, extent: int, ranges: dict[str, tuple[int, int]], cuts: set[int],
                flexible: list[tuple[int, int]], spans: list[tuple[int, int]]) -> None:
    """Collect the cut points of every decision in ``s`` affine in ``var`` (``ranges`` binds the
    loops around each expression): fixed ones, intervals where any point will do, and the spans of
    ``var`` where each decision is undecided."""
    def visit(e: Expr) -> None:
        if isinstance(e, Const | Var):
            return
        if isinstance(e, BinOp) and e.op in _CUT_OPS and _is_decision(e):
            u = _undecided(e, var, ranges)
            if u is not None:
                if u[0] <= u[1] + 1:
                    cuts.update(p for p in (u[0], u[1] + 1) if 0 < p < extent)
                else:  # both values hold on [hi + 1, lo - 1] (min(a, b) where a == b): cut anywhere there
                    flexible.append((u[1] + 1, u[0]))
                lo, hi = max(u[0], 0), min(u[1], extent - 1)
                if lo <= hi:
                    spans.append((lo, hi))
        for k in children(e):
            visit(k)

    if isinstance(s, Store):
        for e in (*s.indices, s.value):
            visit(e)
    elif isinstance(s, Seq):
        for b in s.body:
            _split_cuts(b, var, extent, ranges, cuts, flexible, spans)
    elif isinstance(s, If):
        visit(s.cond)
        _split_cuts(s.then, var, extent, ranges, cuts, flexible, spans)
    elif isinstance(s, Allocate):
        _split_cuts(s.body, var, extent, ranges, cuts, flexible, spans)
    elif isinstance(s, For) and s.var.name != var:
        inner = {**ranges, s.var.name: (0, s.extent - 1)}
        _split_cuts(s.body, var, extent, inner, cuts, flexible, spans)


def _interior(s: For, ranges: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    """The largest piece ``[a, b)`` of loop ``s`` on which every decision affine in its variable is
    constant, when splitting there pays; None otherwise."""
    cuts: set[int] = set()
    flexible: list[tuple[int, int]] = []
    spans: list[tuple[int, int]] = []
    _split_cuts(s.body, s.var.name, s.extent, ranges, cuts, flexible, spans)
    for lo, hi in sorted(flexible):
        if 0 < lo and hi < s.extent and not any(lo <= p <= hi for p in cuts):
            cuts.add(lo)
    if not cuts:
        return None
    points = [0, *sorted(cuts), s.extent]
    best: tuple[int, int] | None = None
    for a, b in zip(points, points[1:], strict=False):
        clean = all(hi < a or lo >= b for lo, hi in spans)
        if clean and (best is None or b - a > best[1] - best[0]):
            best = (a, b)
    if best is None:
        return None
    size = best[1] - best[0]
    if size < MIN_INTERIOR or size < MIN_INTERIOR_FRACTION * s.extent:
        return None
    return best


def iterations_independent(loop: For) -> bool:
    """Whether the iterations of ``loop`` touch disjoint memory, so that its pieces may run in any
    order. Buffers allocated in the body are private to an iteration; every other buffer the body
    stores to must be indexed, in some dimension, by the same ``c*v + e`` (``c != 0``, ``e`` fixed
    for the whole loop) in all its stores and loads."""
    v = loop.var.name
    private: set[int] = set()
    bound = {v}
    accesses: dict[int, list[tuple[Expr, ...]]] = {}
    stored: set[int] = set()

    def expr(e: Expr) -> None:
        for ld in loads_in(e):
            if isinstance(ld.tensor, Buffer):
                accesses.setdefault(id(ld.tensor), []).append(ld.indices)

    def visit(st: Stmt) -> None:
        if isinstance(st, Store):
            stored.add(id(st.buffer))
            accesses.setdefault(id(st.buffer), []).append(st.indices)
            for e in (*st.indices, st.value):
                expr(e)
        elif isinstance(st, Seq):
            for b in st.body:
                visit(b)
        elif isinstance(st, If):
            expr(st.cond)
            visit(st.then)
        elif isinstance(st, Allocate):
            private.add(id(st.buffer))
            visit(st.body)
        elif isinstance(st, For):
            bound.add(st.var.name)
            visit(st.body)

    visit(loop.body)
    for buf in stored - private:
        idx = accesses[buf]
        if not any(_slices(v, bound, [ix[d] for ix in idx]) for d in range(len(idx[0]))):
            return False
    return True


def _slices(v: str, bound: set[str], exprs: list[Expr]) -> bool:
    """Whether ``exprs`` are one and the same ``c*v + e`` with ``c != 0`` and ``e`` free of ``bound``."""
    first = exprs[0]
    if any(e != first for e in exprs[1:]):
        return False
    lf = linear_form(first)
    if lf is None or lf[0].get(Var(v), 0) == 0:
        return False
    return all(atom == Var(v) or not (free_vars(atom) & bound) for atom in lf[0])


class _Partitioner:
    def stmt(self, s: Stmt, ranges: dict[str, tuple[int, int]], copies: int) -> Stmt:
        if isinstance(s, For):
            return self.loop(s, ranges, copies)
        if isinstance(s, Seq):
            return Seq([self.stmt(b, ranges, copies) for b in s.body])
        if isinstance(s, Store):
            return Store(s.buffer, tuple(fold_decisions(i, ranges) for i in s.indices),
                         fold_decisions(s.value, ranges))
        if isinstance(s, If):
            cond = fold_decisions(s.cond, ranges)
            if isinstance(cond, Const):
                return self.stmt(s.then, ranges, copies) if cond.value else Seq([])
            return If(cond, self.stmt(s.then, ranges, copies))
        if isinstance(s, Allocate):
            return Allocate(s.buffer, self.stmt(s.body, ranges, copies))
        raise TypeError(f"loop partitioning: unknown statement {type(s).__name__}")

    def loop(self, s: For, ranges: dict[str, tuple[int, int]], copies: int) -> Stmt:
        piece = _interior(s, ranges) if s.kind == "serial" and s.extent > 1 else None
        if piece is None:
            return self.whole(s, ranges, copies)
        a, b = piece
        parts = [(lo, hi) for lo, hi in ((0, a), (a, b), (b, s.extent)) if hi > lo]
        if copies * len(parts) > MAX_COPIES:
            return self.whole(s, ranges, copies)
        if iterations_independent(s):
            # interior first: GCC leaves an inner loop scalar when straight-line code (an unrolled
            # one-iteration prologue) precedes it in the enclosing loop's body
            parts.sort(key=lambda p: p != piece)
        out: list[Stmt] = []
        for lo, hi in parts:
            sub = For(s.var, hi - lo, s.kind, _shift(s.body, s.var, lo) if lo else s.body)
            # the interior is condition-free; the other pieces may split again
            out.append(self.whole(sub, ranges, copies * len(parts)) if (lo, hi) == piece
                       else self.loop(sub, ranges, copies * len(parts)))
        return Seq(out)

    def whole(self, s: For, ranges: dict[str, tuple[int, int]], copies: int) -> For:
        inner = {**ranges, s.var.name: (0, s.extent - 1)}
        return For(s.var, s.extent, s.kind, self.stmt(s.body, inner, copies))


__all__ = ["decide", "fold_decisions", "iterations_independent", "partition_loops"]
