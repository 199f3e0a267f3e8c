"""Loop partitioning (tessera.loop.partition) on hand-built kernels: structure of the split loops
and numerics through the loop interpreter against NumPy (sums rtol/atol 1e-5, copies exact).
Compiler-lowered pooling/convolution kernels: tests/compiler/test_loop_partition.py."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tessera.loop.expr import BinOp, Expr, Load, Select, Var, const, logical_and, maximum, minimum, walk
from tessera.loop.expr import select as sel
from tessera.loop.interp import run_kernel
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq, Stmt, Store, walk_stmts
from tessera.loop.partition import MIN_INTERIOR, decide, fold_decisions, iterations_independent, partition_loops
from tessera.loop.te_eval import np_dtype

RNG = np.random.default_rng(11)


# ---- helpers -------------------------------------------------------------------------------------


def loops(s: Stmt) -> Iterator[For]:
    return (x for x in walk_stmts(s) if isinstance(x, For))


def stores(s: Stmt) -> Iterator[Store]:
    return (x for x in walk_stmts(s) if isinstance(x, Store))


def has_checks(s: Stmt) -> bool:
    """Whether any store under ``s`` has a Select or an integer min/max (a clamp), or any If."""
    if any(isinstance(x, If) for x in walk_stmts(s)):
        return True
    for st in stores(s):
        for e in (*st.indices, st.value):
            for x in walk(e):
                if isinstance(x, Select) or (isinstance(x, BinOp) and x.op in ("min", "max") and x.dtype == "i64"):
                    return True
    return False


def run(k: Kernel, *inputs: np.ndarray) -> list[np.ndarray]:
    args = [*inputs]
    for b in k.params[len(inputs):]:
        args.append(np.zeros(b.shape, np_dtype(b.dtype)))
    run_kernel(k, args)
    return args[len(inputs):]


def ld(buf: Buffer, *idx: Expr) -> Load:
    return Load(buf, tuple(idx), buf.dtype)


def window_sum_1d(n: int, k: int, pad: int, kind: str = "serial") -> Kernel:
    """out[o] = sum_t x[o + t - pad] (zero outside), o < n + 2*pad - k + 1, as a pool/conv would emit it."""
    out_n = n + 2 * pad - k + 1
    x, y = Buffer("x", (n,), "f32"), Buffer("y", (out_n,), "f32")
    acc = Buffer("acc", (1,), "f32", "local")
    o, t = Var("o"), Var("t")
    pos = o + t - pad
    inside = logical_and(pos.ge(0), pos.lt(n))
    tap = sel(inside, ld(x, minimum(maximum(pos, 0), n - 1)), const(0.0, "f32"))
    z = (const(0),)
    body = Allocate(acc, Seq([
        Store(acc, z, const(0.0, "f32")),
        For(t, k, "serial", Store(acc, z, ld(acc, *z) + tap)),
        Store(y, (o,), ld(acc, *z)),
    ]))
    return Kernel("wsum", [x, y], For(o, out_n, kind, body), 1)


def window_sum_ref(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    xp = np.pad(x, pad)
    return np.array([xp[i:i + k].sum() for i in range(len(xp) - k + 1)], np.float32)


# ---- decisions -----------------------------------------------------------------------------------


def test_decide_uses_the_difference_of_operands() -> None:
    i, t = Var("i"), Var("t")
    r = {"i": (0, 100), "t": (0, 2)}
    # per-operand bounds overlap, the difference (t - 3) is always negative
    assert decide((i + t).lt(i + 3), r) == const(True)
    assert decide((i + t).ge(i + 3), r) == const(False)
    assert decide(minimum(i + t, i + 2), r) == i + t
    assert decide(maximum(i + t - 1, i - 1), r) == i + t - 1
    assert decide((i * 2 + t).eq(i * 2 + 5), r) == const(False)
    assert decide((i + 0 * t).ne(i), r) == const(False)
    assert decide((i + t).lt(i + 2), r) is None  # t = 2 makes it false, t = 0 true
    assert decide(i.lt(Var("unbounded")), r) is None
    # float comparisons are never decided by index ranges
    f = Var("f", "f32")
    assert decide(f.lt(const(1.0, "f32")), r) is None


def test_fold_decisions_folds_and_with_true() -> None:
    i = Var("i")
    e = logical_and(const(1).le(i), (i + 1).lt(Var("n")))
    assert fold_decisions(e, {"i": (1, 5), "n": (0, 100)}) == (i + 1).lt(Var("n"))


# ---- structure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,pad", [(20, 3, 1), (9, 3, 1), (16, 5, 2), (17, 3, 0)])
def test_window_loop_splits_into_prologue_interior_epilogue(n: int, k: int, pad: int) -> None:
    kern = window_sum_1d(n, k, pad)
    out = partition_loops(kern)
    top = out.body
    out_n = n + 2 * pad - k + 1
    if pad == 0:  # no padding: nothing to split, the (always true) checks are folded
        assert isinstance(top, For) and top.extent == out_n
    else:
        assert isinstance(top, Seq)
        # iterations are independent: the interior comes first, then the prologue and the epilogue
        extents = [s.extent for s in top.body if isinstance(s, For)]
        assert extents == [out_n - 2 * pad, pad, pad]
        interior = top.body[0]
        assert not has_checks(interior)
        assert has_checks(top.body[1]) and has_checks(top.body[2])
    assert not has_checks(out.body) if pad == 0 else True
    x = RNG.standard_normal(n).astype(np.float32)
    (y,) = run(out, x)
    np.testing.assert_allclose(y, window_sum_ref(x, k, pad), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tiny_or_empty_interior_is_not_split(n: int) -> None:
    kern = window_sum_1d(n, 3, 1)
    out = partition_loops(kern)
    assert isinstance(out.body, For) and out.body.extent == n
    x = RNG.standard_normal(n).astype(np.float32)
    (y,) = run(out, x)
    np.testing.assert_allclose(y, window_sum_ref(x, 3, 1), rtol=1e-5, atol=1e-5)
    assert n - 2 < MIN_INTERIOR


def test_parallel_loop_is_not_split() -> None:
    out = partition_loops(window_sum_1d(40, 3, 1, "parallel"))
    assert isinstance(out.body, For) and out.body.kind == "parallel" and out.body.extent == 40


def test_inner_serial_loops_split_under_a_parallel_loop() -> None:
    """2-D window sum (rows x cols) over a parallel channel loop: both spatial loops split, the
    channel loop stays one parallel loop, and only the interior copy is free of checks."""
    c, h, w = 3, 9, 11
    x, y = Buffer("x", (c, h, w), "f32"), Buffer("y", (c, h, w), "f32")
    acc = Buffer("acc", (1,), "f32", "local")
    ch, oh, ow, kh, kw = (Var(n) for n in ("c", "oh", "ow", "kh", "kw"))
    ph, pw = oh + kh - 1, ow + kw - 1
    inside = logical_and(ph.ge(0), ph.lt(h), pw.ge(0), pw.lt(w))
    tap = sel(inside, ld(x, ch, minimum(maximum(ph, 0), h - 1), minimum(maximum(pw, 0), w - 1)), const(0.0, "f32"))
    z = (const(0),)
    inner = Allocate(acc, Seq([
        Store(acc, z, const(0.0, "f32")),
        For(kh, 3, "serial", For(kw, 3, "serial", Store(acc, z, ld(acc, *z) + tap))),
        Store(y, (ch, oh, ow), ld(acc, *z))]))
    kern = Kernel("box", [x, y], For(ch, c, "parallel", For(oh, h, "serial", For(ow, w, "serial", inner))), 1)
    out = partition_loops(kern)
    assert isinstance(out.body, For) and out.body.kind == "parallel"
    row_loops = [lp for lp in loops(out.body) if lp.var.name == "oh"]
    col_loops = [lp for lp in loops(out.body) if lp.var.name == "ow"]
    assert sorted(lp.extent for lp in row_loops) == [1, 1, h - 2]
    assert sorted(lp.extent for lp in col_loops) == sorted([1, 1, w - 2] * 3)
    clean = [lp for lp in col_loops if not has_checks(lp)]
    assert len(clean) == 1 and clean[0].extent == w - 2
    xv = RNG.standard_normal((c, h, w)).astype(np.float32)
    (yv,) = run(out, xv)
    xp = np.pad(xv, ((0, 0), (1, 1), (1, 1)))
    want = sum(xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    np.testing.assert_allclose(yv, want, rtol=1e-5, atol=1e-5)


def test_cut_without_undecided_span_splits_a_select_of_two_sources() -> None:
    """out[i] = a[i] for i < 30 else b[i - 30] (a concat): two select-free loops."""
    a, b, y = Buffer("a", (30,), "f32"), Buffer("b", (34,), "f32"), Buffer("y", (64,), "f32")
    i = Var("i")
    v = sel(i.lt(30), ld(a, minimum(i, 29)), ld(b, maximum(i - 30, 0)))
    out = partition_loops(Kernel("cat", [a, b, y], For(i, 64, "serial", Store(y, (i,), v)), 2))
    assert isinstance(out.body, Seq) and [s.extent for s in out.body.body] == [34, 30]  # type: ignore[attr-defined]
    assert not has_checks(out.body)
    av, bv = RNG.standard_normal(30).astype(np.float32), RNG.standard_normal(34).astype(np.float32)
    (yv,) = run(out, av, bv)
    np.testing.assert_array_equal(yv, np.concatenate([av, bv]))


def test_guard_if_leaves_the_interior() -> None:
    """A padded tile loop (70 iterations over 64 elements) guarded by ``if i < 64``."""
    x, y = Buffer("x", (64,), "f32"), Buffer("y", (64,), "f32")
    i = Var("i")
    body = If(i.lt(64), Store(y, (minimum(i, 63),), ld(x, minimum(i, 63)) * 2.0))
    out = partition_loops(Kernel("g", [x, y], For(i, 70, "serial", body), 1))
    assert isinstance(out.body, Seq)
    first, rest = out.body.body
    assert isinstance(first, For) and first.extent == 64 and not has_checks(first)
    assert isinstance(rest, For) and not list(stores(rest))  # the guard is false there: nothing left
    xv = RNG.standard_normal(64).astype(np.float32)
    (yv,) = run(out, xv)
    np.testing.assert_array_equal(yv, xv * 2)


def test_copies_are_bounded() -> None:
    """Four nested padded window loops: at most MAX_COPIES copies of the body."""
    from tessera.loop.partition import MAX_COPIES

    n = 8
    x, y = Buffer("x", (n,) * 4, "f32"), Buffer("y", (n,) * 4, "f32")
    vs = [Var(f"v{d}") for d in range(4)]
    pos = [v + 1 for v in vs]
    inside = logical_and(*(p.lt(n) for p in pos))
    val = sel(inside, ld(x, *(minimum(p, n - 1) for p in pos)), const(0.0, "f32"))
    s: Stmt = Store(y, tuple(vs), val)
    for v in reversed(vs):
        s = For(v, n, "serial", s)
    out = partition_loops(Kernel("shift4", [x, y], s, 1))
    assert 1 < len(list(stores(out.body))) <= MAX_COPIES
    xv = RNG.standard_normal((n,) * 4).astype(np.float32)
    (yv,) = run(out, xv)
    want = np.zeros_like(xv)
    want[:-1, :-1, :-1, :-1] = xv[1:, 1:, 1:, 1:]
    np.testing.assert_array_equal(yv, want)


def test_equalities_are_not_cut_points() -> None:
    """``kb == 0`` / ``kb == last`` (a blocked reduction's first/last block) would peel the whole
    block body for a branch taken once per block: the loop stays whole."""
    y = Buffer("y", (10,), "f32")
    kb = Var("kb")
    body = Seq([Store(y, (kb,), sel(kb.eq(0), const(1.0, "f32"), const(2.0, "f32"))),
                If(kb.eq(9), Store(y, (kb,), const(3.0, "f32")))])
    out = partition_loops(Kernel("blocks", [y], For(kb, 10, "serial", body), 0))
    assert isinstance(out.body, For) and out.body.extent == 10
    (yv,) = run(out)
    np.testing.assert_array_equal(yv, [1.0] + [2.0] * 8 + [3.0])


def test_dependent_iterations_keep_their_order() -> None:
    """A padded 1-D window summed by the partitioned loop itself (one accumulator across iterations):
    the pieces stay in loop order (the sum's rounding follows the original order)."""
    n = 20
    x, y = Buffer("x", (n,), "f32"), Buffer("y", (1,), "f32")
    acc = Buffer("acc", (1,), "f32", "local")
    t = Var("t")
    z = (const(0),)
    tap = sel(logical_and(t.ge(1), t.lt(n + 1)), ld(x, minimum(maximum(t - 1, 0), n - 1)), const(0.0, "f32"))
    loop = For(t, n + 2, "serial", Store(acc, z, ld(acc, *z) + tap))
    assert not iterations_independent(loop)
    assert iterations_independent(window_sum_1d(9, 3, 1).body)  # type: ignore[arg-type]
    body = Allocate(acc, Seq([Store(acc, z, const(0.0, "f32")), loop, Store(y, z, ld(acc, *z))]))
    out = partition_loops(Kernel("total", [x, y], body, 1))
    pieces = [lp for lp in loops(out.body) if lp.var.name == "t"]
    assert [lp.extent for lp in pieces] == [1, n, 1]
    xv = RNG.standard_normal(n).astype(np.float32)
    (yv,) = run(out, xv)
    want = np.float32(0)
    for v in xv:  # the same order of float32 additions
        want = np.float32(want + v)
    assert yv[0] == want
