"""`tessera tuning-db` and `tessera tune --db`: malformed record files and databases that are not
tuning databases are one `error: ...` line (exit status 2) naming the file (and line), and change nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tessera.cli import main


def _err(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2, capsys.readouterr()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(("data", "line"), [
    (b"not json\n", 1),
    (b"\n[1, 2]\n", 2),
    (b'\n\n{"workload": 1}\n', 3),
    (b'{"workload": "w", "target": "t", "config": {}, "steps": 5, "status": "ok", "seconds": 1}\n', 1),
    (b'{"workload": "w", "target": "t", "config": {}, "steps": [], "status": "ok", "seconds": -Infinity}\n', 1),
    (b"\xff\xfe\x00garbage" + np.random.default_rng(5).bytes(200), 1),
    (b'"just a string"\n', 1),
    (b"{" * 100_000 + b"\n", 1),
])
def test_malformed_import_lines(data: bytes, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, db = tmp_path / "records.jsonl", tmp_path / "t.db"
    src.write_bytes(data)
    err = _err(["tuning-db", "import", str(src), "--db", str(db)], capsys)
    assert err.startswith(f"error: {src}:{line}: "), err
    assert main(["tuning-db", "info", "--db", str(db)]) == 0
    assert ": 0 records" in capsys.readouterr().out  # one transaction: nothing half-imported


def test_empty_and_blank_files_import_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for text in ("", "\n\n  \n"):
        src = tmp_path / "r.jsonl"
        src.write_text(text)
        assert main(["tuning-db", "import", str(src), "--db", str(tmp_path / "t.db")]) == 0
        assert "read 0 records" in capsys.readouterr().out


def _not_a_tuning_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE other (x INTEGER)")
    con.commit()
    con.close()
    return path


def _tiny(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_databases_that_are_not_tuning_databases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _not_a_tuning_db(tmp_path / "other.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"garbage, not SQLite " * 100)
    (tmp_path / "afile").write_text("x")
    records = tmp_path / "r.jsonl"
    records.write_text("")
    model = str(_tiny(tmp_path / "m.onnx"))
    for db in (other, junk):
        before = db.read_bytes()
        for argv in (["tuning-db", "info", "--db", str(db)],
                     ["tuning-db", "export", str(tmp_path / "out.jsonl"), "--db", str(db)],
                     ["tuning-db", "import", str(records), "--db", str(db)],
                     ["tune", model, "--trials", "1", "--db", str(db)]):
            assert str(db) in _err(argv, capsys), argv
        assert db.read_bytes() == before
    assert "no records table" in _err(["tuning-db", "info", "--db", str(other)], capsys)
    for db in (tmp_path / "afile" / "t.db", tmp_path):
        assert str(db) in _err(["tune", model, "--trials", "1", "--db", str(db)], capsys)
        assert str(db) in _err(["tuning-db", "info", "--db", str(db)], capsys)
    assert not (tmp_path / "out.jsonl").exists()
