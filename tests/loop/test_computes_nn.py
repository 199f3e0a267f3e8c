"""Compute definitions of linear-algebra, convolution, pooling, shape and indexing operators,
checked against the registry's reference implementations with the TE evaluator.

Float32 results: rtol 1e-5 (atol 1e-5 for sums that may cancel); integer and bool: exact."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import tessera.loop.computes.indexing
import tessera.loop.computes.linalg
import tessera.loop.computes.nn
import tessera.loop.computes.pooling
import tessera.loop.computes.shape  # noqa: F401  (registration until computes/__init__ imports them)
from tessera.errors import CompileError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import all_ops, get_op, normalize_attrs
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.loop.compute import ComputeContext, get_compute
from tessera.loop.te import placeholder
from tessera.loop.te_eval import evaluate

RNG = np.random.default_rng(0)
F32 = np.float32


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(F32)


def ints(*vals: Any, dtype: Any = np.int64) -> np.ndarray:
    return np.array(vals, dtype=dtype)


def build(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any], consts: set[int], n_out: int
          ) -> tuple[list, list[np.ndarray]]:
    """Run ``op``'s compute definition on these inputs; returns (te outputs' values, reference values)."""
    g = Graph("t")
    names = []
    for i, v in enumerate(inputs):
        if v is None:
            names.append("")
        elif i in consts:
            names.append(g.add_constant(f"x{i}", v))
        else:
            names.append(g.add_input(f"x{i}", TensorType(DType.from_np(v.dtype), v.shape)))
    node = Node(op, names, [f"y{k}" for k in range(n_out)], attrs, "node")
    g.nodes.append(node)
    g.outputs = list(node.outputs)
    infer_shapes(g)
    opdef = get_op(op)
    nattrs = normalize_attrs(opdef, node)
    cdef = get_compute(op)
    assert cdef is not None, f"{op} has no compute definition"
    phs = [None if v is None or i in cdef.const_inputs else placeholder(v.shape, DType.from_np(v.dtype).value, f"in{i}")
           for i, v in enumerate(inputs)]
    ctx = ComputeContext(phs, nattrs, [g.types[n] if n else None for n in names],
                         [g.types[o] for o in node.outputs],
                         [v if i in consts else None for i, v in enumerate(inputs)], "node")
    outs = cdef.fn(ctx)
    assert len(outs) == n_out
    for t, o in zip(outs, node.outputs, strict=True):
        assert t.shape == tuple(g.types[o].shape), (t.shape, g.types[o])
    got = evaluate(outs, [(p, v) for p, v in zip(phs, inputs, strict=True) if p is not None])
    want = opdef.reference(list(inputs), nattrs, n_out)[:n_out]
    return got, want


def check(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None,
          consts: set[int] | tuple[int, ...] = (), n_out: int = 1) -> None:
    got, want = build(op, inputs, attrs or {}, set(consts), n_out)
    for g_, w in zip(got, want, strict=True):
        w = np.asarray(w)
        assert g_.shape == w.shape
        assert g_.dtype == w.dtype, (g_.dtype, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g_, w, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(g_, w)


# ---- linalg ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((1, 3, 4), (2, 4, 5)),
    ((4,), (4, 5)), ((2, 3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)),
])
def test_matmul(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    check("MatMul", [rand(*sa), rand(*sb)])


@pytest.mark.parametrize("ta,tb", list(itertools.product((0, 1), (0, 1))))
@pytest.mark.parametrize("alpha,beta,cshape", [
    (1.0, 1.0, None), (0.5, 2.0, (3, 5)), (1.0, 1.0, (5,)), (2.0, 0.0, (3, 1)), (1.0, -1.0, (1, 5)), (1.5, 1.0, ()),
])
def test_gemm(ta: int, tb: int, alpha: float, beta: float, cshape: tuple[int, ...] | None) -> None:
    a = rand(4, 3) if ta else rand(3, 4)
    b = rand(5, 4) if tb else rand(4, 5)
    c = rand(*cshape) if cshape is not None else None
    check("Gemm", [a, b, c], {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta})


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij->ji", [(3, 4)]),
    ("ii->i", [(4, 4)]), ("...ij,...jk->...ik", [(2, 1, 3, 4), (3, 4, 2)]), ("i,i->", [(5,), (5,)]),
    ("ij,kj", [(3, 4), (5, 4)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
])
def test_einsum(eq: str, shapes: list[tuple[int, ...]]) -> None:
    check("Einsum", [rand(*s) for s in shapes], {"equation": eq})


# ---- convolution -------------------------------------------------------------------------------

CONV_CASES = [
    ("basic+bias", (1, 3, 7, 7), (4, 3, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    ("stride2", (2, 3, 7, 7), (4, 3, 3, 3), False, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("dilation2", (1, 2, 8, 8), (3, 2, 3, 3), True, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("asym_pads", (1, 2, 6, 5), (3, 2, 3, 2), False, {"pads": [0, 1, 2, 1]}),
    ("groups2", (1, 4, 6, 6), (6, 2, 3, 3), True, {"group": 2, "pads": [1, 1, 1, 1]}),
    ("depthwise", (1, 3, 6, 6), (3, 1, 3, 3), True, {"group": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("depthwise_x2", (1, 3, 5, 5), (6, 1, 3, 3), False, {"group": 3}),
    ("same_upper_s2", (1, 2, 7, 7), (2, 2, 3, 3), False, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same_lower", (1, 2, 6, 6), (2, 2, 4, 4), True, {"auto_pad": "SAME_LOWER"}),
    ("valid", (1, 2, 6, 6), (2, 2, 3, 3), False, {"auto_pad": "VALID", "strides": [2, 1]}),
    ("1x1", (2, 4, 3, 3), (5, 4, 1, 1), True, {}),
    ("conv1d", (2, 3, 10), (4, 3, 3), True, {"strides": [2], "pads": [1, 2], "dilations": [2]}),
    ("conv3d", (1, 2, 4, 4, 4), (2, 2, 2, 2, 2), True, {"pads": [1, 0, 0, 0, 1, 0]}),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(case: tuple) -> None:
    _, xs, ws, bias, attrs = case
    check("Conv", [rand(*xs), rand(*ws), rand(ws[0]) if bias else None], attrs)


CONVT_CASES = [
    ("s2_pads_outpad", (1, 2, 4, 4), (2, 3, 3, 3), True,
     {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ("group2", (1, 4, 3, 3), (4, 1, 3, 3), False, {"group": 2}),
    ("dilated_1d", (2, 3, 5), (3, 2, 3), True, {"dilations": [2], "strides": [3], "pads": [1, 0]}),
    ("same_upper", (1, 2, 3, 3), (2, 2, 3, 3), False, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("output_shape", (1, 1, 3, 3), (1, 2, 3, 3), False, {"strides": [2, 2], "output_shape": [8, 8]}),
]


@pytest.mark.parametrize("case", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
def test_conv_transpose(case: tuple) -> None:
    _, xs, ws, bias, attrs = case
    m = ws[1] * attrs.get("group", 1)
    check("ConvTranspose", [rand(*xs), rand(*ws), rand(m) if bias else None], attrs)


# ---- pooling -----------------------------------------------------------------------------------

POOL_CASES = [
    ("k3s2p1", (1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("ceil", (1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("ceil_pads", (1, 1, 6, 7), {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ("dilated", (1, 2, 8, 8), {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    ("asym", (2, 1, 5, 6), {"kernel_shape": [3, 2], "pads": [2, 0, 0, 1]}),
    ("same_upper", (1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("pool1d", (2, 3, 9), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_maxpool(case: tuple) -> None:
    check("MaxPool", [rand(*case[1])], case[2])


def test_maxpool_int() -> None:
    check("MaxPool", [RNG.integers(-50, 50, (1, 2, 5, 5)).astype(np.int32)],
          {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1]})


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_avgpool(case: tuple, include_pad: int) -> None:
    check("AveragePool", [rand(*case[1])], {**case[2], "count_include_pad": include_pad})


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool(p: int) -> None:
    check("LpPool", [rand(1, 2, 6, 6)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2], "p": p})


@pytest.mark.parametrize("op,attrs", [("GlobalAveragePool", {}), ("GlobalMaxPool", {}), ("GlobalLpPool", {"p": 2}),
                                      ("GlobalLpPool", {"p": 3})])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 7), (1, 2, 2, 3, 2)])
def test_global_pools(op: str, attrs: dict, shape: tuple[int, ...]) -> None:
    check(op, [rand(*shape)], attrs)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2]}, {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]},
    {"kernel_shape": [2, 2], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2]},
])
def test_maxpool_indices(storage_order: int, attrs: dict) -> None:
    check("MaxPool", [rand(2, 3, 5, 6)], {**attrs, "storage_order": storage_order}, n_out=2)


def test_maxpool_indices_ties_pick_the_first_tap() -> None:
    x = np.zeros((1, 1, 4, 4), F32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 1.0  # both in the first window: (0, 1) comes first in kernel order
    check("MaxPool", [x], {"kernel_shape": [2, 2], "strides": [2, 2]}, n_out=2)


# ---- other nn ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [3, 4])
def test_lrn(size: int) -> None:
    check("LRN", [rand(2, 5, 3, 3)], {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 1.5})


def test_dropout_inference() -> None:
    check("Dropout", [rand(2, 3)])
    check("Dropout", [rand(2, 3), np.array(0.3, F32), np.array(False)], consts={1, 2}, n_out=2)


def test_dropout_training_is_rejected() -> None:
    with pytest.raises(CompileError, match="training"):
        build("Dropout", [rand(2, 3), np.array(0.3, F32), np.array(True)], {}, {1, 2}, 1)


@pytest.mark.parametrize("op", ["DepthToSpace", "SpaceToDepth"])
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("b", [2, 3])
def test_depth_space(op: str, mode: str, b: int) -> None:
    shape = (2, 2 * b * b, 2, 3) if op == "DepthToSpace" else (2, 2, 2 * b, 3 * b)
    check(op, [rand(*shape)], {"blocksize": b, "mode": mode})


RESIZE_CASES = [
    ("nearest_asym_floor_x2", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                               "nearest_mode": "floor"}, [1, 1, 2, 2], None),
    ("nearest_half_pixel_down", {"mode": "nearest"}, [1, 1, 0.5, 0.6], None),
    ("nearest_ceil_x3", {"mode": "nearest", "nearest_mode": "ceil"}, [1, 1, 3, 1.5], None),
    ("nearest_prefer_ceil_sizes", {"mode": "nearest", "nearest_mode": "round_prefer_ceil",
                                   "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 7, 5]),
    ("linear_half_pixel_x2", {"mode": "linear"}, [1, 1, 2, 2], None),
    ("linear_align_corners_sizes", {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     None, [1, 2, 9, 3]),
    ("linear_pytorch_half_pixel", {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
     [1, 1, 1.5, 0.5], None),
    ("linear_symmetric", {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
     [1, 1, 1.7, 2.0], None),
    ("linear_asymmetric_axes", {"mode": "linear", "coordinate_transformation_mode": "asymmetric", "axes": [3]},
     [2.5], None),
]


@pytest.mark.parametrize("case", RESIZE_CASES, ids=[c[0] for c in RESIZE_CASES])
def test_resize(case: tuple) -> None:
    _, attrs, scales, sizes = case
    x = rand(1, 2, 4, 5)
    s = np.array(scales, F32) if scales is not None else None
    z = np.array(sizes, np.int64) if sizes is not None else None
    check("Resize", [x, None, s, z], attrs, consts={2, 3})


SEPARABLE_RESIZE_CASES = [  # cubic, antialias, exclude_outside, tf_crop_and_resize, integer linear
    ("cubic_up", {"mode": "cubic"}, None, [1, 1.6, 2.0, 0.8], None),
    ("cubic_align_corners_a", {"mode": "cubic", "coordinate_transformation_mode": "align_corners",
                               "cubic_coeff_a": -0.5, "exclude_outside": 1}, None, [1, 1, 0.6, 1.4], None),
    ("cubic_antialias_down", {"mode": "cubic", "antialias": 1}, None, [1, 1, 0.5, 0.6], None),
    ("linear_antialias_sizes", {"mode": "linear", "antialias": 1}, None, None, [1, 2, 3, 2]),
    ("crop_linear", {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                     "extrapolation_value": 7.0}, [0, 0, -0.2, 0.3, 1, 1, 1.1, 0.9], [1, 1, 1.5, 1.2], None),
    ("crop_nearest_axes", {"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize",
                           "axes": [3, 2]}, [0.1, 0.2, 0.8, 0.9], None, [6, 3]),
]


@pytest.mark.parametrize("case", SEPARABLE_RESIZE_CASES, ids=[c[0] for c in SEPARABLE_RESIZE_CASES])
def test_resize_separable(case: tuple) -> None:
    _, attrs, roi, scales, sizes = case
    r = np.array(roi, F32) if roi is not None else None
    s = np.array(scales, F32) if scales is not None else None
    z = np.array(sizes, np.int64) if sizes is not None else None
    check("Resize", [rand(1, 2, 4, 5), r, s, z], attrs, consts={1, 2, 3})


def test_resize_linear_int() -> None:
    x = RNG.integers(0, 255, (1, 1, 3, 4)).astype(np.uint8)
    check("Resize", [x, None, np.array([1, 1, 1.5, 2.0], F32)], {"mode": "linear"}, consts={2})


# ---- shape ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [
    ((2, 3, 4), [0, -1]), ((2, 3, 4), [4, -1, 2]), ((2, 3, 4), [24]), ((2, 3, 4), [2, 1, 12]),
    ((6, 4), [2, 3, 2, 2]), ((1, 12, 1), [3, 4]), ((2, 3, 4), [3, 8]), ((5,), [1, 5, 1]),
])
def test_reshape(shape: tuple[int, ...], target: list[int]) -> None:
    check("Reshape", [rand(*shape), np.array(target, np.int64)], consts={1})


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis: int) -> None:
    check("Flatten", [rand(2, 3, 4)], {"axis": axis})


def test_squeeze_unsqueeze_identity() -> None:
    check("Squeeze", [rand(1, 3, 1, 2), ints(0, -2)], consts={1})
    check("Squeeze", [rand(1, 3, 1, 2)])
    check("Unsqueeze", [rand(3, 2), ints(0, 3)], consts={1})
    check("Identity", [RNG.integers(0, 9, (2, 3))])


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1], [1, 2, 0]])
def test_transpose(perm: list[int] | None) -> None:
    check("Transpose", [rand(2, 3, 4)], {"perm": perm} if perm is not None else {})


@pytest.mark.parametrize("shape,target", [((3, 1), [2, 3, 4]), ((4,), [3, 1]), ((2, 1, 3), [2, 5, 3])])
def test_expand(shape: tuple[int, ...], target: list[int]) -> None:
    check("Expand", [rand(*shape), np.array(target, np.int64)], consts={1})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_of_three(axis: int) -> None:
    shapes = [[2, 3, 4] for _ in range(3)]
    for k, s in enumerate(shapes):
        s[axis] = k + 1
    check("Concat", [rand(*s) for s in shapes], {"axis": axis})
    check("Concat", [RNG.integers(0, 9, s) for s in shapes], {"axis": axis})


def test_concat_skips_empty_input() -> None:
    check("Concat", [rand(2, 0), rand(2, 3), rand(2, 1)], {"axis": 1})


@pytest.mark.parametrize("sizes,attrs,n_out", [
    (None, {"axis": 1}, 3), ([1, 3, 2], {"axis": 1}, 3), (None, {"axis": -1, "num_outputs": 3}, 3),
    ([2, 1], {"axis": 0}, 2),
])
def test_split(sizes: list[int] | None, attrs: dict, n_out: int) -> None:
    inputs: list[np.ndarray | None] = [rand(3, 6, 7)]
    if sizes is not None:
        inputs.append(np.array(sizes, np.int64))
    check("Split", inputs, attrs, consts={1}, n_out=n_out)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [3], None, None), ([0, 1], [2, -1], [0, 2], None), ([-1], [-100], [1], [-1]), ([5], [0], [2], [-2]),
    ([0, 2**62], [2**62, -2**62], [1, 2], [2, -3]), ([1, 0, 3], [2, 100, -1], None, [1, 2, 1]),
])
def test_slice(starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None) -> None:
    inputs: list[np.ndarray | None] = [rand(3, 5, 7), ints(*starts), ints(*ends)]
    inputs.append(ints(*axes) if axes is not None else None)
    if steps is not None:
        inputs.append(ints(*steps))
    check("Slice", inputs, consts={1, 2, 3, 4})


def test_slice_needs_constant_bounds() -> None:
    with pytest.raises(CompileError, match="compile-time constant"):
        build("Slice", [rand(3, 4), ints(0), ints(2)], {}, {2}, 1)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads,axes", [([1, 2, 0, 1, 2, 1], None), ([0, -1, 1, 1, 1, -2], None), ([2, 3], [1]),
                                       ([6, 0, 0, 7], [0, 2])])
def test_pad(mode: str, pads: list[int], axes: list[int] | None) -> None:
    x = rand(3, 4, 5)
    inputs: list[np.ndarray | None] = [x, ints(*pads), np.array(1.5, F32) if mode == "constant" else None]
    if axes is not None:
        inputs.append(ints(*axes))
    check("Pad", inputs, {"mode": mode}, consts={1, 2, 3})


def test_pad_runtime_constant_value() -> None:
    check("Pad", [rand(2, 3), ints(1, 0, 0, 2), np.array(-4.0, F32)], consts={1})


@pytest.mark.parametrize("reps", [[2, 1, 3], [1, 1, 1], [3, 2, 1]])
def test_tile(reps: list[int]) -> None:
    check("Tile", [rand(2, 1, 3), ints(*reps)], consts={1})


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1])
def test_trilu(upper: int, k: int | None) -> None:
    inputs: list[np.ndarray | None] = [rand(2, 4, 5)]
    if k is not None:
        inputs.append(ints(k))
    check("Trilu", inputs, {"upper": upper}, consts={1})


def test_eye_like_center_crop_pad() -> None:
    check("EyeLike", [rand(3, 5)], {"k": 1})
    check("EyeLike", [rand(4, 3)], {"k": -1, "dtype": DType.int64})
    check("CenterCropPad", [rand(5, 4, 3), ints(3, 7)], {"axes": [0, 2]}, consts={1})
    check("CenterCropPad", [rand(2, 5), ints(4, 2)], consts={1})


def test_shape_valued_ops() -> None:
    check("Shape", [rand(2, 3, 4)])
    check("Shape", [rand(2, 3, 4)], {"start": 1, "end": -1})
    check("Shape", [rand(2, 3, 4)], {"start": 2, "end": 1})
    check("Size", [rand(2, 3, 4)])
    check("ConstantOfShape", [ints(2, 3)], {"value": np.array([7], np.int32)}, consts={0})
    check("ConstantOfShape", [ints(4)], consts={0})
    check("Range", [np.array(2, np.int64), np.array(11, np.int64), np.array(3, np.int64)], consts={0, 1, 2})
    check("Range", [np.array(5, np.int32), np.array(-2, np.int32), np.array(-2, np.int32)], consts={0, 1, 2})
    check("Range", [np.array(0.5, F32), np.array(2.0, F32), np.array(0.25, F32)], consts={0, 1, 2})


# ---- indexing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("idx", [np.array([[0, -1, 2], [-4, 1, 3]]), np.array(-2), np.array([3, 0], np.int32)])
@pytest.mark.parametrize("const_idx", [False, True])
def test_gather(axis: int, idx: np.ndarray, const_idx: bool) -> None:
    check("Gather", [rand(5, 4, 6), idx], {"axis": axis}, consts={1} if const_idx else set())


def test_gather_embedding_int_data() -> None:
    check("Gather", [RNG.integers(-9, 9, (10, 4)), np.array([[1, 9, -10, 0]])])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis: int) -> None:
    data = rand(3, 4)
    n = data.shape[axis]
    idx = RNG.integers(-n, n, (2, 4) if axis == 0 else (3, 5))
    check("GatherElements", [data, idx], {"axis": axis})


@pytest.mark.parametrize("data,idx,b", [
    ((3, 4, 5), [[0, 1], [-1, 2]], 0), ((3, 4, 5), [[2], [0], [-3]], 0), ((2, 3, 4), [[1], [0]], 1),
    ((2, 3, 4), [[[0, 3], [2, -1]], [[1, 1], [0, 0]]], 1),
])
def test_gather_nd(data: tuple[int, ...], idx: list, b: int) -> None:
    check("GatherND", [rand(*data), np.array(idx, np.int64)], {"batch_dims": b})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(reduction: str, axis: int) -> None:
    data = rand(4, 5)
    n = data.shape[axis]
    ishape = (6, 3) if axis == 0 else (3, 7)  # more updates than the axis: duplicates; fewer rows: partial
    check("ScatterElements", [data, RNG.integers(-n, n, ishape), rand(*ishape)], {"axis": axis, "reduction": reduction})


def test_scatter_elements_int_last_duplicate_wins() -> None:
    data = np.zeros((2, 4), np.int32)
    idx = np.array([[1, 1, 3], [0, -4, 2]], np.int64)
    upd = np.array([[5, 6, 7], [8, 9, 10]], np.int32)
    check("ScatterElements", [data, idx, upd], {"axis": 1})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize(("data", "idx"), [
    ((4, 3, 2), [[1], [-1], [1]]),  # slices, a duplicate
    ((4, 3), [[[0, 1], [3, -1]], [[0, 1], [2, 2]]]),  # elements, batched rows of indices
])
def test_scatter_nd(reduction: str, data: tuple[int, ...], idx: list) -> None:
    ind = np.array(idx, np.int64)
    upd = rand(*ind.shape[:-1], *data[ind.shape[-1]:])
    check("ScatterND", [rand(*data), ind, upd], {"reduction": reduction})


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize(("axis", "k"), [(-1, 3), (0, 2), (1, 6)])
def test_top_k(largest: int, axis: int, k: int) -> None:
    x = RNG.integers(0, 4, (4, 6, 5)).astype(F32)  # many ties: lower index first
    check("TopK", [x, np.array([k], np.int64)], {"axis": axis, "largest": largest}, consts={1}, n_out=2)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis: int) -> None:
    idx = np.array([[0, 3, -1], [4, -5, 2]], np.int64)
    check("OneHot", [idx, np.array(5, np.int64), np.array([0.5, 2.0], F32)], {"axis": axis}, consts={1})
    check("OneHot", [idx.astype(F32), np.array([5], np.int64), np.array([-1, 7], np.int32)], {"axis": axis},
          consts={1})


# ---- coverage ------------------------------------------------------------------------------------

# Registered operators of the linalg / nn / pooling / shape / indexing families with no compute
# definition, and why.
NO_COMPUTE = {
    "Compress": "output size depends on the data",
    "NonZero": "output size depends on the data",
    "Unique": "output size depends on the data",
}
FAMILIES = {f"tessera.graph.ops.{m}" for m in ("linalg", "nn", "pooling", "shape", "indexing")}


def test_every_family_op_has_a_compute_definition_or_is_allow_listed() -> None:
    ops = {name for name, op in all_ops().items() if op.reference.__module__ in FAMILIES}
    missing = {name for name in ops if get_compute(name) is None}
    assert missing == set(NO_COMPUTE)
    assert ops >= {"Conv", "MatMul", "Gemm", "MaxPool", "Reshape", "Gather", "Slice"}
