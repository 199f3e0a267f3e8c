"""Tuning database files and imports that must give one clear error, never a traceback or a record
that always wins: malformed JSON lines, impossible times, wrong types; files that are not (or no
longer, or not yet) Tessera tuning databases; schema-1 databases migrate."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tessera.cli import main
from tessera.tune.database import MAX_LINE_BYTES, Record, TuningDB, TuningDBError

W, T = "a" * 64, "b" * 64


def _good(**change: Any) -> dict[str, Any]:
    d = {"workload": W, "target": T, "config": [{"tile": [4, 2]}], "steps": [[["split", "x0", 8]]], "status": "ok",
         "seconds": 1e-3, "is_default": False, "error": "", "flops": 1000, "workload_name": "mm",
         "target_name": "x86-avx2", "created": 1.0}
    d.update(change)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()


def _line(d: Any) -> str:
    return json.dumps(d)


BAD_LINES = [
    ("not json", "not a tuning record: Expecting value"),
    ("[1, 2]", "a record is a JSON object, got list"),
    ('"text"', "a record is a JSON object, got str"),
    (_line(_good(seconds=_DROP, status=_DROP)), "record lacks field"),
    (_line(_good(workload=_DROP)), "record lacks field.s. workload"),
    ('{"workload": "a", "seconds": -Infinity}', "record lacks field"),
    (_line(_good()).replace('"seconds": 0.001', '"seconds": -Infinity'), "seconds must be a finite number, got -inf"),
    (_line(_good()).replace('"seconds": 0.001', '"seconds": NaN'), "seconds must be a finite number, got nan"),
    (_line(_good(seconds=0)), "seconds 0 is below 1e-09"),
    (_line(_good(seconds=-1.0)), "seconds -1.0 is below"),
    (_line(_good(seconds="fast")), "seconds must be a finite number, got 'fast'"),
    (_line(_good(seconds=None)), "seconds must be a finite number, got None"),
    (_line(_good(seconds=True)), "seconds must be a finite number, got True"),
    (_line(_good(seconds=1e-8, flops=10**9)), r"over 1e\+15 FLOP/s \(impossible\)"),
    (_line(_good(status="crash")), "status 'crash' has no time"),
    (_line(_good(status="fast")), "status must be one of"),
    (_line(_good(target="t1")), "target must be a sha256 hex digest"),
    (_line(_good(workload="A" * 64)), "workload must be a sha256 hex digest"),
    (_line(_good(workload=7)), "workload must be a sha256 hex digest"),
    (_line(_good(steps="split x0 8")), "steps must be a list"),
    (_line(_good(steps=[["split", "x0", 8]])), "steps must be a list .per stage. of lists of steps"),
    (_line(_good(steps=[[["split", "x0", 8.5]]])), "step arguments must be loop names or integers"),
    (_line(_good(steps=[[[7, "x0"]]])), "steps must be a list"),
    (_line(_good(steps=[[]], config=[{}, {}])), "steps has 1 stage.s., config has 2"),
    (_line(_good(config={"tile": 1})), "config must be a list of objects"),
    (_line(_good(flops=-5)), "flops must be a non-negative integer"),
    (_line(_good(flops=1.5)), "flops must be a non-negative integer"),
    (_line(_good(is_default="yes")), "is_default must be true or false"),
    (_line(_good(error=["x"])), "error must be a string"),
    (_line(_good(created="today")), "created must be a finite"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "JSON nested too deeply"),
    ("1" * 5000, "not a tuning record: Exceeds the limit"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES, ids=[m[:40] for _, m in BAD_LINES])
def test_import_rejects_a_malformed_line_atomically(tmp_path: Path, bad: str, message: str) -> None:
    f = tmp_path / "team.jsonl"
    f.write_text(_line(_good()) + "\n\n" + bad + "\n" + _line(_good(seconds=2e-3)) + "\n")
    with TuningDB(tmp_path / "t.db") as db:
        with pytest.raises(TuningDBError, match=rf"team.jsonl:3: .*{message}"):
            db.import_jsonl(f)
        assert db.count() == 0  # the good line before it was not added either


def test_import_of_a_huge_line_or_binary_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "huge.jsonl"
    f.write_text(_line(_good()) + "\n" + _line(_good(error="x" * (MAX_LINE_BYTES + 10))) + "\n")
    with TuningDB(tmp_path / "t.db") as db:
        with pytest.raises(TuningDBError, match=rf"huge.jsonl:2: line longer than {MAX_LINE_BYTES} bytes"):
            db.import_jsonl(f)
        (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
        with pytest.raises(TuningDBError, match=r"bin.jsonl:1: not a tuning record: not UTF-8"):
            db.import_jsonl(tmp_path / "bin.jsonl")
        with pytest.raises(TuningDBError, match=r"cannot read tuning records from .*missing.jsonl"):
            db.import_jsonl(tmp_path / "missing.jsonl")
        assert db.count() == 0


def test_import_cli_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    for k, (bad, _) in enumerate(BAD_LINES[:8] + BAD_LINES[-3:]):
        f = tmp_path / f"bad{k}.jsonl"
        f.write_text(bad + "\n")
        assert main(["tuning-db", "import", str(f), "--db", db]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {f}:1: ") and err.count("\n") == 1, err[:300]
    good = tmp_path / "good.jsonl"
    good.write_text(_line(_good()) + "\n")
    assert main(["tuning-db", "import", str(good), "--db", db]) == 0
    assert "1 new" in capsys.readouterr().out


def test_add_and_best_never_take_an_impossible_time(tmp_path: Path) -> None:
    with TuningDB(tmp_path / "t.db") as db:
        for s in (float("-inf"), float("nan"), float("inf"), 0.0, -1e-3, 1e-12):
            with pytest.raises(TuningDBError, match="seconds"):
                db.add(Record(W, T, [{}], [[]], "ok", s))
        with pytest.raises(TuningDBError, match="has no time"):
            db.add(Record(W, T, [{}], [[]], "crash", 1e-3))
        db.add(Record(W, T, [{}], [[]], "ok", 2e-3))
        # rows another writer stored (an older Tessera, sqlite3 by hand): never the best
        for s in (float("-inf"), 0.0, -5.0, 1e-30):
            db.conn.execute("INSERT INTO records (workload, target, config, steps, status, seconds, created, uid) "
                            "VALUES (?, ?, '[{}]', '[[]]', 'ok', ?, 0, ?)", (W, T, s, f"u{s}"))
        db.conn.execute("INSERT INTO records (workload, target, config, steps, status, seconds, created, uid) "
                        "VALUES (?, ?, 'not json', '[[]]', 'ok', 1e-4, 0, 'garbled')", (W, T))
        db.conn.commit()
        best = db.best(W, T)
        assert best is not None and best.seconds == 2e-3
        assert [r.seconds for r in db.records()] == [2e-3, float("-inf"), 0.0, -5.0, 1e-30]  # garbled row skipped
        with pytest.raises(TuningDBError, match="cannot store a re-timing"):
            db.set_seconds({1: float("-inf")})


def _other_app_db(path: Path) -> Path:
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE users (name TEXT)")
    c.commit()
    c.close()
    return path


def _empty_sqlite(path: Path) -> Path:
    c = sqlite3.connect(path)
    c.execute("PRAGMA user_version = 1")  # a valid SQLite file with no tables
    c.commit()
    c.close()
    return path


def _schema(path: Path, version: str) -> Path:
    with TuningDB(path) as db:
        db.add(Record(W, T, [{}], [[]], "ok", 1e-3))
        db.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
        db.conn.commit()
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: _other_app_db(p), "is not a Tessera tuning database .it has no records table."),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x07" * 2000) and p, "cannot open tuning database"),
    (lambda p: p.write_bytes(b"not a database at all" * 50) and p,
     "cannot open tuning database .*file is not a database"),
    (lambda p: _schema(p, "3"), "has schema 3, written by a newer Tessera; this one reads schema 2 and older"),
    (lambda p: _schema(p, "zero"), "is not a Tessera tuning database .no schema version."),
])
@pytest.mark.parametrize("readonly", [False, True])
def test_files_that_are_not_tuning_databases(tmp_path: Path, make: Any, message: str, readonly: bool) -> None:
    path = make(tmp_path / "x.db")
    before = path.read_bytes()
    with pytest.raises(TuningDBError, match=message):
        TuningDB(path, readonly=readonly)
    assert path.read_bytes() == before  # nothing was written into another application's file


def test_empty_sqlite_file(tmp_path: Path) -> None:
    path = _empty_sqlite(tmp_path / "e.db")
    with pytest.raises(TuningDBError, match="is not a Tessera tuning database .it has no records table: an empty"):
        TuningDB(path, readonly=True)
    with TuningDB(path) as db:  # opened for writing, a database with no tables is a new one
        assert db.count() == 0


def test_cli_on_a_foreign_database_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.tune.test_cli_tune import _tiny_onnx

    other = _other_app_db(tmp_path / "other.db")
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    for args in (["tune", str(model), "--target", "x86-avx2", "--trials", "1", "--db", str(other)],
                 ["tuning-db", "info", "--db", str(other)],
                 ["tuning-db", "export", str(tmp_path / "o.jsonl"), "--db", str(other)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "is not a Tessera tuning database" in err and err.count("\n") == 1, err


def test_compile_with_a_foreign_default_database_warns_and_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from tessera.compiler import compile_graph
    from tessera.targets import load_target

    from .helpers import matmul_relu

    monkeypatch.setenv("TESSERA_TUNING_DB", str(_other_app_db(tmp_path / "other.db")))
    with caplog.at_level("WARNING", logger="tessera.tune"):
        comp = compile_graph(matmul_relu(), load_target("x86-avx2"))
    assert not comp.kernels[0].tuned
    assert "is not a Tessera tuning database" in caplog.text and "default schedules" in caplog.text
    with pytest.raises(TuningDBError, match="is not a Tessera tuning database"):
        compile_graph(matmul_relu(), load_target("x86-avx2"), tuning=tmp_path / "other.db")


_SCHEMA_1 = """
CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, workload TEXT NOT NULL, target TEXT NOT NULL,
    config TEXT NOT NULL, steps TEXT NOT NULL, status TEXT NOT NULL, seconds REAL,
    is_default INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', flops INTEGER NOT NULL DEFAULT 0,
    workload_name TEXT NOT NULL DEFAULT '', target_name TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    uid TEXT NOT NULL UNIQUE);
CREATE INDEX records_key ON records (workload, target);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO records (workload, target, config, steps, status, seconds, created, uid)
    VALUES ('{w}', '{t}', '[{{}}]', '[[]]', 'ok', 0.002, 1, 'u1');
INSERT INTO records (workload, target, config, steps, status, seconds, created, uid)
    VALUES ('{w}', '{t}', '[{{}}]', '[[]]', 'ok', -1e309, 2, 'u2');
"""


def test_schema_1_database_is_read_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    c = sqlite3.connect(path)
    c.executescript(_SCHEMA_1.format(w=W, t=T))
    c.close()
    with TuningDB(path, readonly=True) as ro:  # read as it is (not migrated: read-only)
        assert ro.schema == 1 and ro.best(W, T).seconds == 2e-3  # type: ignore[union-attr]
        assert ro.verdicts() == {"": 2}
    with TuningDB(path) as db:
        assert db.schema == 2
        entry = db.candidates(W, T)[0]
        db.set_verdict(entry.uid, "bad", "test")
        assert db.best(W, T) is None and db.count() == 2
    with TuningDB(path, readonly=True) as ro:
        assert ro.schema == 2 and ro.verdicts() == {"": 1, "bad": 1}
