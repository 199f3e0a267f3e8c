"""ONNX importer: loading errors, whole-model support check, types, constants, opset upgrades."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tessera.errors import GraphError, ModelLoadError, UnsupportedOperatorError
from tessera.frontend import import_onnx
from tessera.frontend.common import symbol_name, unsupported_error
from tessera.graph.dtypes import DType
from tessera.graph.reference import run_reference
from tessera.graph.symbolic import Sym

ort = pytest.importorskip("onnxruntime")

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset: int = 21, name: str = "m") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _relu_model() -> onnx.ModelProto:
    return _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", F, [2, 3])], [_vi("y", F, [2, 3])])


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# ---- loading ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError, match="nope.onnx.*file not found"):
        import_onnx(path)


def test_truncated_file(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", F, [1, 64])], [_vi("y", F, [1, 64])], [w]
    )
    data = model.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"cut\.onnx") as info:
        import_onnx(path)
    assert "\n" not in str(info.value)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ModelLoadError, match=r"garbage\.onnx"):
        import_onnx(path)


def test_string_field_that_is_not_utf8(tmp_path: Path) -> None:
    """A damaged name (invalid UTF-8 inside a well-formed protobuf) is a load error, not a UnicodeDecodeError."""
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="RELUNAME")], [_vi("x", F, [2, 3])],
                   [_vi("y", F, [2, 3])])
    data = model.SerializeToString().replace(b"RELUNAME", b"\xff\xfe\xfdNAME\xc3")
    path = tmp_path / "badname.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=r"badname\.onnx.*not UTF-8"):
        import_onnx(path)


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "tensor.onnx"  # a valid protobuf, but a TensorProto, not a ModelProto
    path.write_bytes(numpy_helper.from_array(np.ones(3, np.float32), "t").SerializeToString())
    with pytest.raises(ModelLoadError, match=r"tensor\.onnx"):
        import_onnx(path)
    empty = tmp_path / "empty.onnx"  # parses as a ModelProto without a graph
    empty.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())
    with pytest.raises(ModelLoadError, match=r"empty\.onnx.*not an ONNX model"):
        import_onnx(empty)
    with pytest.raises(ModelLoadError, match="bytes"):
        import_onnx(b"")
    with pytest.raises(ModelLoadError, match="directory_model.*not a file"):
        (tmp_path / "directory_model").mkdir()
        import_onnx(tmp_path / "directory_model")


def test_path_bytes_and_proto_give_the_same_graph(tmp_path: Path) -> None:
    model = _relu_model()
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    graphs = [import_onnx(path), import_onnx(str(path)), import_onnx(model.SerializeToString()), import_onnx(model)]
    assert {str(g) for g in graphs} == {str(graphs[0])}
    assert graphs[0].metadata["source"] == str(path)
    assert graphs[0].nodes[0].name == "Relu_0"  # derived name for an unnamed node


# ---- unsupported operators --------------------------------------------------------------


def test_all_unsupported_ops_reported_at_once(tmp_path: Path) -> None:
    then = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["t"], name="inner_fancy")], "then", [], [_vi("t", F, [2])]
    )
    orelse = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [_vi("e", F, [2])])
    nodes = [
        helper.make_node("FancyOp", ["x"], ["a"], name="fancy1"),
        helper.make_node("FancyOp", ["a"], ["b"]),  # unnamed: gets a derived name
        helper.make_node("Relu", ["b"], ["c"], name="relu"),
        helper.make_node("Thing", ["c"], ["d"], name="thing", domain="com.example"),
        helper.make_node("Greater", ["d", "d"], ["cond0"], name="gt"),
        helper.make_node("ReduceMin", ["cond0"], ["cond"], name="rmin", keepdims=0),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=orelse),
    ]
    model = _model(nodes, [_vi("x", F, [2])], [_vi("y", F, [2])], name="multi")
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "multi.onnx"
    onnx.save(model, path)
    with pytest.raises(UnsupportedOperatorError) as info:
        import_onnx(path)
    ops = {op.op_type: op for op in info.value.ops}
    assert set(ops) == {"FancyOp", "com.example::Thing", "If"}
    assert ops["FancyOp"].count == 3
    assert ops["FancyOp"].node_names == ("fancy1", "FancyOp_1", "branch/then_branch/inner_fancy")
    assert ops["com.example::Thing"].node_names == ("thing",)
    assert ops["If"].count == 1
    assert all(op.source == str(path) for op in info.value.ops)
    msg = str(info.value)
    assert "3 unsupported operator type(s), 5 node(s)" in msg and "FancyOp x3" in msg


def test_unsupported_error_helper() -> None:
    err = unsupported_error([("A", "n1"), ("B", "n2"), ("A", "n3")], "model.onnx")
    assert [(op.op_type, op.node_names) for op in err.ops] == [("A", ("n1", "n3")), ("B", ("n2",))]
    assert symbol_name("batch size") == "batch_size"
    assert symbol_name("2n") == "d_2n"
    assert symbol_name("unk__617") == "unk__617"


def test_local_functions_are_inlined() -> None:
    fn = helper.make_function(
        "local", "AddRelu", ["a", "b"], ["c"],
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["c"])],
        opset_imports=[helper.make_opsetid("", 21)],
    )
    graph = helper.make_graph(
        [helper.make_node("AddRelu", ["x", "y"], ["z"], domain="local")], "f",
        [_vi("x", F, [3]), _vi("y", F, [3])], [_vi("z", F, [3])],
    )
    model = helper.make_model(
        graph, functions=[fn], opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("local", 1)]
    )
    g = import_onnx(model)
    assert sorted(g.op_histogram()) == ["Add", "Relu"]
    out = run_reference(g, [np.array([1, -5, 2], np.float32), np.array([1, 1, 1], np.float32)])
    np.testing.assert_array_equal(out["z"], [2, 0, 3])


# ---- types --------------------------------------------------------------------------------


def test_symbolic_dims() -> None:
    model = _model(
        [helper.make_node("Add", ["x", "y"], ["z"])],
        [_vi("x", F, ["batch", "seq len", 4]), _vi("y", F, [None, 1, 4])],
        [_vi("z", F, ["batch", "seq len", 4])],
    )
    g = import_onnx(model)
    assert g.types["x"].shape == (Sym.var("batch"), Sym.var("seq_len"), 4)
    assert g.types["y"].shape == (Sym.var("y_d0"), 1, 4)
    assert g.types["z"].dtype is DType.float32
    assert g.types["z"].shape[1:] == (Sym.var("seq_len"), 4)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = np.ones((2, 1, 4), np.float32)
    np.testing.assert_array_equal(run_reference(g, [x, y])["z"], x + y)


def test_unsupported_input_dtype() -> None:
    model = _model([helper.make_node("Identity", ["s"], ["t"])], [_vi("s", TensorProto.STRING, [2])],
                   [_vi("t", TensorProto.STRING, [2])])
    with pytest.raises(GraphError, match="graph input 's'.*STRING"):
        import_onnx(model)


def test_output_dtype_mismatch_is_reported() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", F, [2])], [_vi("y", TensorProto.INT64, [2])])
    with pytest.raises(GraphError, match="output 'y'.*int64.*float32"):
        import_onnx(model)


def test_initializers_keep_dtype_and_inputs_with_initializers_are_constants() -> None:
    bf = numpy_helper.from_array(np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16), "bf")
    w = numpy_helper.from_array(np.array([[1, 2], [3, 4]], np.int32), "w")
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Identity", ["bf"], ["bf_out"])],
        [_vi("x", TensorProto.INT32, [1, 2]), _vi("w", TensorProto.INT32, [2, 2])],  # old-style weight input
        [_vi("y", TensorProto.INT32, [1, 2]), _vi("bf_out", TensorProto.BFLOAT16, [2])],
        [bf, w],
    )
    g = import_onnx(model)
    assert g.inputs == ["x"]
    assert g.constants["w"].dtype == np.int32 and g.constants["bf"].dtype == ml_dtypes.bfloat16
    out = run_reference(g, [np.array([[1, 1]], np.int32)])
    np.testing.assert_array_equal(out["y"], [[4, 6]])
    assert out["bf_out"].dtype == ml_dtypes.bfloat16


def test_cast_to_attribute_becomes_dtype() -> None:
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)], [_vi("x", F, [3])],
                   [_vi("y", TensorProto.INT32, [3])])
    g = import_onnx(model)
    assert g.nodes[0].attrs["to"] is DType.int32
    assert run_reference(g, [np.array([1.7, -2.2, 3.0], np.float32)])["y"].tolist() == [1, -2, 3]


# ---- constants ----------------------------------------------------------------------------


def test_constant_nodes_become_constants() -> None:
    tensor = numpy_helper.from_array(np.array([[1.0, 2.0]], np.float32), "c")
    scalar = numpy_helper.from_array(np.array(7, np.int32), "s")
    nodes = [
        helper.make_node("Constant", [], ["c_tensor"], value=tensor),
        helper.make_node("Constant", [], ["c_scalar"], value=scalar),
        helper.make_node("Constant", [], ["c_float"], value_float=0.5),
        helper.make_node("Constant", [], ["c_floats"], value_floats=[1.0, 2.0]),
        helper.make_node("Constant", [], ["c_int"], value_int=3),
        helper.make_node("Constant", [], ["c_ints"], value_ints=[1, 2]),
        helper.make_node("Mul", ["x", "c_tensor"], ["a"]),
        helper.make_node("Mul", ["a", "c_float"], ["b"]),
        helper.make_node("Add", ["b", "c_floats"], ["y"]),
        helper.make_node("Reshape", ["y", "c_ints"], ["z"]),
    ]
    model = _model(nodes, [_vi("x", F, [1, 2])], [_vi("z", F, [1, 2]), _vi("c_int", TensorProto.INT64, [])])
    g = import_onnx(model)
    assert [n.op for n in g.nodes] == ["Mul", "Mul", "Add", "Reshape"]
    assert g.constants["c_scalar"].shape == () and g.constants["c_scalar"].dtype == np.int32
    assert g.constants["c_float"].dtype == np.float32 and g.constants["c_float"].shape == ()
    assert g.constants["c_int"].dtype == np.int64 and int(g.constants["c_int"]) == 3
    assert g.constants["c_ints"].tolist() == [1, 2]
    x = np.array([[2.0, 4.0]], np.float32)
    out = run_reference(g, [x])
    np.testing.assert_allclose(out["z"], _ort(model, {"x": x})[0])
    assert int(out["c_int"]) == 3


def test_string_constant_is_rejected() -> None:
    model = _model([helper.make_node("Constant", [], ["s"], value_string="hi")], [], [_vi("s", TensorProto.STRING, [])])
    with pytest.raises(GraphError, match="value_string"):
        import_onnx(model)


# ---- opset conversion ---------------------------------------------------------------------


def test_old_opset_reshape_unsqueeze_squeeze_softmax() -> None:
    """Opset-11 forms (axes attributes, 2-D-flattening Softmax) match onnxruntime."""
    shape = numpy_helper.from_array(np.array([0, 3, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, 3]),  # [1,2,3,1,4]
        helper.make_node("Squeeze", ["u"], ["s"], axes=[3]),  # [1,2,3,4]
        helper.make_node("Reshape", ["s"], ["r"]),
        helper.make_node("Softmax", ["x"], ["sm"], axis=1),  # flattens [2,3,4] to [2,12]
        helper.make_node("ReduceSum", ["x"], ["rs"], axes=[1], keepdims=0),
        helper.make_node("Split", ["x"], ["p0", "p1"], axis=2, split=[1, 3]),
        helper.make_node("Clip", ["x"], ["c"]),
    ]
    nodes[2].input.append("shape")
    model = _model(
        nodes,
        [_vi("x", F, [2, 3, 4])],
        [_vi(n, F, None) for n in ("r", "sm", "rs", "p0", "p1", "c")],
        [shape],
        opset=11,
    )
    g = import_onnx(model)
    assert g.metadata["onnx_opset"] == "11"
    assert g.types["r"].shape == (1, 3, 8)
    unsq = next(n for n in g.nodes if n.op == "Unsqueeze")
    assert "axes" not in unsq.attrs and g.constants[unsq.inputs[1]].tolist() == [0, 3]
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    got = run_reference(g, [x])
    for name, want in zip(["r", "sm", "rs", "p0", "p1", "c"], _ort(model, {"x": x}), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_old_opset_attrs_to_inputs_opset7() -> None:
    """Opset-7 Pad/Slice/Clip/Upsample/BatchNorm(spatial) forms match onnxruntime."""
    nodes = [
        helper.make_node("Pad", ["x"], ["pad"], pads=[0, 1, 0, 2], value=1.5),
        helper.make_node("Slice", ["x"], ["sl"], starts=[1], ends=[3], axes=[1]),
        helper.make_node("Clip", ["x"], ["cl"], min=-0.5, max=0.5),
        helper.make_node("Upsample", ["x4"], ["up"], scales=[1.0, 1.0, 2.0, 3.0], mode="nearest"),
        helper.make_node("Softmax", ["x"], ["sm"]),  # default axis=1 is the last axis here
        helper.make_node("BatchNormalization", ["x4", "s", "s", "s", "s"], ["bn"], spatial=1),
    ]
    model = _model(
        nodes,
        [_vi("x", F, [2, 4]), _vi("x4", F, [1, 1, 2, 2])],
        [_vi(n, F, None) for n in ("pad", "sl", "cl", "up", "sm", "bn")],
        [numpy_helper.from_array(np.array([0.5], np.float32), "s")],
        opset=7,
    )
    g = import_onnx(model)
    assert "Upsample" not in g.op_histogram() and "Resize" in g.op_histogram()
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, 4)).astype(np.float32),
             "x4": rng.standard_normal((1, 1, 2, 2)).astype(np.float32)}
    got = run_reference(g, feeds)
    for name, want in zip(["pad", "sl", "cl", "up", "sm", "bn"], _ort(model, feeds), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_opset6_legacy_broadcast_and_prelu() -> None:
    """Before opset 7, broadcasting is explicit (broadcast=1, axis) and PRelu's slope is per channel."""
    nodes = [
        helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1),  # b aligns with x's axis 1
        helper.make_node("PRelu", ["x", "slope"], ["p"]),
        helper.make_node("Relu", ["x"], ["r"], consumed_inputs=[0]),
    ]
    model = _model(
        nodes,
        [_vi("x", F, [2, 3, 4]), _vi("b", F, [3]), _vi("slope", F, [3])],
        [_vi(n, F, [2, 3, 4]) for n in ("y", "p", "r")],
        opset=5,
    )
    model.ir_version = 3
    g = import_onnx(model)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = np.array([1.0, 2.0, 3.0], np.float32)
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    out = run_reference(g, [x, b, slope])
    np.testing.assert_allclose(out["y"], x + b[None, :, None])
    np.testing.assert_allclose(out["p"], np.where(x < 0, x * slope[None, :, None], x))
    np.testing.assert_allclose(out["r"], np.maximum(x, 0))


def test_old_opset_misc_rewrites_match_onnxruntime() -> None:
    """Opset-9/10 forms: Reduce* axes, Dropout ratio, TopK k, Scatter,
    Resize-10, and symbolic-shape Softmax flattening, against onnxruntime."""
    rng = np.random.default_rng(3)
    stats = [numpy_helper.from_array(rng.random(3).astype(np.float32) + 0.5, n) for n in ("s", "b", "m", "v")]
    idx = numpy_helper.from_array(np.array([[1, 0, 2]], np.int64), "idx")
    upd = numpy_helper.from_array(np.array([[9.0, 8.0, 7.0]], np.float32), "upd")
    scales = numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], np.float32), "scales")
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["rm"], axes=[2, 3], keepdims=1),
        helper.make_node("ReduceMax", ["x"], ["rx"], axes=[1]),
        helper.make_node("Dropout", ["x"], ["dr"], ratio=0.3),
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Resize", ["x", "scales"], ["rs"], mode="nearest"),
        helper.make_node("Softmax", ["x"], ["sm"], axis=2),
        helper.make_node("LogSoftmax", ["x"], ["lsm"]),
        helper.make_node("Hardmax", ["x"], ["hm"], axis=-1),
    ]
    model = _model(
        nodes,
        [_vi("x", F, ["n", 3, 2, 2])],
        [_vi(n, F, None) for n in ("rm", "rx", "dr", "bn", "rs", "sm", "lsm", "hm")],
        stats,
        opset=10,
    )
    opset9 = _model(
        [helper.make_node("Scatter", ["d", "idx", "upd"], ["y"], axis=1),
         helper.make_node("TopK", ["d"], ["tv", "ti"], k=2)],
        [_vi("d", F, [1, 3])], [_vi("y", F, [1, 3]), _vi("tv", F, None), _vi("ti", TensorProto.INT64, None)],
        [idx, upd], opset=9,
    )
    model.graph.initializer.append(scales)
    g = import_onnx(model)
    assert not any(n.op in ("Scatter", "Upsample") for n in g.nodes)
    assert "Shape" in g.op_histogram()  # flattening Softmax over a symbolic batch dim
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    got = run_reference(g, [x])
    names = ["rm", "rx", "dr", "bn", "rs", "sm", "lsm", "hm"]
    for name, want in zip(names, _ort(model, {"x": x}), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    d = np.array([[0.5, -1.0, 2.0]], np.float32)
    got9 = run_reference(import_onnx(opset9), [d])
    for name, want in zip(["y", "tv", "ti"], _ort(opset9, {"d": d}), strict=True):
        np.testing.assert_array_equal(got9[name], want, err_msg=name)


# ---- opsets and external data (issue 17) -----------------------------------------------------
def _relu_at_opset(opset: int) -> onnx.ModelProto:
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    g = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    return onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [0, -1, 99])
def test_unsupported_opset_is_refused_with_the_supported_range(opset: int) -> None:
    from tessera.frontend.onnx_importer import max_opset

    with pytest.raises(ModelLoadError, match=rf"default-domain opset {opset} is not supported \(Tessera imports "
                                             rf"opsets 1 to {max_opset()}\)"):
        import_onnx(_relu_at_opset(opset).SerializeToString())


def test_newest_and_oldest_supported_opsets_import() -> None:
    from tessera.frontend.onnx_importer import max_opset

    for opset in (1, max_opset()):
        assert [n.op for n in import_onnx(_relu_at_opset(opset).SerializeToString()).nodes] == ["Relu"]


def _external_model(tmp_path: Path) -> Path:
    w = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    node = onnx.helper.make_node("Add", ["x", "w"], ["y"])
    g = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])], [w])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
                    size_threshold=0)
    return path


def test_external_data_of_a_model_given_as_bytes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _external_model(tmp_path)
    monkeypatch.chdir(tmp_path)  # where the data file is: it must still not be read from the working directory
    with pytest.raises(ModelLoadError, match=r"'w'.*stored in an external file, but the model was not loaded from a "
                                             r"path"):
        import_onnx(path.read_bytes())
    with pytest.raises(ModelLoadError, match=r"external file"):
        import_onnx(onnx.load(str(path), load_external_data=False))


def test_external_data_of_a_model_file_is_read_next_to_it(tmp_path: Path) -> None:
    g = import_onnx(_external_model(tmp_path))
    assert np.array_equal(g.constants["w"], np.arange(4, dtype=np.float32))
