"""Loop partitioning on compiler-lowered windowed kernels (pooling, padded/strided/dilated/depthwise
convolutions): the lowered kernel through the loop interpreter, and the compiled C, against the
reference implementations (rtol 1e-5, convolutions 1e-4, plus rtol x the output's largest magnitude)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tessera.codegen import render_kernel, render_module
from tessera.compiler import _prepare, lower_group
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.loop.expr import BinOp, Load, Select, walk
from tessera.loop.fusion import FusionGroup, partition
from tessera.loop.instantiate import instantiate_group
from tessera.loop.interp import run_kernel
from tessera.loop.ir import Kernel, Stmt, Store, walk_stmts
from tessera.loop.te_eval import np_dtype
from tessera.targets import load_target
from tessera.targets.toolchain import build_shared_library

from .helpers import GB, compile_and_check, random_feeds

TARGET = load_target("x86-avx2")


def stores(s: Stmt) -> Iterator[Store]:
    return (x for x in walk_stmts(s) if isinstance(x, Store))


def lowered(g: Graph, unscheduled: bool) -> tuple[Graph, FusionGroup, Kernel]:
    """The one kernel of ``g`` as the compiler lowers it: default schedules, or the unscheduled loop
    nests (every axis its own serial loop, as a tuned schedule may leave the spatial axes)."""
    g2 = _prepare(g, None, True)
    groups = [grp for grp in partition(g2) if grp.kind != "view"]
    assert len(groups) == 1
    grp = groups[0]
    scheds = {st.name: [] for st in instantiate_group(g2, grp).stages} if unscheduled else None
    return g2, grp, lower_group(g2, grp, "k0", TARGET, scheds).kernel


def check_lowered(g: Graph, unscheduled: bool = False, rtol: float = 1e-5) -> Kernel:
    """Run the lowered kernel with the loop interpreter and, compiled, through ctypes; both against the
    reference implementation."""
    feeds = random_feeds(g)
    want = run_reference(g, feeds)
    g2, grp, kern = lowered(g, unscheduled)
    values = {**feeds, **g2.constants}
    ins = [np.asarray(values[n], np_dtype(b.dtype)) for n, b in zip(grp.inputs, kern.inputs, strict=True)]
    n_out, n_ws = int(kern.attrs["num_outputs"]), int(kern.attrs["workspace"])  # type: ignore[call-overload]
    packed = list(kern.attrs["packed_constants"])  # type: ignore[call-overload]

    def fresh_args() -> list[np.ndarray]:
        rest = [packed[k - n_out - n_ws] if k >= n_out + n_ws else np.zeros(b.shape, np_dtype(b.dtype))
                for k, b in enumerate(kern.params[len(ins):])]
        return [*ins, *rest]

    interp_args = fresh_args()
    run_kernel(kern, interp_args)
    lanes = {dt: TARGET.lanes(dt) for dt in ("f32", "f64", "i32", "i64", "i8", "u8")}
    lib = ctypes.CDLL(str(build_shared_library(render_module([render_kernel(kern, lanes)], ""), TARGET,
                                               "partition_test")))
    c_args = fresh_args()
    fn = getattr(lib, kern.name)
    fn.restype = None
    fn(*(a.ctypes.data_as(ctypes.c_void_p) for a in c_args))
    for k, name in enumerate(grp.outputs):
        ref = want[name]
        for got in (interp_args[len(ins) + k], c_args[len(ins) + k]):
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * max(float(np.abs(ref).max()), 1e-30))
    return kern


def clean_stores(kern: Kernel) -> tuple[int, int]:
    """(stores, stores without a Select or an index clamp) among the kernel's accumulator updates."""
    upd = [st for st in stores(kern.body) if st.buffer.scope == "local" and any(
        isinstance(x, Load) and x.tensor is st.buffer for x in walk(st.value)) and len(list(walk(st.value))) > 3]
    clean = [st for st in upd if not any(
        isinstance(x, Select) or (isinstance(x, BinOp) and x.op in ("min", "max") and x.dtype == "i64")
        for e in (st.value, *st.indices) for x in walk(e))]
    return len(upd), len(clean)


def pool_graph(op: str, shape: tuple[int, ...], **attrs: Any) -> Graph:
    b = GB(op)
    x = b.input("x", shape)
    return b.done(b.op(op, [x], **attrs))


def test_lowered_maxpool_interior_has_no_checks() -> None:
    g = pool_graph("MaxPool", (1, 16, 13, 11), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    kern = check_lowered(g)
    # 13 x 11 inputs: the first and the last output row/column read padding -> 3 x 3 copies, one clean
    assert clean_stores(kern) == (9, 1)


@pytest.mark.parametrize("include_pad", [0, 1])
def test_lowered_avgpool(include_pad: int) -> None:
    kern = check_lowered(pool_graph("AveragePool", (1, 16, 10, 9), kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                    count_include_pad=include_pad))
    assert clean_stores(kern) == (9, 1)


@pytest.mark.parametrize("hw,pads,stride,dil,group,copies", [
    ((12, 13), [2, 1, 2, 1], [2, 1], [2, 1], 1, 9),
    ((9, 9), [1, 1, 1, 1], [1, 1], [1, 1], 4, 9),  # depthwise
    ((12, 13), [1, 1, 0, 0], [2, 2], [1, 1], 4, 4),  # padding at the start only
    ((3, 3), [1, 1, 1, 1], [1, 1], [1, 1], 4, 1),  # no interior: nothing to split
])
def test_lowered_unscheduled_convs(hw: tuple[int, int], pads: list[int], stride: list[int], dil: list[int],
                                   group: int, copies: int) -> None:
    """Convolutions whose spatial axes are loops of their own: split rows and columns."""
    b = GB("conv")
    x = b.input("x", (1, 4, *hw))
    w = b.randc("w", 4, 4 // group, 3, 3)
    y = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=pads, strides=stride, dilations=dil, group=group)
    kern = check_lowered(b.done(y), unscheduled=True, rtol=1e-4)
    n, clean = clean_stores(kern)
    assert n == copies and clean == (1 if copies > 1 else 0)


POOLS = [
    ("MaxPool", (1, 3, 14, 14), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", (2, 3, 9, 11), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("MaxPool", (1, 2, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),  # no interior
    ("MaxPool", (1, 2, 6, 5, 7), dict(kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1])),
    ("AveragePool", (1, 3, 17, 10), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
    ("AveragePool", (1, 3, 17, 10), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", (1, 3, 15, 9), dict(kernel_shape=[5, 3], strides=[2, 2], pads=[2, 1, 2, 1], count_include_pad=0)),
]


@pytest.mark.parametrize("op,shape,attrs", POOLS)
def test_compiled_pools(op: str, shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    compile_and_check(pool_graph(op, shape, **attrs))


@pytest.mark.parametrize("hw,stride,dil,group", [((14, 13), 1, 1, 1), ((15, 15), 2, 1, 1), ((16, 11), 1, 2, 1),
                                                  ((9, 9), 1, 1, 6), ((11, 12), 2, 1, 6), ((3, 3), 1, 1, 6)])
def test_compiled_padded_convs(hw: tuple[int, int], stride: int, dil: int, group: int) -> None:
    b = GB("conv")
    x = b.input("x", (1, 6, *hw))
    w = b.randc("w", 6, 6 // group, 3, 3)
    bias = b.randc("b", 6)
    y = b.op("Conv", [x, w, bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride] * 2,
             dilations=[dil] * 2, group=group)
    compile_and_check(b.done(b.op("Relu", [y])), rtol=1e-4)
