"""A compiled model's thread count applies to its own calls only: the calling thread's OpenMP
setting (shared with e.g. PyTorch when both use one libgomp) is restored after every call."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from tessera.compiler import compile_graph
from tessera.graph.reference import run_reference
from tessera.runtime.compiled_model import CompiledModel

from .helpers import GB, random_feeds


def test_threads_are_set_per_call_and_the_callers_openmp_setting_kept() -> None:
    b = GB("mm")
    x = b.input("x", (64, 96))
    g = b.done(b.op("Relu", [b.op("MatMul", [x, b.randc("w", 96, 80)])]))
    comp = compile_graph(g, "x86-avx2")
    gomp = ctypes.CDLL("libgomp.so.1")  # the OpenMP runtime the compiled library is linked with
    feeds = random_feeds(g)
    want = run_reference(g, feeds)[g.outputs[0]]
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    gomp.omp_set_num_threads(3)
    model.num_threads = 1  # recorded for the model's calls; the process-wide setting is untouched
    assert gomp.omp_get_max_threads() == 3
    np.testing.assert_allclose(model(feeds["x"])[0], want, rtol=1e-5, atol=1e-5)
    assert gomp.omp_get_max_threads() == 3

    seen: list[int] = []

    def other_thread() -> None:  # a fresh thread has its own setting; calls there keep it too
        gomp.omp_set_num_threads(5)
        model(feeds["x"])
        seen.append(gomp.omp_get_max_threads())

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen == [5] and gomp.omp_get_max_threads() == 3
