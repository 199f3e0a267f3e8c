"""CLI: `tessera compile MODEL --target npu-... --report` and `tessera targets` with the NPU family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from npu_graphs import feeds, mlp

from tessera.cli import main
from tessera.graph.serialize import save_graph
from tessera.npu import list_descriptions


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.tsr"
    save_graph(mlp(), path)
    return path


def test_compile_report_prints_per_layer_table(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(model_file), "--target", "npu-gen2", "--report"]) == 0
    out = capsys.readouterr().out
    assert "compiled mlp for npu-gen2 (bf16): 2 NPU layer(s), 0 host op(s)" in out
    for needle in ("gemm_1", "matmul_3", "Gemm+Relu", "MatMul+Add", "total cycles", "MAC utilization",
                   "end to end", "DRAM bytes", "simulation wall time"):
        assert needle in out, needle


def test_int8_target_calibrates_from_files(model_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x.npy"
    np.save(x, feeds(mlp())["x"])
    dump = tmp_path / "dump"
    assert main(["compile", str(model_file), "--target", "npu-gen1", "--calibration", f"x={x}",
                 "--dump", str(dump)]) == 0
    out = capsys.readouterr().out
    assert "(int8)" in out and "MAC utilization" in out
    text = (dump / "gemm_1.npu.s").read_text()
    assert "inorder gemm" in text and "dtype=i8" in text


def test_cli_errors_are_one_line(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(model_file), "--target", "npu-gen1"]) == 2
    assert "computes in int8: pass calibration inputs" in capsys.readouterr().err
    assert main(["compile", str(model_file), "--target", "npu-gen2", "-o", "x.tsa"]) == 2
    assert "not saved as .tsa artifacts" in capsys.readouterr().err


def test_targets_lists_the_npu_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "NPU targets" in out
    for name in list_descriptions():
        assert name in out
    assert "16x16" in out and "4 MiB" in out
