"""Choose a GEMM layer's tiling: enumerate tilings that fit the memories, rank them with the analytic
estimate, simulate the best few in the simulator's timing-only mode and keep the fastest.

This is a local search: tessera.tune's auto-scheduler searches loop schedules of CPU kernels and has no
notion of NPU tilings, so it is not used here. Results are cached per (description hash, layer shape).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tessera.codegen.npu.gemm import GemmSpec, Tiling, candidate_tilings, emit_gemm, estimate_cycles
from tessera.codegen.npu.machine import Machine
from tessera.errors import CompileError
from tessera.npu.isa import Program

# (program, dram bytes) -> (cycles, simulator result)
Measure = Callable[[Program, int], tuple[float, Any]]

_CACHE: dict[tuple, Tiling] = {}


def _key(spec: GemmSpec, m: Machine, desc_hash: str) -> tuple:
    return (desc_hash, spec.m, spec.k, spec.n, spec.batch, spec.in_dtype, spec.out_dtype, spec.act,
            spec.bias_addr is not None, spec.scale_addr is not None, spec.b_shared)


def choose_tiling(spec: GemmSpec, m: Machine, desc_hash: str, dram_bytes: int, measure: Measure | None,
                  top: int = 8, tag: str = "layer") -> Tiling:
    """The fastest of the ``top`` best-estimated tilings, measured with ``measure`` (the estimate's best
    when ``measure`` is None)."""
    key = _key(spec, m, desc_hash)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    cands = candidate_tilings(spec, m)
    if not cands:
        raise CompileError(f"layer {tag}: no tiling of a {spec.m}x{spec.k}x{spec.n} {spec.in_dtype} GEMM fits "
                           f"the scratchpad ({m.spad_bytes} B) and accumulator ({m.acc_bytes} B)")
    ranked = sorted(cands, key=lambda t: estimate_cycles(spec, t, m))
    best = ranked[0]
    if measure is not None and top > 1:
        timed = []
        for t in ranked[:top]:
            cycles, _ = measure(Program(emit_gemm(spec, t, m, tag)), dram_bytes)
            timed.append((cycles, str(t), t))
        best = min(timed)[2]
    _CACHE[key] = best
    return best
