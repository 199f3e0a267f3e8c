"""Standalone single-kernel harness: build one scheduled kernel as a shared library with a timing
entry point, and the data it runs on (seeded random inputs; constants pre-packed as the schedule asks).

The library exports ``tsr_bench(void* const* args, int reps, double* seconds, void* const* cold,
const long long* cold_bytes, int n_cold)`` (runs the kernel ``reps`` times, one wall-clock time per
run; before each run the ``n_cold`` buffers ``cold`` are evicted from every cache level) and
``tsr_set_num_threads(int)``. Eviction is how a model runs a kernel: its weights were last touched
one inference ago, long out of cache, while its activations were just written by the kernel
before; timing with warm weights overrates schedules that re-read them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.loop.instantiate import GroupCompute
from tessera.loop.ir import Kernel
from tessera.loop.te import Tensor
from tessera.schedule.build import KernelBuilder
from tessera.schedule.primitives import Step

KERNEL_NAME = "tune_kernel"

_ENTRY = """
static void tsr_evict(void* const* bufs, const long long* bytes, int n) {
  for (int i = 0; i < n; ++i) {
    const char* p = (const char*)bufs[i];
    for (long long o = 0; o < bytes[i]; o += 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_clflush(p + o);
#elif defined(__aarch64__)
      __asm__ volatile("dc civac, %0" : : "r"(p + o) : "memory");
#endif
    }
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_mfence();
#elif defined(__aarch64__)
  __asm__ volatile("dsb ish" : : : "memory");
#endif
}
void tsr_bench(void* const* a, int reps, double* seconds, void* const* cold, const long long* cold_bytes,
               int n_cold) {
  for (int r = 0; r < reps; ++r) {
    tsr_evict(cold, cold_bytes, n_cold);
    int64_t t0 = tsr_ns();
    CALL;
    seconds[r] = 1e-9 * (double)(tsr_ns() - t0);
  }
}
void tsr_set_num_threads(int n) { tsr_pool_set_threads(n); }
"""


@dataclass
class ArgSpec:
    """One kernel parameter: its role and layout (``data`` set for inputs and packed constants)."""

    role: str  # "input" | "output" | "workspace" | "packed"
    shape: tuple[int, ...]
    dtype: str  # NumPy dtype name
    data: np.ndarray | None = None
    constant: bool = False  # a model constant (weights) or a panel packed from one


@dataclass
class BuiltKernel:
    """A candidate ready to run: its library and the arguments to run it on."""

    library: Path
    args: list[ArgSpec]
    kernel: Kernel


def random_value(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Seeded data of ``dtype``: uniform [-1, 1) floats, small non-negative integers, booleans."""
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 3, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise ValueError(f"no random data for dtype {dtype}")


def task_data(gc: GroupCompute, seed: int) -> dict[Tensor, np.ndarray]:
    """Seeded random values for every placeholder (constants included: tuning must not depend on a
    model's weights, and one workload may occur with different weights)."""
    from tessera.loop.te_eval import np_dtype

    rng = np.random.default_rng(random.Random(seed).getrandbits(64))
    return {t: random_value(t.shape, np_dtype(t.dtype), rng) for t in gc.inputs}


def render_kernel_source(gc: GroupCompute, schedules: dict[str, list[Step]], data: dict[Tensor, np.ndarray],
                         target: Any) -> tuple[str, BuiltKernel]:
    """Emit and render ``gc`` under ``schedules`` (constants packed from ``data``): the C source and
    the candidate (its ``library`` not built yet)."""
    from tessera.codegen.c import render_kernel, render_module
    from tessera.loop.te_eval import np_dtype

    consts = {t: data[t] for t in gc.constants}
    kernel = KernelBuilder(KERNEL_NAME, gc.inputs, gc.outputs, consts).build(gc.stages, schedules)
    lanes = {dt: target.lanes(dt) for dt in ("f32", "f64", "i32", "i64", "i8", "u8")}
    call = f"{KERNEL_NAME}({', '.join(f'a[{k}]' for k in range(len(kernel.params)))})"
    source = render_module([render_kernel(kernel, lanes, target.intrinsics)], _ENTRY.replace("CALL", call))
    args: list[ArgSpec] = []
    n_in, n_out = kernel.num_inputs, int(kernel.attrs["num_outputs"])  # type: ignore[call-overload]
    n_ws = int(kernel.attrs["workspace"])  # type: ignore[call-overload]
    packed = list(kernel.attrs["packed_constants"])  # type: ignore[call-overload]
    for k, buf in enumerate(kernel.params):
        dt = np_dtype(buf.dtype).name
        if k < n_in:
            args.append(ArgSpec("input", buf.shape, dt, data[gc.inputs[k]], gc.inputs[k] in consts))
        elif k < n_in + n_out:
            args.append(ArgSpec("output", buf.shape, dt))
        elif k < n_in + n_out + n_ws:
            args.append(ArgSpec("workspace", buf.shape, dt))
        else:
            args.append(ArgSpec("packed", buf.shape, dt, packed[k - n_in - n_out - n_ws], True))
    return source, BuiltKernel(Path(), args, kernel)


def build_kernel(gc: GroupCompute, schedules: dict[str, list[Step]], data: dict[Tensor, np.ndarray],
                 target: Any) -> BuiltKernel:
    """Render and compile one candidate (the compile cache is content addressed)."""
    from tessera.targets.toolchain import build_shared_library

    source, built = render_kernel_source(gc, schedules, data, target)
    built.library = build_shared_library(source, target, "tune_candidate")
    return built
