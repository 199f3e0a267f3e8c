"""The command line: help, inspect/run on ONNX files, one-line errors with non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tessera.cli import main


def _tiny_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, -2.0, 3.0, -4.0])
    nodes = [helper.make_node("Add", ["x", "w"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("cmd", [[], ["inspect"], ["run"], ["export"], ["zoo"]])
def test_help(cmd: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: tessera" in capsys.readouterr().out


def test_inspect_shows_symbolic_dims(tmp_path, capsys) -> None:
    assert main(["inspect", str(_tiny_model(tmp_path / "m.onnx"))]) == 0
    out = capsys.readouterr().out
    assert "f32[batch,4]" in out and "Relu" in out


def test_run_saves_outputs_by_name(tmp_path, capsys) -> None:
    model = _tiny_model(tmp_path / "m.onnx")
    x = np.array([[1, 1, 1, 1], [-1, 5, -5, 9]], np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(model), "--input", f"x={tmp_path / 'x.npy'}", "--output", str(tmp_path / "o.npz")]) == 0
    with np.load(tmp_path / "o.npz") as out:
        np.testing.assert_array_equal(out["y"], np.maximum(x + [1, -2, 3, -4], 0))


def _err(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_errors_are_one_line(tmp_path, capsys) -> None:
    model = _tiny_model(tmp_path / "m.onnx")
    assert "does-not-exist.onnx" in _err(["inspect", str(tmp_path / "does-not-exist.onnx")], capsys)
    data = model.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    assert "trunc.onnx" in _err(["inspect", str(tmp_path / "trunc.onnx")], capsys)
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00garbage" * 10)
    assert "junk.onnx" in _err(["run", str(tmp_path / "junk.onnx")], capsys)
    assert "not_a_model" in _err(["inspect", "not_a_model"], capsys)
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    assert "shape" in _err(["run", str(model), "--input", f"x={tmp_path / 'bad.npy'}"], capsys)
    np.save(tmp_path / "i.npy", np.zeros((2, 4), np.int64))
    assert "dtype" in _err(["run", str(model), "--input", f"x={tmp_path / 'i.npy'}"], capsys)
    assert "expects inputs" in _err(["run", str(model), "--input", f"x={tmp_path / 'i.npy'}",
                                      "--input", f"z={tmp_path / 'i.npy'}"], capsys)
    assert "NAME=FILE.npy" in _err(["run", str(model), "--input", "oops"], capsys)


def test_unsupported_ops_reported_at_once(tmp_path, capsys) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("FooOp", ["x"], ["a"], name="f1", domain="com.example"),
             helper.make_node("FooOp", ["a"], ["b"], name="f2", domain="com.example"),
             helper.make_node("BarOp", ["b"], ["y"], name="b1", domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "bad", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, tmp_path / "bad.onnx")
    err = _err(["inspect", str(tmp_path / "bad.onnx")], capsys)
    assert "FooOp" in err and "BarOp" in err and "f1" in err and "b1" in err


def test_debug_shows_traceback(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "tessera.cli", "--debug", "inspect", str(tmp_path / "nope.onnx")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr
