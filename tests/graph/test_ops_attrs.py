"""Bad attributes are refused with a ShapeInferenceError naming the node and the attribute's
problem, instead of compiling into silent wrong answers (a kernel of size 0 summing nothing,
a permutation taken modulo the rank)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import AttributeProto, ModelProto, TensorProto, helper, numpy_helper

from tessera.errors import GraphError, ShapeInferenceError
from tessera.frontend.onnx_importer import import_onnx


def _model(op: str, ins: list[tuple[str, list[int]]], attrs: dict, inits: tuple = (), n_out: int = 1) -> ModelProto:
    node = helper.make_node(op, [n for n, _ in ins] + [i.name for i in inits], [f"y{k}" for k in range(n_out)],
                            name="bad", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in ins],
                          [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None) for k in range(n_out)],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _c(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def _empty_ints(model: ModelProto, name: str) -> ModelProto:
    """``model`` with an ints attribute ``name`` given as an empty list (onnx.helper refuses to make one)."""
    model.graph.node[0].attribute.append(helper.make_attribute(name, [], attr_type=AttributeProto.INTS))
    return model


W = _c("W", np.ones((4, 2, 3, 3), np.float32))
X = [("x", [1, 2, 8, 8])]
M = [("x", [2, 3])]
CASES = {
    "conv_kernel_shape_0": (_model("Conv", X, {"kernel_shape": [0, 0]}, (W,)), r"kernel_shape \[0, 0\] does not match"),
    "conv_weights_0x0": (_model("Conv", X, {}, (_c("W", np.ones((4, 2, 0, 0), np.float32)),)),
                         r"kernel_shape must be positive"),
    "conv_strides_empty": (_empty_ints(_model("Conv", X, {}, (W,)), "strides"),
                           r"2 spatial dims need 2 strides.*strides=\[\]"),
    "maxpool_pads_empty": (_empty_ints(_model("MaxPool", X, {"kernel_shape": [2, 2]}), "pads"),
                           r"need 2 strides.*pads=\[\]"),
    "conv_strides_0": (_model("Conv", X, {"strides": [0, 1]}, (W,)), r"strides=\[0, 1\].*must be >= 1"),
    "conv_dilations_0": (_model("Conv", X, {"dilations": [1, 0]}, (W,)), r"dilations=\[1, 0\]"),
    "conv_negative_pads": (_model("Conv", X, {"pads": [-1, 0, 0, 0]}, (W,)), r"pads=\[-1, 0, 0, 0\].*pads >= 0"),
    "conv_group_3": (_model("Conv", X, {"group": 3}, (W,)), r"group 3 must divide the 4 output channels"),
    "conv_group_0": (_model("Conv", X, {"group": 0}, (W,)), r"group 0 must divide"),
    "maxpool_kernel_0": (_model("MaxPool", X, {"kernel_shape": [0, 0]}), r"kernel_shape must be positive"),
    "maxpool_strides_0": (_model("MaxPool", X, {"kernel_shape": [2, 2], "strides": [0, 0]}), r"strides=\[0, 0\]"),
    "averagepool_kernel_negative": (_model("AveragePool", X, {"kernel_shape": [-1, 2]}),
                                    r"kernel_shape must be positive"),
    "lppool_kernel_0": (_model("LpPool", X, {"kernel_shape": [0, 2]}), r"kernel_shape must be positive"),
    "transpose_perm_out_of_range": (_model("Transpose", M, {"perm": [0, 5]}),
                                    r"'perm' \[0, 5\] is not a permutation of 0..1"),
    "transpose_perm_negative": (_model("Transpose", M, {"perm": [-1, 0]}), r"'perm' \[-1, 0\] is not a permutation"),
    "transpose_perm_repeated": (_model("Transpose", M, {"perm": [0, 0]}), r"'perm' \[0, 0\] is not a permutation"),
    "concat_axis": (_model("Concat", [("x", [2, 3]), ("z", [2, 3])], {"axis": 2}), r"axis 2 out of range for rank 2"),
    "softmax_axis": (_model("Softmax", M, {"axis": 5}), r"axis 5 out of range for rank 2"),
    "gather_axis": (_model("Gather", M, {"axis": 3}, (_c("i", np.array([0], np.int64)),)), r"axis 3 out of range"),
    "reducesum_axes": (_model("ReduceSum", M, {}, (_c("a", np.array([4], np.int64)),)), r"axis 4 out of range"),
    "argmax_axis": (_model("ArgMax", M, {"axis": 2}), r"axis 2 out of range"),
    "topk_axis": (_model("TopK", M, {"axis": 4}, (_c("k", np.array([1], np.int64)),), n_out=2), r"axis 4 out of range"),
    "split_axis": (_model("Split", [("x", [2, 4])], {"axis": 3}, n_out=2), r"axis 3 out of range"),
    "lrn_size_0": (_model("LRN", X, {"size": 0}), r"size must be >= 1"),
    "depthtospace_blocksize_0": (_model("DepthToSpace", X, {"blocksize": 0}), r"blocksize >= 1"),
    "convtranspose_output_padding": (_model("ConvTranspose", X, {"output_padding": [2, 2], "strides": [2, 2]},
                                            (_c("W", np.ones((2, 2, 3, 3), np.float32)),)),
                                     r"output_padding \[2, 2\] must be >= 0 and less than the stride"),
    "lppool_p_0": (_model("LpPool", X, {"kernel_shape": [2, 2], "p": 0}), r"attribute 'p' must be >= 1, got 0"),
    "globallppool_p_negative": (_model("GlobalLpPool", X, {"p": -1}), r"attribute 'p' must be >= 1, got -1"),
    "groupnorm_groups": (_model("GroupNormalization", [("x", [1, 4, 2, 2]), ("s", [4]), ("b", [4])],
                                {"num_groups": 3}), r"num_groups 3 must divide the 4 channels"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_attribute_is_refused_naming_the_node(case: str) -> None:
    model, message = CASES[case]
    with pytest.raises(ShapeInferenceError, match=r"node 'bad': .*" + message):
        import_onnx(model.SerializeToString())


# flags and enumerations: the attribute schema names the values allowed (registry.Attr.choices)
CHOICES = {
    "maxpool_storage_order": (_model("MaxPool", X, {"kernel_shape": [2, 2], "storage_order": 2}), "storage_order", 2),
    "averagepool_count_include_pad": (_model("AveragePool", X, {"kernel_shape": [2, 2], "count_include_pad": 3}),
                                      "count_include_pad", 3),
    "maxpool_ceil_mode": (_model("MaxPool", X, {"kernel_shape": [2, 2], "ceil_mode": -1}), "ceil_mode", -1),
    "argmax_keepdims": (_model("ArgMax", M, {"keepdims": 2}), "keepdims", 2),
    "reducesum_noop": (_model("ReduceSum", M, {"noop_with_empty_axes": 5}), "noop_with_empty_axes", 5),
    "topk_largest": (_model("TopK", M, {"largest": 2}, (_c("k", np.array([1], np.int64)),), n_out=2), "largest", 2),
    "gemm_transb": (_model("Gemm", [("x", [2, 3]), ("w", [2, 3])], {"transB": 7}), "transB", 7),
    "lpnormalization_p": (_model("LpNormalization", M, {"p": 3}), "p", 3),
}


@pytest.mark.parametrize("case", sorted(CHOICES))
def test_flag_out_of_its_choices_is_refused(case: str) -> None:
    model, attr, value = CHOICES[case]
    with pytest.raises(GraphError, match=rf"node 'bad': attribute '{attr}' must be one of \[.*\], got {value}"):
        import_onnx(model.SerializeToString())
