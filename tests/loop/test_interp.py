"""The loop-IR interpreter against NumPy on hand-built kernels."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.loop.expr import Expr, Load, Var, call, cast, const, maximum, minimum, select
from tessera.loop.interp import run_kernel
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq, Store

RNG = np.random.default_rng(7)


def ld(buf: Buffer, *idx: Expr | int) -> Load:
    return Load(buf, tuple(const(i) if isinstance(i, int) else i for i in idx), buf.dtype)


def st(buf: Buffer, idx: tuple[Expr | int, ...], value: Expr) -> Store:
    return Store(buf, tuple(const(i) if isinstance(i, int) else i for i in idx), value)


class K:
    """Small hand-built kernels (the codegen tests have compiled versions of the same shapes)."""

    @staticmethod
    def elementwise_add(rows: int, cols: int, tile: int) -> Kernel:
        a, b, c = (Buffer(n, (rows, cols), "f32") for n in ("A", "B", "C"))
        i, jo, ji = Var("i"), Var("j.o"), Var("j.i")
        j = jo * tile + ji
        body = For(i, rows, "parallel", For(jo, cols // tile, "unrolled",
                                            For(ji, tile, "vectorized", st(c, (i, j), ld(a, i, j) + ld(b, i, j)))))
        return Kernel("ew_add", [a, b, c], body, 2)

    @staticmethod
    def tiled_matmul(m: int, n: int, k: int, ti: int = 4, tj: int = 16) -> Kernel:
        a, b, c = Buffer("A", (m, k), "f32"), Buffer("B", (k, n), "f32"), Buffer("C", (m, n), "f32")
        acc = Buffer("acc", (ti, tj), "f32", "local")
        io, jo, kk, ii, ji = Var("i.o"), Var("j.o"), Var("k"), Var("i.i"), Var("j.i")
        row, col = io * ti + ii, jo * tj + ji

        def tile(s: Store) -> For:
            return For(ii, ti, "unrolled", For(ji, tj, "vectorized", s))

        body = Seq([
            tile(st(acc, (ii, ji), const(0.0, "f32"))),
            For(kk, k, "serial", tile(st(acc, (ii, ji), ld(acc, ii, ji) + ld(a, row, kk) * ld(b, kk, col)))),
            tile(st(c, (row, col), maximum(ld(acc, ii, ji), const(0.0, "f32")))),
        ])
        return Kernel("matmul", [a, b, c], For(io, m // ti, "parallel", For(jo, n // tj, "serial",
                                                                              Allocate(acc, body))), 2)

    @staticmethod
    def int_ops(n: int) -> Kernel:
        x, y, z = Buffer("x", (n,), "i64"), Buffer("y", (n,), "i64"), Buffer("z", (n,), "i32")
        outs = [Buffer(f"o{t}", (n,), "i64") for t in range(3)]
        o32 = Buffer("o32", (n,), "i32")
        i = Var("i")
        xi, yi, zi = ld(x, i), ld(y, i), ld(z, i)
        stores = [st(o, (i,), v) for o, v in zip(outs, [xi // yi, xi % yi, xi / yi], strict=True)]
        stores.append(st(o32, (i,), minimum(zi, const(3, "i32")) + zi * zi - zi // const(-3, "i32")))
        return Kernel("int_ops", [x, y, z, *outs, o32], For(i, n, "serial", Seq(stores)), 3)

    @staticmethod
    def select_cast(n: int) -> Kernel:
        x = Buffer("x", (n,), "f32")
        lk, tr, pos, back = (Buffer("leaky", (n,), "f32"), Buffer("trunc", (n,), "i32"), Buffer("pos", (n,), "bool"),
                             Buffer("back", (n,), "f32"))
        i = Var("i")
        xi = ld(x, i)
        body = For(i, n, "vectorized", Seq([
            st(lk, (i,), select(xi.gt(const(0.0, "f32")), xi, xi * const(0.1, "f32"))),
            st(tr, (i,), cast(xi * const(3.0, "f32"), "i32")),
            st(pos, (i,), xi.ge(const(0.0, "f32"))),
            st(back, (i,), cast(ld(pos, i), "f32") * const(2.0, "f32") - cast(ld(tr, i), "f32")),
        ]))
        return Kernel("select_cast", [x, lk, tr, pos, back], body, 1)

    @staticmethod
    def pad_shift(n: int) -> Kernel:
        x, y = Buffer("x", (n,), "f32"), Buffer("y", (n,), "f32")
        i = Var("i")
        body = For(i, n, "vectorized", st(y, (i,), select(i.ge(1), ld(x, i - 1), const(-1.0, "f32"))))
        return Kernel("pad_shift", [x, y], body, 1)

    @staticmethod
    def relu_affine(cols: int) -> Kernel:
        x, y, b = Buffer("X", (1, cols), "f32"), Buffer("Y", (1, cols), "f32"), Buffer("b", (cols,), "f32")
        j = Var("j")
        body = For(j, cols, "vectorized", st(y, (0, j), maximum(ld(x, 0, j) + ld(b, j), const(0.0, "f32"))))
        return Kernel("relu_affine", [x, b, y], body, 2)


def test_elementwise_add_all_loop_kinds() -> None:
    k = K.elementwise_add(rows=4, cols=64, tile=16)
    a, b = (RNG.standard_normal((4, 64), dtype=np.float32) for _ in range(2))
    c = np.zeros((4, 64), np.float32)
    run_kernel(k, [a, b, c])
    np.testing.assert_array_equal(c, a + b)


def test_tiled_matmul() -> None:
    k = K.tiled_matmul(8, 32, 12)  # 2 x 2 tiles of 4 x 16
    a = RNG.standard_normal((8, 12), dtype=np.float32)
    b = RNG.standard_normal((12, 32), dtype=np.float32)
    c = np.zeros((8, 32), np.float32)
    run_kernel(k, [a, b, c])
    np.testing.assert_allclose(c, np.maximum(a @ b, 0), rtol=1e-5, atol=1e-5)


def test_float32_arithmetic_stays_float32() -> None:
    x, y = Buffer("x", (3,), "f32"), Buffer("y", (3,), "f32")
    i = Var("i")
    k = Kernel("k", [x, y], For(i, 3, "serial", st(y, (i,), ld(x, i) * const(1 / 3, "f32") + const(1e-8, "f32"))), 1)
    xv = np.array([1.0, 3.0, 7.0], np.float32)
    yv = np.zeros(3, np.float32)
    run_kernel(k, [xv, yv])
    np.testing.assert_array_equal(yv, xv * np.float32(1 / 3) + np.float32(1e-8))


def test_integer_division_semantics() -> None:
    k = K.int_ops(n=16)
    x = np.array([-7, 7, -7, 7, 0, -1, 5, -5, 9, -9, 3, -3, 100, -100, 1, 0], np.int64)
    y = np.array([2, -2, -2, 2, 3, 4, 0, 0, 4, 4, -5, 5, 7, -7, 1, -1], np.int64)
    z = np.arange(-8, 8, dtype=np.int32)
    outs = [np.zeros(16, np.int64) for _ in range(3)] + [np.zeros(16, np.int32)]
    run_kernel(k, [x, y, z, *outs])
    safe = np.where(y == 0, 1, y)
    np.testing.assert_array_equal(outs[0], np.where(y == 0, 0, x // safe))
    np.testing.assert_array_equal(outs[1], np.where(y == 0, 0, x % safe))
    np.testing.assert_array_equal(outs[2], np.where(y == 0, 0, np.trunc(x / safe)).astype(np.int64))
    assert outs[0][0] == -4 and outs[1][0] == 1 and outs[2][0] == -3  # -7 // 2, -7 % 2, trunc(-7 / 2)
    np.testing.assert_array_equal(outs[3], np.minimum(z, 3) + z * z - z // -3)


def test_select_cast_and_bool() -> None:
    k = K.select_cast(n=8)
    x = np.array([-2.7, -0.5, 0.0, 0.4, 1.6, 2.5, -3.3, 9.9], np.float32)
    outs = [np.zeros(8, np.float32), np.zeros(8, np.int32), np.zeros(8, np.bool_), np.zeros(8, np.float32)]
    run_kernel(k, [x, *outs])
    np.testing.assert_array_equal(outs[0], np.where(x > 0, x, x * np.float32(0.1)))
    np.testing.assert_array_equal(outs[1], (x * np.float32(3)).astype(np.int32))
    np.testing.assert_array_equal(outs[2], x >= 0)
    np.testing.assert_array_equal(outs[3], (x >= 0).astype(np.float32) * 2 - outs[1])


def test_math_calls_including_erf() -> None:
    import math

    x = Buffer("x", (5,), "f32")
    o1, o2, o3 = Buffer("o1", (5,), "f32"), Buffer("o2", (5,), "f32"), Buffer("o3", (5,), "i32")
    i = Var("i")
    k = Kernel("m", [x, o1, o2, o3], For(i, 5, "vectorized", Seq([
        st(o1, (i,), call("erf", ld(x, i))), st(o2, (i,), call("sigmoid", ld(x, i))),
        st(o3, (i,), cast(call("round", ld(x, i)), "i32"))])), 1)
    xv = np.array([-1.5, -0.5, 0.5, 1.5, 2.5], np.float32)
    outs = [np.zeros(5, np.float32), np.zeros(5, np.float32), np.zeros(5, np.int32)]
    run_kernel(k, [xv, *outs])
    np.testing.assert_allclose(outs[0], [math.erf(v) for v in xv], rtol=1e-6)
    np.testing.assert_allclose(outs[1], 1 / (1 + np.exp(-xv)), rtol=1e-6)
    np.testing.assert_array_equal(outs[2], [-2, 0, 0, 2, 2])  # half to even


def test_select_evaluates_only_the_chosen_branch() -> None:
    k = K.pad_shift(n=6)
    x = np.arange(6, dtype=np.float32)
    y = np.zeros(6, np.float32)
    run_kernel(k, [x, y])  # x[-1] would be read at i = 0 if both branches were evaluated
    np.testing.assert_array_equal(y, [-1, 0, 1, 2, 3, 4])


def test_nan_propagating_min_max() -> None:
    k = K.relu_affine(cols=4)
    x = np.array([[np.nan, -1.0, 2.0, 0.5]], np.float32)
    y = np.zeros((1, 4), np.float32)
    run_kernel(k, [x, np.zeros(4, np.float32), y])
    assert np.isnan(y[0, 0])
    np.testing.assert_array_equal(y[0, 1:], [0.0, 2.0, 0.5])


def test_uninitialized_local_reads_nan_and_if() -> None:
    x, y = Buffer("x", (4,), "f32"), Buffer("y", (4,), "f32")
    tmp = Buffer("tmp", (4,), "f32", "local")
    i = Var("i")
    body = Allocate(tmp, For(i, 4, "serial", Seq([
        If(ld(x, i).lt(const(0.0, "f32")), st(tmp, (i,), const(5.0, "f32"))),
        st(y, (i,), ld(tmp, i)),
    ])))
    k = Kernel("k", [x, y], body, 1)
    yv = np.zeros(4, np.float32)
    run_kernel(k, [np.array([-1, 1, -1, 1], np.float32), yv])
    assert yv[0] == 5 and yv[2] == 5 and np.isnan(yv[1]) and np.isnan(yv[3])


def test_out_of_bounds_access_raises() -> None:
    x, y = Buffer("x", (4,), "f32"), Buffer("y", (4,), "f32")
    i = Var("i")
    k = Kernel("k", [x, y], For(i, 4, "serial", st(y, (i,), ld(x, i - 1))), 1)
    with pytest.raises(IndexError, match=r"x\[-1\] out of bounds"):
        run_kernel(k, [np.zeros(4, np.float32), np.zeros(4, np.float32)])


def test_argument_validation() -> None:
    k = K.elementwise_add(rows=2, cols=32, tile=16)
    good = np.zeros((2, 32), np.float32)
    with pytest.raises(ValueError, match="takes 3 arrays, got 2"):
        run_kernel(k, [good, good])
    with pytest.raises(ValueError, match=r"expected f32\[2, 32\], got float64\[2, 32\]"):
        run_kernel(k, [good, np.zeros((2, 32)), good])
