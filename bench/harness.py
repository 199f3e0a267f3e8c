"""Interleaved timing, output checks, FLOP counts and the result tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from bench.peers import SYSTEMS, TESSERA, Runner, Unavailable, Workload

MISMATCH_TOL = 1e-3  # max |out - eager| / max |eager| above this is flagged


@dataclass
class SystemResult:
    """One system on one workload: its timings (ms) or why it has none."""

    system: str
    times_ms: list[float] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | error
    note: str = ""
    setup_s: float | None = None
    compile_s: float | None = None
    rel_err: float | None = None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def min_ms(self) -> float | None:
        return min(self.times_ms) if self.times_ms else None

    @property
    def p90_ms(self) -> float | None:
        """90th percentile: the slow tail (on a shared VM, phases where every call is slow) the median hides."""
        if len(self.times_ms) < 2:
            return self.median_ms
        return statistics.quantiles(self.times_ms, n=10, method="inclusive")[-1]

    @property
    def mismatch(self) -> bool:
        return self.rel_err is not None and not self.rel_err <= MISMATCH_TOL

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system, "status": self.status, "note": self.note, "times_ms": self.times_ms,
            "median_ms": self.median_ms, "min_ms": self.min_ms, "p90_ms": self.p90_ms, "setup_s": self.setup_s,
            "compile_s": self.compile_s, "max_rel_err": self.rel_err, "mismatch": self.mismatch,
        }


@dataclass
class PointResult:
    """All systems on one (model, batch)."""

    model: str
    batch: int
    flops: float | None
    flops_source: str
    systems: list[SystemResult]
    kernels: list[Any] = field(default_factory=list)  # bench.kernels.KernelStat rows (Tessera's kernels)

    def get(self, name: str) -> SystemResult | None:
        return next((s for s in self.systems if s.system == name), None)

    def fastest_peer(self) -> SystemResult | None:
        peers = [s for s in self.systems if s.system != TESSERA and s.median_ms is not None]
        return min(peers, key=lambda s: s.median_ms) if peers else None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "batch": self.batch, "flops": self.flops, "flops_source": self.flops_source,
                "systems": [s.to_json() for s in self.systems], "tessera_kernels": [k.to_json() for k in self.kernels]}


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:160]


def rel_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Max over outputs of max |got - want| / max |want| (inf on a count or shape mismatch)."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if g.shape != w.shape:
            return float("inf")
        if w.size == 0:
            continue
        scale = max(float(np.max(np.abs(w))), 1e-30)
        worst = max(worst, float(np.max(np.abs(g - w))) / scale)
    return worst


def measure(
    w: Workload, systems: list[str], threads: int, reps: int, warmup: int, gap_s: float = 0.0,
    log: Any = None, warm_calls: int = 0,
) -> list[SystemResult]:
    """Prepare each system, warm each up, then time ``reps`` round-robin rounds (rotating the start).
    In a round each system makes ``warm_calls`` untimed calls right before its timed one (steady-state
    latency: thread pools awake, as in back-to-back serving); ``gap_s`` is slept after each timed call.

    Every system's outputs are checked once against PyTorch eager's."""
    results = {name: SystemResult(name) for name in systems}
    runners: dict[str, Runner] = {}
    for name in systems:
        res = results[name]
        if log:
            log(f"  preparing {name} ...")
        try:
            runner = SYSTEMS[name](w, threads)
        except Unavailable as e:
            res.status, res.note = "skipped", str(e)
            continue
        except Exception as e:  # noqa: BLE001 - any failure of a system is reported in its row
            res.status, res.note = "error", first_line(e)
            continue
        runners[name] = runner
        res.setup_s, res.compile_s = runner.setup_s, runner.compile_s
        res.note = "; ".join(runner.notes)

    reference = _reference_outputs(w)
    for name, runner in list(runners.items()):
        res = results[name]
        try:
            res.rel_err = rel_error(runner.outputs(runner.run()), reference)  # also the first warm-up call
            for _ in range(warmup - 1):
                runner.run()
        except Exception as e:  # noqa: BLE001
            res.status, res.note = "error", first_line(e)
            del runners[name]
    if log:
        log(f"  timing {reps} round-robin rounds of {', '.join(runners)}")
    order = list(runners)
    for rep in range(reps):
        k = rep % len(order) if order else 0
        for name in order[k:] + order[:k]:
            try:
                for _ in range(warm_calls):
                    runners[name].run()
                t0 = time.perf_counter()
                runners[name].run()
            except Exception as e:  # noqa: BLE001
                results[name].status, results[name].note = "error", first_line(e)
                continue
            results[name].times_ms.append((time.perf_counter() - t0) * 1e3)
            if gap_s:
                time.sleep(gap_s)
    for res in results.values():
        if res.status == "error":
            res.times_ms = []
    return [results[n] for n in systems]


def _reference_outputs(w: Workload) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        out = w.module(*w.inputs)
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [np.asarray(o.detach().numpy()) for o in outs]


def torch_flops(module: Any, inputs: tuple[Any, ...]) -> float | None:
    """FLOPs of one eager call from ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv/attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*inputs)
    return float(counter.get_total_flops()) or None


def tessera_flops(onnx_path: Path, inputs: list[np.ndarray]) -> float | None:
    """``count_flops`` of the imported ONNX graph specialized to the inputs; None if it stays symbolic."""
    from tessera.frontend.onnx_importer import import_onnx
    from tessera.graph.analysis import count_flops
    from tessera.graph.signature import bind_inputs

    g = import_onnx(onnx_path)
    _, env = bind_inputs(g, inputs)
    try:  # re-inferring with static shapes resolves dims that shape arithmetic derives from the inputs
        from tessera.graph.specialize import specialize_like

        g, env = specialize_like(g, inputs), {}
    except ImportError:
        pass
    try:
        total = count_flops(g, env)
    except KeyError:  # a data-dependent symbol that the input binding does not fix
        return None
    return float(total) if isinstance(total, (int, float)) else None


def machine_facts(threads: int) -> dict[str, Any]:
    """CPU model and SIMD flags from /proc/cpuinfo, cores, and the platform."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("?", "", platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")
            if f in flags]
    return {"cpu": model, "simd": simd, "logical_cpus": os.cpu_count(), "threads_used": threads,
            "platform": platform.platform(), "python": platform.python_version(), "load_avg_start": load_average()}


def load_average() -> float | None:
    """The 1-minute load average (other processes competing for the cores skew every timing)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def point_table(p: PointResult, fma_gflops: float | None, gemm_gflops: float | None) -> Table:
    """The per-(model, batch) table."""
    gf = f"{p.flops / 1e9:.2f} GFLOP/inference ({p.flops_source})" if p.flops else "FLOPs unknown"
    t = Table(title=f"{p.model}  batch {p.batch}  —  {gf}", title_justify="left")
    for col in ("system", "median ms", "min ms", "p90 ms", "× fastest peer", "GFLOP/s", "% FMA peak", "% GEMM",
                "max rel err", "setup s"):
        t.add_column(col, justify="left" if col == "system" else "right")
    t.add_column("note", overflow="fold", max_width=60)
    fastest = p.fastest_peer()
    for s in p.systems:
        if s.median_ms is None:
            t.add_row(s.system, "n/a", "", "", "", "", "", "", "", "", f"[yellow]{s.status}: {s.note}[/]")
            continue
        rate = p.flops / (s.median_ms * 1e-3) / 1e9 if p.flops else None
        ratio = s.median_ms / fastest.median_ms if fastest else None
        err = _fmt(s.rel_err, ".1e")
        if s.mismatch:
            err = f"[bold red]{err} MISMATCH[/]"
        elif s.rel_err is not None:
            err = f"[green]{err} ✓[/]"
        name = f"[bold]{s.system}[/]" if s is fastest else s.system
        t.add_row(
            name, f"{s.median_ms:.2f}", f"{s.min_ms:.2f}", _fmt(s.p90_ms, ".2f"), _fmt(ratio, ".2f"), _fmt(rate, ".1f"),
            _fmt(rate and fma_gflops and 100 * rate / fma_gflops, ".1f"),
            _fmt(rate and gemm_gflops and 100 * rate / gemm_gflops, ".1f"), err,
            _fmt(s.compile_s if s.compile_s is not None else s.setup_s, ".1f"), s.note,
        )
    return t


def summary_table(points: list[PointResult]) -> Table:
    """model, batch, fastest peer, Tessera, their ratio and Tessera's compile time."""
    t = Table(title="Summary (median ms)", title_justify="left")
    for col in ("model", "batch", "fastest peer", "peer ms", "Tessera ms", "Tessera / fastest peer",
                "Tessera compile s"):
        t.add_column(col, justify="left" if col in ("model", "fastest peer") else "right")
    for p in points:
        fastest, tess = p.fastest_peer(), p.get(TESSERA)
        tms = tess.median_ms if tess else None
        ratio = tms / fastest.median_ms if fastest and tms is not None else None
        t.add_row(
            p.model, str(p.batch), fastest.system if fastest else "-", _fmt(fastest and fastest.median_ms, ".2f"),
            _fmt(tms, ".2f") if tess is None or tms is not None else f"n/a ({tess.note})"[:70],
            _fmt(ratio, ".2f"), _fmt(tess and tess.compile_s, ".1f"),
        )
    return t
