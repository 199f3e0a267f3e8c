"""Every user-caused error of the `tessera` command line is one `error: ...` line with exit status 2
(130 for ctrl-C): the cases a security review and a careless user found, each through the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tessera.cli import main

TESSERA = Path(sys.executable).parent / "tessera"
W = np.array([1.0, -2.0, 3.0, -4.0], np.float32)


def _model(path: Path, outputs: tuple[str, ...] = ("y",), name: str = "tiny", value: str = "s") -> Path:
    """outputs[i] = relu(x + W) * (i + 1); x: f32[batch, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Add", ["x", "w"], [value], name="add"),
             helper.make_node("Relu", [value], ["r"], name="relu")]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [4], W.tolist())]
    for i, out in enumerate(outputs):
        inits.append(helper.make_tensor(f"k{i}", TensorProto.FLOAT, [], [float(i + 1)]))
        nodes.append(helper.make_node("Mul", ["r", f"k{i}"], [out], name=f"mul{i}"))
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", 4]) for o in outputs]
    graph = helper.make_graph(nodes, name, [x], outs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _expected(x: np.ndarray, i: int = 0) -> np.ndarray:
    return np.maximum(x + W, 0) * (i + 1)


def _range_model(path: Path) -> Path:
    """A Range from 0 to 2**41 in f32: 8 TiB, computed while the model is imported."""
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("a", 0.0), ("b", 2.0**41), ("d", 1.0))]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Range", ["a", "b", "d"], ["y"])], "rng", [], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    np.save(tmp_path / "x.npy", x)
    return {"model": _model(tmp_path / "m.onnx"), "x": tmp_path / "x.npy", "dir": tmp_path}


def _err(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    """Run the CLI (usage errors included) and return its single stderr line; nothing else may be printed there."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == status, capsys.readouterr()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# 1. --threads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ["0", "-1", str(1 << 40), "257"])
@pytest.mark.parametrize("cmd", ["run", "compile"])
def test_threads_out_of_range(cmd: str, n: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [cmd, str(files["model"]), "--threads", n]
    argv += ["--input", f"x={files['x']}"] if cmd == "run" else ["--dim", "batch=2", "-o", str(files["dir"] / "a.tsa")]
    err = _err(argv, capsys)
    assert f"tessera {cmd}: argument --threads: must be from 1 to 256, got {int(n)}" in err
    assert not (files["dir"] / "a.tsa").exists()


def test_threads_zero_through_the_installed_command(files: dict[str, Path]) -> None:
    r = subprocess.run([str(TESSERA), "run", str(files["model"]), "--input", f"x={files['x']}", "--threads", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: tessera run: argument --threads: must be from 1 to 256, got 0\n"


def test_threads_in_range_runs(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = files["dir"] / "o.npz"
    assert main(["run", str(files["model"]), "--input", f"x={files['x']}", "--threads", "2", "--output", str(out)]) == 0
    with np.load(out) as o:
        np.testing.assert_allclose(o["y"], _expected(np.load(files["x"])), rtol=1e-6, atol=1e-6)


# 2. output paths ---------------------------------------------------------------------------------

def _bad_outputs(tmp: Path) -> list[tuple[Path, str]]:
    (tmp / "afile").write_bytes(b"x")
    (tmp / "adir.npz").mkdir()
    (tmp / "adir.tsa").mkdir()
    return [(tmp / "afile" / "o", "afile is not a directory"),
            (tmp / "nodir" / "o", "the directory " + str(tmp / "nodir") + " does not exist"),
            (tmp / "nodir" / "deeper" / "o", "does not exist")]


@pytest.mark.parametrize("cmd", ["run", "run-reference", "compile", "export", "tuning-db"])
def test_unwritable_outputs(cmd: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    tmp = files["dir"]
    model, x = str(files["model"]), f"x={files['x']}"
    suffix = {"compile": ".tsa", "export": ".onnx", "tuning-db": ".jsonl"}.get(cmd, ".npz")
    cases = [(Path(str(p) + suffix), msg) for p, msg in _bad_outputs(tmp)]
    if suffix in (".npz", ".tsa"):
        cases.append((tmp / f"adir{suffix}", "it is a directory"))
    for out, msg in cases:
        argv = {"run": ["run", model, "--input", x, "-o", str(out)],
                "run-reference": ["run", model, "--reference", "--input", x, "--output", str(out)],
                "compile": ["compile", model, "--dim", "batch=2", "-o", str(out)],
                "export": ["export", "resnet50", str(out)],
                "tuning-db": ["tuning-db", "export", str(out), "--db", str(tmp / "t.db")]}[cmd]
        if cmd == "tuning-db":
            (tmp / "t.db").unlink(missing_ok=True)
            assert main(["tuning-db", "info", "--db", str(tmp / "t.db")]) == 0
            capsys.readouterr()
        err = _err(argv, capsys)
        assert "cannot write " in err and str(out) in err and msg in err, err
        assert not (tmp / "nodir").exists()  # never created
    assert capsys.readouterr().out == ""  # refused before any work


def test_unwritable_output_under_proc(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """/proc takes no new files, even from root."""
    err = _err(["run", str(files["model"]), "--reference", "--input", f"x={files['x']}",
                "--output", "/proc/tessera-out.npz"], capsys)
    assert "cannot write" in err and "/proc/tessera-out.npz" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_output_in_read_only_directory(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ro = files["dir"] / "ro"
    ro.mkdir(mode=0o555)
    try:
        for argv in (["run", str(files["model"]), "--input", f"x={files['x']}", "--output", str(ro / "o.npz")],
                     ["compile", str(files["model"]), "--dim", "batch=1", "-o", str(ro / "a.tsa")]):
            assert "no permission to write in" in _err(argv, capsys)
    finally:
        ro.chmod(0o755)
    assert not list(ro.iterdir())


# 3. .npz outputs under any name --------------------------------------------------------------------

NAMES = ("file", "allow_pickle", "args", "kwds", "mmap_mode", "a/b", "../up", "ünï cödé", "y.npy.txt", "x y")


@pytest.mark.parametrize("reference", [True, False])
def test_npz_holds_every_output_name(reference: bool, files: dict[str, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(files["dir"] / "names.onnx", NAMES)
    out = files["dir"] / "o.npz"
    argv = ["run", str(model), "--input", f"x={files['x']}", "--output", str(out)] + (["--reference"] * reference)
    assert main(argv) == 0
    assert f"saved {len(NAMES)} output(s) to {out}" in capsys.readouterr().out
    x = np.load(files["x"])
    with np.load(out, allow_pickle=False) as o:
        assert sorted(o.files) == sorted(NAMES)
        for i, name in enumerate(NAMES):
            np.testing.assert_allclose(o[name], _expected(x, i), rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in files["dir"].iterdir()) == sorted(["m.onnx", "names.onnx", "x.npy", "o.npz"])


@pytest.mark.parametrize(("outputs", "message"), [
    (("a", "a.npy"), "outputs 'a' and 'a.npy' cannot both be saved in one .npz"),
    (("z" * 70000,), "cannot be saved in an .npz: its name is 70004 bytes, a zip member's name at most 65535"),
])
def test_npz_names_that_cannot_round_trip(outputs: tuple[str, ...], message: str, files: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(files["dir"] / "bad.onnx", outputs)
    out = files["dir"] / "o.npz"
    err = _err(["run", str(model), "--reference", "--input", f"x={files['x']}", "--output", str(out)], capsys)
    assert message in err and len(err) < 300
    assert not out.exists()


def test_npz_name_with_nul(tmp_path: Path) -> None:
    from tessera.cli_files import save_npz
    from tessera.errors import TesseraError

    with pytest.raises(TesseraError, match="the name holds a NUL character"):
        save_npz(tmp_path / "o.npz", {"a\0b": np.zeros(2)})
    with pytest.raises(TesseraError, match="not valid Unicode"):
        save_npz(tmp_path / "o.npz", {"\ud800": np.zeros(2)})
    assert not list(tmp_path.iterdir())


# 4. memory ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["run"], ["run", "--reference"]])
def test_absurd_range_is_one_line(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = _range_model(tmp_path / "range.onnx")
    err = _err([argv[0], str(model), *argv[1:]], capsys)
    assert "8.0" in err and "TiB" in err  # ResourceLimitError ("needs 8.0 TiB") or the MemoryError net


def test_absurd_range_inspects_and_compiles_but_does_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Typing and compiling the 8 TiB Range allocate nothing (its length comes from the formula); the
    artifact is refused when loaded on a machine without the memory, before any call."""
    monkeypatch.chdir(tmp_path)
    model = _range_model(tmp_path / "range.onnx")
    assert main(["inspect", str(model)]) == 0
    assert "2199023255552" in capsys.readouterr().out
    assert main(["compile", str(model), "-o", "r.tsa"]) == 0
    capsys.readouterr()
    err = _err(["run", "r.tsa"], capsys)
    assert "8.0 TiB" in err


def test_memory_error_anywhere_is_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tessera.graph.reference as reference

    def no_memory(*a: object, **k: object) -> None:
        raise MemoryError("Unable to allocate 8.00 TiB for an array with shape (2199023255552,)")

    monkeypatch.setattr(reference, "run_reference", no_memory)
    argv = ["run", str(files["model"]), "--reference", "--input", f"x={files['x']}"]
    assert _err(argv, capsys) == "error: out of memory: Unable to allocate 8.00 TiB for an array with shape " \
                                 "(2199023255552,)"
    monkeypatch.setattr(reference, "run_reference", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    assert _err(argv, capsys) == "error: out of memory: a memory request failed"
    with pytest.raises(MemoryError):
        main(["--debug", *argv])


def test_oversized_dims_and_inputs(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, out = str(files["model"]), str(files["dir"] / "a.tsa")
    err = _err(["compile", model, "-o", out, "--dim", f"batch={1 << 40}"], capsys)
    assert f"input 'x' of shape [{1 << 40}, 4] needs 16.0 TiB" in err
    assert "needs" in _err(["compile", model, "-o", out, "--shape", f"x={1 << 31},{1 << 31}"], capsys)
    assert "beyond the int64 range" in _err(["compile", model, "-o", out, "--dim", f"batch={1 << 64}"], capsys)
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20, 1 << 10)}
    with open(files["dir"] / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    err = _err(["run", model, "--input", f"x={files['dir'] / 'huge.npy'}"], capsys)
    assert "huge.npy: truncated: its header declares float32[1048576, 1048576, 1024]" in err
    monkeypatch.setenv("TESSERA_MEMORY_LIMIT", "16")
    err = _err(["run", model, "--reference", "--input", f"x={files['x']}"], capsys)
    assert "input 'x' from" in err and "needs 32 B" in err and "more than this machine's 16 B" in err
    assert not Path(out).exists()


# 7. long names ------------------------------------------------------------------------------------

def test_inspect_is_not_quadratic_in_name_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 200_000
    model = _model(tmp_path / "long.onnx", ("y" * n,), name="g" * n, value="v" * n)
    t0 = time.perf_counter()
    assert main(["inspect", str(model)]) == 0
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "g" * n in out.replace("\n", "") and "Relu" in out
    assert elapsed < 20, f"inspect took {elapsed:.1f} s"  # quadratic: over 90 s; now about 1 s


# 8. a careless user --------------------------------------------------------------------------------

def _careless_cases(d: Path, model: Path, x: Path) -> list[tuple[list[str], str]]:
    (d / "empty.onnx").write_bytes(b"")
    (d / "empty.tsa").write_bytes(b"")
    (d / "empty.tsr").write_bytes(b"")
    (d / "empty.npy").write_bytes(b"")
    (d / "folder.onnx").mkdir()
    (d / "folder.tsa").mkdir()
    (d / "bad.toml").write_text("this is [ not toml")
    (d / "half.toml").write_text('name = "x"\n')
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "x.npz", x=np.zeros((2, 4), np.float32))
    m, xi = str(model), f"x={x}"
    return [
        (["inspect", str(d / "missing.onnx")], "missing.onnx"),
        (["inspect", str(d / "empty.onnx")], "empty.onnx"),
        (["inspect", str(d / "empty.tsr")], "empty.tsr"),
        (["inspect", str(d / "folder.onnx")], "folder.onnx"),
        (["inspect", "no_such_zoo_model"], "no_such_zoo_model"),
        (["inspect", str(d / "empty.tsa")], "empty.tsa is a compiled artifact, not a model"),
        (["compile", str(d / "empty.tsa")], "empty.tsa is a compiled artifact, not a model"),
        (["compile", str(d / "missing.onnx"), "-o", str(d / "a.tsa")], "missing.onnx"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "seq=abc"], "--dim must be SYMBOL=N"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "=3"], "--dim must be SYMBOL=N"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=-1"], "--dim must be SYMBOL=N"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=\u00b2"], "--dim must be SYMBOL=N"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "seq=3"], "no symbolic dim 'seq'"),
        (["compile", m, "-o", str(d / "a.tsa"), "--shape", "x=2,4", "--shape", "x=3,4"], "given twice"),
        (["compile", m, "-o", str(d / "a.txt"), "--dim", "batch=1"], "must end in .tsa"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=1", "--dump", str(x)], "is a file, not a folder"),
        (["compile", m, "--target", "npu-gen2", "--dim", "batch=2", "--dump", str(x / "sub")],
         "is a file, not a folder"),
        (["compile", m, "--target", "npu-gen2", "--dim", "batch=2", "-o", str(d / "a.bin")],
         "not saved as .tsa artifacts"),
        (["compile", m, "--target", "npu-gen1", "--dim", "batch=2", "--calibration", "oops"],
         "--calibration must be NAME=FILE.npy, got 'oops'"),
        (["compile", m, "--target", "npu-gen1", "--dim", "batch=2", "--calibration", f"x={d / 'obj.npy'}"],
         "holds Python objects"),
        (["compile", m, "--precision", "fp64"], "argument --precision: invalid choice"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=1", "--target", "sparc"], "unknown target 'sparc'"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=1", "--target", str(d / "bad.toml")],
         "invalid TOML"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=1", "--target", str(d / "half.toml")],
         "missing required field"),
        (["compile", m, "-o", str(d / "a.tsa"), "--dim", "batch=1", "--target", str(d / "gone.toml")],
         "does not exist"),
        (["run", m, "--input", f"x={d / 'missing.npy'}"], "missing.npy: No such file"),
        (["run", m, "--input", f"x={d / 'obj.npy'}"], "holds Python objects"),
        (["run", m, "--input", f"x={d / 'x.npz'}"], "it is an .npz archive"),
        (["run", m, "--input", f"x={d / 'empty.npy'}"], "not a .npy file (it is empty)"),
        (["run", m, "--input", f"x={d}"], "Is a directory"),
        (["run", m, "--input", f"z={x}"], "unknown: ['z']"),
        (["run", m, "--input", xi, "--input", xi], "--input 'x' given twice"),
        (["run", m, "--input", "x="], "NAME=FILE.npy"),
        (["run", m, "--input", xi, "--target", "sparc"], "unknown target 'sparc'"),
        (["run", m, "--input", xi, "--target", str(d / "bad.toml")], "invalid TOML"),
        (["run", str(d / "empty.tsa"), "--input", xi], "empty.tsa"),
        (["run", str(d / "folder.tsa"), "--input", xi], "is a directory"),
        (["run", str(d / "gone.tsa"), "--input", xi], "gone.tsa"),
        (["tune", m, "--minutes", "-1"], "--minutes must be positive"),
        (["tune", m, "--minutes", "inf"], "--minutes must be finite, got inf"),
        (["tune", m, "--minutes", "1e400"], "--minutes must be finite, got inf"),
        (["tune", m, "--minutes", "nan"], "--minutes must be positive, got nan"),
        (["tune", m, "--minutes", "soon"], "argument --minutes: invalid float value: 'soon'"),
        (["tune", m, "--trials", "0"], "--trials must be a positive integer"),
        (["tune", m, "--trials", "1"], "--dim batch=1"),
        (["tune", m, "--trials", "x"], "argument --trials: invalid int value"),
        (["tune", m], "one of the arguments --minutes --trials is required"),
        (["export", "no_such_model", str(d / "o.onnx")], "unknown zoo model 'no_such_model'"),
        (["zoo", "--models", "no_such_model"], "unknown zoo model(s) 'no_such_model'"),
        (["zoo", "--models", "resnet50", "--frontends", "tf"], "unknown frontend(s) 'tf'"),
        (["tuning-db", "import"], "needs a FILE"),
        (["tuning-db", "import", str(d / "gone.jsonl"), "--db", str(d / "t.db")], "gone.jsonl"),
        (["tuning-db", "import", str(d), "--db", str(d / "t.db")], "is a directory"),
        (["tuning-db", "export", str(d / "o.jsonl"), "--db", str(d / "none.db")], "does not exist"),
        (["tuning-db", "info", "--db", str(x / "t.db")], "t.db"),
        (["inspect", m, "--frontend", "tf"], "argument --frontend: invalid choice"),
        (["frobnicate"], "argument COMMAND: invalid choice"),
    ]


def test_careless_user(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for argv, needle in _careless_cases(files["dir"], files["model"], files["x"]):
        err = _err(argv, capsys)
        assert needle in err, (argv, err)
    assert not (files["dir"] / "a.tsa").exists() and not (files["dir"] / "o.onnx").exists()


def test_ctrl_c_is_130(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    import tessera.graph.reference as reference

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(reference, "run_reference", interrupted)
    argv = ["run", str(files["model"]), "--reference", "--input", f"x={files['x']}"]
    assert _err(argv, capsys, status=130) == "error: interrupted"


def test_os_error_anywhere_is_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import tessera.graph.reference as reference

    def disk_full(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device", "/tmp/scratch")

    monkeypatch.setattr(reference, "run_reference", disk_full)
    argv = ["run", str(files["model"]), "--reference", "--input", f"x={files['x']}"]
    assert _err(argv, capsys) == "error: /tmp/scratch: No space left on device"


def test_ctrl_c_in_a_real_tune(files: dict[str, Path]) -> None:
    """SIGINT while `tessera tune` measures: the records so far are kept, exit status 130, one line."""
    db = files["dir"] / "t.db"
    p = subprocess.Popen([str(TESSERA), "tune", str(files["model"]), "--dim", "batch=64", "--minutes", "1",
                          "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "database" in p.stdout.readline()  # tuning has started
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130 and err == "error: interrupted\n"
    assert f"interrupted: the measured records are in {db}" in out
