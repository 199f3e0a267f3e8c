"""Tessera's heaviest kernels inside the model: time per call, arithmetic rate, share of the FMA peak.

The model is compiled a second time with per-kernel timers (``profile=True``, same schedules and
tuning database as the timed system) and called ``calls`` times with the benchmark's idle gap;
each kernel's time is its median over the calls. Kernels with the same operators, output shape and
arithmetic (a ResNet stage's repeated blocks) are one row. Rates count the arithmetic the kernel
actually does (a Winograd convolution's transforms and GEMMs, not the direct convolution it
replaces), so they compare with the FMA loop's rate directly."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table


@dataclass
class KernelStat:
    """One row: a kernel workload and how often the model runs it per call."""

    label: str  # fused operators and output shape
    count: int
    gflop: float  # per call, all instances
    ms: float  # per call, all instances (sum of the instances' medians)
    share: float  # of the profiled call's kernel time

    @property
    def gflops(self) -> float:
        return self.gflop / self.ms * 1e3 if self.ms > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kernel": self.label, "count": self.count, "gflop": self.gflop, "ms": self.ms,
                "time_share": self.share, "gflops": self.gflops}


def profile_kernels(onnx_path: Path, feeds: Mapping[str, np.ndarray], threads: int, calls: int,
                    gap_s: float) -> list[KernelStat]:
    """Rows for every kernel of the compiled model, heaviest first (empty when the model had to be
    split around host-run operators: its segments are profiled separately, not reported here)."""
    import tessera
    from tessera.compiler import kernel_profile
    from tessera.tune.tasks import kernel_label

    shapes = {n: tuple(a.shape) for n, a in feeds.items()}
    model = tessera.compile(str(onnx_path), target="host", input_shapes=shapes, num_threads=threads, profile=True)
    comp = getattr(model, "compilation", None)
    if comp is None:
        return []
    args = [feeds[n] for n in model.input_names]
    model(*args)
    kernel_profile(model)  # drop the first call's times
    per_call: list[list[float]] = []
    for _ in range(max(calls, 1)):
        model(*args)
        per_call.append([t for _, t in kernel_profile(model)])
        if gap_s:
            time.sleep(gap_s)
    medians = [statistics.median(col) * 1e3 for col in zip(*per_call, strict=True)]
    rows: dict[tuple[str, int], KernelStat] = {}
    for ck, ms in zip(comp.kernels, medians, strict=True):
        key = (kernel_label(ck.group, comp.graph.types[ck.group.outputs[0]].shape), ck.flops)
        row = rows.setdefault(key, KernelStat(key[0], 0, 0.0, 0.0, 0.0))
        row.count += 1
        row.gflop += ck.flops / 1e9
        row.ms += ms
    total = sum(medians) or 1.0
    for row in rows.values():
        row.share = row.ms / total
    return sorted(rows.values(), key=lambda r: -r.ms)


def kernel_table(title: str, rows: list[KernelStat], fma_gflops: float | None, limit: int) -> Table:
    """The heaviest ``limit`` rows, with each rate as a share of the measured FMA peak."""
    t = Table("kernel", "count", "GFLOP", "ms / call", "time share", "GFLOP/s", "% FMA peak", title=title,
              title_justify="left")
    for r in rows[:limit]:
        peak = f"{r.gflops / fma_gflops:.0%}" if fma_gflops else "-"
        t.add_row(r.label, str(r.count), f"{r.gflop:.3f}", f"{r.ms:.3f}", f"{r.share:.1%}", f"{r.gflops:.1f}", peak)
    total = sum(r.ms for r in rows)
    t.caption = (f"{len(rows)} kernel workloads, {total:.2f} ms of kernels per call (median per kernel); "
                 f"{max(len(rows) - limit, 0)} lighter not shown")
    return t
