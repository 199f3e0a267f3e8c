"""Winograd F(2x2, 3x3) and F(4x4, 3x3) rewrites of convolutions and their two tile layout
operators: which convolutions are rewritten with which tile, and the rewritten graph against the
direct convolution (reference executor, float32; F(2x2) within 1e-5 of the output's largest
magnitude, F(4x4), whose transforms have larger coefficients, within 5e-5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tessera.errors import ShapeInferenceError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.passes import winograd
from tessera.graph.passes.winograd import F2, F4, choose_variant, for_cpu, winograd_convolutions
from tessera.graph.reference import run_reference
from tessera.graph.registry import get_op
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify

RNG = np.random.default_rng(0)


def conv_graph(c: int = 64, k: int = 128, h: int = 9, w: int = 10, bias: bool = True, weights_const: bool = True,
               kernel: int = 3, **attrs: Any) -> Graph:
    g = Graph("conv")
    g.add_input("x", TensorType(DType.float32, (2, c, h, w)))
    wt = (RNG.standard_normal((k, c // int(attrs.get("group", 1)), kernel, kernel)) / 3).astype(np.float32)
    if weights_const:
        g.add_constant("w", wt)
    else:
        g.add_input("w", TensorType(DType.float32, wt.shape))
    inputs = ["x", "w"]
    if bias:
        g.add_constant("b", RNG.standard_normal(k).astype(np.float32))
        inputs.append("b")
    if "auto_pad" not in attrs:
        attrs.setdefault("pads", [1, 1, 1, 1])
    g.nodes = [Node("Conv", inputs, ["c"], attrs, "conv"), Node("Relu", ["c"], ["y"], {}, "relu")]
    g.outputs = ["y"]
    infer_shapes(g)
    verify(g)
    return g


def assert_same(before: Graph, after: Graph, tol: float = 1e-5) -> None:
    feeds = {n: RNG.standard_normal([int(d) for d in before.types[n].shape]).astype(np.float32)
             for n in before.inputs}
    want, got = run_reference(before, feeds)["y"], run_reference(after, feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()))


def tile_attrs(g: Graph) -> dict[str, Any]:
    (node,) = [n for n in g.nodes if n.op == "ExtractTiles"]
    return dict(node.attrs)


@pytest.mark.parametrize("variant", [F2, F4])
def test_transform_matrices_compute_a_1d_correlation(variant: winograd.Variant) -> None:
    d, w = RNG.standard_normal(variant.a), RNG.standard_normal(3)
    y = variant.a_t @ ((variant.g @ w) * (variant.b_t @ d))
    np.testing.assert_allclose(y, [d[i:i + 3] @ w for i in range(variant.m)], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("k", "c", "hw", "m"), [
    (64, 64, 56, 4),  # F(2x2) saves too little per gathered element at 64 channels; F(4x4) enough
    (128, 128, 28, 4),  # F(4x4) needs clearly fewer multiply-adds than F(2x2)
    (256, 256, 14, 2),  # ... here not (edge waste: 16 tiles of 4x4 for 14x14)
    (512, 512, 7, 2),  # F(4x4) would have 4 tiles: each transformed weight used only 4 times
    (32, 32, 56, None),  # too few output channels for either
])
def test_tile_size_choice(k: int, c: int, hw: int, m: int | None) -> None:
    choice = choose_variant(k, c, 1, [hw, hw])
    assert (choice[0].m if choice else None) == m
    if choice:
        assert choice[1:] == (-(-hw // m), -(-hw // m))


@pytest.mark.parametrize("pads", [[1, 1, 1, 1], [0, 1, 2, 0]])
@pytest.mark.parametrize("hw", [(16, 16), (15, 13)])
def test_large_tile_rewrite_matches_the_direct_convolution(pads: list[int], hw: tuple[int, int]) -> None:
    g = conv_graph(c=64, k=64, h=hw[0], w=hw[1], pads=pads)
    out = winograd_convolutions(g)
    verify(out)
    assert tile_attrs(out)["kernel_shape"] == [6, 6] and tile_attrs(out)["strides"] == [4, 4]
    assert_same(g, out, tol=5e-5)


@pytest.mark.parametrize("pads", [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 2, 1]])
@pytest.mark.parametrize("hw", [(9, 10), (8, 8), (12, 11)])
def test_rewrite_matches_the_direct_convolution(pads: list[int], hw: tuple[int, int]) -> None:
    g = conv_graph(h=hw[0], w=hw[1], pads=pads)
    out = winograd_convolutions(g)
    verify(out)
    assert [n.op for n in out.nodes] == ["ExtractTiles", "Reshape", "MatMul", "Reshape", "MatMul", "Reshape",
                                         "MatMul", "AssembleTiles", "Add", "Relu"]
    assert out.outputs == g.outputs and out.types["y"] == g.types["y"]
    assert_same(g, out, tol=1e-5 if tile_attrs(out)["kernel_shape"] == [4, 4] else 5e-5)


def test_rewrite_without_bias_and_same_upper_padding() -> None:
    g = conv_graph(bias=False, auto_pad="SAME_UPPER")
    out = winograd_convolutions(g)
    assert "Add" not in [n.op for n in out.nodes] and "MatMul" in [n.op for n in out.nodes]
    assert_same(g, out)


def test_input_graph_is_left_untouched() -> None:
    g = conv_graph()
    text = str(g)
    winograd_convolutions(g)
    assert str(g) == text


@pytest.mark.parametrize("change", [
    {"strides": [2, 2]}, {"dilations": [2, 2]}, {"group": 2}, {"k": 32}, {"k": 64}, {"kernel": 5, "pads": [2, 2, 2, 2]},
    {"weights_const": False},
])
def test_ineligible_convolutions_are_kept(change: dict[str, Any]) -> None:
    g = conv_graph(**change)
    assert winograd_convolutions(g) is g


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    g = conv_graph()
    monkeypatch.setenv(winograd.ENV, "0")
    assert for_cpu(g) is g
    monkeypatch.setenv(winograd.ENV, "1")
    assert for_cpu(g) is not g


def test_extract_and_assemble_tiles_reference() -> None:
    x = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
    (t,) = get_op("ExtractTiles").reference([x], {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 0, 0, 1]}, 1)
    assert t.shape == (16, 3, 2, 2, 3)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 1)))
    for q in range(16):
        a, b = divmod(q, 4)
        np.testing.assert_array_equal(t[q, 1, 0, 1, 2], xp[0, 1, 2 + a, 4 + b])
    y = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)  # 3 x 4 tiles of 2 x 2, cut to 5 x 7
    tiles = np.zeros((2, 2, 3, 2, 3, 4), np.float32)
    for i in range(5):
        for j in range(7):
            tiles[i % 2, j % 2, :, :, i // 2, j // 2] = y[:, :, i, j].T
    (back,) = get_op("AssembleTiles").reference([tiles.reshape(4, -1)], {"tile": [2, 2],
                                                                           "output_shape": [2, 3, 5, 7]}, 1)
    np.testing.assert_array_equal(back, y)


def test_tile_ops_reject_inexact_shapes() -> None:
    g = Graph("t")
    g.add_input("x", TensorType(DType.float32, (1, 2, 7, 8)))
    g.nodes = [Node("ExtractTiles", ["x"], ["t"], {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [0, 0, 0, 0]})]
    g.outputs = ["t"]
    with pytest.raises(ShapeInferenceError, match="do not tile a padded spatial dim of 7 exactly"):
        infer_shapes(g)
    g = Graph("a")
    g.add_input("t", TensorType(DType.float32, (4, 10)))
    g.nodes = [Node("AssembleTiles", ["t"], ["y"], {"tile": [2, 2], "output_shape": [1, 1, 4, 4]})]
    g.outputs = ["y"]
    with pytest.raises(ShapeInferenceError, match=r"does not hold \[2, 2\] tiles"):
        infer_shapes(g)
