"""The compile-facing CLI: `tessera compile` to an artifact, `tessera run` (compiled, artifact,
reference), `tessera targets`, the debug dump, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tessera.cli import main

RNG = np.random.default_rng(7)
W = RNG.standard_normal((16, 8)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)


def _mlp(path: Path, batch: int | str = "batch") -> Path:
    """y = relu(x @ W + b); x: f32[batch, 16]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    weights = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")]
    graph = helper.make_graph(nodes, "mlp", [x], [y], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W + B, 0)


def _save_x(tmp_path: Path, batch: int) -> tuple[np.ndarray, Path]:
    x = RNG.standard_normal((batch, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return x, tmp_path / "x.npy"


def _err(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("cmd", [["compile"], ["run"], ["targets"]])
def test_help(cmd: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert f"usage: tessera {cmd[0]}" in capsys.readouterr().out


def test_compile_symbolic_model_then_run_artifact(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "m.onnx")
    out = tmp_path / "sub" / "mlp.tsa"
    out.parent.mkdir()
    assert main(["compile", str(model), "-o", str(out), "--dim", "batch=3"]) == 0
    text = capsys.readouterr().out
    assert "1 kernel(s)" in text and "activation memory: peak" in text and "naive sum" in text
    assert str(out) in text and out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name != "mlp.tsa"]  # no temporary left behind

    x, xf = _save_x(tmp_path, 3)
    res = tmp_path / "o.npz"
    assert main(["run", str(out), "--input", f"x={xf}", "--output", str(res)]) == 0
    assert "y: float32[3, 8]" in capsys.readouterr().out
    with np.load(res) as o:
        np.testing.assert_allclose(o["y"], _expected(x), rtol=1e-5, atol=1e-5)
    # the artifact is specialized to batch 3
    _save_x(tmp_path, 2)
    assert "shape" in _err(["run", str(out), "--input", f"x={xf}"], capsys)


def test_run_compiled_matches_reference(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "m.onnx")
    x, xf = _save_x(tmp_path, 5)
    assert main(["run", str(model), "--input", f"x={xf}", "--output", str(tmp_path / "c.npz")]) == 0
    assert "compiled mlp for" in capsys.readouterr().out
    assert main(["run", str(model), "--reference", "--input", f"x={xf}", "--output", str(tmp_path / "r.npz")]) == 0
    assert "compiled mlp" not in capsys.readouterr().out
    with np.load(tmp_path / "c.npz") as c, np.load(tmp_path / "r.npz") as r:
        np.testing.assert_allclose(c["y"], r["y"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c["y"], _expected(x), rtol=1e-5, atol=1e-5)


def test_compile_static_shape_explain_and_dump(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "m.onnx")
    dump = tmp_path / "dump"
    argv = ["compile", str(model), "-o", str(tmp_path / "a.tsa"), "--shape", "x=4,16", "--target", "x86-avx2",
            "--explain-fusion", "--dump", str(dump), "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "for x86-avx2" in text and "edge(s) left unfused" in text
    c_source = (dump / "model.c").read_text()
    assert "tsr_run" in c_source
    loops = sorted(dump.glob("*.loop.txt"))
    schedules = sorted(dump.glob("*.schedule.txt"))
    assert len(loops) == len(schedules) == 1
    assert loops[0].read_text().startswith(f"kernel {loops[0].name.removesuffix('.loop.txt')}(")
    assert "mm, add, relu" in schedules[0].read_text()


def test_targets_lists_builtins_and_host(capsys) -> None:
    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    for name in ("x86-avx2", "x86-avx512", "arm-neon"):
        assert name in text
    assert "aarch64" in text and "512" in text
    host = [line for line in text.splitlines() if line.startswith("host -> ")]
    assert len(host) == 1 and host[0].split()[2].rstrip(":") in ("x86-avx2", "x86-avx512", "arm-neon")


def test_errors_are_one_line(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "m.onnx")
    out = tmp_path / "o.tsa"
    assert "NAME=d1,d2" in _err(["compile", str(model), "-o", str(out), "--shape", "x=3,a"], capsys)
    assert "NAME=d1,d2" in _err(["compile", str(model), "-o", str(out), "--shape", "x"], capsys)
    assert "no input 'z'" in _err(["compile", str(model), "-o", str(out), "--shape", "z=1,16"], capsys)
    assert "SYMBOL=N" in _err(["compile", str(model), "-o", str(out), "--dim", "batch=two"], capsys)
    assert "--dim batch=1" in _err(["compile", str(model), "-o", str(out)], capsys)  # symbolic, no sizes
    assert "missing.onnx" in _err(["compile", str(tmp_path / "missing.onnx"), "-o", str(out)], capsys)
    assert "unknown target" in _err(["compile", str(model), "-o", str(out), "--dim", "batch=1",
                                     "--target", "sparc"], capsys)
    with pytest.raises(SystemExit) as e:  # argparse usage errors: the same one-line form
        main(["compile", str(model), "--threads", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tessera compile: argument --threads") and "\n" not in err, err
    assert not out.exists()

    (tmp_path / "junk.tsa").write_bytes(b"not a zip at all" * 8)
    _, xf = _save_x(tmp_path, 2)
    assert "junk.tsa" in _err(["run", str(tmp_path / "junk.tsa"), "--input", f"x={xf}"], capsys)
    assert "not found" in _err(["run", str(tmp_path / "gone.tsa"), "--input", f"x={xf}"], capsys)
    assert main(["compile", str(model), "-o", str(out), "--dim", "batch=2"]) == 0
    data = out.read_bytes()
    (tmp_path / "trunc.tsa").write_bytes(data[: len(data) // 2])
    assert "trunc.tsa" in _err(["run", str(tmp_path / "trunc.tsa"), "--input", f"x={xf}"], capsys)
    assert "--input" in _err(["run", str(out)], capsys)
    assert "--reference" in _err(["run", str(out), "--reference", "--input", f"x={xf}"], capsys)


def test_failed_compile_keeps_existing_artifact(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "m.onnx")
    out = tmp_path / "keep.tsa"
    out.write_bytes(b"previous")
    _err(["compile", str(model), "-o", str(out), "--shape", "x=3"], capsys)  # rank mismatch
    assert out.read_bytes() == b"previous"
