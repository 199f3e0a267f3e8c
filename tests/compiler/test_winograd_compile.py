"""Winograd convolutions compiled end to end: the rewritten kernels against the reference
executor of the original (direct) convolution graph."""

from __future__ import annotations

import pytest

from tessera.compiler import compile_graph
from tessera.graph.ir import Graph
from tessera.graph.passes import winograd

from .helpers import GB, compile_and_check


def _conv_block(h: int, w: int, residual: bool, k: int = 128) -> Graph:
    b = GB("wino")
    x = b.input("x", (1, 64, h, w))
    c = b.op("Conv", [x, b.randc("w", k, 64, 3, 3, scale=0.05), b.randc("b", k)], pads=[1, 1, 1, 1])
    if residual:
        c = b.op("Add", [c, b.input("r", (1, k, h, w))])
    return b.done(b.op("Relu", [c]))

@pytest.mark.parametrize("h, w, residual, k, tile", [(14, 14, False, 128, 4), (7, 9, True, 128, 4),
                                                     (22, 21, True, 64, 6)])
def test_winograd_conv_matches_the_direct_reference(h: int, w: int, residual: bool, k: int, tile: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(winograd.ENV, "1")
    g = _conv_block(h, w, residual, k)
    comp = compile_and_check(g, rtol=1e-4)
    nodes = [n for ck in comp.kernels for n in ck.group.nodes]
    ops = [n.op for n in nodes]
    assert "Conv" not in ops and ops.count("MatMul") == 3 and "AssembleTiles" in ops
    assert [n.attrs["kernel_shape"] for n in nodes if n.op == "ExtractTiles"] == [[tile, tile]]

def test_winograd_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(winograd.ENV, "0")
    comp = compile_graph(_conv_block(8, 8, False), "x86-avx2")
    assert [n.op for ck in comp.kernels for n in ck.group.nodes] == ["Conv", "Relu"]
