"""Tuning database: round trip, best record, export/import, resume after an interrupt, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.targets import load_target
from tessera.tune.database import Record, TuningDB, TuningDBError, default_db_path
from tessera.tune.tasks import extract_tasks, merge_tasks
from tessera.tune.tuner import tune

from .helpers import FakeMeasurer, conv_relu, matmul_relu

W1, W2, T1 = "1" * 64, "2" * 64, "7" * 64  # workload and target keys are sha256 hex digests

TARGET = load_target("x86-avx2")


def _rec(seconds: float | None, status: str = "ok", workload: str = W1, created: float = 1.0) -> Record:
    return Record(workload, T1, [{"tile": [4, 2]}], [[["split", "x0", 8]]], status, seconds, created=created)


def test_round_trip_best_and_failures(tmp_path: Path) -> None:
    with TuningDB(tmp_path / "a.db") as db:
        db.add(_rec(2e-3, created=1))
        db.add(_rec(None, "crash", created=2))
        db.add(_rec(1e-3, created=3))
        db.add(_rec(None, "wrong", created=4))
        db.add(_rec(5e-4, workload=W2, created=5))
        db.add(_rec(1e-3, created=3))  # the same record again: ignored
        assert db.count() == 5
        best = db.best(W1, T1)
        assert best is not None and best.seconds == 1e-3 and best.config == [{"tile": [4, 2]}]
        assert best.steps == [[["split", "x0", 8]]]
        assert db.best(W1, "f" * 64) is None
        assert [r.status for r in db.records(W1)] == ["ok", "crash", "ok", "wrong"]
    with TuningDB(tmp_path / "a.db") as again:  # committed: visible to a new connection
        assert again.count() == 5


def test_export_import(tmp_path: Path) -> None:
    with TuningDB(tmp_path / "a.db") as db:
        for k in range(3):
            db.add(_rec(1e-3 * (k + 1), created=k))
        db.add(_rec(None, "timeout", created=9))
        assert db.export_jsonl(tmp_path / "team.jsonl") == 4
    with TuningDB(tmp_path / "b.db") as other:
        assert other.import_jsonl(tmp_path / "team.jsonl") == 4
        assert other.import_jsonl(tmp_path / "team.jsonl") == 4  # duplicates skipped
        assert other.count() == 4
        assert other.best(W1, T1).seconds == 1e-3  # type: ignore[union-attr]
    (tmp_path / "bad.jsonl").write_text('{"workload": "w"}\n')
    with TuningDB(tmp_path / "c.db") as db, pytest.raises(TuningDBError, match=r"bad.jsonl:1: record lacks"):
        db.import_jsonl(tmp_path / "bad.jsonl")


def test_bad_files_and_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TuningDBError, match="cannot open tuning database .*junk.db"):
        TuningDB(tmp_path / "junk.db")
    monkeypatch.setenv("TESSERA_TUNING_DB", str(tmp_path / "env.db"))
    assert default_db_path() == tmp_path / "env.db"
    monkeypatch.delenv("TESSERA_TUNING_DB")
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    assert default_db_path() == tmp_path / "cache" / "tuning.db"


def test_interrupt_then_resume(tmp_path: Path) -> None:
    tasks = merge_tasks(extract_tasks(matmul_relu()), extract_tasks(conv_relu()))
    path = tmp_path / "r.db"

    def stop_after_three(p) -> None:  # Ctrl-C in the middle of a search round
        if p.trials == 3:
            raise KeyboardInterrupt

    with TuningDB(path) as db, pytest.raises(KeyboardInterrupt):
        tune(tasks, TARGET, db, trials=20, seed=0, batch_size=4, measurer=FakeMeasurer(), progress=stop_after_three)
    with TuningDB(path) as db:
        first = db.records()
        assert len(first) == 2 + 3  # two defaults and every trial measured before the interrupt
        fake = FakeMeasurer()
        results = tune(tasks, TARGET, db, trials=4, seed=0, batch_size=4, measurer=fake)
        recs = db.records()
    assert len(recs) == len(first) + 4  # defaults not recorded again
    assert sum(r.trials for r in results) == 4
    configs = [(r.workload, str(r.config)) for r in recs if not r.is_default]
    assert len(set(configs)) == len(configs)  # nothing measured twice
    assert len(fake.sources) == 2 + 4  # each reference (default) is run again for its outputs, not recorded


def test_compile_survives_a_broken_default_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from tessera.compiler import compile_graph

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"garbage" * 200)
    monkeypatch.setenv("TESSERA_TUNING_DB", str(broken))
    with caplog.at_level("WARNING", logger="tessera.tune"):
        comp = compile_graph(matmul_relu(), TARGET)
    assert not comp.kernels[0].tuned
    assert "cannot open tuning database" in caplog.text and "default schedules" in caplog.text
    with pytest.raises(TuningDBError, match="cannot open tuning database"):
        compile_graph(matmul_relu(), TARGET, tuning=broken)  # named explicitly: an error
