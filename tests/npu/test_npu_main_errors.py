"""`python -m tessera.npu`: every bad argument or program file is one `error: ...` line, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tessera.npu import NpuProgramError
from tessera.npu.__main__ import main
from tessera.npu.asm import assemble, assemble_file

OK = "inorder finish\n"


def _err(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2, capsys.readouterr()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture
def program(tmp_path: Path) -> Path:
    p = tmp_path / "ok.s"
    p.write_text(OK)
    return p


def test_valid_program_runs(program: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(program), "--target", "npu-gen1", "--dram-bytes", "4096"]) == 0
    assert "npu-gen1: 1 instructions" in capsys.readouterr().out


@pytest.mark.parametrize("n", [-5, 0, 1 << 63])
def test_dram_bytes_out_of_range(n: int, program: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _err(["run", str(program), "--target", "npu-gen1", "--dram-bytes", str(n)], capsys)
    assert f"--dram-bytes must be a positive number of bytes up to 2**63 - 1, got {n}" in err


def test_dram_bytes_beyond_the_machine(program: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _err(["run", str(program), "--target", "npu-gen1", "--dram-bytes", str(1 << 50)], capsys)
    assert "--dram-bytes (the simulated DRAM) needs 1.0 PiB" in err
    # timing-only simulation holds no DRAM: the same size is fine
    assert main(["run", str(program), "--target", "npu-gen1", "--dram-bytes", str(1 << 50), "--timing-only"]) == 0


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff" + np.random.default_rng(3).bytes(300), r"line 1: not UTF-8 text \(byte 0xff: invalid start byte\)"),
    (OK.encode() + b"\0\0\0\n", r"line 2: binary data \(a NUL byte\)"),
    (OK.encode() * 2 + b"inorder \xc3\x28 finish\n", r"line 3: not UTF-8 text \(byte 0xc3"),
    (b"", None),
])
def test_binary_program_names_file_and_line(data: bytes, message: str | None, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prog.s"
    path.write_bytes(data)
    if message is None:  # an empty program is a valid (empty) program
        assert assemble_file(path).cores == [[]]
        return
    with pytest.raises(NpuProgramError, match=f"^{path}: {message}"):
        assemble_file(path)
    err = _err(["run", str(path), "--target", "npu-gen1"], capsys)
    assert err.startswith(f"error: {path}: line ")


def test_unreadable_programs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read NPU program" in _err(["run", str(tmp_path), "--target", "npu-gen1"], capsys)
    err = _err(["run", str(tmp_path / "gone.s"), "--target", "npu-gen1"], capsys)
    assert f"cannot read NPU program {tmp_path / 'gone.s'}: No such file or directory" in err
    bad = tmp_path / "bad.s"
    bad.write_text(OK + "inorder gemz\n")
    assert _err(["run", str(bad), "--target", "npu-gen1"], capsys) == \
        f"error: {bad}: line 2: unknown opcode 'gemz' (known: " + _err_known()
    with pytest.raises(NpuProgramError, match="line 1: binary data"):
        assemble("inorder\0 finish")


def _err_known() -> str:
    from tessera.npu.isa import OPCODES

    return ", ".join(OPCODES) + ")"


def test_usage_errors_are_one_line(program: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "required: --target" in _err(["run", str(program)], capsys)
    assert "argument --dram-bytes: invalid int value: 'lots'" in _err(
        ["run", str(program), "--target", "npu-gen1", "--dram-bytes", "lots"], capsys)
    assert "unknown NPU description 'npu-gen9'" in _err(["run", str(program), "--target", "npu-gen9"], capsys)
    assert "unknown NPU description 'npu-gen9'" in _err(["describe", "npu-gen9"], capsys)


def test_module_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "rand.s"
    path.write_bytes(b"\x80" * 64)
    r = subprocess.run([sys.executable, "-m", "tessera.npu", "run", str(path), "--target", "npu-gen2",
                        "--dram-bytes", "-1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: --dram-bytes must be a positive number of bytes up to 2**63 - 1, got -1\n"
    r = subprocess.run([sys.executable, "-m", "tessera.npu", "run", str(path), "--target", "npu-gen2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == (f"error: {path}: line 1: not UTF-8 text (byte 0x80: invalid start byte); "
                        "an NPU program is text\n")
