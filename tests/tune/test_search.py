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
