"""Search: deterministic for a fixed seed (same candidates in the same order), task scheduling."""

from __future__ import annotations

from pathlib import Path

from tessera.targets import load_target
from tessera.tune.database import TuningDB
from tessera.tune.tasks import extract_tasks, merge_tasks
from tessera.tune.tuner import tune

from .helpers import FakeMeasurer, add_tanh, conv_relu, matmul_relu

TARGET = load_target("x86-avx2")


def _run(tmp: Path, name: str, seed: int, trials: int = 14) -> tuple[list[str], list[str], FakeMeasurer]:
    tasks = merge_tasks(extract_tasks(matmul_relu(layers=3)), extract_tasks(conv_relu()))
    fake = FakeMeasurer()
    with TuningDB(tmp / f"{name}.db") as db:
        tune(tasks, TARGET, db, trials=trials, seed=seed, batch_size=4, measurer=fake)
        configs = [f"{r.workload[:8]}:{r.config}" for r in db.records()]
    return configs, fake.sources, fake


def test_same_seed_same_candidates_in_same_order(tmp_path: Path) -> None:
    a, src_a, _ = _run(tmp_path, "a", seed=7)
    b, src_b, _ = _run(tmp_path, "b", seed=7)
    assert len(a) == 3 + 14  # three defaults, then the trials
    assert a == b and src_a == src_b
    c, _, _ = _run(tmp_path, "c", seed=8)
    assert c[:3] == a[:3] and c != a  # same defaults, another search


def test_trials_are_spread_by_expected_gain(tmp_path: Path) -> None:
    tasks = merge_tasks(extract_tasks(matmul_relu(layers=3)), extract_tasks(conv_relu()))
    with TuningDB(tmp_path / "t.db") as db:
        results = tune(tasks, TARGET, db, trials=16, seed=0, batch_size=4, measurer=FakeMeasurer())
    assert sum(r.trials for r in results) == 16
    assert all(r.trials > 0 for r in results)  # every task gets a first round
    for r in results:
        assert r.best_seconds is not None and r.default_seconds is not None
        assert r.best_seconds <= r.default_seconds


def test_small_space_is_exhausted_without_repeats(tmp_path: Path) -> None:
    tasks = extract_tasks(add_tanh())
    fake = FakeMeasurer()
    with TuningDB(tmp_path / "e.db") as db:
        results = tune(tasks, TARGET, db, trials=200, seed=0, measurer=fake)
        recs = db.records()
    assert results[0].trials < 200  # stopped: no unmeasured point left
    assert len(set(fake.sources)) == len(fake.sources)  # never the same code twice
    assert len(recs) == results[0].trials + 1


def test_points_missing_newer_knobs_take_defaults() -> None:
    from tessera.tune.search import TaskSearch

    task = extract_tasks(conv_relu())[0]
    s = TaskSearch(task, TARGET, 0)
    default = s.space.default()
    old = [{k: v for k, v in default[0].items() if k != "order"}]  # as stored before "order" existed
    assert s.candidate(old).key == s.default_candidate().key
    assert s.candidate(old).config == default
    for _ in range(20):  # crossing an old point with a new one stays inside the space
        s.candidate(s.space.crossover(old, s.space.random(s.rng), s.rng))


class _LuckyOnce(FakeMeasurer):
    """Times from the fake hash, except that the default is always 1.0 ms and every other candidate
    re-timed after tuning is slower than it (their first, stored times were luck)."""

    def __init__(self, default_source: str) -> None:
        super().__init__()
        self.default_source = default_source
        self.verifying = False

    def run(self, built, reference):  # type: ignore[no-untyped-def]
        res = super().run(built, reference)
        if self._source[id(built)] == self.default_source:
            return type(res)("ok", 1e-3)
        return type(res)("ok", 2e-3 if self.verifying else 0.5e-3 * res.seconds / 1e-3)


def test_verification_retimes_the_fastest_and_demotes_a_lucky_record(tmp_path: Path) -> None:
    from tessera.tune.harness import task_data
    from tessera.tune.search import TaskSearch
    from tessera.tune.tuner import default_render, remeasure

    task = extract_tasks(conv_relu())[0]
    default = TaskSearch(task, TARGET, 0).default_candidate()
    source, _ = default_render(task, default, task_data(task.gc, 0), TARGET)
    fake = _LuckyOnce(source)
    with TuningDB(tmp_path / "v.db") as db:
        tune([task], TARGET, db, trials=6, seed=0, batch_size=3, measurer=fake)
        lucky = db.best(task.key, TARGET.hash)
        assert lucky is not None and not lucky.is_default and lucky.seconds < 1e-3
        fake.verifying = True
        (res,) = remeasure([task], TARGET, db, measurer=fake, top=2)
        best = db.best(task.key, TARGET.hash)
        assert best is not None and best.is_default and best.seconds == 1e-3  # what compile now uses
        assert res.default_seconds == res.best_seconds == 1e-3
        retimed = sorted(r.seconds for r in db.records(task.key, TARGET.hash) if r.seconds == 2e-3)
        assert len(retimed) >= 2  # the fastest records carry their re-timed medians
