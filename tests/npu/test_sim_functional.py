"""NPU simulator, functional mode: every instruction's semantics against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.npu import (
    Addr,
    Barrier,
    DmaLoad,
    DmaStore,
    Gemm,
    NpuProgramError,
    Program,
    Signal,
    Vec,
    Wait,
    load_description,
)
from tessera.npu.dtypes import encode, round_bf16
from tessera.npu.sim import simulate

RNG = np.random.default_rng(0)
G1, G2, G3 = (load_description(f"npu-gen{i}") for i in (1, 2, 3))


def _dram(*arrays: tuple[int, np.ndarray, str], size: int = 1 << 16) -> np.ndarray:
    mem = np.zeros(size, np.uint8)
    for addr, arr, dt in arrays:
        b = encode(arr, dt)
        mem[addr:addr + b.size] = b
    return mem


def _q(desc: object, kind: str) -> str:
    qs = desc.execution.queues  # type: ignore[attr-defined]
    return kind if kind in qs else qs[0]


@pytest.mark.parametrize("desc", [G1, G2, G3], ids=lambda d: d.name)
@pytest.mark.parametrize("m,k,n", [(16, 16, 16), (37, 45, 21), (70, 130, 40)])
def test_int8_gemm_exact_with_folds_and_accumulate(desc: object, m: int, k: int, n: int) -> None:
    a = RNG.integers(-128, 128, (m, k)).astype(np.int8)
    b = RNG.integers(-128, 128, (k, n)).astype(np.int8)
    a_st, b_st = k + 3, n + 5   # padded row strides in spad
    ld, cq, st = _q(desc, "load"), _q(desc, "compute"), _q(desc, "store")
    prog = [DmaLoad(ld, Addr("spad", 0), Addr("dram", 0), m, k, "i8", k, a_st),
            DmaLoad(ld, Addr("spad", 0x8000), Addr("dram", 0x4000), k, n, "i8", n, b_st)]
    if ld != cq:
        prog += [Signal(ld, 0), Wait(cq, 0)]
    gemm = Gemm(cq, Addr("spad", 0), Addr("spad", 0x8000), Addr("acc", 0), m, k, n, "i8", "i32", False,
                a_st, b_st, n)
    prog += [gemm, Gemm(cq, gemm.a, gemm.b, gemm.c, m, k, n, "i8", "i32", True, a_st, b_st, n)]
    if cq != st:
        prog += [Signal(cq, 1), Wait(st, 1)]
    prog.append(DmaStore(st, Addr("dram", 0x8000), Addr("acc", 0), m, n, "i32", "i32", n, n))
    r = simulate(Program([prog]), desc, _dram((0, a, "i8"), (0x4000, b, "i8")))
    ref = 2 * (a.astype(np.int64) @ b.astype(np.int64))
    np.testing.assert_array_equal(r.read(0x8000, (m, n), "i32"), ref)
    assert r.macs == 2 * m * k * n and 0 < r.utilization <= 1


def test_bf16_gemm_rounds_inputs_and_accumulates_in_f32() -> None:
    m, k, n = 33, 70, 40
    a = RNG.standard_normal((m, k)).astype(np.float32)
    b = RNG.standard_normal((k, n)).astype(np.float32)
    prog = Program([[DmaLoad("load", Addr("spad", 0), Addr("dram", 0), m, k, "bf16", k, k),
                     DmaLoad("load", Addr("spad", 0x8000), Addr("dram", 0x2000), k, n, "bf16", n, n),
                     Signal("load", 0), Wait("compute", 0),
                     Gemm("compute", Addr("spad", 0), Addr("spad", 0x8000), Addr("acc", 0), m, k, n, "bf16", "f32",
                          False, k, n, n),
                     Signal("compute", 1), Wait("store", 1),
                     DmaStore("store", Addr("dram", 0x4000), Addr("acc", 0), m, n, "f32", "f32", n, n),
                     DmaStore("store", Addr("dram", 0x8000), Addr("acc", 0), m, n, "f32", "bf16", n, n)]])
    r = simulate(prog, G2, _dram((0, a, "bf16"), (0x2000, b, "bf16")))
    ref = round_bf16(a).astype(np.float64) @ round_bf16(b).astype(np.float64)
    np.testing.assert_allclose(r.read(0x4000, (m, n), "f32"), ref, rtol=1e-5, atol=1e-5)
    out16 = r.read(0x8000, (m, n), "bf16")
    np.testing.assert_array_equal(out16, round_bf16(r.read(0x4000, (m, n), "f32")))
    assert not np.array_equal(round_bf16(a), a)  # the inputs really were rounded


def test_store_path_bias_scale_act_cast_saturation() -> None:
    x = np.array([[10, -10, 300, 5, 7, 1000], [-1000, 3, 4, 0, -7, 25]], np.int32)
    bias = np.array([0.5, -0.5, 1.0, 0.0, 0.25, 2.0], np.float32)
    scale = np.array([0.5, 0.5, 1.0, 1.0, 0.5, 0.25], np.float32)
    dram = _dram((0, x, "i32"), (0x100, bias, "f32"), (0x200, scale, "f32"))
    loads = [DmaLoad("load", Addr("acc", 0), Addr("dram", 0), 2, 6, "i32", 6, 6),
             DmaLoad("load", Addr("spad", 0), Addr("dram", 0x100), 1, 6, "f32", 6, 6),
             DmaLoad("load", Addr("spad", 64), Addr("dram", 0x200), 1, 6, "f32", 6, 6),
             Signal("load", 0), Wait("store", 0)]
    st = lambda dst, **kw: DmaStore("store", Addr("dram", dst), Addr("acc", 0), 2, 6, "i32",  # noqa: E731
                                    kw.pop("dt", "i8"), 6, 6, **kw)
    prog = Program([loads + [st(0x1000, bias=Addr("spad", 0), scale=Addr("spad", 64)),
                             st(0x1100, scale=0.5, act="relu"),
                             st(0x1200, act="relu6"),
                             st(0x1300, act="clip", lo=-2.0, hi=3.5, dt="f32"),
                             st(0x1400, scale=1 / 3, dt="bf16")]])
    r = simulate(prog, G2, dram)
    xf = x.astype(np.float32)
    ref_a = np.clip(np.rint((xf + bias) * scale), -128, 127)
    np.testing.assert_array_equal(r.read(0x1000, (2, 6), "i8"), ref_a)
    # (10+0.5)*0.5 = 5.25 -> 5; (-10-0.5)*.5 = -5.25 -> -5; 7.25*.5 -> 2 (ties to even: 2.5 -> 2 check below)
    assert ref_a[0, 0] == 5 and ref_a[0, 2] == 127 and ref_a[1, 0] == -128
    np.testing.assert_array_equal(r.read(0x1100, (2, 6), "i8"), np.clip(np.rint(np.maximum(xf * 0.5, 0)), -128, 127))
    assert r.read(0x1100, (2, 6), "i8")[0, 3] == 2  # 5 * 0.5 = 2.5 rounds half to even
    np.testing.assert_array_equal(r.read(0x1200, (2, 6), "i8"), np.clip(xf, 0, 6))
    np.testing.assert_array_equal(r.read(0x1300, (2, 6), "f32"), np.clip(xf, -2, 3.5))
    np.testing.assert_array_equal(r.read(0x1400, (2, 6), "bf16"), round_bf16(xf * np.float32(1 / 3)))


def test_dma_padding_strides_and_row_repeat() -> None:
    img = RNG.integers(-128, 128, (5, 7)).astype(np.int8)
    row = np.arange(8, dtype=np.int32)
    dram = _dram((0, np.zeros((3, 10), np.int8), "i8"), (0x40, img, "i8"), (0x100, row, "i32"))
    prog = Program([[
        DmaLoad("inorder", Addr("spad", 16), Addr("dram", 0x40), 5, 7, "i8", 7, 12, pad=(1, 2, 2, 1)),
        DmaStore("inorder", Addr("dram", 0x400), Addr("spad", 16), 8, 10, "i8", "i8", 12, 10),
        DmaLoad("inorder", Addr("acc", 0), Addr("dram", 0x100), 4, 8, "i32", 0, 8),  # stride 0 repeats
        DmaStore("inorder", Addr("dram", 0x800), Addr("acc", 0), 4, 8, "i32", "i32", 8, 8),
        # strided column window out of the padded tile
        DmaStore("inorder", Addr("dram", 0x900), Addr("spad", 16 + 12 + 2), 3, 4, "i8", "i8", 12, 4),
    ]])
    r = simulate(prog, G1, dram)
    padded = np.pad(img, ((1, 2), (2, 1)))
    np.testing.assert_array_equal(r.read(0x400, (8, 10), "i8"), padded)
    np.testing.assert_array_equal(r.read(0x800, (4, 8), "i32"), np.tile(row, (4, 1)))
    np.testing.assert_array_equal(r.read(0x900, (3, 4), "i8"), padded[1:4, 2:6])


def _vec_run(desc: object, ins: list[Vec], data: list[tuple[int, np.ndarray, str]]) -> object:
    loads = []
    for i, (addr, arr, dt) in enumerate(data):
        a2 = arr.reshape(arr.shape[0] if arr.ndim > 1 else 1, -1)
        loads.append(DmaLoad("load", Addr("spad", addr), Addr("dram", 0x1000 * i), a2.shape[0], a2.shape[1], dt,
                             a2.shape[1], a2.shape[1]))
    dram = _dram(*[(0x1000 * i, arr, dt) for i, (_, arr, dt) in enumerate(data)])
    return simulate(Program([loads + [Signal("load", 0), Wait("vector", 0)] + ins]), desc, dram)


def _spad(r: object, addr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    from tessera.npu.dtypes import decode
    return decode(r.memories.spad[0], addr, shape, dtype)  # type: ignore[attr-defined]


def test_vector_ops_float() -> None:
    x = RNG.standard_normal((3, 40)).astype(np.float32)
    y = RNG.standard_normal((3, 40)).astype(np.float32)
    col = RNG.standard_normal(40).astype(np.float32)
    rowv = RNG.standard_normal(3).astype(np.float32)
    v = lambda op, dst, **kw: Vec("vector", op, Addr("spad", dst), Addr("spad", 0), 40, kw.pop("dt", "f32"),  # noqa
                                  rows=3, **kw)
    ins = [v("add", 0x4000, src1=Addr("spad", 0x800)), v("sub", 0x4200, src1=Addr("spad", 0x1000), src1_bcast="col"),
           v("mul", 0x4400, src1=Addr("spad", 0x1100), src1_bcast="row"), v("max", 0x4600, imm=0.1),
           v("min", 0x4800, src1=Addr("spad", 0x800)), v("relu", 0x4A00), v("exp", 0x4C00),
           v("recip", 0x4E00), v("reduce_sum", 0x5000), v("reduce_max", 0x5100),
           v("cast", 0x5200, out_dtype="bf16"), v("copy", 0x5400)]
    ins.append(Vec("vector", "rsqrt", Addr("spad", 0x5600), Addr("spad", 0x4A00), 40, "f32", rows=3))
    r = _vec_run(G2, ins, [(0, x, "f32"), (0x800, y, "f32"), (0x1000, col, "f32"), (0x1100, rowv, "f32")])
    s = lambda a, shape=(3, 40), dt="f32": _spad(r, a, shape, dt)  # noqa: E731
    np.testing.assert_array_equal(s(0x4000), x + y)
    np.testing.assert_array_equal(s(0x4200), x - col)
    np.testing.assert_array_equal(s(0x4400), x * rowv[:, None])
    np.testing.assert_array_equal(s(0x4600), np.maximum(x, np.float32(0.1)))
    np.testing.assert_array_equal(s(0x4800), np.minimum(x, y))
    np.testing.assert_array_equal(s(0x4A00), np.maximum(x, 0))
    np.testing.assert_allclose(s(0x4C00), np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(s(0x4E00), 1 / x, rtol=1e-6)
    np.testing.assert_allclose(s(0x5000, (3,)), x.sum(1), rtol=1e-5)
    np.testing.assert_array_equal(s(0x5100, (3,)), x.max(1))
    np.testing.assert_array_equal(s(0x5200, (3, 40), "bf16"), round_bf16(x))
    np.testing.assert_array_equal(s(0x5400), x)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(s(0x5600), 1 / np.sqrt(np.maximum(x, 0)), rtol=1e-6)


def test_vector_ops_int_saturate_and_shift() -> None:
    a = RNG.integers(-128, 128, (2, 50)).astype(np.int8)
    b = RNG.integers(-128, 128, (2, 50)).astype(np.int8)
    w = RNG.integers(-(1 << 20), 1 << 20, (2, 50)).astype(np.int32)
    ins = [Vec("vector", "add", Addr("spad", 0x4000), Addr("spad", 0), 50, "i8", src1=Addr("spad", 0x100), rows=2),
           Vec("vector", "shift", Addr("spad", 0x4100), Addr("spad", 0x200), 50, "i32", imm=7.0, rows=2),
           Vec("vector", "shift", Addr("spad", 0x4300), Addr("spad", 0x200), 50, "i32", imm=-2.0, rows=2),
           Vec("vector", "cast", Addr("spad", 0x4500), Addr("spad", 0x200), 50, "i32", out_dtype="i8", rows=2),
           Vec("vector", "reduce_sum", Addr("spad", 0x4600), Addr("spad", 0), 50, "i8", out_dtype="i32", rows=2)]
    r = _vec_run(G2, ins, [(0, a, "i8"), (0x100, b, "i8"), (0x200, w, "i32")])
    s = lambda addr, dt, shape=(2, 50): _spad(r, addr, shape, dt)  # noqa: E731
    np.testing.assert_array_equal(s(0x4000, "i8"), np.clip(a.astype(int) + b, -128, 127))
    np.testing.assert_array_equal(s(0x4100, "i32"), w >> 7)
    np.testing.assert_array_equal(s(0x4300, "i32"), w << 2)
    np.testing.assert_array_equal(s(0x4500, "i8"), np.clip(w, -128, 127))
    np.testing.assert_array_equal(s(0x4600, "i32", (2,)), a.astype(int).sum(1))


def test_multicore_l2_and_barrier() -> None:
    x = RNG.integers(-128, 128, (8, 64)).astype(np.int8)
    core0 = [DmaLoad("load", Addr("l2", 0x100), Addr("dram", 0), 8, 64, "i8", 64, 64), Barrier("load")]
    core1 = [Barrier("load"), DmaLoad("load", Addr("spad", 0), Addr("l2", 0x100), 8, 64, "i8", 64, 64),
             Signal("load", 0), Wait("store", 0),
             DmaStore("store", Addr("dram", 0x1000), Addr("spad", 0), 8, 64, "i8", "i8", 64, 64)]
    r = simulate(Program([core0, core1, [Barrier("compute")], [Barrier("vector")]]), G3,
                 _dram((0, x, "i8")), trace=True)
    np.testing.assert_array_equal(r.read(0x1000, (8, 64), "i8"), x)
    start_l2_read = next(s for c, i, q, s, e in r.trace if c == 1 and i == 1)
    end_l2_write = next(e for c, i, q, s, e in r.trace if c == 0 and i == 0)
    assert start_l2_read >= end_l2_write


def test_deadlock_and_missing_dram() -> None:
    with pytest.raises(NpuProgramError, match=r"deadlock: core 0 queue 'compute' is blocked at instruction 0 "
                                              r"\(wait token=3\)"):
        simulate(Program([[Wait("compute", 3)]]), G2, 64)
    with pytest.raises(NpuProgramError, match="functional simulation needs the initial DRAM"):
        simulate(Program([[Signal("load", 0)]]), G2)
    assert simulate(Program([[Signal("load", 0)]]), G2, functional=False).cycles == 0


def test_missing_token_is_reported_as_a_race() -> None:
    load = DmaLoad("load", Addr("spad", 0), Addr("dram", 0), 64, 64, "i8", 64, 64)
    gemm = Gemm("compute", Addr("spad", 0), Addr("spad", 0x2000), Addr("acc", 0), 64, 64, 32, "i8", "i32", False,
                64, 32, 32)
    with pytest.raises(NpuProgramError, match=r"race: core 0 instruction 1 \(gemm, queue compute.*reads spad "
                                              r"bytes 0x0.*instruction 0 \(dma.load, queue load.*writes them"):
        simulate(Program([[load, gemm]]), G2, 1 << 16)
    simulate(Program([[load, Signal("load", 0), Wait("compute", 0), gemm]]), G2, 1 << 16)  # synchronized: fine
    simulate(Program([[load, gemm]]), G2, 1 << 16, races=False)  # checker off


def test_race_check_is_exact_for_interleaved_strided_regions() -> None:
    # two queues write alternate 32-byte column blocks of the same 64-byte-wide DRAM matrix at once: no race
    st = [DmaStore("store", Addr("dram", 0x1000), Addr("spad", 0), 16, 32, "i8", "i8", 32, 64),
          DmaLoad("load", Addr("spad", 0x800), Addr("dram", 0x1000 + 32), 16, 32, "i8", 64, 32)]
    simulate(Program([st]), G2, 1 << 16)
    clash = [st[0], DmaLoad("load", Addr("spad", 0x800), Addr("dram", 0x1000 + 16), 16, 32, "i8", 64, 32)]
    with pytest.raises(NpuProgramError, match=r"race: core 0 instruction 0 \(dma.store.* writes dram.*"
                                              r"instruction 1 \(dma.load"):
        simulate(Program([clash]), G2, 1 << 16)
