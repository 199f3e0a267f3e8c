"""Shape-manipulation and indexing operators: NumPy numerics, symbolic shape inference
(including shape-value propagation through Shape/Gather/Concat chains), and errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.shape_inference import infer_node, infer_shapes
from tessera.graph.symbolic import Sym
from tessera.graph.tensor_type import TensorType

batch, seq = Sym.var("batch"), Sym.var("seq")
I64_MAX = np.iinfo(np.int64).max
rng = np.random.default_rng(0)


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def run_op(op: str, args: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None, n_out: int = 1,
           inputs: Sequence[int] = (0,)) -> list[np.ndarray]:
    """Run one node through shape inference and the reference; args at ``inputs`` are graph
    inputs, the rest constants. Checks that inferred types match the computed outputs."""
    g = Graph(op)
    names, feeds = [], {}
    for i, a in enumerate(args):
        if a is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if i in inputs:
            g.add_input(name, TensorType(DType.from_np(a.dtype), a.shape))
            feeds[name] = a
        else:
            g.add_constant(name, a)
    outs = [f"out{j}" for j in range(n_out)]
    g.nodes.append(Node(op, names, outs, attrs or {}, name="n"))
    g.outputs = outs
    infer_shapes(g)
    res = run_reference(g, feeds)
    for o in outs:
        assert g.types[o].dtype.np == res[o].dtype
        assert g.types[o].shape == res[o].shape, (g.types[o], res[o].shape)
    return [res[o] for o in outs]


X = rng.standard_normal((2, 3, 4)).astype(np.float32)
Y = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


# ---- numerics vs NumPy --------------------------------------------------------------------------

CASES: list[tuple[str, list[Any], dict[str, Any], list[np.ndarray]]] = [
    ("Reshape", [X, i64(0, -1)], {}, [X.reshape(2, 12)]),
    ("Reshape", [X, i64(4, 0, -1)], {}, [X.reshape(4, 3, 2)]),
    ("Reshape", [np.zeros((0, 3), np.float32), i64(3, 0)], {"allowzero": 1}, [np.zeros((3, 0), np.float32)]),
    ("Transpose", [X], {}, [X.transpose(2, 1, 0)]),
    ("Transpose", [X], {"perm": [1, 0, 2]}, [X.transpose(1, 0, 2)]),
    ("Flatten", [X], {"axis": -1}, [X.reshape(6, 4)]),
    ("Flatten", [X], {"axis": 0}, [X.reshape(1, 24)]),
    ("Squeeze", [X[:, :1, None]], {}, [X[:, 0]]),
    ("Squeeze", [X[:1, :, None], i64(-2)], {}, [X[:1]]),
    ("Unsqueeze", [X, i64(-1, 0)], {}, [X[None, ..., None]]),
    ("Expand", [X[0, :, :1], i64(2, 1, 4)], {}, [np.broadcast_to(X[0, :, :1], (2, 3, 4))]),
    ("Concat", [X, Y], {"axis": -1}, [np.concatenate([X, Y], -1)]),
    ("Split", [Y, i64(1, 3)], {"axis": -1}, [Y[..., :1], Y[..., 1:]]),
    ("Split", [Y[0, 0, :3]], {}, [Y[0, 0, i:i + 1] for i in range(3)]),
    ("Split", [np.arange(7, dtype=np.int32)], {"num_outputs": 3},
     [np.arange(3, dtype=np.int32), np.arange(3, 6, dtype=np.int32), np.array([6], np.int32)]),
    ("Identity", [X], {}, [X]),
    ("Shape", [X], {}, [i64(2, 3, 4)]),
    ("Shape", [X], {"start": -2}, [i64(3, 4)]),
    ("Shape", [X], {"start": 1, "end": -1}, [i64(3)]),
    ("Size", [X], {}, [np.array(24, np.int64)]),
    ("Tile", [X, i64(1, 2, 3)], {}, [np.tile(X, (1, 2, 3))]),
    ("ConstantOfShape", [i64(2, 3)], {"value": np.array([7], np.int32)}, [np.full((2, 3), 7, np.int32)]),
    ("ConstantOfShape", [i64(4)], {}, [np.zeros(4, np.float32)]),
    ("Range", [np.array(1, np.int32), np.array(10, np.int32), np.array(3, np.int32)], {},
     [np.arange(1, 10, 3, dtype=np.int32)]),
    ("Range", [np.array(5, np.int64), np.array(-2, np.int64), np.array(-2, np.int64)], {},
     [np.arange(5, -2, -2, dtype=np.int64)]),
    ("Range", [np.array(0.0, np.float32), np.array(1.0, np.float32), np.array(0.25, np.float32)], {},
     [np.arange(0, 1, 0.25, dtype=np.float32)]),
    ("EyeLike", [X[0]], {"k": 1, "dtype": DType.int32}, [np.eye(3, 4, 1, dtype=np.int32)]),
    ("Trilu", [Y], {}, [np.triu(Y)]),
    ("Trilu", [Y, np.array(-1, np.int64)], {"upper": 0}, [np.tril(Y, -1)]),
    ("Pad", [X, i64(0, 1, 2, 0, 0, 1), np.array(1.5, np.float32)], {},
     [np.pad(X, [(0, 0), (1, 0), (2, 1)], constant_values=1.5)]),
    ("Pad", [X, i64(0, 1, 2, 0, 2, 1)], {"mode": "reflect"}, [np.pad(X, [(0, 0), (1, 2), (2, 1)], mode="reflect")]),
    ("Pad", [X, i64(1, 2, 2, 1), None, i64(1, 2)], {"mode": "edge"},
     [np.pad(X, [(0, 0), (1, 2), (2, 1)], mode="edge")]),
    ("Pad", [X, i64(3, 1), None, i64(-1)], {"mode": "wrap"}, [np.pad(X, [(0, 0), (0, 0), (3, 1)], mode="wrap")]),
    ("Pad", [X, i64(0, -1, 1, 0, 0, -2)], {}, [np.pad(X[:, 1:, :2], [(0, 0), (0, 0), (1, 0)])]),
    ("CenterCropPad", [Y, i64(1, 6)], {"axes": [1, 2]},
     [np.pad(Y[:, 1:2], [(0, 0), (0, 0), (1, 1)])]),
    # indexing
    ("Gather", [Y, i64(-1, 0, 1)], {"axis": 1}, [Y[:, [2, 0, 1]]]),
    ("Gather", [Y, np.array(-1, np.int64)], {}, [Y[1]]),
    ("GatherElements", [Y, np.array([[[0], [-1]], [[2], [1]]], np.int64)], {"axis": 1},
     [np.array([[[Y[0, 0, 0]], [Y[0, 2, 0]]], [[Y[1, 2, 0]], [Y[1, 1, 0]]]])]),
    ("GatherND", [Y, np.array([[1, 0], [0, -1]], np.int64)], {}, [np.stack([Y[1, 0], Y[0, 2]])]),
    ("GatherND", [Y, np.array([[2], [0]], np.int64)], {"batch_dims": 1}, [np.stack([Y[0, 2], Y[1, 0]])]),
    ("Slice", [Y, i64(1, -1), i64(I64_MAX, -I64_MAX), i64(1, 2), i64(1, -2)], {}, [Y[:, 1:, ::-2]]),
    ("Slice", [Y, i64(-100), i64(100)], {}, [Y]),
    ("Slice", [Y, i64(5), i64(7), i64(-1)], {}, [Y[..., 4:4]]),
    ("Slice", [Y, i64(-1), i64(-100), i64(2), i64(-1)], {}, [Y[..., ::-1]]),
    ("OneHot", [np.array([[0, -1], [5, 2]], np.int64), np.array(3.0, np.float32), np.array([0.0, 2.0], np.float32)],
     {"axis": 1}, [np.moveaxis(np.array([[[2, 0, 0], [0, 0, 2]], [[0, 0, 0], [0, 0, 2]]], np.float32), -1, 1)]),
]


def _scatter_cases() -> list[tuple[str, list[Any], dict[str, Any], list[np.ndarray]]]:
    data = np.ones((3, 3), np.float32)
    idx = np.array([[0, -1], [0, 0]], np.int64)
    upd = np.array([[1, 2], [3, 4]], np.float32)
    add = data.copy()
    for (r, c), u in zip([(0, 0), (0, 2), (1, 0), (1, 0)], [1, 2, 3, 4], strict=True):
        add[r, c] += u
    nd = np.arange(8, dtype=np.int64).reshape(2, 4)
    mul = nd.copy()
    mul[1] *= 2 * 3
    return [
        ("ScatterElements", [data, idx, upd], {"axis": 1, "reduction": "add"}, [add]),
        ("ScatterND", [nd, i64(1, 1).reshape(2, 1), np.array([[2] * 4, [3] * 4], np.int64)],
         {"reduction": "mul"}, [mul]),
        ("ScatterND", [nd, np.array([[0, -1]], np.int64), i64(9)], {}, [np.array([[0, 1, 2, 9], [4, 5, 6, 7]])]),
    ]


@pytest.mark.parametrize("op,args,attrs,expected", CASES + _scatter_cases(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_reference_matches_numpy(op: str, args: list[Any], attrs: dict[str, Any], expected: list[np.ndarray]) -> None:
    inputs = () if op in ("ConstantOfShape", "Range") else (0,)  # all-constant ops
    got = run_op(op, args, attrs, n_out=len(expected), inputs=inputs)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_topk_largest_and_smallest_break_ties_by_lower_index() -> None:
    x = np.array([[3, 1, 3, 2, 1]], np.int32)
    v, i = run_op("TopK", [x, i64(3)], {}, n_out=2)
    np.testing.assert_array_equal(v, [[3, 3, 2]])
    np.testing.assert_array_equal(i, [[0, 2, 3]])
    v, i = run_op("TopK", [x.astype(np.uint8), i64(2)], {"largest": 0, "axis": 1}, n_out=2)
    np.testing.assert_array_equal(v, [[1, 1]])
    np.testing.assert_array_equal(i, [[1, 4]])
    assert v.dtype == np.uint8 and i.dtype == np.int64


def test_data_dependent_sizes() -> None:
    x = np.array([[0, 2, 0], [1, 0, 3]], np.float32)
    # Constant inputs: inference knows the sizes (checked against the outputs by run_op).
    (nz,) = run_op("NonZero", [x], inputs=())
    np.testing.assert_array_equal(nz, np.array(np.nonzero(x)))
    (c,) = run_op("Compress", [x, np.array([False, True, True])], {"axis": 1}, inputs=())
    np.testing.assert_array_equal(c, x[:, 1:])
    y, first, inv, counts = run_op("Unique", [np.array([2, 1, 2, 3, 1], np.int64)], {"sorted": 0}, n_out=4,
                                   inputs=())
    np.testing.assert_array_equal(y, [2, 1, 3])
    np.testing.assert_array_equal(first, [0, 1, 3])
    np.testing.assert_array_equal(inv, [0, 1, 0, 2, 1])
    np.testing.assert_array_equal(counts, [2, 2, 1])

    g = Graph("nz")
    g.add_input("x", TensorType(DType.float32, (batch, 4)))
    g.nodes.append(Node("NonZero", ["x"], ["idx"], name="nz"))
    g.outputs = ["idx"]
    t = infer_shapes(g).types["idx"]
    assert t.dtype == DType.int64 and t.shape[0] == 2 and isinstance(t.shape[1], Sym)


# ---- symbolic shape inference ----------------------------------------------------------------


def _heads_graph() -> Graph:
    """What exporters emit for ``x.view(x.size(0), x.size(1), 12, 64)`` with dynamic axes."""
    g = Graph("heads")
    g.add_input("x", TensorType(DType.float32, (batch, seq, 768)))
    g.add_constant("i0", np.array(0, np.int64))
    g.add_constant("i1", np.array(1, np.int64))
    g.add_constant("ax0", i64(0))
    g.add_constant("tail", i64(12, 64))
    g.nodes += [
        Node("Shape", ["x"], ["s"], name="shape"),
        Node("Gather", ["s", "i0"], ["b"], name="g0"),
        Node("Gather", ["s", "i1"], ["t"], name="g1"),
        Node("Unsqueeze", ["b", "ax0"], ["b1"], name="u0"),
        Node("Unsqueeze", ["t", "ax0"], ["t1"], name="u1"),
        Node("Concat", ["b1", "t1", "tail"], ["shp"], {"axis": 0}, name="cat"),
        Node("Reshape", ["x", "shp"], ["y"], name="reshape"),
    ]
    g.outputs = ["y"]
    return infer_shapes(g)


def test_shape_gather_unsqueeze_concat_reshape_stays_symbolic() -> None:
    g = _heads_graph()
    assert g.types["y"] == TensorType(DType.float32, (batch, seq, 12, 64))
    assert g.types["b"] == TensorType(DType.int64, ())
    assert g.types["shp"] == TensorType(DType.int64, (4,))
    x = rng.standard_normal((2, 5, 768)).astype(np.float32)
    np.testing.assert_array_equal(run_reference(g, [x])["y"], x.reshape(2, 5, 12, 64))


def test_shape_slice_concat_expand_stays_symbolic() -> None:
    g = Graph("expand")
    g.add_input("x", TensorType(DType.float32, (batch, seq, 1)))
    g.add_constant("st", i64(0))
    g.add_constant("en", i64(2))
    g.add_constant("eight", i64(8))
    g.nodes += [
        Node("Shape", ["x"], ["s"], name="shape"),
        Node("Slice", ["s", "st", "en"], ["bs"], name="slice"),
        Node("Concat", ["bs", "eight"], ["shp"], {"axis": 0}, name="cat"),
        Node("Expand", ["x", "shp"], ["y"], name="expand"),
        Node("ConstantOfShape", ["bs"], ["z"], {"value": np.array([1], np.int64)}, name="cos"),
    ]
    g.outputs = ["y", "z"]
    infer_shapes(g)
    assert g.types["y"] == TensorType(DType.float32, (batch, seq, 8))
    assert g.types["z"] == TensorType(DType.int64, (batch, seq))
    out = run_reference(g, [np.ones((3, 2, 1), np.float32)])
    assert out["y"].shape == (3, 2, 8) and out["z"].shape == (3, 2)


@pytest.mark.parametrize("in_shape,target,expected", [
    ((batch, seq, 768), [0, 0, -1, 64], (batch, seq, 12, 64)),
    ((batch, seq, 768), [-1, 768], (batch * seq, 768)),
    ((batch, seq, 12, 64), [0, -1, 768], (batch, seq, 768)),
    ((batch, seq, 12, 64), [-1], (batch * seq * 768,)),
    ((seq, 6), [-1, 4], (seq * 6 // 4, 4)),
])
def test_reshape_minus_one_on_symbolic_dims(in_shape: tuple, target: list[int], expected: tuple) -> None:
    g = Graph("r")
    g.add_input("x", TensorType(DType.float32, in_shape))
    g.add_constant("shape", i64(*target))
    g.nodes.append(Node("Reshape", ["x", "shape"], ["y"], name="r"))
    g.outputs = ["y"]
    assert infer_shapes(g).types["y"].shape == expected


def test_reshape_minus_one_against_computed_symbolic_dims() -> None:
    g = Graph("r")
    g.add_input("x", TensorType(DType.float32, (batch, seq, 768)))
    g.add_constant("idx", i64(0))
    g.add_constant("rest", i64(-1, 64))
    g.nodes += [
        Node("Shape", ["x"], ["s"], name="shape"),
        Node("Gather", ["s", "idx"], ["b"], name="g"),
        Node("Concat", ["b", "rest"], ["shp"], {"axis": 0}, name="cat"),
        Node("Reshape", ["x", "shp"], ["y"], name="r"),
    ]
    g.outputs = ["y"]
    assert infer_shapes(g).types["y"].shape == (batch, seq * 12, 64)


def test_reshape_with_unknown_shape_value_gets_fresh_dims() -> None:
    g = Graph("r")
    g.add_input("x", TensorType(DType.float32, (batch, 8)))
    g.add_input("shape", TensorType(DType.int64, (3,)))
    g.nodes.append(Node("Reshape", ["x", "shape"], ["y"], name="r"))
    g.outputs = ["y"]
    shape = infer_shapes(g).types["y"].shape
    assert len(shape) == 3 and all(isinstance(d, Sym) for d in shape) and len(set(shape)) == 3


@pytest.mark.parametrize("starts,ends,steps,expected", [
    ([1], [I64_MAX], [1], seq - 1),
    ([-2], [I64_MAX], [1], 2),
    ([0], [-1], [1], seq - 1),
    ([0], [I64_MAX], [2], (seq + 1) // 2),
    ([-1], [-I64_MAX], [-1], seq),
    ([2], [5], [1], 3),
])
def test_slice_symbolic_dims(starts: list[int], ends: list[int], steps: list[int], expected: Any) -> None:
    g = Graph("s")
    g.add_input("x", TensorType(DType.float32, (batch, seq, 8)))
    for k, v in (("st", starts), ("en", ends), ("ax", [1]), ("sp", steps)):
        g.add_constant(k, i64(*v))
    g.nodes.append(Node("Slice", ["x", "st", "en", "ax", "sp"], ["y"], name="s"))
    g.outputs = ["y"]
    assert infer_shapes(g).types["y"].shape == (batch, expected, 8)


def test_slice_and_range_with_symbolic_bounds() -> None:
    """GPT-2 style: a static [1024, 64] buffer sliced to ``[:seq]``, and ``arange(seq)``."""
    g = Graph("s")
    g.add_input("x", TensorType(DType.float32, (batch, seq)))
    g.add_constant("buf", np.zeros((1024, 64), np.float32))
    g.add_constant("zero", i64(0))
    g.add_constant("z0", np.array(0, np.int64))
    g.add_constant("d1", np.array(1, np.int64))
    g.nodes += [
        Node("Shape", ["x"], ["s"], name="shape"),
        Node("Gather", ["s", "d1"], ["n"], name="g"),
        Node("Unsqueeze", ["n", "zero"], ["n1"], name="u"),
        Node("Slice", ["buf", "zero", "n1"], ["y"], name="slice"),
        Node("Range", ["z0", "n", "d1"], ["pos"], name="range"),
    ]
    g.outputs = ["y", "pos"]
    infer_shapes(g)
    assert g.types["y"].shape == (seq, 64)
    assert g.types["pos"] == TensorType(DType.int64, (seq,))
    out = run_reference(g, [np.zeros((2, 7), np.float32)])
    assert out["y"].shape == (7, 64)
    np.testing.assert_array_equal(out["pos"], np.arange(7))


def test_split_and_transpose_symbolic() -> None:
    g = Graph("qkv")
    g.add_input("x", TensorType(DType.float32, (batch, seq, 2304)))
    g.nodes += [
        Node("Split", ["x"], ["q", "k", "v"], {"axis": -1, "num_outputs": 3}, name="split"),
        Node("Transpose", ["q"], ["qt"], {"perm": [1, 0, 2]}, name="t"),
        Node("Flatten", ["k"], ["kf"], {"axis": 2}, name="f"),
    ]
    g.outputs = ["qt", "kf", "v"]
    infer_shapes(g)
    assert g.types["qt"].shape == (seq, batch, 768)
    assert g.types["kf"].shape == (batch * seq, 768)
    assert g.types["v"].shape == (batch, seq, 768)


# ---- errors ---------------------------------------------------------------------------------


def _infer_single(op: str, x_type: TensorType, consts: list[np.ndarray], attrs: dict[str, Any] | None = None) -> Graph:
    g = Graph("e")
    g.add_input("x", x_type)
    names = ["x"]
    for i, c in enumerate(consts):
        names.append(g.add_constant(f"c{i}", c))
    g.nodes.append(Node(op, names, ["y"], attrs or {}, name="bad"))
    g.outputs = ["y"]
    return infer_shapes(g)


@pytest.mark.parametrize("x_type,shape,match", [
    ("f32[2,3,4]", [5, -1], "24 elements do not divide into 5"),
    ("f32[2,3,4]", [5, 5], r"cannot reshape f32\[2,3,4\] \(24 elements\)"),
    ("f32[2,3,4]", [-1, -1], "more than one -1"),
    ("f32[2,3,4]", [2, -3], "invalid dim -3"),
    ("f32[batch,768]", [0, 384], "cannot reshape"),
    ("f32[4]", [2, 0], "copies dim 1 of a rank-1 input"),
])
def test_bad_reshape_raises(x_type: str, shape: list[int], match: str) -> None:
    with pytest.raises(ShapeInferenceError, match=match):
        _infer_single("Reshape", TensorType.parse(x_type), [i64(*shape)])


def test_other_shape_errors() -> None:
    t = TensorType.parse("f32[2,3]")
    with pytest.raises(ShapeInferenceError, match="dim 1 differs"):
        _infer_single("Concat", t, [np.zeros((2, 4), np.float32)], {"axis": 0})
    with pytest.raises(ShapeInferenceError, match="not a permutation"):
        _infer_single("Transpose", t, [], {"perm": [0, 0]})
    with pytest.raises(ShapeInferenceError, match="does not sum to dim 3"):
        g = Graph("e")
        g.add_input("x", t)
        g.add_constant("sp", i64(1, 1))
        g.nodes.append(Node("Split", ["x", "sp"], ["a", "b"], {"axis": 1}, name="bad"))
        infer_shapes(g)
    with pytest.raises(ShapeInferenceError, match="cannot squeeze axis 1"):
        _infer_single("Squeeze", t, [i64(1)])
    with pytest.raises(ShapeInferenceError, match="steps must be non-zero"):
        _infer_single("Slice", t, [i64(0), i64(1), i64(0), i64(0)])
    with pytest.raises(ShapeInferenceError, match="axis 2 out of range"):
        _infer_single("Gather", t, [i64(0)], {"axis": 2})


def test_static_entries_of_a_shape_fold_to_constants() -> None:
    """Shape of a partly static tensor: the static entries become real constants, so ops
    without a symbolic rule downstream can fold them."""
    g = Graph("fold")
    g.add_input("x", TensorType(DType.float32, (batch, 4)))
    g.add_constant("one", np.array(1, np.int64))
    g.nodes += [Node("Shape", ["x"], ["s"], name="shape"), Node("Gather", ["s", "one"], ["n"], name="g")]
    values: dict[str, Any] = dict(g.constants)
    for node in g.nodes:
        for name, t in zip(node.outputs, infer_node(g, node, values), strict=True):
            g.types[name] = t
    assert values["s"] == (batch, 4)
    assert isinstance(values["n"], np.ndarray) and values["n"].dtype == np.int64 and values["n"].shape == ()
    assert int(values["n"]) == 4


def test_range_of_constants_is_typed_without_making_it() -> None:
    """An 8 TiB Range (2**41 float32) gets its length from ONNX's formula; its elements are never made."""
    g = Graph("big_range")
    for name, v in (("s", 0.0), ("l", float(2**41)), ("d", 1.0)):
        g.add_constant(name, np.array(v, np.float32))
    node = Node("Range", ["s", "l", "d"], ["y"], name="rng")
    g.nodes.append(node)
    g.outputs = ["y"]
    infer_shapes(g)
    assert g.types["y"].shape == (2**41,)


@pytest.mark.parametrize("limit", [np.nan, np.inf])
def test_range_with_non_finite_bounds_is_refused(limit: float) -> None:
    g = Graph("bad_range")
    for name, v in (("s", 0.0), ("l", limit), ("d", 1.0)):
        g.add_constant(name, np.array(v, np.float32))
    node = Node("Range", ["s", "l", "d"], ["y"], name="rng")
    g.nodes.append(node)
    g.outputs = ["y"]
    with pytest.raises(ShapeInferenceError, match=r"rng.*start, limit and delta must be finite"):
        infer_shapes(g)
