"""Other targets end to end: arm-neon cross-compiled and run under qemu-user through EmulatedModel;
x86-avx512 built, and run when this CPU has AVX-512; the executable harness on the host."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tessera.compiler import compile_graph
from tessera.errors import InputCountError, InputDtypeError, InputShapeError
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.runtime import CompiledModel
from tessera.targets import compiler_available, is_native, load_target, runner_available
from tessera.targets.emulation import EmulatedModel

from .helpers import GB, assert_matches, random_feeds
from .test_compile_small import conv_relu, matmul_bias_relu, softmax_last

pytestmark = pytest.mark.usefixtures("isolated_cache")
GRAPHS: dict[str, Callable[[], Graph]] = {
    "matmul_bias_relu": matmul_bias_relu, "conv_relu": conv_relu, "softmax": softmax_last,
}


def _mixed_dtypes() -> Graph:
    """Several inputs/outputs of different dtypes: the harness must keep their order and sizes."""
    b = GB("mixed")
    x = b.input("x", (5, 9))
    ids = b.input("ids", (4,), "i64")
    m = b.input("mask", (5, 9), "bool")
    e = b.op("Gather", [b.randc("table", 10, 3), ids], axis=0)
    w = b.op("Where", [m, x, b.const("zero", np.float32(0))])
    k = b.op("Mul", [ids, b.const("three", np.int64(3))])
    return b.done(w, e, k)


def _need(target_name: str) -> None:
    tgt = load_target(target_name)
    if not compiler_available(tgt):
        pytest.skip(f"cross compiler for {target_name} is not installed (run scripts/setup.sh)")
    if not runner_available(tgt):
        pytest.skip(f"no way to run {target_name} code here: emulator {tgt.compiler.runner[:1]} is not installed "
                    "(run scripts/setup.sh)")


def _check_emulated(g: Graph, target: str) -> EmulatedModel:
    feeds = random_feeds(g)
    comp = compile_graph(g, target)
    assert comp.manifest.target.name == target
    model = EmulatedModel(comp, target)
    assert_matches(model(*[feeds[n] for n in g.inputs]), run_reference(g, feeds), list(g.outputs))
    return model


@pytest.mark.parametrize("name", list(GRAPHS))
def test_arm_neon_under_qemu(name: str) -> None:
    _need("arm-neon")
    _check_emulated(GRAPHS[name](), "arm-neon")


def test_arm_neon_mixed_dtypes_and_threads() -> None:
    _need("arm-neon")
    g = _mixed_dtypes()
    model = _check_emulated(g, "arm-neon")
    model.num_threads = 2
    feeds = random_feeds(g, seed=7)
    got = model.run_dict(feeds)
    assert list(got) == list(g.outputs)
    assert_matches(list(got.values()), run_reference(g, feeds), list(g.outputs))


def test_arm_executable_is_aarch64() -> None:
    _need("arm-neon")
    model = EmulatedModel(compile_graph(matmul_bias_relu(), "arm-neon"), "arm-neon")
    header = model.executable.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


# ---- the harness itself, run natively ----------------------------------------------------------------
def test_harness_native_matches_ctypes_runtime() -> None:
    g = _mixed_dtypes()
    comp = compile_graph(g, "x86-avx2")
    feeds = random_feeds(g)
    args = [feeds[n] for n in g.inputs]
    via_exe = EmulatedModel(comp, "x86-avx2")(*args)
    via_lib = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=1)(*args)
    for a, b in zip(via_exe, via_lib, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_matches(via_exe, run_reference(g, feeds), list(g.outputs))


def test_emulated_model_checks_inputs() -> None:
    model = EmulatedModel(compile_graph(_mixed_dtypes(), "x86-avx2"), "x86-avx2")
    x, ids, mask = np.zeros((5, 9), np.float32), np.zeros(4, np.int64), np.zeros((5, 9), bool)
    with pytest.raises(InputCountError):
        model(x, ids)
    with pytest.raises(InputShapeError, match="'x'"):
        model(np.zeros((9, 5), np.float32), ids, mask)
    with pytest.raises(InputDtypeError, match="'ids'"):
        model(x, ids.astype(np.int32), mask)
    out = model({"x": x, "ids": ids, "mask": mask})
    assert [o.dtype for o in out] == [np.float32, np.float32, np.int64]


def test_emulated_model_rejects_other_arch() -> None:
    comp = compile_graph(matmul_bias_relu(4, 4, 4), "x86-avx2")
    with pytest.raises(ValueError, match="aarch64"):
        EmulatedModel(comp, "arm-neon")


# ---- x86-avx512 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(GRAPHS))
def test_x86_avx512(name: str) -> None:
    g = GRAPHS[name]()
    comp = compile_graph(g, "x86-avx512")
    assert comp.library.exists() and comp.manifest.target.name == "x86-avx512"
    assert "avx512f" in comp.manifest.target.features
    if not is_native(load_target("x86-avx512")):
        return  # built only: this CPU lacks AVX-512
    feeds = random_feeds(g)
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    assert_matches(model(*[feeds[n] for n in g.inputs]), run_reference(g, feeds), list(g.outputs))
