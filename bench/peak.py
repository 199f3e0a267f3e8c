"""Machine peak measurements: an FMA-only loop compiled at bench time, and NumPy's SGEMM rate."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Independent accumulator chains: enough to cover FMA latency x FMA ports on current x86/Arm cores
# (e.g. 4-5 cycles x 2 ports) while still fitting the 16 vector registers of AVX2/NEON.
FMA_ACCUMULATORS = 12

_FMA_SOURCE = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define LANES (VBYTES / 4)
#define NACC %(nacc)d

typedef float vf __attribute__((vector_size(VBYTES)));

int main(int argc, char **argv) {
    long iters = atol(argv[1]);
    int threads = atoi(argv[2]);
    int reps = atoi(argv[3]);
    volatile float va = 0.999999f, vb = 1e-6f;  /* volatile: no constant folding */
    double best = 1e30, sink = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = 0.0, t1 = 0.0;
        #pragma omp parallel num_threads(threads) reduction(+:sink)
        {
            vf a, b, acc[NACC];
            for (int l = 0; l < LANES; l++) { a[l] = va; b[l] = vb; }
            for (int k = 0; k < NACC; k++)
                for (int l = 0; l < LANES; l++) acc[k][l] = (float)(k + l) * 1e-3f;
            #pragma omp barrier
            #pragma omp master
            t0 = omp_get_wtime();
            for (long i = 0; i < iters; i++) {
                #pragma GCC unroll 64
                for (int k = 0; k < NACC; k++) acc[k] = acc[k] * a + b;
            }
            #pragma omp barrier
            #pragma omp master
            t1 = omp_get_wtime();
            float s = 0.0f;
            for (int k = 0; k < NACC; k++)
                for (int l = 0; l < LANES; l++) s += acc[k][l];
            sink += s;
        }
        if (t1 - t0 < best) best = t1 - t0;
    }
    double flops = 2.0 * (double)iters * NACC * LANES * threads;
    printf("%%d %%d %%.9f %%.6e %%f\n", LANES, NACC, best, flops, sink);
    return 0;
}
"""


@dataclass
class PeakResult:
    """A measured rate in GFLOP/s, how it was measured, and an error when it could not be."""

    gflops: float | None
    detail: str
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"gflops": self.gflops, "detail": self.detail, "error": self.error}


def fma_source(accumulators: int = FMA_ACCUMULATORS) -> str:
    """C source of the FMA loop (GCC vector extensions sized to the native SIMD width, OpenMP)."""
    return _FMA_SOURCE % {"nacc": accumulators}


def fma_peak(threads: int = 2, iters: int = 20_000_000, reps: int = 3, cc: str = "gcc") -> PeakResult:
    """Compile and run the FMA-only loop with ``threads`` OpenMP threads; best of ``reps`` timings."""
    if shutil.which(cc) is None:
        return PeakResult(None, "", f"{cc} not found")
    with tempfile.TemporaryDirectory(prefix="tessera-fma-") as tmp:
        src, exe = Path(tmp) / "fma.c", Path(tmp) / "fma"
        src.write_text(fma_source())
        # -ffp-contract=fast: a*b+c must become one fused multiply-add (the point of the loop)
        cmd = [cc, "-O2", "-march=native", "-ffp-contract=fast", "-fopenmp", str(src), "-o", str(exe)]
        build = subprocess.run(cmd, capture_output=True, text=True)
        if build.returncode != 0:
            return PeakResult(None, " ".join(cmd), f"compile failed: {build.stderr.strip().splitlines()[:1]}")
        env = {**os.environ, "OMP_PROC_BIND": "spread", "OMP_WAIT_POLICY": "active"}
        run = subprocess.run([str(exe), str(iters), str(threads), str(reps)], capture_output=True, text=True,
                             env=env, timeout=300)
        if run.returncode != 0:
            return PeakResult(None, " ".join(cmd), f"run failed: {run.stderr.strip()[:200]}")
        lanes, nacc, secs, flops, _ = run.stdout.split()
    gflops = float(flops) / float(secs) / 1e9
    detail = f"{nacc} x {lanes}-lane f32 FMA chains, {threads} OpenMP threads, gcc -O2 -march=native"
    return PeakResult(gflops, detail)


def _blas_limit(threads: int) -> tuple[contextlib.AbstractContextManager, str]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), "env OPENBLAS_NUM_THREADS/OMP_NUM_THREADS"
    return threadpool_limits(limits=threads, user_api="blas"), "threadpoolctl"


def numpy_gemm_peak(threads: int = 2, n: int = 2048, reps: int = 5) -> PeakResult:
    """float32 ``n x n`` matmul through NumPy's BLAS, best of ``reps``, in GFLOP/s.

    The BLAS thread count is limited with threadpoolctl when it is installed; otherwise it relies on
    OPENBLAS_NUM_THREADS/OMP_NUM_THREADS, which ``bench.run`` sets before NumPy is imported."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    limit, how = _blas_limit(threads)
    with limit:
        np.matmul(a, b)  # warm-up: thread pool start, page faults
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
    return PeakResult(2.0 * n**3 / best / 1e9, f"NumPy float32 {n}x{n} matmul, {threads} BLAS threads ({how})")
