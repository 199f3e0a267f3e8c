"""TesseraBackend's ONNX backend interface: prepare/run, run_model, run_node, devices."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tessera.errors import InputCountError, InputShapeError, UnsupportedOperatorError
from tessera.onnx_backend import MODES, CompiledExecutor, TesseraBackend, TesseraRep
from tessera.segmented import HostFallbackWarning, SegmentedModel


def _gemm_model():
    node = helper.make_node("Gemm", ["a", "b"], ["c"], transB=1, alpha=2.0)
    graph = helper.make_graph(
        [node], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_prepare_and_run() -> None:
    rep = TesseraBackend.prepare(_gemm_model(), "CPU")
    assert isinstance(rep, TesseraRep) and rep.mode == "reference" and MODES == ("reference", "compiled")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    want = 2.0 * a @ b.T
    out = rep.run([a, b])
    np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["c"], want, rtol=1e-5, atol=1e-6)  # namedtuple-dict access
    np.testing.assert_allclose(rep.run({"a": a, "b": b}).c, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(TesseraBackend.run_model(_gemm_model(), [a, b])[0], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputCountError):
        rep.run([a])


def test_run_node() -> None:
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    (y,) = TesseraBackend.run_node(node, [x])
    np.testing.assert_array_equal(y, x.T)
    relu = helper.make_node("Relu", ["x"], ["y"])
    (r,) = TesseraBackend.run_node(relu, [np.array([-1.0, 2.0], np.float32)], opset_version=13)
    np.testing.assert_array_equal(r, [0.0, 2.0])


def test_devices_and_modes() -> None:
    assert TesseraBackend.supports_device("CPU")
    assert not TesseraBackend.supports_device("CUDA")
    assert not TesseraBackend.supports_device("TPU")
    with pytest.raises(ValueError, match="CUDA"):
        TesseraBackend.prepare(_gemm_model(), "CUDA")
    with pytest.raises(ValueError, match="unknown execution mode 'fast'"):
        TesseraBackend.prepare(_gemm_model(), "CPU", mode="fast")


def test_unsupported_model_raises() -> None:
    node = helper.make_node("NoSuchOp", ["x"], ["y"])
    with pytest.raises(UnsupportedOperatorError, match="NoSuchOp"):
        TesseraBackend.run_node(node, [np.zeros(2, np.float32)])


def test_compiled_mode_compiles_per_shape_signature() -> None:
    rep = TesseraBackend.prepare(_gemm_model(), "CPU", mode="compiled")
    assert rep.mode == "compiled" and isinstance(rep.executor, CompiledExecutor)
    assert rep.executor.models == {}  # nothing is compiled before the first run
    rng = np.random.default_rng(1)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    for n in (5, 2, 5):
        a = rng.standard_normal((n, 3)).astype(np.float32)
        out = rep.run({"a": a, "b": b})
        np.testing.assert_allclose(out.c, 2.0 * a @ b.T, rtol=1e-5, atol=1e-5)
    models = rep.executor.models
    sig2 = (("a", (2, 3), None), ("b", (4, 3), None))
    assert sorted(models) == [sig2, (("a", (5, 3), None), ("b", (4, 3), None))]  # n=5 compiled once, reused
    assert models[sig2][0].input_specs[0].shape == (2, 3)  # compiled for the static shape
    with pytest.raises(InputShapeError):  # the declared signature is still checked
        rep.run([a, np.zeros((4, 2), np.float32)])


def test_compiled_mode_specializes_small_int_inputs_on_values() -> None:
    # Reshape's shape arrives as an input: compiled per value, like shapes are per shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "r", [x, s], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    rep = TesseraBackend.prepare(model, "CPU", mode="compiled")
    data = np.arange(12, dtype=np.float32).reshape(2, 6)
    for shape in ([3, 4], [4, 3], [3, 4]):
        (out,) = rep.run([data, np.array(shape, np.int64)])
        np.testing.assert_array_equal(out, data.reshape(shape))
    assert len(rep.executor.models) == 2


def test_compiled_mode_runs_data_dependent_ops_on_the_host() -> None:
    # NonZero's output shape depends on the input values: the compiled mode runs it on the host
    # (its reference implementation) between compiled segments, and compiles the Transpose after it
    # for each count of non-zeros seen.
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["i"], name="nz"),
             helper.make_node("Transpose", ["i"], ["y"], perm=[1, 0])]
    graph = helper.make_graph(nodes, "nonzero_t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rep = TesseraBackend.prepare(model, "CPU", mode="compiled")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    xs[1][0] = 1.0  # a different number of positive entries
    with pytest.warns(HostFallbackWarning, match="NonZero 'nz' \\(data-dependent output shape\\)"):
        for x in [*xs, xs[0]]:
            (out,) = rep.run([x])
            np.testing.assert_array_equal(out, np.array(np.nonzero(np.maximum(x, 0))).T)
    (compiled,) = [m for m, _ in rep.executor.models.values()]
    assert isinstance(compiled, SegmentedModel) and compiled.step_kinds == ["compiled", "host", "lazy"]
    assert len(compiled.compiled_models()) == 3  # Relu, then Transpose for two shapes


def test_compiled_mode_specializes_operands_compute_definitions_need() -> None:
    # Resize's scales arrive as a float input (behind a Cast): it reaches an operand the compute
    # definition takes as a compile-time constant, so the backend compiles per scales value.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
    s = helper.make_tensor_value_info("s", TensorProto.DOUBLE, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.FLOAT),
             helper.make_node("Resize", ["x", "", "s32"], ["y"], mode="nearest")]
    model = helper.make_model(helper.make_graph(nodes, "r", [x, s], [y]), opset_imports=[helper.make_opsetid("", 19)])
    rep = TesseraBackend.prepare(model, "CPU", mode="compiled")
    data = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    rep.run([data, np.array([1, 1, 2, 2], np.float64)])
    assert list(rep.executor.value_names.values()) == [frozenset({"s"})]
    data = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    for scales in ([1, 1, 2, 2], [1, 1, 1, 3]):
        (out,) = rep.run([data, np.array(scales, np.float64)])
        np.testing.assert_array_equal(out, data.repeat(scales[2], 2).repeat(scales[3], 3))
    assert len(rep.executor.models) == 2


def test_compiled_mode_keeps_data_inputs_at_run_time() -> None:
    # A small integer input that is only data (no shape or compile-time operand depends on its
    # values) is not specialized: one compile serves every value, and a real kernel computes it.
    a = helper.make_tensor_value_info("a", TensorProto.INT8, [3])
    b = helper.make_tensor_value_info("b", TensorProto.INT8, [3])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, [3])
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add", [a, b], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    rep = TesseraBackend.prepare(model, "CPU", mode="compiled")
    for va in ([1, 2, 3], [100, -100, 5]):
        x = np.array(va, np.int8)
        (out,) = rep.run([x, x])
        np.testing.assert_array_equal(out, x + x)  # wraps like NumPy
    ((m, _),) = rep.executor.models.values()
    assert len(m.compilation.kernels) == 1
