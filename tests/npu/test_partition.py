"""Partitioning and GEMM lowering decisions come from the description's capabilities."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from npu_graphs import GB, attention, mlp, small_cnn

from tessera.codegen.npu.gemm import GemmSpec, Tiling, candidate_tilings, emit_gemm, fits
from tessera.codegen.npu.machine import machine_from
from tessera.codegen.npu.partition import DeviceLayer, HostStep, VectorLayer, partition
from tessera.errors import CompileError
from tessera.npu import Program, load_description, validate

GENS = ("npu-gen1", "npu-gen2", "npu-gen3")


def _kinds(steps: list) -> list[str]:
    return [f"npu:{'+'.join(n.op for n in s.nodes)}" if isinstance(s, DeviceLayer) else
            f"vec:{'+'.join(n.op for n in s.nodes)}" if isinstance(s, VectorLayer) else s.node.op for s in steps]


@pytest.mark.parametrize("gen", GENS)
def test_matrix_products_and_store_path_epilogues_are_offloaded(gen: str) -> None:
    m = machine_from(load_description(gen))
    assert _kinds(partition(mlp(), m)) == ["npu:Gemm+Relu", "npu:MatMul+Add"]
    add = "vec:Add" if m.has_vector("add", "bf16") or m.has_vector("add", "f32") else "Add"  # a vector unit?
    assert _kinds(partition(small_cnn(), m)) == [
        "npu:Conv+Relu", "npu:Conv", add, "npu:Conv+Relu", "GlobalAveragePool", "Flatten", "npu:Gemm"]
    assert _kinds(partition(attention(), m)) == ["npu:MatMul", "Softmax", "npu:MatMul"]


def test_epilogues_follow_the_store_ops() -> None:
    m = machine_from(load_description("npu-gen2"))
    bare = dataclasses.replace(m, store_ops=frozenset({"bias", "cast", "scale"}))
    assert _kinds(partition(mlp(), bare)) == ["npu:Gemm", "Relu", "npu:MatMul+Add"]


def test_zero_pad_folds_into_conv_and_clip_maps_to_relu6() -> None:
    b = GB("padconv")
    x = b.input("x", (1, 4, 6, 6))
    p = b.op("Pad", [x, b.const("pads", np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64))])
    y = b.op("Conv", [p, b.randc("w", 8, 4, 3, 3)])
    y = b.op("Clip", [y, b.const("lo", np.float32(0)), b.const("hi", np.float32(6))])
    g = b.done(y)
    (layer,) = partition(g, machine_from(load_description("npu-gen1")))
    assert isinstance(layer, DeviceLayer)
    assert layer.conv_pads == (1, 2, 1, 2) and layer.act == "relu6" and layer.a == "x"
    assert (layer.m, layer.k, layer.n) == (6 * 8, 36, 8)


def test_unsupported_forms_stay_on_the_host() -> None:
    b = GB("host")
    x = b.input("x", (1, 8, 5, 5))
    y = b.op("Conv", [x, b.randc("w", 8, 1, 3, 3)], group=8, pads=[1, 1, 1, 1])  # depthwise
    z = b.op("Gemm", [b.op("Flatten", [y]), b.randc("w2", 200, 3)], transA=0, alpha=0.5)
    g = b.done(z)
    steps = partition(g, machine_from(load_description("npu-gen2")))
    assert all(isinstance(s, HostStep) for s in steps)


@pytest.mark.parametrize("gen", GENS)
def test_every_candidate_tiling_fits_and_validates(gen: str) -> None:
    desc = load_description(gen)
    m = machine_from(desc)
    spec = GemmSpec(200, 300, 100, 1, "i8", "i32", "i8", "relu", 0, 1 << 16, 1 << 17, 1 << 18, 1 << 18 | 512)
    cands = candidate_tilings(spec, m)
    assert cands and all(fits(spec, t, m) for t in cands)
    assert all(t.buffers == 1 for t in cands) or m.decoupled
    for t in cands[:: max(1, len(cands) // 8)]:
        validate(Program(emit_gemm(spec, t, m, "layer")), desc, 1 << 19)


def test_a_tiling_that_does_not_fit_is_an_error() -> None:
    m = machine_from(load_description("npu-gen1"))
    spec = GemmSpec(4096, 4096, 64, 1, "i8", "i32", "i8", "none", 0, 1 << 24, 1 << 25)
    with pytest.raises(CompileError, match="does not fit the scratchpad"):
        emit_gemm(spec, Tiling(4096, 64, 4096), m, "big")


@pytest.mark.parametrize("gen", GENS)
def test_vector_add_relu_streams_in_double_buffered_chunks(gen: str) -> None:
    from tessera.codegen.npu.vector import EltwiseSpec, emit_eltwise, vector_dtype
    from tessera.npu.dtypes import decode, encode, round_bf16
    from tessera.npu.sim import simulate

    desc = load_description(gen)
    m = machine_from(desc)
    dt = vector_dtype(m)
    if dt is None:
        pytest.skip(f"{gen} has no vector add")
    small = dataclasses.replace(m, spad_bytes=3 * 2 * 8 * 128 * 4)  # forces chunks of a few rows
    rng = np.random.default_rng(0)
    n = 50 * 96
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    spec = EltwiseSpec.for_numel(n, small, dt, "relu", 0, 1 << 16, 1 << 17)
    prog = Program(emit_eltwise(spec, small, "add"))
    assert sum(len(c) for c in prog.cores) > 8
    dram = np.zeros(1 << 18, np.uint8)
    pad = spec.rows * spec.width - n
    for addr, x in ((0, a), (1 << 16, b)):
        data = encode(np.pad(x, (0, pad)), dt)
        dram[addr: addr + data.size] = data
    got = decode(simulate(prog, desc, dram).dram, 1 << 17, (n,), dt)
    want = np.maximum(round_bf16(a) + round_bf16(b), 0) if dt == "bf16" else np.maximum(a + b, 0)
    np.testing.assert_allclose(got, round_bf16(want) if dt == "bf16" else want, rtol=1e-6)
