"""Compiled models run parallel loops on their own thread pool (``tessera.codegen.c_pool``): the
model's ``num_threads`` sets it regardless of OpenMP settings in the process (e.g. PyTorch's), it
survives ``fork``, and concurrent calls into one library stay correct."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from tessera.compiler import Compilation, compile_graph
from tessera.graph.reference import run_reference
from tessera.runtime.compiled_model import CompiledModel

from .helpers import GB, random_feeds

TASKS = Path("/proc/self/task")
needs_proc = pytest.mark.skipif(not TASKS.is_dir(), reason="counts threads with /proc/self/task (Linux)")


@pytest.fixture(scope="module")
def mm() -> tuple[Compilation, dict[str, np.ndarray], np.ndarray]:
    b = GB("mm")
    x = b.input("x", (256, 96))
    g = b.done(b.op("Relu", [b.op("MatMul", [x, b.randc("w", 96, 80)])]))
    comp = compile_graph(g, "x86-avx2")
    assert "tsr_parallel_for(" in comp.source
    feeds = random_feeds(g)
    return comp, feeds, run_reference(g, feeds)[g.outputs[0]]


def _threads() -> int:
    return len(list(TASKS.iterdir()))


@needs_proc
def test_num_threads_sizes_the_pool_whatever_openmp_says(mm) -> None:
    comp, feeds, want = mm
    gomp = ctypes.CDLL("libgomp.so.1")  # PyTorch's torch.set_num_threads(1) sets this
    saved = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(1)
    try:
        model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=1)
        before = _threads()
        np.testing.assert_allclose(model(feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
        assert _threads() == before  # one thread: the caller runs every loop
        model.num_threads = 3
        np.testing.assert_allclose(model(feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
        assert _threads() == before + 2  # two workers started, the caller is the third
        assert gomp.omp_get_max_threads() == 1  # the process's OpenMP setting is not touched
    finally:
        gomp.omp_set_num_threads(saved)


@needs_proc
def test_forked_child_recreates_its_workers(mm) -> None:
    comp, feeds, want = mm
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    model(feeds["x"])  # the parent's pool has a worker now; a forked child has none
    pid = os.fork()
    if pid == 0:  # child: exit status 0 = right answer and a worker of its own
        code = 1
        try:
            before = _threads()
            ok = np.allclose(model(feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
            code = 0 if ok and _threads() == before + 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_concurrent_calls_into_one_library(mm) -> None:
    """Two models sharing a library (one pool): a call that finds the pool busy runs its loops alone."""
    comp, feeds, want = mm
    models = [CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2) for _ in range(2)]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(feeds["x"].shape).astype(np.float32) for _ in range(2)]
    wants = [models[0](x)[0] for x in xs]  # sequential results (checked against the reference below)
    np.testing.assert_allclose(models[0](feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
    bad: list[str] = []

    def hammer(k: int) -> None:
        for _ in range(30):
            got = models[k](xs[k])[0]
            if not np.array_equal(got, wants[k]):
                bad.append(f"model {k}: max diff {np.abs(got - wants[k]).max()}")

    ts = [threading.Thread(target=hammer, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad, bad


@needs_proc
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_workers_are_kept_off_the_callers_cpu(mm) -> None:
    """Woken onto the caller's CPU, a worker would wait behind the busy caller (see c_pool): its
    affinity excludes the CPU the caller runs loops on, and follows the caller when it moves."""
    comp, feeds, want = mm
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    cpus = sorted(os.sched_getaffinity(0))
    pid = os.fork()
    if pid == 0:  # child: a fresh pool (no workers yet), so its one new thread is the worker
        code = 1
        try:
            before = {t.name for t in TASKS.iterdir()}
            ok = np.allclose(model(feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
            (worker,) = {t.name for t in TASKS.iterdir()} - before
            code = 0 if ok else 2
            for c in (cpus[0], cpus[1], cpus[0]):
                os.sched_setaffinity(0, {c})  # this thread only: the caller now runs its loops on c
                ok = np.allclose(model(feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
                if not ok or os.sched_getaffinity(int(worker)) != set(cpus) - {c}:
                    code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
