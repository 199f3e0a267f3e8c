"""``tessera tune``: tune a model's kernels with a live progress bar, then print the per-kernel report."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tessera.errors import TesseraError


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def check_budget(minutes: float | None, trials: int | None) -> None:
    """Raise a one-line error for a non-positive budget."""
    if minutes is not None and not minutes > 0:
        raise TesseraError(f"--minutes must be positive, got {minutes}")
    if trials is not None and trials < 1:
        raise TesseraError(f"--trials must be a positive integer, got {trials}")


def run_tune(g: Any, shapes: Mapping[str, Any] | None, target_name: str, *, minutes: float | None,
             trials: int | None, db_path: str | None, seed: int, statistic: str = "median") -> int:
    """Tune graph ``g`` (specialized to ``shapes``) for ``target_name``; records go to the database."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tessera.targets import is_native, load_target
    from tessera.tune.database import TuningDB
    from tessera.tune.measure import Measurer
    from tessera.tune.report import report_table, totals
    from tessera.tune.tasks import extract_tasks
    from tessera.tune.tuner import Progress as TuneProgress
    from tessera.tune.tuner import remeasure, tune

    check_budget(minutes, trials)
    target = load_target(target_name)
    if not is_native(target):
        raise TesseraError(f"target {target.name} cannot run on this machine, so its kernels cannot be measured "
                           "here; tune on a machine of that target and share the records (export/import)")
    console = Console(width=max(Console().width, 150))
    t0 = time.perf_counter()
    tasks = extract_tasks(g, shapes)
    db = TuningDB(db_path)
    console.print(f"{g.name}: {sum(t.weight for t in tasks)} kernels, {len(tasks)} distinct workloads; "
                  f"target {target.name}; database {db.path}")
    budget = trials if trials is not None else (minutes or 0) * 60
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar, Measurer(target, statistic=statistic) as measurer:
        job = bar.add_task("tuning", total=budget, info="measuring default schedules")

        def update(p: TuneProgress) -> None:
            lat = fmt_seconds(p.latency) if p.latency else "-"
            base = f" (default {fmt_seconds(p.default_latency)})" if p.default_latency else ""
            info = (f"tasks {p.tasks_started}/{p.tasks}  trials {p.trials}  best latency {lat}{base}  "
                    f"[dim]{p.task_name}[/dim]")
            bar.update(job, completed=p.trials if trials is not None else min(p.elapsed, budget), info=info)

        try:
            results = tune(tasks, target, db, trials=trials, seconds=None if trials is not None else budget,
                           seed=seed, progress=update, measurer=measurer)
        except KeyboardInterrupt:
            console.print(f"interrupted: the measured records are in {db.path}; run the same command to resume")
            raise
        bar.update(job, completed=budget)
        tuned_at = time.perf_counter()
        check = bar.add_task("verifying", total=len(tasks), info="default vs the fastest records, side by side")
        results = remeasure(tasks, target, db, seed=seed, measurer=measurer,
                            progress=lambda k, n: bar.update(check, completed=k))
    console.print(report_table(results, target, limit=25))
    d, t = totals(results)
    count = db.count()
    db.close()  # folds the write-ahead log into the file: the size below is the database's
    retime = time.perf_counter() - tuned_at
    console.print("default and tuned times above: medians of alternating runs after tuning (trials: records so far)")
    console.print(f"kernel time (sum of count x time): default {fmt_seconds(d)} -> tuned {fmt_seconds(t)} "
                  f"({d / t if t else 0:.2f}x); tuning took {tuned_at - t0:.0f} s (+{retime:.0f} s re-timing); "
                  f"database {db.path}: {count} records, {db.size_bytes() / 1024:.0f} KiB")
    return 0
