"""Lane-parallel folds: a vectorized loop ``acc = acc op e`` keeps vectors of partial results.

Max/min must equal NumPy exactly (NaN propagates, -inf/+inf are ordinary values); a sum is
reassociated, so it is checked against a float64 sum within 1e-6 of the sum of magnitudes
(f32 rounding of a 100-term sum is ~1e-7 of it). Compiled Softmax/LayerNormalization are
checked against the reference executor at the project's model tolerance 1e-5.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from tessera.loop.expr import BinOp, Var, call, const, maximum, minimum
from tessera.loop.ir import Allocate, Buffer, For, Kernel, Seq
from tessera.loop.te_eval import np_dtype
from tests.compiler.helpers import GB, compile_and_check

from .kernels import LANES, ld, st

RNG = np.random.default_rng(11)
OPS = {
    "sum": (lambda a, b: a + b, 0.0, np.sum),
    "max": (maximum, -np.inf, np.max),
    "min": (minimum, np.inf, np.min),
}


def _row_fold(op: str, dtype: str, rows: int, cols: int, acc_first: bool = True) -> Kernel:
    """out[i] = fold_j x[i, j] with a scalar local accumulator and a vectorized j loop."""
    combine, init, _ = OPS[op]
    x, out = Buffer("x", (rows, cols), dtype), Buffer("out", (rows,), dtype)
    acc = Buffer("acc", (1,), dtype, "local")
    i, j = Var("i"), Var("j")
    a, e = ld(acc, 0), ld(x, i, j)
    inner = Seq([
        st(acc, (0,), const(init, dtype)),
        For(j, cols, "vectorized", st(acc, (0,), combine(a, e) if acc_first else combine(e, a))),
        st(out, (i,), ld(acc, 0)),
    ])
    name = f"fold_{op}_{dtype}_{cols}_{int(acc_first)}"
    return Kernel(name, [x, out], For(i, rows, "parallel", Allocate(acc, inner)), 1)


def _data(dtype: str, rows: int, cols: int) -> np.ndarray:
    """Random rows, then rows holding a NaN, a -inf, a +inf, and both infinities."""
    x = RNG.standard_normal((rows, cols)).astype(np_dtype(dtype))
    x[1, cols // 2] = np.nan
    x[2, cols - 1] = -np.inf
    x[3, 0] = np.inf
    x[4, [0, cols - 1]] = [np.inf, -np.inf]
    x[5, :] = -np.inf
    return x


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("cols", [5, 24, 37, 48, 64, 131])
def test_folds_match_numpy(build: Callable, dtype: str, cols: int) -> None:
    rows = 7
    kernels = [_row_fold(op, dtype, rows, cols, first) for op in OPS for first in (True, False)]
    mod = build(kernels)
    lanes = LANES[dtype]
    if cols >= lanes:  # a vector accumulator, initialised with the identity, whole vectors combined
        assert re.search(rf"tsr_{dtype}x{lanes} r\d+ = \{{", mod.source)
    x = _data(dtype, rows, cols)
    for k in kernels:
        op = k.name.split("_")[1]
        out = np.full(rows, 7.0, x.dtype)
        mod.run(k, [x, out])
        with np.errstate(invalid="ignore"):  # inf - inf in a sum
            want = OPS[op][2](x.astype(np.float64), axis=1)
        if op == "sum":
            finite = np.isfinite(want)
            assert np.array_equal(np.isnan(out), np.isnan(want)), k.name
            assert np.array_equal(out[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)]), k.name
            err = np.abs(out[finite] - want[finite])
            assert np.all(err <= 1e-6 * np.abs(x[finite].astype(np.float64)).sum(axis=1)), (k.name, err)
        else:
            np.testing.assert_array_equal(out, want.astype(x.dtype), err_msg=k.name)


def test_fold_source_has_remainder_and_lane_fold(build: Callable) -> None:
    cols = 37  # 4 whole vectors of 8 lanes and 5 left over
    mod = build([_row_fold("sum", "f32", 3, cols)])
    src = mod.source
    assert re.search(r"for \(int64_t i\d+ = 0; i\d+ < 32; i\d+ \+= (8|16|32)\)", src)  # whole vectors
    assert re.search(r"for \(int64_t i\d+ = 32; i\d+ < 37; \+\+i\d+\)", src)  # scalar remainder
    assert len(re.findall(r"\+ r\d+\[\d\]\)", src)) == 8  # lanes folded in order


def test_fold_without_vector_math_stays_scalar_and_correct(build: Callable) -> None:
    # exp has no vector version without target intrinsics: an in-order scalar loop (no unrolled copies)
    rows, cols = 4, 40
    x, out = Buffer("x", (rows, cols), "f32"), Buffer("out", (rows,), "f32")
    acc = Buffer("acc", (1,), "f32", "local")
    i, j = Var("i"), Var("j")
    inner = Seq([st(acc, (0,), const(0.0, "f32")),
                 For(j, cols, "vectorized", st(acc, (0,), ld(acc, 0) + call("exp", ld(x, i, j)))),
                 st(out, (i,), ld(acc, 0))])
    k = Kernel("sum_exp", [x, out], For(i, rows, "parallel", Allocate(acc, inner)), 1)
    mod = build([k])
    kernel_src = mod.source[mod.source.index("/* kernel"):]
    assert not re.search(r"tsr_f32x8 r\d+ = \{", kernel_src) and kernel_src.count("expf(") == 1
    xs = RNG.standard_normal((rows, cols)).astype(np.float32)
    got = np.zeros(rows, np.float32)
    mod.run(k, [xs, got])
    np.testing.assert_allclose(got, np.exp(xs.astype(np.float64)).sum(axis=1), rtol=1e-6)


def test_accumulator_read_by_the_element_is_not_a_fold(build: Callable) -> None:
    # acc = acc + acc * x[j] reads acc in the element: must stay an in-order loop
    cols = 16
    x, out = Buffer("x", (cols,), "f32"), Buffer("out", (1,), "f32")
    acc = Buffer("acc", (1,), "f32", "local")
    j = Var("j")
    body = Seq([st(acc, (0,), const(1.0, "f32")),
                For(j, cols, "vectorized", st(acc, (0,), BinOp("add", ld(acc, 0), ld(acc, 0) * ld(x, j), "f32"))),
                st(out, (0,), ld(acc, 0))])
    k = Kernel("not_fold", [x, out], Allocate(acc, body), 1)
    mod = build([k])
    assert not re.search(r"tsr_f32x8 r\d+ = \{", mod.source)
    xs = (RNG.random(cols) * 0.1).astype(np.float32)
    got = np.zeros(1, np.float32)
    mod.run(k, [xs, got])
    want = np.float32(1.0)
    for v in xs:
        want = want + want * v
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 37), (2, 4, 128)])
def test_softmax_compiled(shape: tuple[int, ...]) -> None:
    b = GB()
    y = b.op("Softmax", [b.input("x", shape)], axis=-1)
    comp = compile_and_check(b.done(y))
    assert re.search(r"tsr_f32x8 r\d+ = \{", comp.source)


def test_layernorm_compiled() -> None:
    b = GB()
    x = b.input("x", (3, 5, 100))
    y = b.op("LayerNormalization", [x, b.randc("scale", 100), b.randc("shift", 100)], axis=-1, epsilon=1e-5)
    comp = compile_and_check(b.done(y))
    assert re.search(r"tsr_f32x8 r\d+ = \{", comp.source)
