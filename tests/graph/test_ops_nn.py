"""Neural-network and linear-algebra operators: NumPy references against torch.nn.functional,
symbolic shape rules, FLOP counts and error messages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tessera.errors import GraphError, ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.registry import get_op
from tessera.graph.shape_inference import infer_shapes, node_context
from tessera.graph.symbolic import Sym, evaluate
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify

RNG = np.random.default_rng(0)


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def build(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None, n_out: int = 1,
          consts: tuple[int, ...] = ()) -> Graph:
    """A one-node graph; inputs listed in ``consts`` become constants, the rest graph inputs."""
    g = Graph("t")
    names = []
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
        elif i in consts:
            names.append(g.add_constant(f"c{i}", x))
        else:
            names.append(g.add_input(f"x{i}", TensorType(DType.from_np(x.dtype), x.shape)))
    outs = [f"y{j}" for j in range(n_out)]
    g.nodes.append(Node(op, names, outs, dict(attrs or {}), "node0"))
    g.outputs = outs
    infer_shapes(g)
    verify(g)
    return g


def run(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None, n_out: int = 1,
        consts: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Run one op through shape inference and the reference; check outputs match their types."""
    g = build(op, inputs, attrs, n_out, consts)
    feeds = {n: x for n, x in zip(g.nodes[0].inputs, inputs, strict=True) if n in g.inputs}
    res = run_reference(g, feeds)
    for o in g.outputs:
        assert g.types[o].shape == res[o].shape, (o, g.types[o], res[o].shape)
        assert g.types[o].dtype.np == res[o].dtype
    return [res[o] for o in g.outputs]


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


def close(actual: np.ndarray, expected: torch.Tensor | np.ndarray, rtol: float = 1e-5) -> None:
    """Relative to the tensor's magnitude: |a - e| <= rtol * (|e| + max|e|)."""
    e = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.shape == e.shape
    scale = float(np.abs(e).max()) if e.size else 1.0
    np.testing.assert_allclose(actual, e, rtol=rtol, atol=rtol * scale)


# ---- convolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,group",
    [
        (3, 8, 3, 1, 1, 1, 1),
        (4, 6, 3, 2, 0, 1, 2),
        (4, 8, 3, 1, 2, 2, 1),
        (8, 8, 3, 2, 1, 1, 8),  # depthwise
        (6, 12, (1, 5), (2, 1), (0, 2), 1, 3),
    ],
)
def test_conv2d_matches_torch(cin: int, cout: int, k: Any, stride: Any, pad: Any, dil: int, group: int) -> None:
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    x, w, b = rand(2, cin, 11, 13), rand(cout, cin // group, kh, kw), rand(cout)
    (y,) = run("Conv", [x, w, b], {"strides": [sh, sw], "pads": [ph, pw, ph, pw], "dilations": [dil, dil],
                                   "group": group}, consts=(1, 2))
    close(y, F.conv2d(t(x), t(w), t(b), (sh, sw), (ph, pw), dil, group))


def test_conv_resnet_scale_within_1e5() -> None:
    x, w = rand(1, 64, 56, 56), rand(64, 64, 3, 3) * 0.05
    (y,) = run("Conv", [x, w], {"pads": [1, 1, 1, 1]}, consts=(1,))
    close(y, F.conv2d(t(x), t(w), padding=1), rtol=1e-5)


def test_conv_1d_and_3d_and_auto_pad() -> None:
    x, w = rand(2, 3, 17), rand(5, 3, 4)
    (y,) = run("Conv", [x, w], {"strides": [3], "auto_pad": "SAME_UPPER"}, consts=(1,))
    assert y.shape == (2, 5, 6)  # ceil(17 / 3)
    # SAME_UPPER total pad = (6-1)*3 + 4 - 17 = 2 -> (1, 1)
    close(y, F.conv1d(t(x), t(w), stride=3, padding=1))
    x3, w3 = rand(1, 2, 5, 6, 7), rand(4, 2, 3, 3, 3)
    (y3,) = run("Conv", [x3, w3], {"auto_pad": "VALID", "kernel_shape": [3, 3, 3]}, consts=(1,))
    close(y3, F.conv3d(t(x3), t(w3)))


@pytest.mark.parametrize("stride,pad,out_pad,dil,group", [(2, 1, 1, 1, 1), (3, 0, 2, 1, 2), (1, 1, 0, 2, 1)])
def test_conv_transpose_matches_torch(stride: int, pad: int, out_pad: int, dil: int, group: int) -> None:
    x, w, b = rand(2, 4, 5, 6), rand(4, 6 // group, 3, 3), rand(6)
    attrs = {"strides": [stride] * 2, "pads": [pad] * 4, "output_padding": [out_pad] * 2,
             "dilations": [dil] * 2, "group": group}
    (y,) = run("ConvTranspose", [x, w, b], attrs, consts=(1, 2))
    close(y, F.conv_transpose2d(t(x), t(w), t(b), stride, pad, out_pad, group, dil))


# ---- pooling -------------------------------------------------------------------------------


@pytest.mark.parametrize("k,s,p,dil,ceil", [(3, 2, 1, 1, 1), (2, 2, 0, 1, 1), (3, 2, 0, 2, 0), (3, 3, 1, 1, 1)])
def test_maxpool_with_indices_matches_torch(k: int, s: int, p: int, dil: int, ceil: int) -> None:
    x = rand(2, 3, 10, 11)
    y, idx = run("MaxPool", [x], {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4,
                                  "dilations": [dil, dil], "ceil_mode": ceil}, n_out=2)
    ty, tidx = F.max_pool2d(t(x), k, s, p, dil, ceil_mode=bool(ceil), return_indices=True)
    close(y, ty)
    # ONNX indices include the (n, c) offset; torch's are per (n, c) plane.
    plane = np.arange(6).reshape(2, 3, 1, 1) * 110
    np.testing.assert_array_equal(idx - plane, tidx.numpy())


@pytest.mark.parametrize("k,s,p,ceil,include", [(3, 2, 1, 1, 0), (3, 2, 1, 1, 1), (2, 3, 0, 1, 1),
                                                (3, 1, 1, 0, 0)])
def test_avgpool_matches_torch(k: int, s: int, p: int, ceil: int, include: int) -> None:
    x = rand(2, 3, 9, 10)
    (y,) = run("AveragePool", [x], {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4,
                                    "ceil_mode": ceil, "count_include_pad": include})
    close(y, F.avg_pool2d(t(x), k, s, p, bool(ceil), bool(include)))


def test_lppool_and_global_pools() -> None:
    x = rand(2, 3, 8, 8)
    (y,) = run("LpPool", [x], {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2})
    close(y, F.lp_pool2d(t(x), 2, 2, 2))
    (ga,) = run("GlobalAveragePool", [x])
    close(ga, F.adaptive_avg_pool2d(t(x), 1))
    (gm,) = run("GlobalMaxPool", [x])
    close(gm, F.adaptive_max_pool2d(t(x), 1))
    (gl,) = run("GlobalLpPool", [x], {"p": 3})
    close(gl, (np.abs(x.astype(np.float64)) ** 3).sum(axis=(2, 3), keepdims=True) ** (1 / 3))


def test_pool_ceil_mode_symbolic_matches_concrete() -> None:
    """Symbolic output-size expressions agree with torch for every concrete size."""
    h = Sym.var("h")
    for k, s, p in [(3, 2, 1), (1, 2, 0), (2, 2, 0), (3, 3, 1), (5, 3, 2)]:
        g = Graph("t")
        g.add_input("x", TensorType(DType.float32, (1, 1, h, 7)))
        g.nodes.append(Node("MaxPool", ["x"], ["y"], {"kernel_shape": [k, 1], "strides": [s, 1],
                                                      "pads": [p, 0, p, 0], "ceil_mode": 1}, "mp"))
        g.outputs = ["y"]
        infer_shapes(g)
        expr = g.types["y"].shape[2]
        for size in range(max(k - 2 * p, 1), 20):
            torch_out = F.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), ceil_mode=True).shape[2]
            assert evaluate(expr, {"h": size}) == torch_out, (k, s, p, size, expr)


# ---- normalization -------------------------------------------------------------------------


def test_batchnorm_inference_and_training() -> None:
    x, sc, b, m, v = rand(4, 3, 5, 5), rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5
    (y,) = run("BatchNormalization", [x, sc, b, m, v], {"epsilon": 1e-3}, consts=(1, 2, 3, 4))
    close(y, F.batch_norm(t(x), t(m), t(v), t(sc), t(b), False, 0.0, 1e-3))
    y2, rm, rv = run("BatchNormalization", [x, sc, b, m, v], {"training_mode": 1, "momentum": 0.9}, n_out=3)
    trm, trv = t(m.copy()), t(v.copy())
    ty = F.batch_norm(t(x), trm, trv, t(sc), t(b), True, 0.1, 1e-5)
    close(y2, ty)
    close(rm, trm)
    # torch updates running_var with the unbiased batch variance, ONNX with the population one.
    pop = x.astype(np.float64).var(axis=(0, 2, 3))
    close(rv, v * 0.9 + pop * 0.1)


def test_layer_norm_with_stats_outputs() -> None:
    x, w, b = rand(2, 5, 16), rand(16), rand(16)
    y, mean, inv = run("LayerNormalization", [x, w, b], {"epsilon": 1e-5}, n_out=3)
    close(y, F.layer_norm(t(x), (16,), t(w), t(b), 1e-5))
    assert mean.shape == (2, 5, 1) and inv.shape == (2, 5, 1)
    close(mean, x.mean(axis=-1, keepdims=True))
    close(inv, 1 / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5))
    (y2,) = run("LayerNormalization", [x, rand(5, 16)], {"axis": 1})
    assert y2.shape == x.shape


def test_group_instance_rms_lrn_match_torch() -> None:
    x, s, b = rand(2, 6, 4, 5), rand(6), rand(6)
    (gn,) = run("GroupNormalization", [x, s, b], {"num_groups": 3, "epsilon": 1e-5})
    close(gn, F.group_norm(t(x), 3, t(s), t(b), 1e-5))
    (inn,) = run("InstanceNormalization", [x, s, b])
    close(inn, F.instance_norm(t(x), weight=t(s), bias=t(b), eps=1e-5))
    w = rand(4, 5)
    (rms,) = run("RMSNormalization", [x, w], {"axis": -2, "epsilon": 1e-6})
    close(rms, F.rms_norm(t(x), (4, 5), t(w), 1e-6))
    (lrn,) = run("LRN", [x], {"size": 5, "alpha": 1e-3, "beta": 0.75, "bias": 2.0})
    close(lrn, F.local_response_norm(t(x), 5, 1e-3, 0.75, 2.0))
    (l2,) = run("LpNormalization", [x], {"axis": 1, "p": 2})
    close(l2, F.normalize(t(x), 2.0, 1))


# ---- linear algebra ------------------------------------------------------------------------


@pytest.mark.parametrize("a,b", [((2, 1, 4, 5), (3, 5, 6)), ((5,), (2, 5, 3)), ((2, 3, 5), (5,)), ((5,), (5,))])
def test_matmul_broadcasting(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    x, y = rand(*a), rand(*b)
    (r,) = run("MatMul", [x, y])
    close(r, torch.matmul(t(x), t(y)))


def test_gemm_attributes_and_bias_broadcast() -> None:
    a, b = rand(5, 4), rand(3, 5)
    for c in (rand(4, 3), rand(3), rand(1), None):
        (y,) = run("Gemm", [a, b, c], {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 1})
        ref = 0.5 * torch.matmul(t(a).T, t(b).T) + (2.0 * t(c) if c is not None else 0)
        close(y, ref)


@pytest.mark.parametrize("eq,shapes", [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
    ("ii->i", [(4, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij->", [(3, 4)]),
])
def test_einsum_matches_torch(eq: str, shapes: list[tuple[int, ...]]) -> None:
    xs = [rand(*s) for s in shapes]
    (y,) = run("Einsum", xs, {"equation": eq})
    close(y, torch.einsum(eq, *[t(x) for x in xs]))


def test_flops_are_two_macs() -> None:
    g = build("Conv", [rand(2, 4, 9, 9), rand(8, 2, 3, 3)], {"group": 2, "pads": [1, 1, 1, 1]}, consts=(1,))
    n = g.nodes[0]
    outs = [g.types[o] for o in n.outputs]
    assert get_op("Conv").flops(node_context(g, n, {}), outs) == 2 * (2 * 8 * 9 * 9) * (2 * 3 * 3)
    g = build("MatMul", [rand(3, 4, 5), rand(5, 6)])
    n = g.nodes[0]
    assert get_op("MatMul").flops(node_context(g, n, {}), [g.types["y0"]]) == 2 * 3 * 4 * 6 * 5


# ---- resize / shuffles / dropout -----------------------------------------------------------


@pytest.mark.parametrize("mode,ctm,torch_mode,align", [
    ("nearest", "asymmetric", "nearest", None),
    ("linear", "half_pixel", "bilinear", False),
    ("linear", "align_corners", "bilinear", True),
    ("cubic", "half_pixel", "bicubic", False),
])
def test_resize_matches_interpolate(mode: str, ctm: str, torch_mode: str, align: bool | None) -> None:
    x = rand(1, 2, 5, 7)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    for sizes in ([1, 2, 9, 12], [1, 2, 3, 4]):
        (y,) = run("Resize", [x, None, None, np.array(sizes, np.int64)], attrs, consts=(3,))
        ref = F.interpolate(t(x), size=tuple(sizes[2:]), mode=torch_mode, align_corners=align)
        close(y, ref, rtol=1e-5)


def test_depth_space_shuffles_and_dropout() -> None:
    x = rand(2, 8, 3, 4)
    (d2s,) = run("DepthToSpace", [x], {"blocksize": 2, "mode": "CRD"})
    close(d2s, F.pixel_shuffle(t(x), 2))
    (s2d,) = run("SpaceToDepth", [d2s], {"blocksize": 2, "mode": "CRD"})
    np.testing.assert_array_equal(s2d, x)
    (dcr,) = run("DepthToSpace", [x], {"blocksize": 2})
    (back,) = run("SpaceToDepth", [dcr], {"blocksize": 2})
    np.testing.assert_array_equal(back, x)
    y, mask = run("Dropout", [x, np.array(0.5, np.float32)], n_out=2)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()


# ---- quantization --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantize_per_tensor_and_per_axis_match_torch() -> None:
    x = rand(3, 4, 5)
    (q,) = run("QuantizeLinear", [x, np.array(0.02, np.float32), np.array(128, np.uint8)])
    np.testing.assert_array_equal(q, torch.quantize_per_tensor(t(x), 0.02, 128, torch.quint8).int_repr().numpy())
    scales = np.array([0.01, 0.02, 0.05, 0.1], np.float32)
    zps = np.array([0, 3, -2, 1], np.int8)
    (qa,) = run("QuantizeLinear", [x, scales, zps], {"axis": 1})
    tq = torch.quantize_per_channel(t(x), t(scales).double(), t(zps).long(), 1, torch.qint8)
    np.testing.assert_array_equal(qa, tq.int_repr().numpy())
    (dq,) = run("DequantizeLinear", [qa, scales, zps], {"axis": 1})
    close(dq, tq.dequantize())
    y, s, z = run("DynamicQuantizeLinear", [x], n_out=3)
    assert y.dtype == np.uint8 and s.shape == () and z.dtype == np.uint8
    np.testing.assert_allclose(s, (max(x.max(), 0) - min(x.min(), 0)) / 255, rtol=1e-6)
    assert np.abs((y.astype(np.float32) - z) * s - x).max() <= s / 2 + 1e-6


def test_matmul_integer_zero_points() -> None:
    a = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    b = RNG.integers(-128, 127, (4, 2)).astype(np.int8)
    (y,) = run("MatMulInteger", [a, b, np.array(7, np.uint8), np.array([1, -2], np.int8)])
    expected = (a.astype(np.int64) - 7) @ (b.astype(np.int64) - np.array([1, -2]))
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, expected)


# ---- symbolic shapes -----------------------------------------------------------------------


def test_conv_pool_symbolic_shapes() -> None:
    batch, h, w = Sym.var("batch"), Sym.var("h"), Sym.var("w")
    g = Graph("t")
    g.add_input("x", TensorType(DType.float32, (batch, 3, h, w)))
    g.add_constant("w", rand(8, 3, 7, 7))
    g.nodes.append(Node("Conv", ["x", "w"], ["c"], {"strides": [2, 2], "pads": [3, 3, 3, 3]}, "conv"))
    g.nodes.append(Node("MaxPool", ["c"], ["p"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                  "pads": [1, 1, 1, 1]}, "pool"))
    g.nodes.append(Node("GlobalAveragePool", ["p"], ["gap"], {}, "gap"))
    g.outputs = ["p", "gap"]
    infer_shapes(g)
    verify(g)
    c = g.types["c"].shape
    assert c[:2] == (batch, 8)
    assert c[2] == (h + 6 - 7) // 2 + 1
    assert g.types["gap"].shape == (batch, 8, 1, 1)
    env = {"batch": 2, "h": 224, "w": 200}
    assert g.types["p"].concrete(env) == (2, 8, 56, 50)
    res = run_reference(g, {"x": rand(2, 3, 224, 200)})
    assert res["p"].shape == (2, 8, 56, 50)


def test_symbolic_matmul_layernorm_resize() -> None:
    b, s = Sym.var("batch"), Sym.var("seq")
    g = Graph("t")
    g.add_input("x", TensorType(DType.float32, (b, s, 16)))
    g.add_constant("w", rand(16, 32))
    g.add_constant("g", rand(32))
    g.add_input("img", TensorType(DType.float32, (b, 3, s, s)))
    g.add_constant("scales", np.array([1, 1, 2, 0.5], np.float32))
    g.nodes += [
        Node("MatMul", ["x", "w"], ["m"], {}, "mm"),
        Node("LayerNormalization", ["m", "g"], ["ln"], {}, "ln"),
        Node("Einsum", ["ln", "ln"], ["att"], {"equation": "bqd,bkd->bqk"}, "ein"),
        Node("Resize", ["img", "", "scales"], ["r"], {"mode": "nearest"}, "rs"),
    ]
    g.outputs = ["att", "r"]
    infer_shapes(g)
    assert g.types["ln"].shape == (b, s, 32)
    assert g.types["att"].shape == (b, s, s)
    assert g.types["r"].shape == (b, 3, s * 2, s // 2)


# ---- errors --------------------------------------------------------------------------------


def test_conv_channel_mismatch_names_node() -> None:
    with pytest.raises(ShapeInferenceError, match=r"Conv node 'node0'.*channel mismatch: X has 4 channels"):
        build("Conv", [rand(1, 4, 8, 8), rand(8, 3, 3, 3)], consts=(1,))


@pytest.mark.parametrize("op,inputs,attrs,pattern", [
    ("MatMul", [(2, 3), (4, 5)], {}, r"MatMul node 'node0': inner dims differ"),
    ("Gemm", [(2, 3), (2, 5)], {}, r"Gemm node 'node0': inner dims differ"),
    ("MaxPool", [(1, 1, 2, 2)], {"kernel_shape": [5, 5]}, r"does not fit"),
    ("BatchNormalization", [(2, 3, 4), (4,), (3,), (3,), (3,)], {}, r"scale must have shape \(3,\)"),
    ("GroupNormalization", [(2, 6, 4), (6,), (6,)], {"num_groups": 4}, r"num_groups 4 must divide"),
    ("LayerNormalization", [(2, 8), (7,)], {}, r"Scale\['7'\] does not broadcast"),
    ("Einsum", [(2, 3), (4, 5)], {"equation": "ij,jk->ik"}, r"label 'j' has sizes 3 and 4"),
    ("Conv", [(1, 3, 8, 8), (4, 3, 3, 3)], {"pads": [1, 1]}, r"need 2 strides/dilations and 4 pads"),
])
def test_bad_shapes_raise(op: str, inputs: list[tuple[int, ...]], attrs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ShapeInferenceError, match=pattern):
        build(op, [rand(*s) for s in inputs], attrs)


def test_batchnorm_stat_outputs_need_training_mode() -> None:
    x = rand(2, 3, 4)
    with pytest.raises(ShapeInferenceError, match="only with training_mode=1"):
        build("BatchNormalization", [x, rand(3), rand(3), rand(3), rand(3)], n_out=3)


def test_unknown_attribute_is_graph_error() -> None:
    with pytest.raises(GraphError, match="unknown attribute 'ratio'"):
        build("Dropout", [rand(2)], {"ratio": 0.5})
