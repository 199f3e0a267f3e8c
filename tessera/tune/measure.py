"""Measurement: candidates compiled in parallel, run one at a time in an isolated worker process
with a time-out and repeated runs (their median, or their minimum: on a machine shared with other
work a parallel kernel's median includes waits for a free core), first outputs checked against
the reference.

A candidate that fails to build, crashes the worker, exceeds the time-out, raises, or computes a
different result is reported with that status (and never becomes a best record)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.tune.harness import BuiltKernel
from tessera.tune.worker import read_frame, write_frame

STATUSES = ("ok", "wrong", "crash", "timeout", "build_error", "error")
STATISTICS = ("median", "min")
# candidates one worker process loads before it is replaced: each library stays loaded with its
# thread pool's (sleeping) workers, so a long session would otherwise accumulate thousands
JOBS_PER_WORKER = 200


@dataclass
class MeasureResult:
    """Outcome of one candidate. ``seconds``: the run-time statistic (None unless ``status == "ok"``)."""

    status: str
    seconds: float | None = None
    error: str = ""
    times: list[float] = field(default_factory=list)
    outputs: list[np.ndarray] | None = None


def compare_outputs(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], rtol: float = 1e-3) -> str:
    """"" when ``outputs`` match ``reference`` (floats: max abs error <= rtol * max |reference|, NaN/Inf
    where the reference has them; others exactly), else what differs."""
    if len(outputs) != len(reference):
        return f"{len(outputs)} outputs, reference has {len(reference)}"
    for k, (o, r) in enumerate(zip(outputs, reference, strict=True)):
        if o.shape != r.shape or o.dtype != r.dtype:
            return f"output {k}: {o.dtype}{list(o.shape)} vs reference {r.dtype}{list(r.shape)}"
        if r.dtype.kind == "f":
            fin = np.isfinite(r)
            if not np.array_equal(fin, np.isfinite(o)):
                return f"output {k}: non-finite values where the reference has finite ones (or the reverse)"
            if fin.any():
                err = float(np.max(np.abs(o[fin].astype(np.float64) - r[fin])))
                scale = float(np.max(np.abs(r[fin]))) + 1e-6
                if not err <= rtol * scale:
                    return f"output {k}: max abs error {err:.3g} > {rtol:g} x max |reference| {scale:.3g}"
        elif not np.array_equal(o, r):
            return f"output {k}: {int(np.sum(o != r))} element(s) differ"
    return ""


class Measurer:
    """Builds and times candidates. ``threads``: threads per run (default: the target's cores);
    ``timeout``: seconds one candidate may take in the worker (checked run + timed runs);
    ``statistic``: "median" or "min" of the timed runs; ``cold_constants``: evict the kernel's
    constants (weights, packed panels) from the caches before every run, as they are when a model
    runs (see :mod:`tessera.tune.harness`)."""

    def __init__(self, target: Any, threads: int | None = None, timeout: float = 20.0, min_seconds: float = 0.05,
                 min_repeat: int = 3, max_repeat: int = 50, build_workers: int | None = None,
                 rtol: float = 1e-3, statistic: str = "median", cold_constants: bool = True) -> None:
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
        self.statistic = statistic
        self.cold_constants = cold_constants
        self.target = target
        self.threads = threads or target.effective_cores()
        self.timeout = timeout
        self.min_seconds = min_seconds
        self.min_repeat = min_repeat
        self.max_repeat = max_repeat
        self.rtol = rtol
        self.build_workers = build_workers or max(1, min(4, os.cpu_count() or 1))
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs = 0

    # ---- building ------------------------------------------------------------------------------
    def build(self, jobs: Sequence[Callable[[], tuple[str, BuiltKernel]]]) -> list[BuiltKernel | Exception]:
        """Each job renders one candidate (in this thread: the IR is not shared across threads);
        the C compiles then run in parallel."""
        from tessera.targets.toolchain import build_shared_library

        rendered: list[tuple[str, BuiltKernel] | Exception] = []
        for job in jobs:
            try:
                rendered.append(job())
            except Exception as e:  # noqa: BLE001  (an unbuildable point is a recorded failure)
                rendered.append(e)

        def compile_one(item: tuple[str, BuiltKernel] | Exception) -> BuiltKernel | Exception:
            if isinstance(item, Exception):
                return item
            source, built = item
            try:
                built.library = build_shared_library(source, self.target, "tune_candidate")
            except Exception as e:  # noqa: BLE001
                return e
            return built

        with ThreadPoolExecutor(self.build_workers) as pool:
            return list(pool.map(compile_one, rendered))

    # ---- running -------------------------------------------------------------------------------
    def _start(self) -> None:
        self._jobs = 0
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        self._proc = subprocess.Popen([sys.executable, "-m", "tessera.tune.worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
        self._proc = None

    def close(self) -> None:
        """Stop the worker process."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                write_frame(self._proc.stdin, None)
                self._proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, built: BuiltKernel, reference: Sequence[np.ndarray] | None) -> MeasureResult:
        """Time ``built`` in the worker; with a ``reference``, its first outputs must match it."""
        if self._proc is None or self._proc.poll() is not None or self._jobs >= JOBS_PER_WORKER:
            self.close()
            self._start()
        self._jobs += 1
        job = {"library": str(built.library), "threads": self.threads, "min_seconds": self.min_seconds,
               "min_repeat": self.min_repeat, "max_repeat": self.max_repeat, "cold_constants": self.cold_constants,
               "args": [(a.role, a.shape, a.dtype, a.data, a.constant) for a in built.args]}
        proc = self._proc
        try:
            write_frame(proc.stdin, job)
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                self._kill()
                return MeasureResult("timeout", error=f"no result within {self.timeout:g} s")
            res = read_frame(proc.stdout.fileno())
        except (EOFError, OSError):
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self._kill()
            return MeasureResult("crash", error=f"worker process died (exit code {code})")
        if res["status"] != "ok":
            return MeasureResult("error", error=res["error"])
        outputs = res["outputs"]
        if reference is not None:
            diff = compare_outputs(outputs, reference, self.rtol)
            if diff:
                return MeasureResult("wrong", error=diff, outputs=outputs)
        times = list(res["times"])
        value = min(times) if self.statistic == "min" else float(res["median"])
        return MeasureResult("ok", value, times=times, outputs=outputs)
