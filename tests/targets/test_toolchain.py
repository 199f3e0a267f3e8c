"""C toolchain driver: content-addressed cache, atomic builds, CompileError messages, Arm via qemu, AVX-512."""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tessera.errors import CompileError
from tessera.targets import (
    build_executable,
    build_shared_library,
    compiler_available,
    host_arch,
    is_native,
    load_target,
    run_executable,
    runner_available,
)
from tessera.targets import toolchain as tc

X86 = load_target("x86-avx2")
needs_x86 = pytest.mark.skipif(not (is_native(X86) and compiler_available(X86)),
                               reason="needs an x86-64 AVX2 machine with gcc")

SAXPY = """
#include <stddef.h>
void saxpy(float a, const float *x, float *y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}
"""


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(tc.CACHE_ENV, str(root))
    return root


def _entries(cache: Path) -> list[str]:
    """What the build cache holds, lock files aside; its private build directories must all be gone."""
    build = cache / "build"
    assert not list((build / ".tmp").iterdir()), "a build's private directory was left behind"
    return sorted(p.name for p in build.iterdir() if p.name not in (".tmp", ".locks"))


def _saxpy(lib: Path, a: float, x: list[float], y: list[float]) -> list[float]:
    so = ctypes.CDLL(str(lib))
    so.saxpy.argtypes = [ctypes.c_float, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                         ctypes.c_size_t]
    xs, ys = (ctypes.c_float * len(x))(*x), (ctypes.c_float * len(y))(*y)
    so.saxpy(a, xs, ys, len(x))
    return list(ys)


@needs_x86
def test_shared_library_builds_runs_and_is_cached(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = build_shared_library(SAXPY, X86, "saxpy")
    assert lib.parent == cache / "build" and lib.suffix == ".so"
    kept = lib.with_suffix(".c")
    assert kept.read_text() == SAXPY  # generated source kept beside it, named by the key
    x, y = [float(i) for i in range(37)], [1.0] * 37
    assert _saxpy(lib, 2.0, x, y) == [2.0 * i + 1.0 for i in range(37)]  # small ints: exact in f32

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"compiler invoked on a cache hit: {args}")

    mtime = lib.stat().st_mtime_ns
    for fn in ("run", "Popen", "check_output", "call"):
        monkeypatch.setattr(subprocess, fn, no_subprocess)
    t0 = time.perf_counter()
    again = build_shared_library(SAXPY, X86, "saxpy")
    elapsed = time.perf_counter() - t0
    assert again == lib and lib.stat().st_mtime_ns == mtime
    assert elapsed < 0.05, f"cache hit took {elapsed * 1e3:.1f} ms"


@needs_x86
def test_cache_hit_in_a_fresh_process_runs_no_compiler(cache: Path) -> None:
    build_shared_library(SAXPY, X86, "saxpy")
    tc._version_memo.clear()  # as in a new process: only the on-disk version record is left
    calls = []
    real_run = subprocess.run
    subprocess.run = lambda *a, **k: calls.append(a) or real_run(*a, **k)  # type: ignore[assignment]
    try:
        build_shared_library(SAXPY, X86, "saxpy")
    finally:
        subprocess.run = real_run
    assert calls == []


@needs_x86
def test_key_depends_on_source_and_flags(cache: Path) -> None:
    a = build_shared_library(SAXPY, X86, "saxpy")
    b = build_shared_library(SAXPY + "\n// v2\n", X86, "saxpy")
    o2 = dataclasses.replace(X86, compiler=dataclasses.replace(X86.compiler, flags=("-O2", "-fPIC")))
    c = build_shared_library(SAXPY, o2, "saxpy")
    assert len({a, b, c}) == 3 and all(p.exists() for p in (a, b, c))


BROKEN = """
int fine(int x) { return x + 1; }
float broken_kernel(const float *x) {
  float acc = 0.0f;
  for (int i = 0; i < 4; ++i) acc += x[i] * undeclared_scale;
  return acc;
}
"""


@needs_x86
def test_compile_error_names_source_and_function(cache: Path) -> None:
    with pytest.raises(CompileError) as info:
        build_shared_library(BROKEN, X86, "model_kernels")
    msg = str(info.value)
    c_files = list((cache / "build").glob("*.c"))
    assert len(c_files) == 1 and c_files[0].read_text() == BROKEN
    assert str(c_files[0]) in msg and "broken_kernel" in msg and "fine" not in msg.split("first error")[0]
    assert "undeclared_scale" in msg and "error" in msg and "model_kernels" in msg
    assert "/.tmp/" not in msg  # gcc compiled a private copy; the message names the kept one
    # atomicity: nothing under a final name, no temp file left behind
    assert _entries(cache) == [c_files[0].name]


@needs_x86
def test_killed_compile_leaves_no_partial_library(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tc.compiler_version(shutil.which(X86.compiler.cc))  # memoize `gcc --version` before patching

    def killed(cmd, **kwargs):
        out = Path(cmd[cmd.index("-o") + 1])
        out.write_bytes(b"\x7fELF half-written")
        raise KeyboardInterrupt  # the build is interrupted mid-way

    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        build_shared_library(SAXPY, X86, "saxpy")
    assert _entries(cache) == []
    monkeypatch.setattr(subprocess, "run", real_run)
    lib = build_shared_library(SAXPY, X86, "saxpy")  # a later build is complete and loadable
    assert _saxpy(lib, 1.0, [1.0], [2.0]) == [3.0]


def test_error_function_parsing() -> None:
    stderr = ("/c/k.c: In function \u2018relu_3\u2019:\n"
              "/c/k.c:9:5: error: expected \u2018;\u2019 before \u2018}\u2019\n"
              "/c/k.c: In function 'conv_1':\n/c/k.c:20:1: note: something\n/c/k.c:21:2: error: bad\n"
              "/usr/bin/ld: /tmp/x.o: in function `main':\nk.c:(.text+0x5): undefined reference to `oops'\n")
    functions, first = tc.error_functions(stderr)
    assert functions == ["relu_3", "conv_1", "main"]
    assert first.startswith("/c/k.c:9:5: error: expected")


def test_missing_compiler_says_what_to_install(cache: Path) -> None:
    bogus = dataclasses.replace(X86, compiler=dataclasses.replace(X86.compiler, cc="no-such-gcc-xyz",
                                                                  packages=("gcc-xyz",)))
    if bogus.arch != host_arch():
        pytest.skip("the bogus compiler is only consulted on an x86-64 build machine")
    assert not compiler_available(bogus)
    with pytest.raises(CompileError, match=r"'no-such-gcc-xyz'.*not found.*apt-get install gcc-xyz"):
        build_shared_library(SAXPY, bogus, "saxpy")


@needs_x86
def test_native_executable(cache: Path) -> None:
    src = '#include <stdio.h>\nint main(int argc, char **argv) { printf("%d args, %s\\n", argc - 1, argv[1]); }\n'
    exe = build_executable(src, X86, "hello")
    proc = run_executable(X86, exe, ["tessera"], timeout=30)
    assert proc.returncode == 0 and proc.stdout == "1 args, tessera\n"


def _arm_saxpy_source(target) -> str:
    fma = target.intrinsic("fma", "f32")
    vt = target.vector_type("f32")
    return f"""
#include <{fma.header}>
#include <stdio.h>
typedef float v4f __attribute__((vector_size(16)));  /* GCC vector extension */
#define N 1024
static float x[N], y[N];
int main(void) {{
  for (int i = 0; i < N; ++i) {{ x[i] = (float)(i % 7); y[i] = 1.0f; }}
  const {vt} a = vdupq_n_f32(3.0f);
  for (int i = 0; i < N; i += {fma.lanes})  /* y = y + a * x */
    vst1q_f32(y + i, {fma.c_name}(vld1q_f32(y + i), a, vld1q_f32(x + i)));
  v4f acc = {{0, 0, 0, 0}};
  for (int i = 0; i < N; i += 4) acc += *(v4f *)(y + i);
  double total = 0.0;
  #pragma omp parallel for reduction(+ : total)
  for (int i = 0; i < N; ++i) total += y[i];
  printf("%.1f %.1f %.1f\\n", (double)(acc[0] + acc[1] + acc[2] + acc[3]), total, (double)y[N - 1]);
  return 0;
}}
"""


def test_arm_cross_build_runs_under_qemu(cache: Path) -> None:
    arm = load_target("arm-neon")
    if not compiler_available(arm):
        pytest.skip(f"cross compiler {arm.compiler.cross_cc} missing (scripts/setup.sh installs "
                    f"{' '.join(arm.compiler.packages)})")
    if not runner_available(arm):
        pytest.skip(f"emulator {arm.compiler.runner[0]} missing (scripts/setup.sh installs qemu-user)")
    exe = build_executable(_arm_saxpy_source(arm), arm, "arm_saxpy")
    header = exe.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    proc = run_executable(arm, exe, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # y[i] = 1 + 3 * (i % 7): sum over 1024 = 1024 + 3 * (146 * 21 + (0+1)) = 10225
    expected = 1024 + 3 * sum(i % 7 for i in range(1024))
    assert proc.stdout.split() == [f"{expected:.1f}", f"{expected:.1f}", f"{1 + 3 * (1023 % 7):.1f}"]


AVX512_SRC = """
#include <immintrin.h>
void scale_add(const float *restrict x, float *restrict y, int n) {
  const __m512 a = _mm512_set1_ps(2.0f);
  int i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += 2.0f * x[i];
}
"""


def test_avx512_build(cache: Path) -> None:
    t = load_target("x86-avx512")
    if t.arch != host_arch() or not compiler_available(t):
        pytest.skip("needs an x86-64 machine with gcc")
    lib = build_shared_library(AVX512_SRC, t, "scale_add")
    objdump = shutil.which("objdump")
    if objdump:
        text = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        assert "%zmm" in text and "vfmadd" in text
    if is_native(t):  # only on AVX-512 machines: also check the numbers
        so = ctypes.CDLL(str(lib))
        n = 37
        x, y = (ctypes.c_float * n)(*range(n)), (ctypes.c_float * n)(*([1.0] * n))
        so.scale_add(x, y, n)
        assert list(y) == [1.0 + 2.0 * i for i in range(n)]
    else:
        with pytest.raises(Exception, match="lacks ISA features"):
            run_executable(t, lib)
