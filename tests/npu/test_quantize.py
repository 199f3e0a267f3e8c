"""Post-training quantization (tessera.graph.passes.quantize): calibration, per-channel weights, policy."""

from __future__ import annotations

import numpy as np
import pytest
from npu_graphs import feeds, mlp, small_cnn

from tessera.errors import GraphError
from tessera.graph.passes.quantize import (
    QuantizationPlan,
    calibrate,
    choose_precision,
    quantize,
    quantize_array,
    quantize_weight,
)
from tessera.graph.reference import run_reference


def test_quantize_weight_is_per_output_channel_symmetric() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None, None, None]
    wq = quantize_weight(w, axis=0)
    assert wq.q.dtype == np.int8 and wq.q.shape == w.shape and wq.scale.shape == (6,)
    np.testing.assert_allclose(wq.scale, np.abs(w).reshape(6, -1).max(axis=1) / 127, rtol=1e-6)
    assert np.abs(wq.q).reshape(6, -1).max(axis=1).tolist() == [127] * 6  # every channel uses its full range
    err = np.abs(wq.q * wq.scale[:, None, None, None] - w)
    assert np.all(err <= wq.scale[:, None, None, None] / 2 + 1e-7)


def test_quantize_array_rounds_half_to_even_and_saturates() -> None:
    q = quantize_array(np.array([0.5, 1.5, 2.5, -0.5, 300.0, -300.0]), 1.0)
    assert q.tolist() == [0, 2, 2, 0, 127, -127]


def test_calibration_ranges_cover_every_float_value() -> None:
    g = small_cnn()
    cal = [feeds(g, s) for s in range(3)]
    acts = calibrate(g, cal)
    for name in g.inputs + [o for n in g.nodes for o in n.outputs]:
        assert name in acts, name
    # min/max over every calibration batch
    hi = max(float(run_reference(g, f)[g.outputs[0]].max()) for f in cal)
    out = acts[g.outputs[0]]
    assert out.hi == pytest.approx(hi, rel=1e-6)
    assert out.scale == pytest.approx(max(abs(out.lo), abs(out.hi)) / 127, rel=1e-6)


def test_percentile_calibration_ignores_outliers() -> None:
    g = mlp()
    f = feeds(g)
    f["x"][0, 0] = 1000.0
    mm = calibrate(g, [f], "minmax")["x"].scale
    pc = calibrate(g, [f], "percentile", 99.0)["x"].scale
    assert mm == pytest.approx(1000.0 / 127)
    assert pc < mm / 100


def test_plan_quantizes_matrix_weights_and_requantizes() -> None:
    g = mlp()
    plan = quantize(g, [feeds(g, s) for s in range(3)])
    assert set(plan.weights) == {"w1", "w2"}
    assert plan.weights["w1"].axis == 0  # Gemm transB=1: output channels are rows
    assert plan.weights["w2"].axis == 1
    s_in, s_w, s_out = 0.02, np.array([0.01, 0.03], np.float32), 0.05
    np.testing.assert_allclose(QuantizationPlan.requant_scale(s_in, s_w, s_out), s_in * s_w / s_out, rtol=1e-6)
    b = plan.bias_int32(np.array([0.1, -0.2], np.float32), s_in, s_w)
    assert b.dtype == np.int32 and b.tolist() == [round(0.1 / (s_in * 0.01)), round(-0.2 / (s_in * 0.03))]


def test_precision_policy() -> None:
    both = [("i8", "i32"), ("bf16", "f32")]
    assert choose_precision("auto", both) == "bf16"
    assert choose_precision("auto", [("i8", "i32")]) == "int8"
    assert choose_precision("int8", both) == "int8"
    with pytest.raises(GraphError, match="precision 'bf16' is not supported.*supported: int8"):
        choose_precision("bf16", [("i8", "i32")])
    with pytest.raises(GraphError, match="unknown precision 'fp8'"):
        choose_precision("fp8", both)


def test_bad_calibration_inputs_are_errors() -> None:
    g = mlp()
    with pytest.raises(GraphError, match="at least one input set"):
        calibrate(g, [])
    with pytest.raises(GraphError, match="unknown calibration method 'mse'"):
        calibrate(g, [feeds(g)], "mse")
    with pytest.raises(GraphError, match="no calibrated range for value 'nope'"):
        QuantizationPlan().act("nope")


def _int8_matmul_error(plan: QuantizationPlan, g, f: dict) -> float:  # noqa: ANN001
    """Relative error of the int8 emulation of mlp's first Gemm (x @ w1.T) under ``plan``."""
    x, w = f["x"], g.constants["w1"]
    sm = plan.smoothing.get("gemm_1")
    xs, wq, s_in = (x / sm.factors, sm.weight, sm.input.scale) if sm else (x, plan.weights["w1"], plan.act("x").scale)
    y = (quantize_array(xs, s_in).astype(np.int64) @ wq.q.T.astype(np.int64)) * s_in * wq.scale
    ref = x.astype(np.float64) @ w.T
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def test_smoothing_moves_activation_outliers_into_the_weights() -> None:
    g = mlp()
    f = feeds(g)
    f["x"][:, 3] *= 60.0  # one outlier channel, as in transformer activations
    plain, smoothed = quantize(g, [f], smooth=None), quantize(g, [f])
    assert not plain.smoothing and "gemm_1" in smoothed.smoothing
    sm = smoothed.smoothing["gemm_1"]
    assert sm.axis == -1 and sm.factors.shape == (40,) and int(np.argmax(sm.factors)) == 3
    assert sm.input.scale < plain.act("x").scale / 5
    assert _int8_matmul_error(smoothed, g, f) < _int8_matmul_error(plain, g, f) / 2


def test_noise_estimate_flags_outlier_dominated_tensors() -> None:
    g = mlp()
    f = feeds(g)
    acts = calibrate(g, [f])
    assert acts["x"].noise < 0.02  # gaussian: max/rms ~ 3-4
    f["x"][0, 0] = 500.0
    assert calibrate(g, [f])["x"].noise > 0.03
