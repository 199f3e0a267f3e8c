"""Hand-built loop-IR kernels shared by the codegen and interpreter tests."""

from __future__ import annotations

from tessera.loop.expr import Expr, Load, Var, call, cast, const, maximum, minimum, select
from tessera.loop.ir import Allocate, Buffer, For, Kernel, Seq, Store

LANES = {"f32": 8, "f64": 4, "i32": 8, "i64": 4, "u8": 32, "i8": 32, "i16": 16, "u16": 16, "u32": 8, "u64": 4}


def ld(buf: Buffer, *idx: Expr | int) -> Load:
    return Load(buf, tuple(const(i) if isinstance(i, int) else i for i in idx), buf.dtype)


def st(buf: Buffer, idx: tuple[Expr | int, ...], value: Expr) -> Store:
    return Store(buf, tuple(const(i) if isinstance(i, int) else i for i in idx), value)


def elementwise_add(rows: int = 16, cols: int = 256, tile: int = 32) -> Kernel:
    """C[i, j] = A[i, j] + B[i, j]: parallel rows, vectorized column tiles."""
    a, b, c = (Buffer(n, (rows, cols), "f32") for n in ("A", "B", "C"))
    i, jo, ji = Var("i"), Var("j.o"), Var("j.i")
    j = jo * tile + ji
    body = For(i, rows, "parallel", For(jo, cols // tile, "serial",
                                        For(ji, tile, "vectorized", st(c, (i, j), ld(a, i, j) + ld(b, i, j)))))
    return Kernel("ew_add", [a, b, c], body, 2)


def broadcast_affine(rows: int = 8, cols: int = 64) -> Kernel:
    """Y[i, j] = max(X[i, j] * s[i] + b[j], 0) with a row scale (invariant) and a column bias."""
    x, y = Buffer("X", (rows, cols), "f32"), Buffer("Y", (rows, cols), "f32")
    s, b = Buffer("s", (rows,), "f32"), Buffer("b", (cols,), "f32")
    i, j = Var("i"), Var("j")
    value = maximum(ld(x, i, j) * ld(s, i) + ld(b, j), const(0.0, "f32"))
    body = For(i, rows, "parallel", For(j, cols, "vectorized", st(y, (i, j), value)))
    return Kernel("bcast_affine", [x, s, b, y], body, 3)


def row_sum(rows: int = 12, cols: int = 40) -> Kernel:
    """out[i] = sum_j x[i, j] with a scalar local accumulator."""
    x, out = Buffer("x", (rows, cols), "f32"), Buffer("out", (rows,), "f32")
    acc = Buffer("acc", (1,), "f32", "local")
    i, j = Var("i"), Var("j")
    inner = Seq([
        st(acc, (0,), const(0.0, "f32")),
        For(j, cols, "serial", st(acc, (0,), ld(acc, 0) + ld(x, i, j))),
        st(out, (i,), ld(acc, 0)),
    ])
    return Kernel("row_sum", [x, out], For(i, rows, "parallel", Allocate(acc, inner)), 1)


def row_sum_lanes(rows: int = 6, cols: int = 64, lanes: int = 8) -> Kernel:
    """Row sum with a lane-wise vector accumulator acc[lanes], reduced across lanes at the end."""
    x, out = Buffer("x", (rows, cols), "f32"), Buffer("out", (rows,), "f32")
    acc = Buffer("acc", (lanes,), "f32", "local")
    tot = Buffer("tot", (1,), "f32", "local")
    i, jo, jv, r = Var("i"), Var("jo"), Var("jv"), Var("r")
    inner = Seq([
        For(jv, lanes, "vectorized", st(acc, (jv,), const(0.0, "f32"))),
        For(jo, cols // lanes, "serial",
            For(jv, lanes, "vectorized", st(acc, (jv,), ld(acc, jv) + ld(x, i, jo * lanes + jv)))),
        st(tot, (0,), const(0.0, "f32")),
        For(r, lanes, "unrolled", st(tot, (0,), ld(tot, 0) + ld(acc, r))),
        st(out, (i,), ld(tot, 0)),
    ])
    return Kernel("row_sum_lanes", [x, out], For(i, rows, "parallel", Allocate(acc, Allocate(tot, inner))), 1)


def tiled_matmul(m: int, n: int, k: int, ti: int = 4, tj: int = 16, relu: bool = True) -> Kernel:
    """C = relu(A @ B) as a register-tiled nest: parallel row tiles, an acc[ti][tj] local tile,
    unrolled rows, vectorized columns, and a k loop of broadcast-FMA updates."""
    a, b, c = Buffer("A", (m, k), "f32"), Buffer("B", (k, n), "f32"), Buffer("C", (m, n), "f32")
    acc = Buffer("acc", (ti, tj), "f32", "local")
    io, jo, kk, ii, ji = Var("i.o"), Var("j.o"), Var("k"), Var("i.i"), Var("j.i")
    row, col = io * ti + ii, jo * tj + ji

    def tile(stmt: Store) -> For:
        return For(ii, ti, "unrolled", For(ji, tj, "vectorized", stmt))

    out = ld(acc, ii, ji)
    body = Seq([
        tile(st(acc, (ii, ji), const(0.0, "f32"))),
        For(kk, k, "serial", tile(st(acc, (ii, ji), ld(acc, ii, ji) + ld(a, row, kk) * ld(b, kk, col)))),
        tile(st(c, (row, col), maximum(out, const(0.0, "f32")) if relu else out)),
    ])
    nest = For(io, m // ti, "parallel", For(jo, n // tj, "serial", Allocate(acc, body)))
    return Kernel(f"matmul_{m}x{n}x{k}", [a, b, c], nest, 2)


def matmul_stored_transposed(m: int, n: int, k: int, ti: int, accumulate: bool = False) -> Kernel:
    """Ct[j, i] = relu(A @ B + bias[j] + R[j, i]) (``+ Ct[j, i]`` with ``accumulate``): a register tile
    vectorized over columns j, written where j is the strided axis and the unrolled rows i the
    contiguous one (a conv tile vectorized over output channels, stored to NCHW)."""
    tj = LANES["f32"]
    a, b = Buffer("A", (m, k), "f32"), Buffer("B", (k, n), "f32")
    bias, r, ct = Buffer("bias", (n,), "f32"), Buffer("R", (n, m), "f32"), Buffer("Ct", (n, m), "f32")
    acc = Buffer("acc", (ti, tj), "f32", "local")
    io, jo, kk, ii, ji = Var("i.o"), Var("j.o"), Var("k"), Var("i.i"), Var("j.i")
    row, col = io * ti + ii, jo * tj + ji

    def tile(stmt: Store) -> For:
        return For(ii, ti, "unrolled", For(ji, tj, "vectorized", stmt))

    out = maximum(ld(acc, ii, ji) + ld(bias, col) + ld(r, col, row), const(0.0, "f32"))
    body = Seq([
        tile(st(acc, (ii, ji), const(0.0, "f32"))),
        For(kk, k, "serial", tile(st(acc, (ii, ji), ld(acc, ii, ji) + ld(a, row, kk) * ld(b, kk, col)))),
        tile(st(ct, (col, row), out + ld(ct, col, row) if accumulate else out)),
    ])
    nest = For(io, m // ti, "parallel", For(jo, n // tj, "serial", Allocate(acc, body)))
    return Kernel(f"matmul_t{ti}{'_acc' if accumulate else ''}", [a, b, bias, r, ct], nest, 4)


def int_ops(n: int = 64) -> Kernel:
    """Integer floordiv / mod / truncating div / min / max on possibly negative i64 and i32 values."""
    x, y = Buffer("x", (n,), "i64"), Buffer("y", (n,), "i64")
    z = Buffer("z", (n,), "i32")
    outs = [Buffer(f"o{t}", (n,), "i64") for t in range(5)]
    o32 = Buffer("o32", (n,), "i32")
    i = Var("i")
    xi, yi = ld(x, i), ld(y, i)
    vals = [xi // yi, xi % yi, xi / yi, minimum(xi, yi) * 3 - maximum(xi, yi), (xi // 4) * 7 + xi % 5]
    stores = [st(o, (i,), v) for o, v in zip(outs, vals, strict=True)]
    zi = ld(z, i)
    stores.append(st(o32, (i,), minimum(zi, const(3, "i32")) + zi * zi - zi // const(-3, "i32")))
    return Kernel("int_ops", [x, y, z, *outs, o32], For(i, n, "parallel", Seq(stores)), 3)


def select_cast(n: int = 64) -> Kernel:
    """Leaky relu via a select, truncating float->int cast, a bool output and bool->float cast."""
    x = Buffer("x", (n,), "f32")
    lk, tr, pos, back = (Buffer("leaky", (n,), "f32"), Buffer("trunc", (n,), "i32"), Buffer("pos", (n,), "bool"),
                         Buffer("back", (n,), "f32"))
    i = Var("i")
    xi = ld(x, i)
    body = Seq([
        For(i, n, "vectorized", Seq([
            st(lk, (i,), select(xi.gt(const(0.0, "f32")), xi, xi * const(0.1, "f32"))),
            st(tr, (i,), cast(xi * const(3.0, "f32"), "i32")),
        ])),
        For(i, n, "vectorized", st(pos, (i,), xi.ge(const(0.0, "f32")))),
        For(i, n, "serial", st(back, (i,), cast(ld(pos, i), "f32") * const(2.0, "f32") - cast(ld(tr, i), "f32"))),
    ])
    return Kernel("select_cast", [x, lk, tr, pos, back], body, 1)


def math_calls(n: int = 64) -> Kernel:
    """Math functions inside a vectorized loop (falls back to a scalar loop)."""
    x = Buffer("x", (n,), "f32")
    fns = ("exp", "tanh", "erf", "sigmoid", "rsqrt", "round", "sqrt", "log", "abs", "floor")
    outs = [Buffer(f"o_{f}", (n,), "f32") for f in fns]
    i = Var("i")
    xi = ld(x, i)
    stores = []
    for f, o in zip(fns, outs, strict=True):
        arg = call("abs", xi) + const(0.5, "f32") if f in ("rsqrt", "sqrt", "log") else xi
        stores.append(st(o, (i,), call(f, arg)))
    return Kernel("math_calls", [x, *outs], For(i, n, "vectorized", Seq(stores)), 1)


def pad_shift(n: int = 64) -> Kernel:
    """y[i] = x[i-1] if i >= 1 else -1: a guarded load that would be out of bounds at i = 0."""
    x, y = Buffer("x", (n,), "f32"), Buffer("y", (n,), "f32")
    i = Var("i")
    body = For(i, n, "vectorized", st(y, (i,), select(i.ge(1), ld(x, i - 1), const(-1.0, "f32"))))
    return Kernel("pad_shift", [x, y], body, 1)
