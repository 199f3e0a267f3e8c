"""The tuning loop: measure each task's default schedule (the reference), then give search rounds
to the task with the largest expected end-to-end gain, record every measurement as it arrives.

Task scheduling follows TVM's gradient idea: a task's priority is its weight (occurrences) times
the expected decrease of its best time, estimated from its recent improvement (backward) and an
optimistic diminishing-returns term (forward: best time / rounds so far)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.loop.stages import stage_flops
from tessera.tune.cost_model import CostModel
from tessera.tune.database import Record, TuningDB, possible_seconds, trace_text
from tessera.tune.harness import BuiltKernel, render_kernel_source, task_data
from tessera.tune.measure import Measurer, MeasureResult
from tessera.tune.search import Candidate, TaskSearch
from tessera.tune.tasks import TuneTask

NUMPY_CHECK_FLOPS = 4_000_000  # stages up to this size also check the default against NumPy
WINDOW = 3  # rounds over which a task's recent improvement is measured
BACKWARD_WEIGHT = 0.5
VERIFY_TOP = 3  # fastest records of a task re-timed against the default after tuning
MAX_VERIFY_PASSES = 3

Render = Callable[[TuneTask, Candidate, dict, Any], "tuple[str, BuiltKernel]"]


def default_render(task: TuneTask, cand: Candidate, data: dict, target: Any) -> tuple[str, BuiltKernel]:
    return render_kernel_source(task.gc, cand.schedules, data, target)


@dataclass
class TaskResult:
    """Outcome of one task after tuning."""

    task: TuneTask
    default_seconds: float | None
    best_seconds: float | None
    trials: int = 0
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class Progress:
    """What the progress callback sees after each measurement."""

    trials: int
    budget_trials: int | None
    budget_seconds: float | None
    elapsed: float
    tasks_started: int
    tasks: int
    latency: float | None  # sum over tasks of weight x best seconds (None until every default ran)
    default_latency: float | None
    task_name: str = ""
    status: str = ""


def tune(tasks: Sequence[TuneTask], target: Any, db: TuningDB, *, trials: int | None = None,
         seconds: float | None = None, seed: int = 0, batch_size: int = 8, epsilon: float = 0.15,
         measurer: Any = None, render: Render = default_render,
         progress: Callable[[Progress], None] | None = None) -> list[TaskResult]:
    """Tune ``tasks`` for ``target`` until ``trials`` new candidates were measured or ``seconds``
    passed (at least one budget is required). Resumes from the records in ``db``."""
    if trials is None and seconds is None:
        raise ValueError("tune needs a budget: trials or seconds")
    if trials is not None and trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    t0 = time.perf_counter()
    own = measurer is None
    meas = measurer if measurer is not None else Measurer(target)
    model = CostModel(seed)
    searches = [TaskSearch(t, target, seed) for t in tasks]
    data = {t.key: task_data(t.gc, seed) for t in tasks}
    refs: dict[str, list[np.ndarray]] = {}
    results = {t.key: TaskResult(t, None, None) for t in tasks}
    done = 0

    def elapsed() -> float:
        return time.perf_counter() - t0

    def out_of_budget() -> bool:
        return (trials is not None and done >= trials) or (seconds is not None and elapsed() >= seconds)

    def report(name: str, status: str) -> None:
        if progress is None:
            return
        have = all(s.best_seconds is not None for s in searches if s.default_seconds is not None)
        lat = sum(s.task.weight * s.best_seconds for s in searches if s.best_seconds is not None)
        dlat = sum(s.task.weight * s.default_seconds for s in searches if s.default_seconds is not None)
        progress(Progress(done, trials, seconds, elapsed(), sum(1 for s in searches if s.rounds), len(searches),
                          lat if have and lat else None, dlat or None, name, status))

    def save(s: TaskSearch, c: Candidate, res: MeasureResult, is_default: bool) -> None:
        status, secs, error = res.status, res.seconds, res.error[:2000]
        why = possible_seconds(secs, s.task.flops) if status == "ok" else ""
        if why:  # e.g. a clock too coarse for the kernel: never a record that always wins
            status, secs, error = "error", None, f"measured an impossible time: {why}"
        # an ok candidate's outputs matched the default's (or it is the default): verified
        db.add(Record(s.task.key, target.hash, c.config, [[st.to_json() for st in stage] for stage in c.steps],
                      status, secs, is_default, error, s.task.flops, s.task.name, target.name),
               verified=status == "ok")

    try:
        _resume(searches, db, target)
        # ---- references: every task's default schedule (rebuilt from the cache when resuming) ----
        order = sorted(searches, key=lambda s: -s.task.weight * s.task.flops)
        cands = [s.default_candidate() for s in order]
        built = meas.build([lambda s=s, c=c: render(s.task, c, data[s.task.key], target)
                            for s, c in zip(order, cands, strict=True)])
        for s, c, b in zip(order, cands, built, strict=True):
            res = _run(meas, b, None)
            if res.status == "ok":
                res = _check_default(s.task, data[s.task.key], res, getattr(meas, "rtol", 1e-3))
            if res.status != "ok":
                s.exhausted = True  # no reference: the task cannot be tuned
                results[s.task.key].failures[res.status] = 1
                if s.default_seconds is None:
                    save(s, c, res, True)
                continue
            refs[s.task.key] = res.outputs or []
            if s.default_seconds is None:
                s.default_seconds = res.seconds
                save(s, c, res, True)
            s.record(c, s.default_seconds, "ok")
            report(s.task.name, "default")
        _fit(model, searches)
        # ---- search rounds -------------------------------------------------------------------------
        while not out_of_budget():
            s = _pick(searches)
            if s is None:
                break
            n = batch_size if trials is None else min(batch_size, trials - done)
            batch = s.propose(model, n, epsilon)
            s.rounds += 1
            if not batch:
                continue
            built = meas.build([lambda c=c, t=s.task: render(t, c, data[t.key], target) for c in batch])
            for c, b in zip(batch, built, strict=True):
                if out_of_budget():
                    break
                res = _run(meas, b, refs[s.task.key])
                s.record(c, res.seconds, res.status)
                save(s, c, res, False)
                r = results[s.task.key]
                r.trials += 1
                if res.status != "ok":
                    r.failures[res.status] = r.failures.get(res.status, 0) + 1
                done += 1
                report(s.task.name, res.status)
            s.history.append(s.best_seconds or 0.0)
            _fit(model, searches)
    finally:
        if own:
            meas.close()
    for s in searches:
        r = results[s.task.key]
        r.default_seconds, r.best_seconds = s.default_seconds, s.best_seconds
    return [results[t.key] for t in tasks]


def _run(meas: Any, built: BuiltKernel | Exception, ref: list[np.ndarray] | None) -> MeasureResult:
    if isinstance(built, Exception):
        return MeasureResult("build_error", error=f"{type(built).__name__}: {built}")
    return meas.run(built, ref)


def _check_default(task: TuneTask, data: dict, res: MeasureResult, rtol: float) -> MeasureResult:
    """A small workload's default outputs checked against the NumPy evaluation of its tensor
    expressions (larger ones are trusted: the compiler's own tests check default schedules)."""
    from tessera.loop.te_eval import evaluate
    from tessera.tune.measure import compare_outputs

    if any(stage_flops(st) > NUMPY_CHECK_FLOPS for st in task.gc.stages) or res.outputs is None:
        return res
    diff = compare_outputs(res.outputs, evaluate(task.gc.outputs, data), rtol)
    if diff:
        return MeasureResult("wrong", error=f"default schedule disagrees with the NumPy reference: {diff}")
    return res


def _resume(searches: list[TaskSearch], db: TuningDB, target: Any) -> None:
    """Load each task's stored measurements (best, default, what not to measure again)."""
    for s in searches:
        default_key = s.default_candidate().key
        bad = db.bad_traces(s.task.key, target.hash)
        for rec in db.records(s.task.key, target.hash):
            try:
                c = s.candidate(rec.config)
            except (ValueError, KeyError, TypeError):
                continue  # a point of an older knob space
            status = "wrong" if bad and trace_text(rec) in bad else rec.status  # failed compile's check
            if status == "ok" and possible_seconds(rec.seconds):
                status = "error"  # an impossible time stored by an older Tessera: never the best
            if rec.is_default and status == "ok" and c.key == default_key:  # the rules may have changed
                s.default_seconds = rec.seconds
            s.record(c, rec.seconds if status == "ok" else None, status)


def _fit(model: CostModel, searches: list[TaskSearch]) -> None:
    xs, ys = [], []
    for s in searches:
        if s.default_seconds is None:
            continue
        for m in s.measured.values():
            xs.append(m.features)
            ys.append(CostModel.target(s.default_seconds, m.seconds if m.status == "ok" else None))
    model.fit(xs, ys)


def _pick(searches: list[TaskSearch]) -> TaskSearch | None:
    """The live task with the largest expected gain; tasks never searched come first (heaviest first)."""
    live = [s for s in searches if not s.exhausted and s.best_seconds is not None]
    if not live:
        return None
    fresh = [s for s in live if s.rounds == 0]
    if fresh:
        return max(fresh, key=lambda s: s.task.weight * (s.default_seconds or 0.0))

    def gain(s: TaskSearch) -> float:
        best = s.best_seconds or 0.0
        h = [s.default_seconds or best, *s.history]
        w = min(WINDOW, len(h) - 1) or 1
        backward = (h[-1 - w] - h[-1]) / w if len(h) > 1 else 0.0
        forward = best / (s.rounds + 1)
        return s.task.weight * (BACKWARD_WEIGHT * backward + (1 - BACKWARD_WEIGHT) * forward)

    return max(live, key=gain)


def remeasure(tasks: Sequence[TuneTask], target: Any, db: TuningDB, *, seed: int = 0, rounds: int = 3,
              top: int = VERIFY_TOP, measurer: Any = None,
              progress: Callable[[int, int], None] | None = None) -> list[TaskResult]:
    """Verify each task's winner: its default schedule and ``top`` fastest records timed again side by
    side, alternating ``rounds`` times; their medians replace the stored times (so a candidate that
    was fast once by luck loses its place, and the default wins where nothing beats it), repeated
    while the fastest record is one not yet re-timed. Reported gains are these side-by-side ratios."""
    own = measurer is None
    meas = measurer if measurer is not None else Measurer(target)
    out = []
    try:
        for k, task in enumerate(tasks):
            recs = db.records(task.key, target.hash)
            r = TaskResult(task, None, None, trials=sum(not rec.is_default for rec in recs))
            for rec in recs:
                if rec.status != "ok":
                    r.failures[rec.status] = r.failures.get(rec.status, 0) + 1
            out.append(r)
            if db.best(task.key, target.hash) is not None:
                r.default_seconds, r.best_seconds = _verify(task, target, db, meas, seed, rounds, top)
            if progress is not None:
                progress(k + 1, len(tasks))
    finally:
        if own:
            meas.close()
    return out


def _verify(task: TuneTask, target: Any, db: TuningDB, meas: Any, seed: int, rounds: int,
            top: int) -> tuple[float | None, float | None]:
    """Re-time the default and the fastest records of one task (see :func:`remeasure`); returns the
    default's and the best median."""
    s = TaskSearch(task, target, seed)
    data = task_data(task.gc, seed)
    default = s.default_candidate()
    retimed: set[int] = set()
    default_t: float | None = None
    best_t: float | None = None
    for _ in range(MAX_VERIFY_PASSES):
        pending = [(i, rec) for i, rec in db.fastest(task.key, target.hash, top + len(retimed)) if i not in retimed]
        if not pending or (best_t is not None and pending[0][1].seconds is not None
                           and pending[0][1].seconds >= best_t):
            break
        cands: list[tuple[int | None, Candidate]] = [(None, default)] if default_t is None else []
        for i, rec in pending[:top]:
            try:
                c = s.candidate(rec.config)
            except (ValueError, KeyError, TypeError):
                continue  # a point of an older knob space: not rebuilt
            cands.append((i, c))
        built = meas.build([lambda c=c: default_render(task, c, data, target) for _, c in cands])
        times: list[list[float]] = [[] for _ in cands]
        for _ in range(rounds):
            for j, b in enumerate(built):
                res = _run(meas, b, None)
                if res.status == "ok" and res.seconds is not None:
                    times[j].append(res.seconds)
        updates = {}
        for (i, c), ts in zip(cands, times, strict=True):
            if not ts:
                continue
            t = float(np.median(ts))
            if possible_seconds(t):
                continue
            if i is None:
                default_t = t
                i = db.default_id(task.key, target.hash) if c.key == default.key else None
            if i is not None:
                updates[i] = t
                retimed.add(i)
            best_t = t if best_t is None else min(best_t, t)
        retimed.update(i for i, _ in pending[:top])  # not rebuildable or failed now: do not retry
        db.set_seconds(updates)
    return default_t, best_t
