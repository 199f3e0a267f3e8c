"""Real measurement: wrong, crashing and hanging candidates are recorded and never chosen; compile
uses the best record and still matches the reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tessera.targets import load_target
from tessera.tune.database import TuningDB, TuningDBError
from tessera.tune.harness import KERNEL_NAME, build_kernel, task_data
from tessera.tune.measure import Measurer, compare_outputs
from tessera.tune.space import TaskSpace
from tessera.tune.tasks import extract_tasks
from tessera.tune.tuner import default_render, tune
from tests.compiler.helpers import compile_and_check

from .helpers import conv_relu, matmul_relu

TARGET = load_target("x86-avx2")
CALL = f"    {KERNEL_NAME}("
SABOTAGE = {1: "abort(); ", 2: "for (;;) __asm__ volatile(\"\"); ", 3: "if (0) "}  # crash, hang, wrong
STATUS = {1: "crash", 2: "timeout", 3: "wrong"}


def test_harness_runs_a_kernel_with_packed_constant_weights() -> None:
    task = extract_tasks(matmul_relu())[0]
    space = TaskSpace(task.gc, TARGET)
    data = task_data(task.gc, seed=0)
    assert np.array_equal(data[task.gc.inputs[1]], task_data(task.gc, seed=0)[task.gc.inputs[1]])
    built = build_kernel(task.gc, space.schedules(space.default()), data, TARGET)
    assert any(a.role == "packed" for a in built.args)  # the constant weight is pre-packed
    x, w = (data[t].astype(np.float64) for t in task.gc.inputs)
    want = np.maximum(x @ w, 0).astype(np.float32)
    with Measurer(TARGET, min_seconds=0.01) as m:
        res = m.run(built, [want])
    assert res.status == "ok", res.error
    assert res.seconds is not None and res.seconds > 0 and len(res.times) >= 3
    assert compare_outputs(res.outputs or [], [want]) == ""
    assert "max abs error" in compare_outputs([want + 1], [want])
    assert res.seconds == float(np.median(res.times))
    with Measurer(TARGET, min_seconds=0.01, statistic="min") as m:
        res = m.run(built, [want])
    assert res.status == "ok" and res.seconds == min(res.times)
    with pytest.raises(ValueError, match="statistic must be one of median, min"):
        Measurer(TARGET, statistic="mean")


@pytest.mark.parametrize("cold", [True, False])
def test_constants_are_marked_and_evicted_before_each_run(cold: bool) -> None:
    task = extract_tasks(matmul_relu())[0]
    space = TaskSpace(task.gc, TARGET)
    data = task_data(task.gc, seed=0)
    built = build_kernel(task.gc, space.schedules(space.default()), data, TARGET)
    # the activation is not a constant; the weight input and its packed panel are
    assert [(a.role, a.constant) for a in built.args if a.role in ("input", "packed")] == [
        ("input", False), ("input", True), ("packed", True)]
    x, w = (data[t].astype(np.float64) for t in task.gc.inputs)
    with Measurer(TARGET, min_seconds=0.01, cold_constants=cold) as m:
        assert m.cold_constants is cold
        res = m.run(built, [np.maximum(x @ w, 0).astype(np.float32)])
    assert res.status == "ok", res.error  # evicting (clflush) leaves the data intact
    assert len(res.times) >= 3


def test_worker_process_is_replaced_after_a_number_of_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loaded candidate keeps its library (and its pool's threads) in the worker: it is recycled."""
    monkeypatch.setattr("tessera.tune.measure.JOBS_PER_WORKER", 2)
    task = extract_tasks(matmul_relu())[0]
    space = TaskSpace(task.gc, TARGET)
    data = task_data(task.gc, seed=0)
    built = build_kernel(task.gc, space.schedules(space.default()), data, TARGET)
    pids = []
    with Measurer(TARGET, min_seconds=0.001) as m:
        for _ in range(5):
            assert m.run(built, None).status == "ok"
            assert m._proc is not None
            pids.append(m._proc.pid)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_failing_candidates_recorded_never_chosen_and_compile_uses_best(tmp_path: Path) -> None:
    g = conv_relu()
    tasks = extract_tasks(g)
    calls: list[int] = []

    def render(task, cand, data, target):  # the 2nd/3rd/4th candidates crash, hang, compute nothing
        source, built = default_render(task, cand, data, target)
        calls.append(len(calls))
        k = calls[-1]
        if k in SABOTAGE:
            assert CALL in source
            source = source.replace(CALL, "    " + SABOTAGE[k] + CALL.strip())
        bad_configs[k] = cand.config
        return source, built

    bad_configs: dict[int, object] = {}
    db = TuningDB(tmp_path / "t.db")
    with Measurer(TARGET, timeout=3.0, min_seconds=0.005) as m:
        results = tune(tasks, TARGET, db, trials=6, seed=1, batch_size=6, measurer=m, render=render)
    recs = db.records()
    statuses = [r.status for r in recs]
    assert statuses[0] == "ok" and recs[0].is_default
    for k, status in STATUS.items():
        assert statuses[k] == status, (k, recs[k].error)
        assert recs[k].seconds is None and recs[k].error
    best = db.best(tasks[0].key, TARGET.hash)
    assert best is not None and best.status == "ok"
    assert best.config not in [bad_configs[k] for k in SABOTAGE]
    assert results[0].failures == {"crash": 1, "timeout": 1, "wrong": 1}

    comp = compile_and_check(g, target="x86-avx2", tuning=db)
    (ck,) = comp.kernels
    assert ck.tuned
    (steps,) = ck.schedules.values()
    assert _normalized([s.to_json() for s in steps]) == _normalized(best.steps[0])
    assert not compile_and_check(g, target="x86-avx2", tuning=False).kernels[0].tuned
    db.close()


def _normalized(steps: list) -> str:
    """A trace with axis names numbered by first appearance (compile names its axes afresh)."""
    text = json.dumps(steps)
    names: dict[str, str] = {}
    return re.sub(r"[A-Za-z]+\d+", lambda m: names.setdefault(m.group(0), f"n{len(names)}"), text)


def test_compile_without_database_uses_defaults(tmp_path: Path) -> None:
    comp = compile_and_check(matmul_relu(), target="x86-avx2")  # $TESSERA_TUNING_DB does not exist
    assert not comp.kernels[0].tuned
    with pytest.raises(TuningDBError, match="missing.db does not exist"):
        compile_and_check(matmul_relu(), target="x86-avx2", tuning=tmp_path / "missing.db")


def test_wrong_default_is_caught_by_the_numpy_reference(tmp_path: Path) -> None:
    tasks = extract_tasks(matmul_relu())

    def render(task, cand, data, target):  # the default itself computes nothing
        source, built = default_render(task, cand, data, target)
        return source.replace(CALL, "    if (0) " + CALL.strip()), built

    with TuningDB(tmp_path / "w.db") as db, Measurer(TARGET, min_seconds=0.005) as m:
        results = tune(tasks, TARGET, db, trials=3, seed=0, measurer=m, render=render)
        (rec,) = db.records()
        assert db.best(tasks[0].key, TARGET.hash) is None
    assert rec.status == "wrong" and "NumPy reference" in rec.error and rec.is_default
    assert results[0].trials == 0 and results[0].failures == {"wrong": 1}
