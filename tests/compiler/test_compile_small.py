"""End to end on small hand-built graphs: compile for x86-avx2, run natively, compare with the reference."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import tessera.targets.toolchain as toolchain
from tessera.compiler import compile_graph
from tessera.errors import CompileError
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.runtime import CompiledModel

from .helpers import GB, assert_matches, compile_and_check, random_feeds

pytestmark = pytest.mark.usefixtures("isolated_cache")
TARGET = "x86-avx2"
SQRT1_2 = np.float32(1 / np.sqrt(2))


# ---- graph builders (shared with test_compile_arm) -----------------------------------------------
def matmul_bias_relu(m: int = 37, k: int = 51, n: int = 19) -> Graph:
    b = GB("matmul_bias_relu")
    x = b.input("x", (m, k))
    y = b.op("MatMul", [x, b.randc("w", k, n)])
    y = b.op("Add", [y, b.randc("bias", n)])
    return b.done(b.op("Relu", [y]))


def conv_relu() -> Graph:
    b = GB("conv_relu")
    x = b.input("x", (1, 3, 17, 13))
    y = b.op("Conv", [x, b.randc("w", 8, 3, 3, 3, scale=0.3), b.randc("bias", 8)], pads=[1, 1, 1, 1])
    return b.done(b.op("Relu", [y]))


def conv_block() -> Graph:
    """Strided conv + BatchNormalization (folded into the conv bias) + Relu, a grouped and a depthwise
    conv, then a residual Add and Relu."""
    b = GB("conv_block")
    x = b.input("x", (2, 8, 15, 15))
    c1 = b.op("Conv", [x, b.randc("w1", 16, 8, 3, 3, scale=0.2)], strides=[2, 2], pads=[1, 1, 1, 1])
    rng = b.rng
    bn = b.op("BatchNormalization", [c1, b.const("g", rng.uniform(0.5, 1.5, 16).astype(np.float32)),
                                     b.randc("beta", 16), b.randc("mean", 16, scale=0.1),
                                     b.const("var", rng.uniform(0.5, 2.0, 16).astype(np.float32))])
    r1 = b.op("Relu", [bn])
    c2 = b.op("Conv", [r1, b.randc("w2", 16, 4, 3, 3, scale=0.3), b.randc("b2", 16)], group=4,
              pads=[1, 1, 1, 1])
    r2 = b.op("Relu", [c2])
    c3 = b.op("Conv", [r2, b.randc("w3", 16, 1, 3, 3, scale=0.3), b.randc("b3", 16)], group=16,
              pads=[1, 1, 1, 1])
    s = b.op("Add", [c3, r1])
    return b.done(b.op("Relu", [s]))


def softmax_last() -> Graph:
    b = GB("softmax")
    x = b.input("x", (4, 7, 33))
    return b.done(b.op("Softmax", [x], axis=-1))


# ---- numerics --------------------------------------------------------------------------------------
def test_matmul_bias_relu_odd_sizes() -> None:
    comp = compile_and_check(matmul_bias_relu())
    assert "MatMul" in [n.op for ck in comp.kernels for n in ck.group.nodes]


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 129, 17), (64, 64, 64)])
def test_matmul_edge_sizes(m: int, k: int, n: int) -> None:
    compile_and_check(matmul_bias_relu(m, k, n))


def test_batched_matmul_broadcast() -> None:
    b = GB("bmm")
    a = b.input("a", (2, 1, 5, 7))
    c = b.input("c", (3, 7, 9))
    y = b.op("MatMul", [a, c])  # (2, 3, 5, 9)
    z = b.op("MatMul", [y, b.randc("w", 9, 6)])  # rank-4 x rank-2 constant
    compile_and_check(b.done(y, z))


def test_conv_block() -> None:
    g = conv_block()
    comp = compile_and_check(g)
    assert "BatchNormalization" not in [n.op for n in comp.graph.nodes]  # folded into the conv


def test_conv_relu() -> None:
    compile_and_check(conv_relu())


def test_pools() -> None:
    b = GB("pools")
    x = b.input("x", (2, 5, 13, 11))
    mp = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    ap = b.op("AveragePool", [x], kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 1])
    api = b.op("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    gp = b.op("GlobalAveragePool", [x])
    compile_and_check(b.done(mp, ap, api, gp))


def test_min_max_propagate_nan_from_either_operand() -> None:
    """Scalar (unvectorizable odd-sized) Max/Min/Relu: NaN in either operand gives NaN, as NumPy."""
    b = GB("minmax_nan")
    x, y = b.input("x", (3, 7)), b.input("y", (3, 7))
    g = b.done(b.op("Max", [x, y]), b.op("Min", [x, y]), b.op("Relu", [x]))
    xv = np.random.default_rng(1).standard_normal((3, 7)).astype(np.float32)
    yv = np.random.default_rng(2).standard_normal((3, 7)).astype(np.float32)
    xv[0, 1], yv[1, 2], xv[2, 3], yv[2, 3] = np.nan, np.nan, np.nan, np.nan
    comp = compile_graph(g, TARGET)
    got = CompiledModel(comp.library, comp.manifest, comp.weights)(xv, yv)
    for out, want in zip(got, [np.maximum(xv, yv), np.minimum(xv, yv), np.maximum(xv, 0)], strict=True):
        np.testing.assert_array_equal(out, want)  # NaNs compare equal here


def test_softmax_layernorm_last_axis() -> None:
    b = GB("norms")
    x = b.input("x", (4, 7, 33))
    sm = b.op("Softmax", [x], axis=-1)
    ln = b.op("LayerNormalization", [x, b.randc("scale", 33), b.randc("shift", 33)], axis=-1, epsilon=1e-5)
    compile_and_check(b.done(sm, ln))


def test_softmax_large_values_stable() -> None:
    g = softmax_last()
    x = (np.random.default_rng(3).standard_normal((4, 7, 33)) * 50 + 80).astype(np.float32)
    compile_and_check(g, {"x": x})


def test_gelu_erf_chain() -> None:
    b = GB("gelu")
    x = b.input("x", (5, 3, 50))
    d = b.op("Div", [x, b.const("sqrt2", np.float32(np.sqrt(2)))])
    e = b.op("Erf", [d])
    a = b.op("Add", [e, b.const("one", np.float32(1))])
    m = b.op("Mul", [x, a])
    y = b.op("Mul", [m, b.const("half", np.float32(0.5))])
    compile_and_check(b.done(y))


@pytest.mark.parametrize("negative", [False, True], ids=["plain", "negative_indices"])
def test_gather_embedding(negative: bool) -> None:
    b = GB("embed")
    idx = b.input("ids", (3, 7), "i64")
    y = b.op("Gather", [b.randc("table", 50, 24), idx], axis=0)
    g = b.done(y)
    ids = np.random.default_rng(2).integers(-50 if negative else 0, 50, (3, 7)).astype(np.int64)
    compile_and_check(g, {"ids": ids})


def test_transpose_reshape_views() -> None:
    b = GB("views")
    x = b.input("x", (2, 3, 4, 5))
    r = b.op("Reshape", [x, b.const("s1", np.array([6, 20], np.int64))])  # a view of the input
    t = b.op("Transpose", [x], perm=[0, 2, 1, 3])
    r2 = b.op("Reshape", [t, b.const("s2", np.array([2, 4, -1], np.int64))])  # reshape of a transposed copy
    y = b.op("Relu", [r2])
    u = b.op("Unsqueeze", [y, b.const("ax", np.array([1], np.int64))])
    f = b.op("Flatten", [u], axis=2)
    compile_and_check(b.done(r, y, f))


def test_concat_slice() -> None:
    b = GB("concat_slice")
    x = b.input("x", (3, 5, 8))
    z = b.input("z", (3, 2, 8))
    c = b.op("Concat", [x, z, b.randc("k", 3, 1, 8)], axis=1)  # (3, 8, 8)
    s = b.op("Slice", [c, b.const("st", np.array([1, -1], np.int64)), b.const("en", np.array([7, 0], np.int64)),
                       b.const("axs", np.array([1, 2], np.int64)), b.const("sp", np.array([2, -3], np.int64))])
    y = b.op("Add", [s, b.const("one", np.float32(1))])
    compile_and_check(b.done(c, y))


def test_where_bool_mask_input() -> None:
    b = GB("where_input")
    m = b.input("mask", (4, 1, 9), "bool")
    x = b.input("x", (4, 6, 9))
    y = b.op("Where", [m, x, b.const("fill", np.float32(-1e9))])
    compile_and_check(b.done(y))


def test_where_computed_mask() -> None:
    b = GB("where_computed")
    x = b.input("x", (4, 6, 9))
    m = b.op("Greater", [x, b.const("zero", np.float32(0))])
    y = b.op("Where", [m, x, b.op("Mul", [x, b.const("slope", np.float32(0.1))])])
    n = b.op("Not", [m])
    compile_and_check(b.done(y, n))


def test_int64_elementwise() -> None:
    b = GB("ints")
    p = b.input("p", (5, 17), "i64")
    q = b.input("q", (17,), "i64")
    s = b.op("Add", [b.op("Mul", [p, q]), b.const("c", np.int64(3))])
    d = b.op("Sub", [s, b.op("Max", [p, q])])
    e = b.op("Div", [d, b.const("two", np.int64(2))])
    y = b.op("Neg", [b.op("Abs", [e])])
    g = b.done(y, d)
    feeds = random_feeds(g)
    feeds["p"] = feeds["p"] - 5  # negative values: truncating Div, Abs
    compile_and_check(g, feeds)


def test_outputs_that_are_inputs_or_constants() -> None:
    b = GB("passthrough")
    x = b.input("x", (3, 11))
    c = b.randc("c", 3, 11)
    y = b.op("Relu", [x])
    z = b.op("Add", [y, c])  # a kernel that reads the constant that is also an output
    compile_and_check(b.done(x, y, c, z))


# ---- compile cache ---------------------------------------------------------------------------------
def test_compile_cache_second_compile_fast_without_gcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    g = conv_block()
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(toolchain.subprocess, "run", spy)
    t0 = time.perf_counter()
    first = compile_graph(g, TARGET)
    t1 = time.perf_counter() - t0
    assert any("-o" in c for c in calls), "the first compile should run the C compiler"
    calls.clear()
    t0 = time.perf_counter()
    second = compile_graph(g, TARGET)
    t2 = time.perf_counter() - t0
    assert calls == [], f"second compile ran {calls}"
    assert second.library == first.library and second.source == first.source
    assert t2 < 0.25 * t1 or t2 < 1.0, (t1, t2)


# ---- errors --------------------------------------------------------------------------------------
def test_compile_error_names_op_and_node() -> None:
    b = GB("dropout")
    x = b.input("x", (4, 5))
    ratio = b.const("ratio", np.array(0.5, np.float32))
    training = b.const("training", np.array(True))
    y = b.op("Dropout", [x, ratio, training], name="my_dropout_node")  # training mode: no compute definition
    with pytest.raises(CompileError, match=r"Dropout.*my_dropout_node"):
        compile_graph(b.done(y), TARGET)


# ---- hostile names ----------------------------------------------------------------------------------
EVIL = 'x"); system("rm -rf /"); //'


def test_model_names_never_reach_the_source() -> None:
    b = GB(EVIL)
    x = b.input(EVIL + "in", (6, 10))
    w = b.randc(EVIL + "w", 10, 7)
    m = b.op("MatMul", [x, w], name=EVIL + "mm", outs=[EVIL + "mm_out"])
    a = b.op("Add", [m, b.randc("*/ #include <evil.h> /*", 7)], name="*/ int main(){} /*", outs=["a\nb"])
    y = b.op("Relu", [a], name="\\\n#define float int", outs=[EVIL + "out"])
    g = b.done(y)
    comp = compile_and_check(g)
    for fragment in ("system(", "rm -rf", "evil.h", "int main", "#define float", EVIL):
        assert fragment not in comp.source, fragment
    assert comp.manifest.outputs[0].name == EVIL + "out"


# ---- memory planning -------------------------------------------------------------------------------
def test_memory_plan_reuses_chain_buffers() -> None:
    b = GB("chain")
    y = b.input("x", (32, 64))
    for k in range(6):  # anchors do not fuse with each other: 5 intermediates of 32x64 f32
        y = b.op("MatMul", [y, b.randc(f"w{k}", 64, 64, scale=0.1)])
    comp = compile_and_check(b.done(y))
    mem = comp.manifest.memory
    one = 32 * 64 * 4
    assert mem.naive_activation_bytes >= 5 * one
    assert mem.peak_activation_bytes <= mem.naive_activation_bytes
    assert mem.peak_activation_bytes <= 2 * one, (mem, one)  # ping-pong between two buffers
    assert comp.manifest.arena_bytes >= mem.peak_activation_bytes


def test_memory_stats_count_workspaces_on_both_sides() -> None:
    """A MatMul whose weight is an input packs it into an arena workspace: the naive sum counts that
    workspace too, so the reported saving is never negative."""
    b = GB("packed")
    x = b.input("x", (256, 512))
    g = b.done(b.op("Relu", [b.op("MatMul", [x, b.input("w", (512, 256))])]))
    comp = compile_graph(g, TARGET, tuning=False)
    assert [ck.kernel.attrs["workspace"] for ck in comp.kernels] == [1]
    mem = comp.manifest.memory
    assert 0 < mem.peak_activation_bytes <= mem.naive_activation_bytes, mem


def test_compiled_model_repeat_calls_consistent() -> None:
    g = matmul_bias_relu(8, 16, 8)
    comp = compile_graph(g, TARGET)
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=1)
    feeds = random_feeds(g)
    want = run_reference(g, feeds)
    for _ in range(3):
        assert_matches(model(feeds["x"]), want, list(g.outputs))
