/* Test scaffolding implementing the Tessera runtime ABI (not an operator kernel).
 * inputs:  x float32[4,8], y int64[3]
 * weights: w float32[4,8] at offset 0, b float32[8] at offset 128 (blob: 192 bytes)
 * outputs: sum float32[4,8] = x + w + b (broadcast over rows), staged through the arena
 *          twice int64[3] = 2*y
 *          nthreads int32[1] = OpenMP team size of the parallel region
 * tsr_run returns 3 if y[0] < 0 and 5 if any pointer is not 64-byte aligned.
 * tsr_abi: the ABI words of that layout (tessera.runtime.program.abi_words), written by hand here so
 * the test checks the Python side's encoding; -DNO_ABI leaves it out, -DABI_ARENA=N changes the arena.
 * -DABORT_ON_CALL: tsr_run and tsr_set_num_threads abort the process (proves they are never called).
 * -DMARKER: a constructor creates the file named by $TSR_TEST_MARKER (proves the library was loaded). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>

#ifdef MARKER
__attribute__((constructor)) static void mark_loaded(void) {
    const char* path = getenv("TSR_TEST_MARKER");
    FILE* f = path ? fopen(path, "w") : NULL;
    if (f) fclose(f);
}
#endif
#ifdef ABORT_ON_CALL
#define GUARD() abort()
#else
#define GUARD()
#endif

#ifndef TWICE_FACTOR
#define TWICE_FACTOR 2 /* tests rebuild with another factor to get a different library */
#endif

static int misaligned(const void* p) { return ((uintptr_t)p) % 64 != 0; }

#ifndef ABI_ARENA
#define ABI_ARENA 128
#endif
#ifndef NO_ABI
static const long long abi[] = {
    0x54534142, 1, ABI_ARENA, 192, 2, 3, /* magic, ABI version, arena, weights, 2 inputs, 3 outputs */
    11, 128, 2, 4, 8,                    /* x: float32, 128 bytes, rank 2, (4, 8) */
    8, 24, 1, 3,                         /* y: int64, 24 bytes, (3,) */
    11, 128, 2, 4, 8,                    /* sum */
    8, 24, 1, 3,                         /* twice */
    6, 4, 1, 1,                          /* nthreads: int32, (1,) */
};
long long tsr_abi(long long* out, long long capacity) {
    long long n = (long long)(sizeof abi / sizeof abi[0]);
    for (long long i = 0; i < n && i < capacity; i++) out[i] = abi[i];
    return n;
}
#endif

void tsr_set_num_threads(int n) { GUARD(); omp_set_num_threads(n); }

int tsr_run(void* const* inputs, void* const* outputs, char* weights, char* arena) {
    GUARD();
    const float* x = (const float*)inputs[0];
    const int64_t* y = (const int64_t*)inputs[1];
    float* sum = (float*)outputs[0];
    int64_t* twice = (int64_t*)outputs[1];
    int32_t* nthreads = (int32_t*)outputs[2];
    const float* w = (const float*)weights;
    const float* b = (const float*)(weights + 128);
    float* tmp = (float*)arena;
    if (misaligned(x) || misaligned(y) || misaligned(sum) || misaligned(twice) || misaligned(nthreads) ||
        misaligned(weights) || misaligned(arena))
        return 5;
    if (y[0] < 0) return 3;
    int team = 0;
#pragma omp parallel
    {
#pragma omp single
        team = omp_get_num_threads();
#pragma omp for
        for (int i = 0; i < 32; i++) tmp[i] = x[i] + w[i] + b[i % 8];
    }
    for (int i = 0; i < 32; i++) sum[i] = tmp[i];
    for (int i = 0; i < 3; i++) twice[i] = TWICE_FACTOR * y[i];
    nthreads[0] = team;
    return 0;
}
