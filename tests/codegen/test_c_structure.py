"""What the generated C looks like: register tiles, pragmas, fallbacks, name safety, FMA in the binary."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tessera.codegen import render_kernel, render_module
from tessera.loop.expr import Var, const
from tessera.loop.ir import Buffer, For, Kernel, Seq

from . import kernels as K
from .kernels import LANES, ld, st


def _copy_kernel(name: str = "copy", in_name: str = "x", dtype: str = "f32") -> Kernel:
    x, y = Buffer(in_name, (8,), dtype), Buffer("y", (8,), dtype)
    i = Var("i")
    return Kernel(name, [x, y], For(i, 8, "serial", st(y, (i,), ld(x, i))), 1)


@pytest.mark.parametrize("name", ["bad name", "k(); system(\"rm -rf /\"); void f", "9lives", "for", "tsr_alloc", ""])
def test_unsafe_kernel_name_raises(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe kernel name"):
        render_kernel(_copy_kernel(name=name), LANES)


def test_unsafe_buffer_name_raises() -> None:
    with pytest.raises(ValueError, match="unsafe buffer name"):
        render_kernel(_copy_kernel(in_name="x*/ evil /*"), LANES)


def test_half_precision_is_copied_as_bits() -> None:
    src = render_kernel(_copy_kernel(dtype="f16"), LANES)  # compute definitions widen f16 math to f32
    assert "const uint16_t* restrict p0" in src and "uint16_t* restrict p1" in src


def test_unbound_variable_and_unknown_buffer_raise() -> None:
    x, y, z = Buffer("x", (8,), "f32"), Buffer("y", (8,), "f32"), Buffer("z", (8,), "f32")
    i, j = Var("i"), Var("j")
    with pytest.raises(ValueError, match="variable 'j' is not bound"):
        render_kernel(Kernel("k", [x, y], For(i, 8, "serial", st(y, (i,), ld(x, j))), 1), LANES)
    with pytest.raises(ValueError, match="buffer z is neither"):
        render_kernel(Kernel("k", [x, y], For(i, 8, "serial", st(y, (i,), ld(z, i))), 1), LANES)


def test_params_order_and_const_inputs() -> None:
    src = render_kernel(K.broadcast_affine(), LANES)
    assert "void bcast_affine(const float* restrict p0, const float* restrict p1, const float* restrict p2, " \
           "float* restrict p3)" in src


def test_matmul_accumulator_is_scalar_replaced() -> None:
    src = render_kernel(K.tiled_matmul(64, 64, 64), LANES)
    # a 4x16 f32 tile with 8 lanes: eight vector variables, no local array
    assert re.search(r"tsr_f32x8 (l0_\d, ){7}l0_7;", src), src[:2000]
    assert "l0[" not in src
    assert src.count("tsr_parallel_for(") == 1


def _loop_bodies(asm: list[tuple[int, str]]) -> list[list[str]]:
    """Instruction texts of each backward-branch loop, innermost (shortest) first."""
    loops = []
    for pos, (addr, text) in enumerate(asm):
        m = re.match(r"j\w+\s+([0-9a-f]+)\s", text)
        if m and int(m.group(1), 16) < addr:
            target = int(m.group(1), 16)
            loops.append([t for a, t in asm[: pos + 1] if a >= target])
    return sorted(loops, key=len)


def test_matmul_inner_loop_is_vector_fma_without_spills(build) -> None:
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    k = K.tiled_matmul(64, 64, 64)
    built = build([k])
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(built.path)], capture_output=True, text=True,
                          check=True).stdout
    asm = []
    for line in dump.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m:
            asm.append((int(m.group(1), 16), m.group(2).strip()))
    fma_loops = [body for body in _loop_bodies(asm) if any(t.startswith("vfmadd") for t in body)]
    assert fma_loops, "no loop with vfmadd instructions"
    inner = fma_loops[0]
    assert sum(t.startswith("vfmadd") and "ymm" in t for t in inner) >= 8, inner
    assert not any("rsp" in t or "rbp" in t for t in inner), f"stack traffic in the FMA loop: {inner}"


def test_vectorized_reduction_gets_no_simd_pragma() -> None:
    x, out = Buffer("x", (64,), "f32"), Buffer("out", (1,), "f32")
    j = Var("j")
    k = Kernel("red", [x, out], For(j, 64, "vectorized", st(out, (0,), ld(out, 0) + ld(x, j))), 1)
    src = render_kernel(k, LANES)
    # a fold: lane-parallel partial sums (tests/codegen/test_reduction_lanes.py), never a simd pragma
    assert "omp simd" not in src and re.search(r"tsr_f32x8 r\d+ = \{", src)


def test_guarded_load_falls_back_to_scalar_simd_loop() -> None:
    src = render_kernel(K.pad_shift(), LANES)
    assert "tsr_f32x8" not in src
    assert "#pragma omp simd" in src
    assert "?" in src  # the select stays a lazy C conditional


def test_math_calls_fall_back_to_scalar_loop() -> None:
    src = render_kernel(K.math_calls(), LANES)
    assert "tsr_f32x8" not in src and "expf(" in src and "erff(" in src and "nearbyintf(" in src


def test_no_lanes_means_scalar_code() -> None:
    src = render_kernel(K.elementwise_add(), {})
    assert "tsr_f32x8" not in src and "#pragma omp simd" in src


def test_nested_parallel_loops_outline_only_the_outer_one() -> None:
    x, y = Buffer("x", (4, 8), "f32"), Buffer("y", (4, 8), "f32")
    i, j = Var("i"), Var("j")
    k = Kernel("nested", [x, y], For(i, 4, "parallel", For(j, 8, "parallel", st(y, (i, j), ld(x, i, j)))), 1)
    src = render_kernel(k, LANES)
    assert src.count("tsr_parallel_for(") == 1 and "nested_par1" not in src
    assert "void nested_par0(const float* restrict p0, float* restrict p1, int64_t lo, int64_t hi)" in src


def test_unroll_full_or_pragma() -> None:
    x, y = Buffer("x", (256,), "f32"), Buffer("y", (256,), "f32")
    i = Var("i")
    small = render_kernel(Kernel("small", [x, y], For(i, 4, "unrolled", st(y, (i,), ld(x, i))), 1), LANES)
    assert "for (" not in small and "p1[3] = p0[3];" in small
    big = render_kernel(Kernel("big", [x, y], For(i, 256, "unrolled", st(y, (i,), ld(x, i))), 1), LANES)
    assert "#pragma GCC unroll 16" in big and big.count("p1[") == 1


def test_nonnegative_floordiv_by_constant_is_plain_division() -> None:
    x, y = Buffer("x", (16,), "i64"), Buffer("y", (64,), "i64")
    i = Var("i")
    k = Kernel("gather", [x, y], For(i, 64, "serial", st(y, (i,), ld(x, i // 4) // const(-3) + ld(x, i % 16))), 1)
    src = render_kernel(k, LANES)
    assert "p0[(i0 / 4)]" in src and "p0[(i0 % 16)]" in src
    assert "tsr_floordiv_i64(p0[(i0 / 4)], (-3))" in src  # a loaded value may be negative


def test_constants_are_exact() -> None:
    x, y = Buffer("x", (4,), "f32"), Buffer("y", (4,), "f32")
    i = Var("i")
    vals = Seq([st(y, (0,), const(0.1, "f32")), st(y, (1,), const(float("-inf"), "f32")),
                st(y, (2,), const(float("nan"), "f32")), st(y, (3,), const(-1e-30, "f32") + ld(x, i))])
    src = render_kernel(Kernel("consts", [x, y], For(i, 1, "serial", vals), 1), LANES)
    assert "0.1f" in src and "-INFINITY" in src and "NAN" in src and "(-1e-30f)" in src


def test_render_module_has_prelude_kernels_and_entry() -> None:
    src = render_module([render_kernel(K.elementwise_add(), LANES)], "int entry(void) { return 0; }")
    assert src.index("#include <math.h>") < src.index("typedef float tsr_f32x8 ") < src.index("void ew_add(") \
        < src.index("int entry(void)")
    assert "aligned(4), may_alias" in src
