"""Generated C vs NumPy and the loop-IR interpreter on hand-built kernels."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tessera.loop.expr import Var, call, cast, const, logical_and, maximum, minimum, select
from tessera.loop.interp import run_kernel
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq
from tessera.loop.te_eval import np_dtype

from . import kernels as K
from .kernels import ld, st

RNG = np.random.default_rng(1234)


def _arrays(kernel: Kernel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outs = [np.zeros(b.shape, np_dtype(b.dtype)) for b in kernel.outputs]
    return [np.ascontiguousarray(x) for x in inputs] + outs


def _run_both(build, kernel: Kernel, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outputs of the compiled kernel and of the interpreter."""
    c_args, i_args = _arrays(kernel, inputs), _arrays(kernel, inputs)
    build([kernel]).run(kernel, c_args)
    run_kernel(kernel, i_args)
    n = kernel.num_inputs
    return c_args[n:], i_args[n:]


def test_elementwise_add(build) -> None:
    k = K.elementwise_add()
    a, b = (RNG.standard_normal((16, 256), dtype=np.float32) for _ in range(2))
    (c,), (ci,) = _run_both(build, k, [a, b])
    np.testing.assert_array_equal(c, a + b)
    np.testing.assert_array_equal(ci, a + b)


def test_broadcast_and_nan_propagating_max(build) -> None:
    k = K.broadcast_affine()
    x = RNG.standard_normal((8, 64), dtype=np.float32)
    x[2, 5] = np.nan
    s, b = RNG.standard_normal(8, dtype=np.float32), RNG.standard_normal(64, dtype=np.float32)
    (y,), (yi,) = _run_both(build, k, [x, s, b])
    want = np.maximum(x * s[:, None] + b, 0)
    assert np.isnan(y[2, 5]) and np.isnan(yi[2, 5])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(yi, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [K.row_sum, K.row_sum_lanes])
def test_reduction_with_local_accumulator(build, make) -> None:
    k = make()
    x = RNG.standard_normal(k.params[0].shape, dtype=np.float32)
    (out,), (outi,) = _run_both(build, k, [x])
    want = x.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outi, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,n,kk", [(64, 64, 64), (96, 128, 80)])
def test_tiled_matmul(build, m: int, n: int, kk: int) -> None:
    k = K.tiled_matmul(m, n, kk)
    a = RNG.standard_normal((m, kk), dtype=np.float32)
    b = RNG.standard_normal((kk, n), dtype=np.float32)
    c = np.zeros((m, n), np.float32)
    build([k]).run(k, [a, b, c])
    want = np.maximum(a.astype(np.float64) @ b.astype(np.float64), 0)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-4)


def test_tiled_matmul_matches_interpreter(build) -> None:
    k = K.tiled_matmul(16, 32, 24, relu=False)
    a = RNG.standard_normal((16, 24), dtype=np.float32)
    b = RNG.standard_normal((24, 32), dtype=np.float32)
    (c,), (ci,) = _run_both(build, k, [a, b])
    np.testing.assert_allclose(c, ci, rtol=1e-5, atol=1e-5)


def test_integer_floor_semantics(build) -> None:
    k = K.int_ops()
    x = RNG.integers(-50, 50, 64).astype(np.int64)
    y = RNG.integers(-7, 8, 64).astype(np.int64)
    y[:3] = 0  # division by zero gives 0, as in NumPy
    z = RNG.integers(-100, 100, 64).astype(np.int32)
    outs, outs_i = _run_both(build, k, [x, y, z])
    safe = np.where(y == 0, 1, y)
    trunc = np.where(y == 0, 0, np.trunc(x / safe).astype(np.int64))
    want = [np.where(y == 0, 0, x // safe), np.where(y == 0, 0, x % safe), trunc,
            np.minimum(x, y) * 3 - np.maximum(x, y), (x // 4) * 7 + x % 5,
            (np.minimum(z, 3) + z * z - z // -3).astype(np.int32)]
    for got, got_i, w in zip(outs, outs_i, want, strict=True):
        np.testing.assert_array_equal(got, w)
        np.testing.assert_array_equal(got_i, w)


def test_select_and_casts(build) -> None:
    k = K.select_cast()
    x = (RNG.standard_normal(64) * 4).astype(np.float32)
    x[:4] = [-0.0, 0.0, -2.5, 2.5]
    outs, outs_i = _run_both(build, k, [x])
    trunc = (x * np.float32(3)).astype(np.int32)
    pos = x >= 0
    want = [np.where(x > 0, x, x * np.float32(0.1)), trunc, pos, pos.astype(np.float32) * 2 - trunc]
    for got, got_i, w in zip(outs, outs_i, want, strict=True):
        np.testing.assert_array_equal(got, w)
        np.testing.assert_array_equal(got_i, w)


def test_math_calls(build) -> None:
    import math

    k = K.math_calls()
    x = (RNG.standard_normal(64) * 2).astype(np.float32)
    x[:4] = [0.5, 1.5, 2.5, -0.5]  # round half to even
    outs, outs_i = _run_both(build, k, [x])
    ax = np.abs(x) + np.float32(0.5)
    want = [np.exp(x), np.tanh(x), np.array([math.erf(v) for v in x], np.float32), 1 / (1 + np.exp(-x)),
            1 / np.sqrt(ax), np.round(x), np.sqrt(ax), np.log(ax), np.abs(x), np.floor(x)]
    for got, got_i, w in zip(outs, outs_i, want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_i, w, rtol=1e-5, atol=1e-6)


def test_guarded_out_of_bounds_load(build) -> None:
    k = K.pad_shift()
    x = RNG.standard_normal(64, dtype=np.float32)
    (y,), (yi,) = _run_both(build, k, [x])
    want = np.concatenate([[-1.0], x[:-1]]).astype(np.float32)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(yi, want)


def _vector_reduction(n: int = 64) -> Kernel:
    """A 'vectorized' loop that is really a reduction (store invariant in the vector variable)."""
    x, out = Buffer("x", (n,), "f32"), Buffer("out", (1,), "f32")
    j = Var("j")
    body = Seq([st(out, (0,), const(0.0, "f32")),
                For(j, n, "vectorized", st(out, (0,), ld(out, 0) + ld(x, j)))])
    return Kernel("vec_reduction", [x, out], body, 1)


def _odd_extent(n: int = 20) -> Kernel:
    """A vectorized loop whose extent is not a multiple of the lanes, plus an f64 chain."""
    x, y = Buffer("x", (n,), "f64"), Buffer("y", (n,), "f64")
    i = Var("i")
    return Kernel("odd_extent", [x, y],
                  For(i, n, "vectorized", st(y, (i,), ld(x, i) * ld(x, i) - const(1.5, "f64"))), 1)


def _local_array_and_workspace(n: int = 16) -> Kernel:
    """A local buffer indexed by a serial loop (stays an array) and a heap workspace, with an If."""
    x, y = Buffer("x", (n,), "f32"), Buffer("y", (n,), "f32")
    tmp = Buffer("tmp", (n,), "f32", "local")
    ws = Buffer("ws", (n,), "f32", "global")
    i, j = Var("i"), Var("j")
    body = Allocate(tmp, Allocate(ws, Seq([
        For(i, n, "serial", st(tmp, (i,), ld(x, n - 1 - i))),
        For(i, n, "vectorized", st(ws, (i,), ld(tmp, i) * const(2.0, "f32"))),
        For(j, n, "unrolled", Seq([
            st(y, (j,), ld(ws, j)),
            If(ld(x, j).lt(const(0.0, "f32")), st(y, (j,), const(0.0, "f32"))),
        ])),
    ])))
    return Kernel("local_array", [x, y], body, 1)


def _narrow_ints(n: int = 64) -> Kernel:
    """i8 wrap-around, u8 arithmetic, bool and/or, i32->f32 vector cast."""
    a, b = Buffer("a", (n,), "i8"), Buffer("b", (n,), "u8")
    c = Buffer("c", (n,), "i32")
    o1, o2, o3, o4 = Buffer("o1", (n,), "i8"), Buffer("o2", (n,), "u8"), Buffer("o3", (n,), "bool"), \
        Buffer("o4", (n,), "f32")
    i = Var("i")
    ai, bi = ld(a, i), ld(b, i)
    both = ai.lt(const(0, "i8"))
    either = bi.gt(const(100, "u8"))
    body = For(i, n, "parallel", Seq([
        st(o1, (i,), ai * const(3, "i8") + const(100, "i8")),
        st(o2, (i,), maximum(bi, const(7, "u8")) - minimum(bi, const(3, "u8"))),
        st(o3, (i,), select(both, either, logical_and(both, either))),
    ]))
    vec = For(i, n, "vectorized", st(o4, (i,), cast(ld(c, i), "f32") * const(0.5, "f32")))
    return Kernel("narrow_ints", [a, b, c, o1, o2, o3, o4], Seq([body, vec]), 3)


def test_vectorized_reduction_falls_back_serially(build) -> None:
    k = _vector_reduction()
    x = RNG.standard_normal(64, dtype=np.float32)
    (out,), (outi,) = _run_both(build, k, [x])
    np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-5)
    np.testing.assert_allclose(outi[0], x.astype(np.float64).sum(), rtol=1e-5)


def test_odd_extent_f64(build) -> None:
    k = _odd_extent()
    x = RNG.standard_normal(20)
    (y,), (yi,) = _run_both(build, k, [x])
    np.testing.assert_allclose(y, x * x - 1.5, rtol=1e-12)
    np.testing.assert_allclose(yi, x * x - 1.5, rtol=1e-12)


def test_local_array_workspace_and_if(build) -> None:
    k = _local_array_and_workspace()
    x = RNG.standard_normal(16, dtype=np.float32)
    (y,), (yi,) = _run_both(build, k, [x])
    want = np.where(x < 0, 0, x[::-1] * 2).astype(np.float32)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(yi, want)


def test_narrow_integer_types_and_bool(build) -> None:
    k = _narrow_ints()
    a = RNG.integers(-128, 128, 64).astype(np.int8)
    b = RNG.integers(0, 256, 64).astype(np.uint8)
    c = RNG.integers(-1000, 1000, 64).astype(np.int32)
    outs, outs_i = _run_both(build, k, [a, b, c])
    neg, big = a < 0, b > 100
    with np.errstate(over="ignore"):
        want = [(a * np.int8(3) + np.int8(100)).astype(np.int8), np.maximum(b, 7) - np.minimum(b, 3),
                np.where(neg, big, neg & big), c.astype(np.float32) * np.float32(0.5)]
    for got, got_i, w in zip(outs, outs_i, want, strict=True):
        np.testing.assert_array_equal(got, w)
        np.testing.assert_array_equal(got_i, w)


def test_unary_calls_on_floats_and_ints(build) -> None:
    n = 32
    x, q = Buffer("x", (n,), "f32"), Buffer("q", (n,), "i32")
    outs = [Buffer(f"o{t}", (n,), dt) for t, dt in enumerate(["f32", "f32", "f32", "i32", "i32", "f32", "f32"])]
    i = Var("i")
    xi, qi = ld(x, i), ld(q, i)
    vals = [call("neg", xi), call("sign", xi), xi // const(0.75, "f32"), call("abs", qi), qi % const(-4, "i32"),
            xi % const(0.75, "f32"), call("pow", call("abs", xi), const(1.5, "f32"))]
    k = Kernel("unary_calls", [x, q, *outs],
               For(i, n, "vectorized", Seq([st(o, (i,), v) for o, v in zip(outs, vals, strict=True)])), 2)
    xv = (RNG.standard_normal(n) * 3).astype(np.float32)
    qv = RNG.integers(-20, 20, n).astype(np.int32)
    got, got_i = _run_both(build, k, [xv, qv])
    f = np.float32
    want = [-xv, np.sign(xv), xv // f(0.75), np.abs(qv), qv % np.int32(-4), xv % f(0.75), np.abs(xv) ** f(1.5)]
    for g, gi, w in zip(got, got_i, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gi, w, rtol=1e-5, atol=1e-6)


def _exp_tile(rows: int = 4, cols: int = 32) -> Kernel:
    """Row softmax numerators kept in a promoted tile written by a (scalar-fallback) exp loop."""
    x, y = Buffer("x", (rows, cols), "f32"), Buffer("y", (rows, cols), "f32")
    tile = Buffer("tile", (cols,), "f32", "local")
    tot = Buffer("tot", (1,), "f32", "local")
    i, j, r = Var("i"), Var("j"), Var("r")
    body = For(i, rows, "parallel", Allocate(tile, Allocate(tot, Seq([
        For(j, cols, "vectorized", st(tile, (j,), call("exp", ld(x, i, j)))),
        st(tot, (0,), const(0.0, "f32")),
        For(r, cols, "unrolled", st(tot, (0,), ld(tot, 0) + ld(tile, r))),
        For(j, cols, "vectorized", st(y, (i, j), ld(tile, j) / ld(tot, 0))),
    ]))))
    return Kernel("exp_tile", [x, y], body, 1)


def _misaligned_tile(n: int = 16) -> Kernel:
    """A local tile written by vector stores at an offset that is not a register boundary."""
    x, y = Buffer("x", (n,), "f32"), Buffer("y", (n,), "f32")
    tile = Buffer("tile", (n + 8,), "f32", "local")
    i = Var("i")
    body = Allocate(tile, Seq([
        For(i, n + 8, "vectorized", st(tile, (i,), const(0.0, "f32"))),
        For(i, n, "vectorized", st(tile, (i + 4,), ld(x, i) * const(2.0, "f32"))),
        For(i, n, "vectorized", st(y, (i,), ld(tile, i) + ld(tile, i + 4))),
    ]))
    return Kernel("misaligned_tile", [x, y], body, 1)


def test_math_loop_over_a_register_tile(build) -> None:
    k = _exp_tile()
    x = RNG.standard_normal((4, 32), dtype=np.float32)
    built = build([k])
    assert "tsr_f32x8 l0_0, l0_1, l0_2, l0_3;" in built.source  # the tile stayed in registers
    (y,), (yi,) = _run_both(build, k, [x])
    e = np.exp(x.astype(np.float64))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(yi, e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_misaligned_tile_falls_back_to_an_array(build) -> None:
    k = _misaligned_tile()
    x = RNG.standard_normal(16, dtype=np.float32)
    built = build([k])
    assert "float l0[24]" in built.source
    (y,), (yi,) = _run_both(build, k, [x])
    shifted = np.concatenate([np.zeros(4, np.float32), 2 * x])[:16]
    want = shifted + 2 * x
    np.testing.assert_allclose(y, want, rtol=1e-6)
    np.testing.assert_allclose(yi, want, rtol=1e-6)


def test_matmul_with_erf_epilogue(build) -> None:
    import math

    m, n, kk = 8, 32, 16
    k = K.tiled_matmul(m, n, kk, relu=False)
    # replace the epilogue store value by gelu(acc) (erf: a scalar-fallback loop over the register tile)
    epi = k.body.body.body.body.body[2]  # For i.i / For j.i / Store
    store = epi.body.body
    acc = store.value
    half = const(0.5, "f32")
    store.value = half * acc * (const(1.0, "f32") + call("erf", acc * const(0.70710678, "f32")))
    a = RNG.standard_normal((m, kk), dtype=np.float32)
    b = RNG.standard_normal((kk, n), dtype=np.float32)
    (c,), (ci,) = _run_both(build, k, [a, b])
    p = a.astype(np.float64) @ b
    want = 0.5 * p * (1 + np.vectorize(math.erf)(p * 0.70710678))
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ci, want, rtol=1e-5, atol=1e-5)


def test_unsigned_wraparound_and_float_to_unsigned_cast(build) -> None:
    n = 16
    a, f = Buffer("a", (n,), "u16"), Buffer("f", (n,), "f32")
    o1, o2 = Buffer("o1", (n,), "u16"), Buffer("o2", (n,), "u8")
    i = Var("i")
    body = For(i, n, "vectorized", Seq([st(o1, (i,), ld(a, i) * ld(a, i) + const(1, "u16")),
                                        st(o2, (i,), cast(ld(f, i), "u8"))]))
    k = Kernel("unsigned_ops", [a, f, o1, o2], body, 2)
    av = np.array([65535, 40000, 256, 3] * 4, np.uint16)
    fv = np.array([-1.5, -200.0, 3.7, 255.0] * 4, np.float32)
    (r1, r2), (i1, i2) = _run_both(build, k, [av, fv])
    with np.errstate(over="ignore", invalid="ignore"):
        w1, w2 = av * av + np.uint16(1), fv.astype(np.int64).astype(np.uint8)
    for got in (r1, i1):
        np.testing.assert_array_equal(got, w1)
    for got in (r2, i2):
        np.testing.assert_array_equal(got, w2)


def test_load_after_store_in_one_vector_step(build) -> None:
    n = 16
    x, y, z = Buffer("x", (n,), "f32"), Buffer("y", (n,), "f32"), Buffer("z", (n,), "f32")
    i = Var("i")
    body = Seq([
        For(i, n, "vectorized", st(y, (i,), ld(x, i))),
        For(i, n, "vectorized", Seq([st(y, (i,), ld(y, i) * const(2.0, "f32")),
                                     st(z, (i,), ld(y, i) + const(1.0, "f32"))])),
    ])
    k = Kernel("load_after_store", [x, y, z], body, 1)
    xv = RNG.standard_normal(n, dtype=np.float32)
    (yc, zc), (yi, zi) = _run_both(build, k, [xv])
    for got_y, got_z in ((yc, zc), (yi, zi)):
        np.testing.assert_array_equal(got_y, 2 * xv)
        np.testing.assert_array_equal(got_z, 2 * xv + 1)


@pytest.mark.parametrize("scope", ["local", "global"])  # a stack array / a heap buffer
def test_parallel_loop_inside_serial_loop_captures_locals_and_loop_vars(build, scope: str) -> None:
    """The outlined parallel loop sees the enclosing loop's variable and a buffer allocated outside it."""
    rows, n = 3, 1000  # > MAX_PROMOTED elements: the buffer is an array, not registers
    x, y = Buffer("x", (rows, n), "f32"), Buffer("y", (rows, n), "f32")
    tmp = Buffer("tmp", (n,), "f32", scope)
    b, i, j = Var("b"), Var("i"), Var("j")
    body = Allocate(tmp, Seq([
        For(i, n, "parallel", st(tmp, (i,), ld(x, b, i) * 2.0)),
        For(j, n, "serial", st(y, (b, j), ld(tmp, j) + ld(x, b, const(0)))),
    ]))
    k = Kernel("par_in_serial", [x, y], For(b, rows, "serial", body), 1)
    xv = RNG.standard_normal((rows, n), dtype=np.float32)
    (out,), (interp,) = _run_both(build, k, [xv])
    want = xv * 2 + xv[:, :1]
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(interp, want)
    src = build([k]).source
    assert "tsr_parallel_for(par_in_serial_par0_task, &tsr_ctx, 1000)" in src
    assert re.search(r"void par_in_serial_par0\(const float\* restrict p0, float\* restrict p1, "
                     r"float\* restrict l0, int64_t i0, int64_t lo, int64_t hi\)", src), src


@pytest.mark.parametrize("ti,accumulate", [(4, False), (6, False), (8, False), (4, True)])
def test_register_tile_stored_across_its_lanes(build, ti: int, accumulate: bool) -> None:
    """A tile vectorized along the output's strided axis is written through transposed registers
    (rows as vector lanes; 6 rows as two overlapping chunks of 4), unless the epilogue reads the
    output it writes; the results are the same either way."""
    m, n, kk = 24, 32, 40
    k = K.matmul_stored_transposed(m, n, kk, ti, accumulate)
    a = RNG.standard_normal((m, kk), dtype=np.float32)
    b = RNG.standard_normal((kk, n), dtype=np.float32)
    bias, r = RNG.standard_normal(n, dtype=np.float32), RNG.standard_normal((n, m), dtype=np.float32)
    r[3, 5] = np.nan
    ct = RNG.standard_normal((n, m), dtype=np.float32) if accumulate else np.zeros((n, m), np.float32)
    want = np.maximum((a.astype(np.float64) @ b).T + bias[:, None] + r, 0) + (ct if accumulate else 0)
    want[3, 5] = np.nan
    built = build([k])
    built.run(k, [a, b, bias, r, ct])
    np.testing.assert_allclose(ct, want, rtol=1e-5, atol=1e-4)
    assert ("__builtin_shuffle" in built.source) != accumulate


def test_float_to_int_casts_are_defined_for_nan_and_out_of_range(build) -> None:
    """Vectorized (f32 -> i32, f64 -> i64) and scalar casts give graph.ops.elementwise.float_to_int:
    NaN -> 0, beyond the range -> min/max (a C cast, and x86's cvtt*, give INT_MIN for both)."""
    from tessera.graph.ops.elementwise import float_to_int

    special = [np.nan, np.inf, -np.inf, 3e9, -3e9, 2.0**31, -(2.0**31), 2.0**63, -(2.0**63), 1e30, -0.0, 1.5, -1.5]
    n = 64
    x32, x64 = Buffer("x32", (n,), "f32"), Buffer("x64", (n,), "f64")
    outs = [Buffer("v32", (n,), "i32"), Buffer("v64", (n,), "i64"), Buffer("s8", (n,), "i8"),
            Buffer("s16", (n,), "u16"), Buffer("s32", (n,), "u32"), Buffer("s64", (n,), "u64")]
    i = Var("i")
    body = Seq([
        For(i, n, "vectorized", st(outs[0], (i,), cast(ld(x32, i), "i32"))),
        For(i, n, "vectorized", st(outs[1], (i,), cast(ld(x64, i), "i64"))),
        *[For(i, n, "serial", st(o, (i,), cast(ld(x32, i), o.dtype))) for o in outs[2:]],
    ])
    k = Kernel("f2i", [x32, x64, *outs], body, 2)
    xs = np.resize(np.array(special), n)
    a32, a64 = xs.astype(np.float32), xs.astype(np.float64)
    got = _arrays(k, [a32, a64])
    built = build([k])
    assert built.source.count("__builtin_convertvector") >= 2  # both vector loops are explicit vector code
    built.run(k, got)
    for o, y in zip(outs, got[2:], strict=True):
        src = a64 if o.dtype == "i64" else a32
        np.testing.assert_array_equal(y, float_to_int(src, np_dtype(o.dtype)), err_msg=o.dtype)

