"""The thread pool that runs a module's parallel loops (C text added to every generated module).

A parallel loop is outlined by :mod:`tessera.codegen.c` into ``fn(ctx, lo, hi)`` and run by
``tsr_parallel_for(fn, ctx, n)``: the iteration space is cut into a few chunks per thread and
every thread, *the caller included*, claims chunks from one atomic counter until none is left;
the call returns when all chunks are finished, not when all threads have arrived. A worker whose
CPU is not running (a VM's idle vCPU takes milliseconds to be scheduled again) therefore costs
only the chunks it would have taken, run by the caller, instead of a wait at a barrier — with
OpenMP's ``parallel for`` the first loop after an idle period stalled ~12 ms that way. A late
worker finds the counter exhausted and goes back to waiting.

Workers are kept off the caller's CPU (Linux): each loop reads the caller's CPU and, when it differs
from the last one seen, sets every worker's affinity to the caller's CPUs at the first loop minus
that one. Otherwise the kernel may wake a sleeping worker onto the waker's CPU (a "wake-affine"
placement), where it waits behind the busy caller until a load balance moves it: on this project's
2-vCPU VM, MobileNetV2 calls after 50 ms idle in which the woken worker sat 6.8 ms on a run queue
and ran 1.9 ms (median; with the worker kept off, 0.0 ms waiting, and 10.39 -> 6.32 ms per call).

Workers spin briefly for the next loop (back-to-back kernels), then sleep on a futex. A second
thread calling into the module while a loop runs executes its loop alone (the pool serves one
loop at a time). Thread count: ``tsr_pool_set_threads(n)`` (0 = the online CPUs); workers start
on first use and are re-created in a forked child. Workers block all signals.
"""

from __future__ import annotations

__all__ = ["POOL_RUNTIME"]

POOL_RUNTIME = r"""
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
typedef void (*tsr_task_fn)(void*, int64_t, int64_t);
#define TSR_MAX_WORKERS 255
#define TSR_CHUNKS_PER_THREAD 16
#define TSR_SPIN_NS 1000000LL /* a worker spins this long for the next loop before it sleeps */
#define TSR_POOL_FN static __attribute__((unused))
#if defined(__linux__)
#define TSR_MASK_WORDS 16 /* CPU masks of up to 1024 CPUs */
extern int sched_getcpu(void);
#endif
static struct {
  pthread_mutex_t lock;      /* held by the thread running a parallel loop */
  int threads;               /* threads per loop, caller included; 0: online CPUs */
  int workers;               /* worker threads started */
  int atfork;                /* fork handler registered */
  _Atomic uint32_t seq;      /* bumped per loop; sleeping workers wait on it */
  _Atomic int sleepers;
  _Atomic uint64_t claim;    /* generation << 32 | next chunk */
  _Atomic int64_t done;      /* chunks finished in this generation */
  _Atomic(tsr_task_fn) fn;
  _Atomic(void*) ctx;
  _Atomic int64_t n, chunk, nchunks;
  _Atomic int active;        /* workers taking part in this loop */
#if defined(__linux__)
  int caller_cpu;            /* the CPU the workers are kept off (-1: none yet) */
  _Atomic int mask_ok;       /* 1: ``mask`` is set (published with release); -1: affinity unavailable */
  unsigned long allowed[TSR_MASK_WORDS], mask[TSR_MASK_WORDS]; /* the caller's first CPUs; the workers' */
  _Atomic int tids[TSR_MAX_WORKERS]; /* each worker's thread id once it runs (0 before) */
#endif
} tsr_pool = {.lock = PTHREAD_MUTEX_INITIALIZER
#if defined(__linux__)
              , .caller_cpu = -1
#endif
};
TSR_POOL_FN inline void tsr_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}
TSR_POOL_FN void tsr_pool_set_threads(int n) { tsr_pool.threads = n > 0 ? n : 0; }
TSR_POOL_FN int64_t tsr_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
/* Claim and run chunks of the current loop; worker ``me`` (-1: the caller) stops when none is left,
   when the loop is no longer the one it read, or when it is not among the loop's active workers. */
TSR_POOL_FN void tsr_take_chunks(int me) {
  for (;;) {
    uint64_t v = atomic_load_explicit(&tsr_pool.claim, memory_order_acquire);
    if (me >= atomic_load_explicit(&tsr_pool.active, memory_order_relaxed)) return;
    int64_t nchunks = atomic_load_explicit(&tsr_pool.nchunks, memory_order_relaxed);
    int64_t i = (int64_t)(v & 0xffffffffu);
    if (i >= nchunks) return;
    tsr_task_fn fn = atomic_load_explicit(&tsr_pool.fn, memory_order_relaxed);
    void* ctx = atomic_load_explicit(&tsr_pool.ctx, memory_order_relaxed);
    int64_t n = atomic_load_explicit(&tsr_pool.n, memory_order_relaxed);
    int64_t chunk = atomic_load_explicit(&tsr_pool.chunk, memory_order_relaxed);
    /* success proves chunk i of this generation was unclaimed, so the loop (and what was read) is live */
    if (!atomic_compare_exchange_weak_explicit(&tsr_pool.claim, &v, v + 1, memory_order_acq_rel,
                                               memory_order_relaxed)) continue;
    int64_t lo = i * chunk, hi = lo + chunk < n ? lo + chunk : n;
    fn(ctx, lo, hi);
    atomic_fetch_add_explicit(&tsr_pool.done, 1, memory_order_release);
  }
}
TSR_POOL_FN void tsr_wait_loop(uint32_t* seen) {
  int64_t until = 0;
  for (int k = 0;; ++k) {
    uint32_t s = atomic_load_explicit(&tsr_pool.seq, memory_order_acquire);
    if (s != *seen) { *seen = s; return; }
    if ((k & 255) == 255) {
      sched_yield(); /* a thread placed on this CPU (e.g. the caller) gets to run */
      int64_t now = tsr_ns();
      if (until == 0) until = now + TSR_SPIN_NS;
      else if (now > until) break;
    }
    tsr_pause();
  }
  atomic_fetch_add(&tsr_pool.sleepers, 1);
  uint32_t s;
  while ((s = atomic_load(&tsr_pool.seq)) == *seen) {
#if defined(__linux__)
    syscall(SYS_futex, &tsr_pool.seq, FUTEX_WAIT_PRIVATE, *seen, NULL, NULL, 0);
#else
    usleep(50);
#endif
  }
  atomic_fetch_sub(&tsr_pool.sleepers, 1);
  *seen = s;
}
#if defined(__linux__)
TSR_POOL_FN void tsr_set_affinity(int tid, const unsigned long* mask) {
  syscall(SYS_sched_setaffinity, tid, sizeof(unsigned long) * TSR_MASK_WORDS, mask); /* failure: left as is */
}
/* Called by the caller (holding the pool lock) when it runs on ``cpu``: workers get the CPUs the caller
   had at its first loop (those they are created with; read once, so a caller pinned to one CPU later
   does not confine them to it) but ``cpu``, or all of those when that leaves none. */
TSR_POOL_FN void tsr_keep_off(int cpu) {
  if (tsr_pool.mask_ok < 0) return;
  if (tsr_pool.mask_ok == 0 &&
      syscall(SYS_sched_getaffinity, 0, sizeof(unsigned long) * TSR_MASK_WORDS, tsr_pool.allowed) <= 0) {
    tsr_pool.mask_ok = -1;
    return;
  }
  const int bits = (int)(8 * sizeof(unsigned long));
  int any = 0;
  for (int w = 0; w < TSR_MASK_WORDS; ++w) {
    tsr_pool.mask[w] = tsr_pool.allowed[w];
    if (cpu / bits == w) tsr_pool.mask[w] &= ~(1UL << (cpu % bits));
    any |= tsr_pool.mask[w] != 0;
  }
  if (!any) memcpy(tsr_pool.mask, tsr_pool.allowed, sizeof tsr_pool.mask);
  tsr_pool.caller_cpu = cpu;
  atomic_store_explicit(&tsr_pool.mask_ok, 1, memory_order_release);
  for (int k = 0; k < tsr_pool.workers; ++k) {
    int tid = atomic_load(&tsr_pool.tids[k]);
    if (tid > 0) tsr_set_affinity(tid, tsr_pool.mask);
  }
}
#endif
TSR_POOL_FN void* tsr_worker(void* arg) {
  uintptr_t a = (uintptr_t)arg;
  int me = (int)(a & 0xffffu);
  uint32_t seen = (uint32_t)(a >> 16);
#if defined(__linux__)
  /* the mask was set before this thread was created and cannot change until its id is published (the
     creator holds the pool lock and waits for it); a later change reaches it through that id */
  if (atomic_load_explicit(&tsr_pool.mask_ok, memory_order_acquire) > 0) tsr_set_affinity(0, tsr_pool.mask);
  atomic_store(&tsr_pool.tids[me], (int)syscall(SYS_gettid));
#endif
  for (;;) {
    tsr_wait_loop(&seen);
    tsr_take_chunks(me);
  }
  return NULL;
}
TSR_POOL_FN void tsr_pool_forked(void) { /* the child has no workers; the parent's loop (if any) is gone */
  tsr_pool.workers = 0;
#if defined(__linux__)
  for (int k = 0; k < TSR_MAX_WORKERS; ++k) atomic_store(&tsr_pool.tids[k], 0);
  tsr_pool.caller_cpu = -1;
  tsr_pool.mask_ok = 0;
#endif
  atomic_store(&tsr_pool.sleepers, 0);
  pthread_mutex_init(&tsr_pool.lock, NULL);
}
TSR_POOL_FN void tsr_pool_start(int want) {
  if (want > TSR_MAX_WORKERS) want = TSR_MAX_WORKERS;
  if (tsr_pool.workers >= want) return;
  if (!tsr_pool.atfork) tsr_pool.atfork = pthread_atfork(NULL, NULL, tsr_pool_forked) == 0;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  uint32_t seq = atomic_load(&tsr_pool.seq);
  int first = tsr_pool.workers;
  while (tsr_pool.workers < want) {
    pthread_t t;
    uintptr_t arg = (uintptr_t)seq << 16 | (uintptr_t)tsr_pool.workers;
    if (pthread_create(&t, NULL, tsr_worker, (void*)arg) != 0) break; /* fewer workers: still correct */
    pthread_detach(t);
    tsr_pool.workers++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
#if defined(__linux__)
  /* a worker not yet running has no id to move it by: wait (once per worker) until each new one has one */
  for (int k = first; k < tsr_pool.workers; ++k)
    while (atomic_load(&tsr_pool.tids[k]) == 0) sched_yield();
#else
  (void)first;
#endif
}
/* Run fn(ctx, lo, hi) over [0, n) in chunks on the pool; returns when every chunk has run. */
TSR_POOL_FN void tsr_parallel_for(tsr_task_fn fn, void* ctx, int64_t n) {
  static int cpus = 0;
  if (cpus == 0) cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
  int threads = tsr_pool.threads > 0 ? tsr_pool.threads : cpus;
  if (threads > n) threads = (int)n;
  if (threads <= 1 || pthread_mutex_trylock(&tsr_pool.lock) != 0) {
    if (n > 0) fn(ctx, 0, n);
    return;
  }
#if defined(__linux__)
  int cpu = sched_getcpu();
  if (cpu >= 0 && cpu != tsr_pool.caller_cpu) tsr_keep_off(cpu);
#endif
  tsr_pool_start(threads - 1);
  int64_t nchunks = (int64_t)threads * TSR_CHUNKS_PER_THREAD;
  if (nchunks > n) nchunks = n;
  int64_t chunk = (n + nchunks - 1) / nchunks;
  nchunks = (n + chunk - 1) / chunk;
  atomic_store_explicit(&tsr_pool.fn, fn, memory_order_relaxed);
  atomic_store_explicit(&tsr_pool.ctx, ctx, memory_order_relaxed);
  atomic_store_explicit(&tsr_pool.n, n, memory_order_relaxed);
  atomic_store_explicit(&tsr_pool.chunk, chunk, memory_order_relaxed);
  atomic_store_explicit(&tsr_pool.nchunks, nchunks, memory_order_relaxed);
  atomic_store_explicit(&tsr_pool.active, tsr_pool.workers < threads - 1 ? tsr_pool.workers : threads - 1,
                        memory_order_relaxed);
  atomic_store_explicit(&tsr_pool.done, 0, memory_order_relaxed);
  uint64_t gen = (atomic_load_explicit(&tsr_pool.claim, memory_order_relaxed) >> 32) + 1;
  atomic_store_explicit(&tsr_pool.claim, gen << 32, memory_order_release);
  atomic_fetch_add(&tsr_pool.seq, 1);
#if defined(__linux__)
  if (atomic_load(&tsr_pool.sleepers) > 0) syscall(SYS_futex, &tsr_pool.seq, FUTEX_WAKE_PRIVATE, INT32_MAX);
#endif
  tsr_take_chunks(-1);
  for (int k = 1; atomic_load_explicit(&tsr_pool.done, memory_order_acquire) < nchunks; ++k) {
    tsr_pause();
    if ((k & 255) == 0) sched_yield(); /* the worker finishing a chunk may share this CPU */
  }
  pthread_mutex_unlock(&tsr_pool.lock);
}
"""
