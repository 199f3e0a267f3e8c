"""Winograd convolutions compiled end to end: the rewritten kernels against the reference
executor of the original (direct) convolution graph."""

from __future__ import annotations

import pytest

from tessera.compiler import compile_graph
from tessera.graph.ir import Graph
from tessera.graph.passes import winograd

from .helpers import GB, compile_and_check


def _conv_block(h: int, w: int, residual: bool) -> Graph:
    b = GB("wino")
    x = b.input("x", (1, 64, h, w))
    c = b.op("Conv", [x, b.randc("w", 128, 64, 3, 3, scale=0.05), b.randc("b", 128)], pads=[1, 1, 1, 1])
    if residual:
        c = b.op("Add", [c, b.input("r", (1, 128, h, w))])
    return b.done(b.op("Relu", [c]))

@pytest.mark.parametrize("h, w, residual", [(14, 14, False), (7, 9, True)])
def test_winograd_conv_matches_the_direct_reference(h: int, w: int, residual: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(winograd.ENV, "1")
    g = _conv_block(h, w, residual)
    comp = compile_and_check(g, rtol=1e-4)
    ops = [n.op for ck in comp.kernels for n in ck.group.nodes]
    assert "Conv" not in ops and ops.count("MatMul") == 3 and "AssembleTiles" in ops

def test_winograd_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(winograd.ENV, "0")
    comp = compile_graph(_conv_block(8, 8, False), "x86-avx2")
    assert [n.op for ck in comp.kernels for n in ck.group.nodes] == ["Conv", "Relu"]
