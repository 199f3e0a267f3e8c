"""Tuning records that cannot produce wrong answers: records that do not fit their kernel are
ignored with one warning and marked bad; every other record's kernel is checked once against the
default schedule's before compile uses it; the outcome is stored (or kept in memory)."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest

from tessera.compiler import Compilation, compile_graph
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.runtime.compiled_model import CompiledModel
from tessera.schedule.primitives import Step
from tessera.targets import load_target
from tessera.tune import verify
from tessera.tune.database import Record, TuningDB
from tessera.tune.harness import render_kernel_source, task_data
from tessera.tune.measure import Measurer
from tessera.tune.search import Candidate, TaskSearch
from tessera.tune.tasks import TuneTask, extract_tasks
from tessera.tune.workload import instance_schedules

from .helpers import matmul_relu

TARGET = load_target("x86-avx2")
M, K, N = 30, 64, 40  # v = 40 columns padded to 48 (two 8-lane vectors per tile row): the weight is packed


def _graph(const_weight: bool = False) -> Graph:
    """A MatMul+Relu whose weight is an input (packed at run time) or a constant (packed at compile time)."""
    return matmul_relu(M, K, N, const_weight=const_weight)


def _task(const_weight: bool = False) -> tuple[TuneTask, TaskSearch]:
    task = extract_tasks(_graph(const_weight))[0]
    return task, TaskSearch(task, TARGET, 0)


def _record(task: TuneTask, c: Candidate, steps: list[list[list[object]]] | None = None,
            seconds: float = 1e-6) -> Record:
    return Record(task.key, TARGET.hash, c.config, steps or [[s.to_json() for s in st] for st in c.steps], "ok",
                  seconds, flops=task.flops, workload_name=task.name, target_name=TARGET.name)


def _oob_pack_steps(c: Candidate) -> list[list[list[object]]]:
    """The default trace with the weight panel packed to 16 columns instead of 48: replayed
    unchecked, the kernel reads the panel three times past its end."""
    steps = [[s.to_json() for s in st] for st in c.steps]
    k = next(i for i, s in enumerate(steps[0]) if s[:4] == ["pack", 1, "x1", 48])
    steps[0][k] = ["pack", 1, "x1", 16, 16]
    return steps


def _check_model(comp: Compilation, g: Graph) -> None:
    """The compiled model equals the reference executor (float32 accumulation over K = 64)."""
    rng = np.random.default_rng(5)
    feeds = {n: rng.uniform(-1, 1, g.types[n].shape).astype(np.float32) for n in g.inputs}
    y = CompiledModel(comp.library, comp.manifest, comp.weights)(feeds)[0]
    np.testing.assert_allclose(y, run_reference(g, feeds)[g.outputs[0]], rtol=1e-4, atol=1e-5)


def test_out_of_bounds_pack_record_gives_wrong_numbers_when_replayed_unchecked() -> None:
    task, s = _task()
    c = s.default_candidate()
    # the record's trace in this instance's loop names, built without any check
    bad = instance_schedules(task.gc, [[Step.from_json(x) for x in st] for st in _oob_pack_steps(c)])
    data = task_data(task.gc, 0)
    with Measurer(TARGET, min_seconds=0.0, min_repeat=1, max_repeat=1, cold_constants=False) as m:
        ref_b, bad_b = m.build([lambda: render_kernel_source(task.gc, s.space.schedules(c.config), data, TARGET),
                                lambda: render_kernel_source(task.gc, bad, data, TARGET)])
        ref = m.run(ref_b, None)
        res = m.run(bad_b, ref.outputs)
    assert ref.status == "ok"
    assert res.status in ("wrong", "crash"), res  # what compile replayed before records were checked
    if res.status == "wrong":
        assert np.isnan(res.outputs[0]).any() or "max abs error" in res.error


@pytest.mark.parametrize("const_weight", [False, True])  # read past a workspace / a pre-packed weight panel
def test_out_of_bounds_pack_record_is_rejected_marked_bad_and_model_is_right(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, const_weight: bool) -> None:
    g = _graph(const_weight)
    task, s = _task(const_weight)
    c = s.default_candidate()
    path = tmp_path / "t.db"
    with TuningDB(path) as db:
        db.add(_record(task, c, _oob_pack_steps(c), seconds=1e-7))  # faster than anything: always the best
    with caplog.at_level(logging.WARNING, logger="tessera.tune"):
        comp = compile_graph(g, TARGET, tuning=path)
        comp2 = compile_graph(g, TARGET, tuning=path)  # marked bad: skipped without a second warning
    assert not comp.kernels[0].tuned and not comp2.kernels[0].tuned
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert task.name in warnings[0] and task.key[:12] in warnings[0]
    assert "does not fit the kernel" in warnings[0] and "padded extent 16 does not cover loop" in warnings[0]
    _check_model(comp, g)
    with TuningDB(path) as db:
        assert db.best(task.key, TARGET.hash) is None  # never chosen again
        assert db.verdicts() == {"bad": 1}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda st: st.insert(0, ["tensorize", "mma"]), "not a CPU schedule primitive"),
    (lambda st: st.insert(0, ["split", "x9", 4]), "no loop 'x9'"),
    (lambda st: st.insert(0, ["split", "x0", 0]), "split factor 0 outside"),
    (lambda st: st.insert(0, ["split", "x0", "4"]), "'4' is not an integer"),
    (lambda st: st.insert(0, ["parallel", "x2"]), "parallel reduction loop k"),
    (lambda st: st.append(["unroll", "x2"]), "steps are not the schedule its knob point gives"),
    (lambda st: st.append(["vectorize", "x2"]), "2 vectorized loops"),
    (lambda st: st.insert(0, ["pack", 7, "x1", 48, 16]), "factor 7 out of range"),
    (lambda st: st.insert(0, ["split"]), "split takes 2 argument"),
    (lambda st: st.append(["cache_write", ""]), "a second cache_write"),
    # a non-dividing split of the reduction after the pack: the panel would be read past its end
    (lambda st: st.append(["split", "x2", 3]), r"panel packed along \w+ is read at \w+ in \[0, 65\], outside 0..63"),
])
def test_malformed_steps_are_rejected_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        edit: object, message: str) -> None:
    g = _graph()
    task, s = _task()
    c = s.default_candidate()
    steps = [[x.to_json() for x in st] for st in c.steps]
    edit(steps[0])  # type: ignore[operator]
    path = tmp_path / "m.db"
    with TuningDB(path) as db:
        db.add(_record(task, c, steps, seconds=1e-7))
    with caplog.at_level(logging.WARNING, logger="tessera.tune"):
        comp = compile_graph(g, TARGET, tuning=path)
    assert not comp.kernels[0].tuned
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not fit the kernel" in warnings[0], warnings
    assert re.search(message, warnings[0]), warnings[0]
    with TuningDB(path) as db:
        assert db.verdicts() == {"bad": 1}


def _other_candidate(s: TaskSearch) -> Candidate:
    default = s.default_candidate()
    rng = random.Random(3)
    while True:
        c = s.candidate(s.space.random(rng))
        if c.key != default.key:
            return c


def test_a_fitting_record_is_checked_once_then_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _graph()
    task, s = _task()
    c = _other_candidate(s)
    path = tmp_path / "v.db"
    with TuningDB(path) as db:
        db.add(_record(task, c))  # as imported: not verified
        assert db.verdicts() == {"": 1}
    calls = []
    real = verify.KernelCheck.check

    def counting(self: verify.KernelCheck, gc: object, schedules: object) -> str:
        calls.append(1)
        return real(self, gc, schedules)  # type: ignore[arg-type]

    monkeypatch.setattr(verify.KernelCheck, "check", counting)
    comp = compile_graph(g, TARGET, tuning=path)
    assert comp.kernels[0].tuned and len(calls) == 1
    _check_model(comp, g)
    with TuningDB(path) as db:
        assert db.verdicts() == {"verified": 1}
    comp = compile_graph(g, TARGET, tuning=path)  # verified: no check, no extra build
    assert comp.kernels[0].tuned and len(calls) == 1


def test_a_record_whose_kernel_is_wrong_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Were a wrong trace to pass the knob-space check, the check against the default catches it."""
    g = _graph()
    task, s = _task()
    c = s.default_candidate()
    steps = _oob_pack_steps(c)
    path = tmp_path / "w.db"
    with TuningDB(path) as db:
        db.add(_record(task, c, steps, seconds=1e-7))

    def unchecked(gc: object, target: object, rec: Record) -> verify.Fitted:
        inst = instance_schedules(gc, [[Step.from_json(x) for x in st] for st in rec.steps])  # type: ignore[arg-type]
        return verify.Fitted(inst, False)

    monkeypatch.setattr("tessera.tune.apply.record_schedules", unchecked)
    with caplog.at_level(logging.WARNING, logger="tessera.tune"):
        comp = compile_graph(g, TARGET, tuning=path)
        compile_graph(g, TARGET, tuning=path)
    assert not comp.kernels[0].tuned
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failed its check against the default schedule" in warnings[0], warnings
    _check_model(comp, g)
    with TuningDB(path) as db:
        assert db.verdicts() == {"bad": 1} and db.best(task.key, TARGET.hash) is None


def test_read_only_database_keeps_verdicts_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _graph()
    task, s = _task()
    c = _other_candidate(s)
    path = tmp_path / "ro.db"
    with TuningDB(path) as db:
        db.add(_record(task, c))
    calls = []
    real = verify.KernelCheck.check
    monkeypatch.setattr(verify.KernelCheck, "check", lambda self, gc, sc: calls.append(1) or real(self, gc, sc))
    with TuningDB(path, readonly=True) as ro:
        assert compile_graph(g, TARGET, tuning=ro).kernels[0].tuned
        assert compile_graph(g, TARGET, tuning=ro).kernels[0].tuned
    assert len(calls) == 1  # the verdict is remembered for the process
    with TuningDB(path) as db:
        assert db.verdicts() == {"": 1}  # and never written to a database passed in read-only


def test_records_for_a_target_this_machine_cannot_run_are_used_only_when_verified(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _graph()
    task, s = _task()
    c = _other_candidate(s)
    path = tmp_path / "x.db"
    with TuningDB(path) as db:
        db.add(_record(task, c))
    monkeypatch.setattr("tessera.targets.is_native", lambda t: False)
    with caplog.at_level(logging.WARNING, logger="tessera.tune"):
        comp = compile_graph(g, TARGET, tuning=path)
    assert not comp.kernels[0].tuned
    assert "cannot be checked (this machine cannot run code for target x86-avx2)" in caplog.text
    with TuningDB(path) as db:
        assert db.verdicts() == {"": 1}  # not its fault: not marked


def test_tuner_resume_ignores_bad_and_impossible_records(tmp_path: Path) -> None:
    from tessera.tune.tuner import _resume

    task, s = _task()
    c = _other_candidate(s)
    path = tmp_path / "r.db"
    with TuningDB(path) as db:
        rec = _record(task, c, seconds=1e-7)
        db.add(rec)
        db.set_verdict(db.candidates(task.key, TARGET.hash)[0].uid, "bad", "test")
        db.conn.execute("UPDATE records SET seconds = ? WHERE id = 1", (float("-inf"),))  # as an old Tessera might
        db.conn.commit()
        search = TaskSearch(task, TARGET, 0)
        _resume([search], db, TARGET)
    assert search.best_seconds is None and search.measured[c.key].status == "wrong"
