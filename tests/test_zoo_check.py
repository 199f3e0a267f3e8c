"""The main job's table: reference executor and compiled model against PyTorch eager."""

from __future__ import annotations

import pytest

from tessera.zoo_check import check_zoo


@pytest.mark.slow
def test_main_job_compiles_and_compares(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_zoo(["minilm"], ["onnx"]) is True
    out = capsys.readouterr().out
    assert "compiled rel err" in out and "speed-up" in out
    row = next(line for line in out.splitlines() if "minilm" in line)
    assert row.count("ok") == 1 and "MISMATCH" not in row and "error" not in row


def test_reference_only_table_has_no_compiled_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_zoo(["minilm"], ["onnx"], compiled=False) is True
    assert "compiled rel err" not in capsys.readouterr().out
