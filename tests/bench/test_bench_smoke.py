"""Smoke tests of the benchmark harness: peaks, interleaved timing, output checks and tables."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

torch = pytest.importorskip("torch")

from bench import harness, peers  # noqa: E402
from bench.harness import measure, point_table, rel_error, summary_table  # noqa: E402
from bench.peak import fma_peak, numpy_gemm_peak  # noqa: E402
from bench.peers import Runner, Workload  # noqa: E402


def _render(table: object) -> str:
    console = Console(record=True, width=250, color_system=None)
    console.print(table)
    return console.export_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    w = Workload("tiny", 2, module, (x,), ["x"], path)
    w.flops = harness.torch_flops(module, (x,))
    w.flops_source = "torch FlopCounterMode"
    return w


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_fma_peak_is_plausible() -> None:
    res = fma_peak(threads=2, iters=2_000_000, reps=2)
    assert res.error is None, res.error
    # Any x86-64 core with SIMD FMA/mul-add does far more than 10 GFLOP/s with 2 threads,
    # and nothing this class of machine does over 10 TFLOP/s of f32.
    assert 10.0 < res.gflops < 10_000.0


def test_numpy_gemm_rate_is_plausible() -> None:
    res = numpy_gemm_peak(threads=2, n=512, reps=2)
    assert 1.0 < res.gflops < 10_000.0


def test_rel_error() -> None:
    want = [np.array([1.0, -4.0, 2.0], np.float32)]
    assert rel_error([np.array([1.0, -4.0, 2.0])], want) == 0.0
    assert rel_error([np.array([1.0, -4.0, 2.4])], want) == pytest.approx(0.1)
    assert rel_error([np.zeros(2)], want) == float("inf")  # shape mismatch
    assert rel_error([], want) == float("inf")  # output count mismatch


def test_flop_count_of_tiny_model(tiny: Workload) -> None:
    conv = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)  # 2 * output elements * MACs per element
    linear = 2 * 2 * (8 * 8 * 8) * 10
    assert tiny.flops == conv + linear


def test_interleaved_measure_and_tables(tiny: Workload) -> None:
    systems = ["PyTorch eager", "ONNX Runtime", "OpenVINO", "Tessera"]
    results = measure(tiny, systems, threads=2, reps=3, warmup=1)
    by = {r.system: r for r in results}
    assert len(by["PyTorch eager"].times_ms) == 3 and by["PyTorch eager"].rel_err == 0.0
    ort = by["ONNX Runtime"]
    assert len(ort.times_ms) == 3 and all(t > 0 for t in ort.times_ms)
    assert ort.rel_err is not None and ort.rel_err < 1e-5
    ov = by["OpenVINO"]
    if ov.status == "ok":
        assert len(ov.times_ms) == 3 and ov.rel_err < 1e-4
    else:
        assert ov.status == "skipped" and "openvino" in ov.note
    tess = by["Tessera"]
    assert tess.status in ("ok", "skipped", "error")
    if tess.status != "ok":
        assert tess.note and not tess.times_ms  # n/a with the reason, never a fake timing

    point = harness.PointResult("tiny", 2, tiny.flops, tiny.flops_source, results)
    text = _render(point_table(point, 100.0, 50.0))
    for name in systems:
        assert name in text
    assert "× fastest peer" in text and "% FMA peak" in text and "✓" in text
    summary = _render(summary_table([point]))
    assert "tiny" in summary and point.fastest_peer().system in summary


def test_mismatch_and_failures_are_reported(tiny: Workload, monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(w: Workload, threads: int) -> Runner:
        return Runner(lambda: [np.zeros((2, 10), np.float32)], lambda r: r, 0.0)

    def broken_compile(*args: object, **kwargs: object) -> None:
        raise RuntimeError("inductor exploded\nsecond line")

    monkeypatch.setitem(peers.SYSTEMS, "wrong", wrong)
    monkeypatch.setattr(torch, "compile", broken_compile)
    results = measure(tiny, ["PyTorch eager", "wrong", "torch.compile"], threads=2, reps=2, warmup=1)
    by = {r.system: r for r in results}
    assert by["wrong"].mismatch and len(by["wrong"].times_ms) == 2
    assert by["torch.compile"].status == "error"
    assert by["torch.compile"].note == "RuntimeError: inductor exploded"
    text = _render(point_table(harness.PointResult("tiny", 2, tiny.flops, "", results), None, None))
    assert "MISMATCH" in text and "inductor exploded" in text


def test_warm_calls_run_untimed_before_each_timed_call(tiny: Workload, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def counted(w: Workload, threads: int) -> Runner:
        def run() -> list[np.ndarray]:
            calls.append(time.perf_counter())
            time.sleep(0.002 if len(calls) > 1 and len(calls) % 3 == 1 else 0.0)  # only the timed calls are slow
            return [np.zeros((2, 10), np.float32)]
        return Runner(run, lambda r: r, 0.0)

    monkeypatch.setitem(peers.SYSTEMS, "counted", counted)
    results = measure(tiny, ["counted"], threads=2, reps=4, warmup=1, warm_calls=2)
    assert len(calls) == 1 + 4 * 3  # warm-up, then per round 2 untimed + 1 timed call
    assert len(results[0].times_ms) == 4 and min(results[0].times_ms) >= 2.0


def test_p90_reports_the_slow_tail() -> None:
    from bench.harness import SystemResult

    bimodal = SystemResult("x", times_ms=[40.0] * 7 + [60.0, 61.0, 62.0])  # 30% slow calls
    assert bimodal.median_ms == 40.0 and bimodal.p90_ms == pytest.approx(61.1)
    assert SystemResult("y", times_ms=[5.0]).p90_ms == 5.0 and SystemResult("z").p90_ms is None
    assert bimodal.to_json()["p90_ms"] == pytest.approx(61.1)


def test_kernel_profile_counts_each_kernels_arithmetic(tiny: Workload) -> None:
    from bench.kernels import kernel_table, profile_kernels

    rows = profile_kernels(tiny.onnx_path, tiny.feeds, threads=1, calls=3, gap_s=0.0)
    by_op = {r.label.split("[")[0]: r for r in rows}
    conv = next(r for op, r in by_op.items() if op.startswith("Conv"))
    gemm = next(r for op, r in by_op.items() if op.startswith(("Gemm", "MatMul")))
    # 2 x 8 x 8 x 8 outputs x 27 multiply-adds; 2 x 10 outputs x 512 multiply-adds (2 FLOPs each)
    assert conv.gflop * 1e9 == pytest.approx(2 * 2 * 8 * 8 * 8 * 27) and conv.count == 1
    assert gemm.gflop * 1e9 == pytest.approx(2 * 2 * 10 * 512)
    assert "[2x8x8x8]" in conv.label and "Relu" in conv.label  # the activation is fused into the conv
    assert all(r.ms > 0 for r in rows) and sum(r.share for r in rows) == pytest.approx(1.0)
    assert rows == sorted(rows, key=lambda r: -r.ms)
    # the caption wraps to the table's width
    text = " ".join(_render(kernel_table("tiny kernels", rows, fma_gflops=rows[0].gflops * 4, limit=1)).split())
    assert "25%" in text and f"{len(rows) - 1} lighter not shown" in text
    assert conv.to_json()["gflops"] == pytest.approx(conv.gflop / conv.ms * 1e3)


@pytest.mark.parametrize("option", ["--warm-calls", "--gap-ms"])
def test_negative_counts_are_rejected(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args([option, "-1"])
    assert e.value.code == 2
    assert f"argument {option}: must be >= 0, got -1" in capsys.readouterr().err
    assert parse_args([option, "2"]).warm_calls == (2 if option == "--warm-calls" else 0)


@pytest.mark.slow
def test_end_to_end_mobilenet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import main

    out = tmp_path / "out.json"
    assert main(["--models", "mobilenet_v2", "--batches", "1", "--reps", "1", "--warmup", "1",
                 "--systems", "eager,ort,tessera", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mobilenet_v2" in text and "Summary" in text and "FMA peak" in text
    doc = json.loads(out.read_text())
    assert doc["fma_peak"]["gflops"] is None or doc["fma_peak"]["gflops"] > 10
    (point,) = doc["results"]
    ort = next(s for s in point["systems"] if s["system"] == "ONNX Runtime")
    assert ort["median_ms"] > 0 and ort["max_rel_err"] < 1e-3 and ort["p90_ms"] >= ort["min_ms"]
    assert point["flops"] > 1e8  # MobileNetV2 is ~0.3 GMAC
    assert "Tessera's heaviest kernels in the model" in text
    kernels = point["tessera_kernels"]
    # the kernels' own arithmetic: the model's multiply-adds plus epilogues, within a few percent
    assert 0.9 * point["flops"] < sum(k["gflop"] for k in kernels) * 1e9 < 1.2 * point["flops"]
    assert kernels[0]["ms"] >= kernels[-1]["ms"] > 0
