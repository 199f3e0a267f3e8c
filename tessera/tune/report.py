"""Per-kernel tuning report: time share, achieved GFLOP/s, share of the target's peak, gain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tessera.tune.tuner import TaskResult


@dataclass
class KernelRow:
    name: str
    count: int
    gflop: float  # per call
    default_ms: float | None
    tuned_ms: float | None
    gain: float | None
    share: float  # of the tuned model's kernel time (weight x time)
    gflops: float | None
    peak_share: float | None
    trials: int
    failures: int


def kernel_rows(results: Sequence[TaskResult], target: Any) -> list[KernelRow]:
    """One row per task, heaviest share first. Peak: cores x FMA units x f32 lanes x 2 x GHz."""
    peak = target.peak_gflops()
    total = sum(r.task.weight * (r.best_seconds or r.default_seconds or 0.0) for r in results) or 1.0
    rows = []
    for r in results:
        t = r.best_seconds or r.default_seconds
        gflops = r.task.flops / t / 1e9 if t else None
        rows.append(KernelRow(
            r.task.name, r.task.weight, r.task.flops / 1e9,
            r.default_seconds * 1e3 if r.default_seconds else None, t * 1e3 if t else None,
            (r.default_seconds / t) if r.default_seconds and t else None, r.task.weight * (t or 0.0) / total,
            gflops, gflops / peak if gflops is not None and peak else None, r.trials, sum(r.failures.values())))
    return sorted(rows, key=lambda row: -row.share)


def report_table(results: Sequence[TaskResult], target: Any, limit: int | None = None) -> Any:
    """The report as a rich Table (``limit``: show only the heaviest rows)."""
    from rich.table import Table

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    rows = kernel_rows(results, target)
    shown = rows[:limit] if limit else rows
    table = Table("kernel", "count", "GFLOP", "default ms", "tuned ms", "gain", "time share", "GFLOP/s",
                  "% peak", "trials", "failed",
                  title=f"per-kernel report ({target.name}, peak {target.peak_gflops():.0f} GFLOP/s f32)")
    for r in shown:
        table.add_row(r.name, str(r.count), f(r.gflop, ".3f"), f(r.default_ms, ".4f"), f(r.tuned_ms, ".4f"),
                      f(r.gain, ".2f") + ("x" if r.gain else ""), f"{r.share:.1%}", f(r.gflops, ".1f"),
                      f(r.peak_share and r.peak_share * 100, ".1f"), str(r.trials), str(r.failures))
    if limit and len(rows) > limit:
        table.caption = f"{len(rows) - limit} lighter kernel(s) not shown"
    return table


def totals(results: Sequence[TaskResult]) -> tuple[float, float]:
    """(default, tuned) sum over kernels of count x seconds."""
    d = sum(r.task.weight * (r.default_seconds or 0.0) for r in results)
    t = sum(r.task.weight * (r.best_seconds or r.default_seconds or 0.0) for r in results)
    return d, t
