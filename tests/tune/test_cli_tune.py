"""``tessera tune`` on a tiny ONNX model; one-line errors for bad arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tessera.cli import main
from tessera.tune.database import TuningDB

W1, T1 = "1" * 64, "7" * 64  # workload and target keys are sha256 hex digests


def _tiny_onnx(path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 24])
    w = numpy_helper.from_array(rng.standard_normal((32, 24)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_tune_tiny_onnx_then_compile_uses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    db = tmp_path / "tiny.db"
    assert main(["tune", str(model), "--target", "x86-avx2", "--trials", "3", "--db", str(db), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 kernels, 1 distinct workloads" in out
    assert "MatMul+Relu[16x24]" in out and "% peak" in out and "time share" in out
    assert "tuned" in out and "records" in out and "medians of alternating runs" in out
    with TuningDB(db) as d:
        recs = d.records()
    assert len(recs) == 4 and recs[0].is_default  # the default, then 3 trials
    # compile (default database from the environment) picks the record up
    import tessera

    with TuningDB(db) as d:
        cm = tessera.compile(str(model), target="x86-avx2", tuning=d)
    assert cm.compilation.kernels[0].tuned
    x = np.random.default_rng(1).standard_normal((16, 32)).astype(np.float32)
    w = numpy_helper.to_array(onnx.load(str(model)).graph.initializer[0])
    np.testing.assert_allclose(cm(x)[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--trials", "0"], "error: --trials must be a positive integer, got 0"),
    (["--minutes", "-1"], "error: --minutes must be positive, got -1.0"),
    ([], "error: tessera tune: one of the arguments --minutes --trials is required"),
    (["--trials", "2", "--minutes", "1"], "error: tessera tune: argument --minutes: not allowed with argument"),
    (["--trials", "2", "--target", "nope"], "error: unknown target 'nope'"),
])
def test_bad_arguments_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(SystemExit) if "tessera tune:" in message else _no_exit():
        rc = main(["tune", str(model), *args])
        assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--minutes M" in out and "--trials N" in out and "--db PATH" in out and "--seed" in out


class _no_exit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_tuning_db_export_import_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.tune.database import Record

    src, dst, shared = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "team.jsonl"
    with TuningDB(src) as db:
        db.add(Record(W1, T1, [{"tile": [4, 2]}], [[["split", "x0", 8]]], "ok", 1e-3, created=1.0))
        db.add(Record(W1, T1, [{"tile": [8, 1]}], [[["split", "x0", 16]]], "crash", None, created=2.0))
    assert main(["tuning-db", "export", str(shared), "--db", str(src)]) == 0
    assert "exported 2 records" in capsys.readouterr().out
    assert main(["tuning-db", "import", str(shared), "--db", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "read 2 records" in out and "2 new" in out
    assert main(["tuning-db", "import", str(shared), "--db", str(dst)]) == 0  # duplicates skipped
    assert "0 new" in capsys.readouterr().out
    assert main(["tuning-db", "info", "--db", str(dst)]) == 0
    assert "2 records (1 ok, 1 failed) for 1 workload/target pairs" in capsys.readouterr().out
    with TuningDB(dst) as db:
        assert db.best(W1, T1).config == [{"tile": [4, 2]}]
    assert main(["tuning-db", "export", str(shared), "--db", str(tmp_path / "missing.db")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: tuning database")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    assert main(["tuning-db", "import", str(tmp_path / "bad.jsonl"), "--db", str(dst)]) == 2
    assert "bad.jsonl:1: not a tuning record" in capsys.readouterr().err
