"""Vector math: math functions in vectorized loops call the target's declared vector versions
(libmvec, immintrin.h) and match NumPy; without declarations the loop stays scalar and still matches.

Tolerances: glibc's libmvec documents at most 4 ulp (f32: 4 * 2**-23 ~ 4.8e-7 relative), so f32
results are checked at rtol 1e-6 against NumPy in float64 on the same float32 arguments, f64 at
rtol 1e-14; sqrt/floor/ceil (exact or correctly rounded instructions) exactly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tessera.codegen import render_kernel, render_module
from tessera.codegen.c_vector import vector_math_table
from tessera.loop.expr import BinOp, Call, Expr, Var, call, const
from tessera.loop.ir import Buffer, For, Kernel, Seq
from tessera.loop.te_eval import np_dtype
from tessera.targets import CpuTarget, TargetError, load_target
from tessera.targets.host import is_native
from tessera.targets.target import DESCRIPTIONS_DIR
from tessera.targets.toolchain import CACHE_ENV, build_shared_library

from . import kernels as K
from .kernels import ld, st

X86 = ("x86-avx2", "x86-avx512")
RNG = np.random.default_rng(7)
_erf = np.vectorize(math.erf)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(params=X86)
def target(request: pytest.FixtureRequest) -> CpuTarget:
    t = load_target(request.param)
    if shutil.which(t.compiler.cc) is None or not is_native(t):
        pytest.skip(f"this machine cannot build and run {t.name} code")
    return t


def _lanes(t: CpuTarget) -> dict[str, int]:
    return {dt: t.lanes(dt) for dt in ("f32", "f64", "i32", "i64", "i8", "u8")}


def _build(kernel: Kernel, t: CpuTarget, intrinsics: object = None,
           lanes: dict[str, int] | None = None) -> tuple[str, Callable[..., None]]:
    """Render ``kernel`` for ``t`` (its intrinsics unless given), build it with the target's flags;
    returns the kernel's C text and a function running it on NumPy arrays."""
    intr = t.intrinsics if intrinsics is None else intrinsics
    text = render_kernel(kernel, lanes or _lanes(t), intr)  # type: ignore[arg-type]
    lib = ctypes.CDLL(str(build_shared_library(render_module([text], ""), t, kernel.name)))

    def run(arrays: list[np.ndarray]) -> None:
        for buf, a in zip(kernel.params, arrays, strict=True):
            assert a.flags.c_contiguous and a.shape == buf.shape and a.dtype == np_dtype(buf.dtype)
        getattr(lib, kernel.name)(*(a.ctypes.data_as(ctypes.c_void_p) for a in arrays))

    return text, run


# name -> (IR value from the input x, the same in NumPy on the input's dtype, reference in float64)
def _cases() -> dict[str, tuple[Callable[[Expr, str], Expr], Callable[[np.ndarray], np.ndarray],
                                Callable[[np.ndarray], np.ndarray]]]:
    def c(v: float, dt: str) -> Expr:
        return const(v, dt)

    def unary(fn: str, ref: Callable[[np.ndarray], np.ndarray], scale: float = 3.0, shift: float = 0.0,
              absolute: bool = False):  # noqa: ANN202
        def ir(x: Expr, dt: str) -> Expr:
            a = call("abs", x) if absolute else x
            return call(fn, a * c(scale, dt) + c(shift, dt))

        def arg(x: np.ndarray) -> np.ndarray:
            a = np.abs(x) if absolute else x
            return a * x.dtype.type(scale) + x.dtype.type(shift)

        return ir, arg, ref

    return {
        "exp": unary("exp", np.exp, 20.0), "log": unary("log", np.log, 50.0, 1e-3, absolute=True),
        "erf": unary("erf", _erf), "tanh": unary("tanh", np.tanh), "expm1": unary("expm1", np.expm1),
        "log1p": unary("log1p", np.log1p, 0.99), "sin": unary("sin", np.sin, 10.0),
        "cos": unary("cos", np.cos, 10.0), "tan": unary("tan", np.tan, 1.5), "asin": unary("asin", np.arcsin, 0.99),
        "acos": unary("acos", np.arccos, 0.99), "atan": unary("atan", np.arctan, 10.0),
        "sinh": unary("sinh", np.sinh, 5.0), "cosh": unary("cosh", np.cosh, 5.0),
        "asinh": unary("asinh", np.arcsinh, 10.0), "acosh": unary("acosh", np.arccosh, 10.0, 1.0, absolute=True),
        "atanh": unary("atanh", np.arctanh, 0.99), "sqrt": unary("sqrt", np.sqrt, 10.0, absolute=True),
        "floor": unary("floor", np.floor, 5.0), "ceil": unary("ceil", np.ceil, 5.0),
        "sigmoid": unary("sigmoid", lambda a: 1 / (1 + np.exp(-a)), 8.0),
        "rsqrt": unary("rsqrt", lambda a: 1 / np.sqrt(a), 10.0, 0.01, absolute=True),
        "pow": (lambda x, dt: BinOp("pow", x * c(4.0, dt), c(3.0, dt), dt),
                lambda x: x * x.dtype.type(4.0), lambda a: a ** 3),
        "atan2": (lambda x, dt: call("atan2", x, x * x - c(0.25, dt)),
                  lambda x: np.stack([x, x * x - x.dtype.type(0.25)]),
                  lambda a: np.arctan2(a[0], a[1])),
    }


CASES = _cases()
# the function each case calls through the target (sigmoid through exp, rsqrt through sqrt)
CALLS = {**{n: n for n in CASES}, "sigmoid": "exp", "rsqrt": "sqrt"}
EXACT = ("sqrt", "floor", "ceil")


def _math_kernel(dtype: str, names: tuple[str, ...], n: int = 64) -> Kernel:
    x = Buffer("x", (n,), dtype)
    outs = [Buffer(f"o_{f}", (n,), dtype) for f in names]
    i = Var("i")
    stores = [st(o, (i,), CASES[f][0](ld(x, i), dtype)) for f, o in zip(names, outs, strict=True)]
    return Kernel(f"vmath_{dtype}", [x, *outs], For(i, n, "vectorized", Seq(stores)), 1)


def _check(names: tuple[str, ...], x: np.ndarray, outs: list[np.ndarray]) -> None:
    rtol = 1e-6 if x.dtype == np.float32 else 1e-14
    for f, got in zip(names, outs, strict=True):
        a = CASES[f][1](x).astype(np.float64)  # the argument as the kernel computes it, then exactly
        want = CASES[f][2](a)
        if f in EXACT:
            np.testing.assert_array_equal(got, want.astype(x.dtype), err_msg=f)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=f)


def _kernel_text(source: str) -> str:
    return source[source.index("/* kernel"):]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_math_functions_call_the_targets_vector_versions(target: CpuTarget, dtype: str) -> None:
    names = tuple(CASES)
    k = _math_kernel(dtype, names)
    text, run = _build(k, target)
    lanes = target.lanes(dtype)
    body = _kernel_text(text)
    assert f"i0 += {lanes})" in body and "#pragma omp simd" not in body  # one explicit vector loop
    for f in names:
        intr = target.intrinsic(CALLS[f], dtype)
        assert intr is not None and intr.lanes == lanes, f
        assert f"{intr.c_name}(" in body, f
    assert not re.search(r"\b(expf?|erff?|tanhf?|logf?|powf?|sqrtf?)\(", body)  # no scalar libm call left
    x = RNG.uniform(-1, 1, 64).astype(np_dtype(dtype))
    outs = [np.zeros(64, x.dtype) for _ in names]
    run([x, *outs])
    _check(names, x, outs)


def test_special_values_follow_the_scalar_functions(target: CpuTarget) -> None:
    names = ("exp", "log", "erf", "tanh", "sqrt", "sigmoid")
    lanes = target.lanes("f32")
    vals = [np.nan, np.inf, -np.inf, 0.0, -0.0, 100.0, -100.0, -1.0, 1e-40, -1e-40, 3.0e38, 1.0]
    x = np.resize(np.array(vals, np.float32), 2 * lanes)
    xb = Buffer("x", x.shape, "f32")
    outs = [Buffer(f"o_{f}", x.shape, "f32") for f in names]
    i = Var("i")
    k = Kernel("specials", [xb, *outs], For(i, x.size, "vectorized", Seq(
        [st(o, (i,), call(f, ld(xb, i))) for f, o in zip(names, outs, strict=True)])), 1)
    text, run = _build(k, target)
    assert target.intrinsic("erf", "f32").c_name in text
    got = [np.zeros_like(x) for _ in names]
    with np.errstate(all="ignore"):
        run([x, *got])
        want = [np.exp(x), np.log(x), _erf(x.astype(np.float64)).astype(np.float32), np.tanh(x), np.sqrt(x),
                1 / (1 + np.exp(-x))]
    for f, g, w in zip(names, got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=0, equal_nan=True, err_msg=f)
        zero = w == 0
        assert (np.signbit(g[zero]) == np.signbit(w[zero])).all(), f  # erf(-0) = -0, exp(-inf) = +0, ...


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_exp_lanes_that_round_to_zero_skip_the_vector_call(target: CpuTarget, dtype: str) -> None:
    # libmvec computes lanes below ~-87 by a scalar callout; lanes under ln(2**-150) (f32) or
    # ln(2**-1075) (f64) are set to +0 around the call instead (masked attention scores: -3.4e38)
    lanes = target.lanes(dtype)
    vals = [-3.4e38, -1e4, -746.5, -745.0, -105.0, -104.0, -103.9, -100.0, -87.5, -np.inf, np.nan, 0.0, 1.0, 80.0]
    x = np.resize(np.array(vals, np_dtype(dtype)), 2 * lanes)
    xb, ob = Buffer("x", x.shape, dtype), Buffer("o", x.shape, dtype)
    i = Var("i")
    k = Kernel("exp_low", [xb, ob], For(i, x.size, "vectorized", st(ob, (i,), call("exp", ld(xb, i)))), 1)
    text, run = _build(k, target)
    low = "-104.0f" if dtype == "f32" else "-746.0"
    assert low in _kernel_text(text) and target.intrinsic("exp", dtype).c_name in text
    got = np.full_like(x, 7.0)
    run([x, got])
    with np.errstate(all="ignore"):
        want = np.exp(x.astype(np.float64))
    tiny = float(np.finfo(x.dtype).smallest_subnormal)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "f32" else 1e-14, atol=4 * tiny, equal_nan=True)
    below = x < (-104.0 if dtype == "f32" else -746.0)
    assert (got[below] == 0).all() and not np.signbit(got[below]).any()


def test_without_declarations_the_loop_stays_scalar(target: CpuTarget) -> None:
    names = ("exp", "erf", "tanh", "log", "sigmoid")
    k = _math_kernel("f32", names)
    text, run = _build(k, target, intrinsics=())
    body = _kernel_text(text)
    assert "_ZGV" not in text and "#pragma omp simd" in body and "expf(" in body and "erff(" in body
    x = RNG.uniform(-1, 1, 64).astype(np.float32)
    outs = [np.zeros(64, np.float32) for _ in names]
    run([x, *outs])
    _check(names, x, outs)


def test_a_declaration_serves_only_its_lane_count() -> None:
    avx2, avx512 = load_target("x86-avx2"), load_target("x86-avx512")
    k = _math_kernel("f32", ("exp",))
    # 16-lane loops cannot call the AVX2 8-lane expf: scalar fallback
    text = render_kernel(k, _lanes(avx512), avx2.intrinsics)
    assert "_ZGV" not in text and "expf(" in text
    text = render_kernel(k, _lanes(avx2), avx2.intrinsics)
    assert "_ZGVdN8v_expf(" in text


def test_declarations_only_for_the_functions_used() -> None:
    t = load_target("x86-avx512")
    k = _math_kernel("f32", ("exp", "sigmoid", "sqrt", "pow"))
    text = render_kernel(k, _lanes(t), t.intrinsics)
    head = text[:text.index("/* kernel")].splitlines()
    assert head == ["#include <immintrin.h>",
                    "extern tsr_f32x16 _ZGVeN16v_expf(tsr_f32x16);",
                    "extern tsr_f32x16 _ZGVeN16vv_powf(tsr_f32x16, tsr_f32x16);"]
    plain = render_kernel(K.elementwise_add(), _lanes(t), t.intrinsics)
    assert plain.startswith("/* kernel ew_add")


def test_arm_neon_declares_no_vector_math() -> None:
    # Debian 12's AArch64 glibc has no libmvec: exp stays a scalar call there
    arm = load_target("arm-neon")
    assert vector_math_table(arm.intrinsics) == {}
    text = render_kernel(_math_kernel("f32", ("exp",)), _lanes(arm), arm.intrinsics)
    assert "expf(" in text and "_ZGV" not in text


def test_declared_libmvec_functions_are_exported() -> None:
    path = ctypes.util.find_library("mvec")
    if path is None:
        pytest.skip("no libmvec on this machine")
    lib = ctypes.CDLL(path)
    for name in X86:
        funcs = [i for i in load_target(name).intrinsics if not i.header]
        assert len(funcs) >= 30, name
        for i in funcs:
            assert hasattr(lib, i.c_name), f"{name}: {i.c_name} is not exported by {path}"


def test_gemm_gelu_epilogue_is_vectorized(target: CpuTarget) -> None:
    lanes = target.lanes("f32")
    m, n, kk = 8, 4 * lanes, 24
    k = K.tiled_matmul(m, n, kk, ti=4, tj=2 * lanes, relu=False)
    epi = k.body.body.body.body.body[2]  # For i.i / For j.i / Store: the epilogue over the register tile
    store = epi.body.body
    acc = store.value
    half = const(0.5, "f32")
    store.value = half * acc * (const(1.0, "f32") + call("erf", acc * const(0.70710678, "f32")))
    text, run = _build(k, target)
    body = _kernel_text(text)
    erf = target.intrinsic("erf", "f32").c_name
    assert f"tsr_f32x{lanes} l0_0, l0_1," in body  # the accumulator tile stayed in registers
    assert body.count(f"{erf}(") == 4 * 2 and not re.search(r"\berff\(", body)
    a = RNG.standard_normal((m, kk), dtype=np.float32)
    b = RNG.standard_normal((kk, n), dtype=np.float32)
    c = np.zeros((m, n), np.float32)
    run([a, b, c])
    p = a.astype(np.float64) @ b
    np.testing.assert_allclose(c, 0.5 * p * (1 + _erf(p * 0.70710678)), rtol=1e-5, atol=1e-5)


def test_compiled_ffn_gelu_and_softmax_call_vector_math(target: CpuTarget) -> None:
    from tests.compiler.helpers import GB, compile_and_check

    b = GB("ffn_gelu")
    x = b.input("x", (1, 16, 64))
    h = b.op("Add", [b.op("MatMul", [x, b.randc("w", 64, 192, scale=0.2)]), b.randc("bias", 192)])
    e = b.op("Erf", [b.op("Div", [h, b.const("sqrt2", np.float32(np.sqrt(2)))])])
    y = b.op("Mul", [b.op("Mul", [h, b.op("Add", [e, b.const("one", np.float32(1))])]),
                     b.const("half", np.float32(0.5))])
    s = b.op("Softmax", [y], axis=-1)
    comp = compile_and_check(b.done(y, s), target=target.name)  # rtol 1e-5 against the NumPy reference
    for fn in ("erf", "exp"):
        assert f"{target.intrinsic(fn, 'f32').c_name}(" in comp.source, fn


@pytest.mark.parametrize(("old", "new", "key", "why"), [
    ('c_name = "_ZGVdN8v_expf"', 'c_name = "exp f"', "c_name", "must be a C identifier"),
    ('c_name = "_mm256_sqrt_ps"\nheader = "immintrin.h"', 'c_name = "_mm256_sqrt_ps"\nheader = "<x.h>"',
     "header", "must be a header file name"),
])
def test_bad_vector_math_declarations(tmp_path: Path, old: str, new: str, key: str, why: str) -> None:
    text = (DESCRIPTIONS_DIR / "x86-avx2.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(TargetError, match=rf"key 'intrinsics\[\d+\]\.{key}': {why}"):
        load_target(path)


def test_call_expressions_outside_the_table_are_unchanged() -> None:
    # a function the target declares nothing for (round) keeps the whole loop scalar, as before
    t = load_target("x86-avx512")
    x, y = Buffer("x", (64,), "f32"), Buffer("y", (64,), "f32")
    i = Var("i")
    k = Kernel("rnd", [x, y], For(i, 64, "vectorized", st(y, (i,), call("exp", Call("round", (ld(x, i),), "f32")))),
               1)
    text = render_kernel(k, _lanes(t), t.intrinsics)
    assert "nearbyintf(" in text and "_ZGV" not in text
