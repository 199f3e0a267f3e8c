"""The measuring process: loads candidate libraries with ctypes and times them (NumPy + stdlib only).

Runs as ``python -m tessera.tune.worker`` so that a crashing or hanging candidate takes down only
this process (:class:`tessera.tune.measure.Measurer` restarts it). Jobs and results are pickled
dicts framed by an 8-byte length on stdin/stdout."""

from __future__ import annotations

import ctypes
import os
import pickle
import statistics
import struct
import sys
from typing import Any

import numpy as np

ALIGN = 64


def _aligned(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.zeros(n + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + n].view(dt).reshape(shape)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one candidate: one checked run (its outputs are returned), then ``repeat`` timed runs
    (at least ``min_seconds`` of kernel time in all, at most ``max_repeat``); with ``cold_constants``,
    the constant arguments are evicted from the caches before each run."""
    lib = ctypes.CDLL(job["library"])
    lib.tsr_set_num_threads(ctypes.c_int(int(job["threads"])))
    arrays = []
    cold = []
    for role, shape, dtype, data, constant in job["args"]:
        a = _aligned(tuple(shape), dtype)
        if data is not None:
            a[...] = data
        elif a.dtype.kind == "f":
            a[...] = np.nan  # a kernel that reads an output or workspace before writing it is caught
        else:
            a.view(np.uint8)[...] = 0x5A
        arrays.append((role, a))
        if constant and job.get("cold_constants"):
            cold.append(a)
    ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for _, a in arrays])
    cold_ptrs = (ctypes.c_void_p * max(len(cold), 1))(*[a.ctypes.data for a in cold])
    cold_bytes = (ctypes.c_longlong * max(len(cold), 1))(*[a.nbytes for a in cold])

    def bench(reps: int, seconds: Any) -> None:
        lib.tsr_bench(ptrs, ctypes.c_int(reps), seconds, cold_ptrs, cold_bytes, ctypes.c_int(len(cold)))

    first = (ctypes.c_double * 1)()
    bench(1, first)
    outputs = [a.copy() for role, a in arrays if role == "output"]
    reps = int(min(job["max_repeat"], max(job["min_repeat"], job["min_seconds"] / max(first[0], 1e-7))))
    times = (ctypes.c_double * reps)()
    bench(reps, times)
    seq = list(times)
    return {"status": "ok", "outputs": outputs, "median": statistics.median(seq), "times": seq}


def write_frame(stream: Any, obj: Any) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(blob)) + blob)
    stream.flush()


def read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError("stream closed")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    (n,) = struct.unpack("<Q", read_exact(fd, 8))
    return pickle.loads(read_exact(fd, n))


def serve() -> None:
    """Answer jobs from stdin until it sends None or closes; results go to the original stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a kernel prints goes to stderr, not into the result stream
    sys.stdout = sys.stderr
    while True:
        try:
            job = read_frame(0)
        except EOFError:
            return
        if job is None:
            return
        try:
            result = run_job(job)
        except Exception as e:  # a failing candidate is reported, not fatal  # noqa: BLE001
            result = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        write_frame(out, result)


if __name__ == "__main__":
    serve()
