"""NPU simulator, timing model: overlap, bandwidth, folds, preload, sharing, barriers, reports."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from npu_graphs import tiny_chip_toml

from tessera.npu import (
    Addr,
    Barrier,
    DmaLoad,
    DmaStore,
    Gemm,
    Program,
    Signal,
    Vec,
    Wait,
    load_description,
)
from tessera.npu.dtypes import encode
from tessera.npu.hw import DESCRIPTIONS_DIR
from tessera.npu.sim import simulate

G1, G2, G3 = (load_description(f"npu-gen{i}") for i in (1, 2, 3))
TINY = tiny_chip_toml()


def _desc(tmp_path: Path, text: str, name: str = "d.toml") -> object:
    p = tmp_path / name
    p.write_text(text)
    return load_description(p)


def _tiles(n: int, double_buffer: bool, queues: tuple[str, str, str]) -> Program:
    """n tiles of load A, B -> gemm 64x256x64 -> store; tokens: 0/1 data ready, 2/3 buffer free, 4 result."""
    ld, cq, st = queues
    prog: list = []
    tok = queues[0] != queues[1]
    for i in range(n):
        buf = i % 2 if double_buffer else 0
        if tok and i >= (2 if double_buffer else 1):
            prog.append(Wait(ld, 2 + buf))
        prog += [DmaLoad(ld, Addr("spad", buf * 0x4000), Addr("dram", 0), 64, 256, "i8", 256, 256),
                 DmaLoad(ld, Addr("spad", 0x8000 + buf * 0x4000), Addr("dram", 0x10000), 256, 64, "i8", 64, 64)]
        if tok:
            prog += [Signal(ld, buf), Wait(cq, buf)]
        prog.append(Gemm(cq, Addr("spad", buf * 0x4000), Addr("spad", 0x8000 + buf * 0x4000), Addr("acc", buf * 0x4000),
                         64, 256, 64, "i8", "i32", False, 256, 64, 64, tag=f"t{i}"))
        if tok:
            prog += [Signal(cq, 2 + buf), Signal(cq, 4), Wait(st, 4)]
        prog.append(DmaStore(st, Addr("dram", 0x20000 + 0x1000 * i), Addr("acc", buf * 0x4000), 64, 64, "i32", "i8",
                             64, 64, scale=0.01))
    return Program([prog])


def test_decoupled_double_buffering_beats_in_order(tmp_path: Path) -> None:
    text = (DESCRIPTIONS_DIR / "npu-gen2.toml").read_text()
    inorder = _desc(tmp_path, text.replace('queues = ["load", "compute", "vector", "store"]', 'queues = ["inorder"]')
                    .replace("decoupled = true", "decoupled = false"))
    n = 20
    r_in = simulate(_tiles(n, False, ("inorder",) * 3), inorder, functional=False)
    r_single = simulate(_tiles(n, False, ("load", "compute", "store")), G2, functional=False)
    r_double = simulate(_tiles(n, True, ("load", "compute", "store")), G2, functional=False)
    assert r_double.cycles < r_single.cycles < r_in.cycles
    gemm = 4 * 256   # 2x2 output-stationary folds of k=256 streaming cycles each (swaps hidden)
    load = 2 * 64 * 256 / 64
    assert r_in.matrix_busy == n * gemm == r_double.matrix_busy
    # in order: nothing overlaps; each change of instruction kind waits for the latency (the two loads pipeline)
    store = 64 * 64 / 64
    assert r_in.cycles == n * (load + 100 + gemm + 64 + store + 100)
    # double buffered: the loads hide under the gemms; compute-bound to within one tile
    assert r_double.cycles <= n * gemm + load + 2 * 100 + 64 + store + 100 + 1
    assert r_double.utilization > 0.9 and r_in.utilization < 0.7
    assert r_double.bound == "compute"


def test_dram_bound_program_runs_at_dram_bandwidth() -> None:
    n, rows, cols = 64, 256, 1024
    prog = [DmaLoad("load", Addr("spad", (i % 2) * rows * cols), Addr("dram", i * rows * cols), rows, cols, "i8",
                    cols, cols) for i in range(n)]
    r = simulate(Program([prog]), G2, functional=False)
    nbytes = n * rows * cols
    assert r.dram_read_bytes == nbytes and r.bound == "memory"
    assert r.memory_bound_cycles == nbytes / 64
    assert r.cycles == pytest.approx(nbytes / 64 + G2.dram.latency, abs=1)
    assert r.queue_busy["load"] == nbytes / 64


def test_strided_dram_access_pays_whole_bursts() -> None:
    # 100 rows of 10 bytes out of a 1000-byte-wide matrix: each row costs a full 64-byte burst
    r = simulate(Program([[DmaLoad("inorder", Addr("spad", 0), Addr("dram", 0), 100, 10, "i8", 1000, 10)]]), G1,
                 functional=False)
    assert r.dram_read_bytes == 100 * 64 and r.cycles == 100 * 64 / 16 + 64


@pytest.mark.parametrize("dataflow,folds,occ", [
    # m=8, k=24, n=16 on 8x8, no double buffering:
    ("weight-stationary", 3 * 2, 2 * 3 * (8 + 8)),   # folds over k (3) x n (2); stream m=8 + preload k_f=8
    ("output-stationary", 1 * 2, 2 * (24 + 8)),      # folds over m (1) x n (2); stream k=24 + drain m_f=8
])
def test_folds_counted_per_dataflow(tmp_path: Path, dataflow: str, folds: int, occ: int) -> None:
    tiny = _desc(tmp_path, TINY)
    g = Gemm("compute", Addr("spad", 0), Addr("spad", 0x1000), Addr("acc", 0), 8, 24, 16, "i8", "i32", False, 24,
             16, 16, dataflow=dataflow)
    r = simulate(Program([[g]]), tiny, functional=False, trace=True)
    assert r.folds == folds and r.matrix_busy == occ
    assert r.trace[0][3:] == (0, occ + 16) and r.cycles == occ + 16
    assert r.utilization == pytest.approx(8 * 24 * 16 / (64 * (occ + 16)))


def test_output_stationary_accumulate_preloads_partial_sums(tmp_path: Path) -> None:
    tiny = _desc(tmp_path, TINY)
    g = Gemm("compute", Addr("spad", 0), Addr("spad", 0x1000), Addr("acc", 0), 8, 24, 16, "i8", "i32", True, 24,
             16, 16, dataflow="output-stationary")
    assert simulate(Program([[g]]), tiny, functional=False).matrix_busy == 2 * (24 + 2 * 8)


def test_channel_reduction_folds_and_double_buffered_preload() -> None:
    # gen3: 64 reduction lanes x 32 dot-product units, double-buffered: k=100 -> 2 folds, n=40 -> 32 + 8 columns
    g = Gemm("compute", Addr("spad", 0), Addr("spad", 0x4000), Addr("acc", 0), 10, 100, 40, "i8", "i32", False,
             100, 40, 40)
    r = simulate(Program([[g]]), G3, functional=False)
    assert r.folds == 4 and r.matrix_busy == 2 * (max(10, 32) + max(10, 8))
    big = Gemm("compute", g.a, g.b, g.c, 200, 100, 40, "i8", "i32", False, 100, 40, 40)
    r = simulate(Program([[big]]), G3, functional=False)
    assert r.matrix_busy == 4 * 200  # m >= swap: every preload hidden


def test_weight_preload_hidden_when_double_buffered(tmp_path: Path) -> None:
    text = (DESCRIPTIONS_DIR / "npu-gen1.toml").read_text()
    dbuf = _desc(tmp_path, text.replace("double_buffered_weights = false", "double_buffered_weights = true"))
    g = Gemm("inorder", Addr("spad", 0), Addr("spad", 0x8000), Addr("acc", 0), 128, 64, 64, "i8", "i32", False,
             64, 64, 64)
    plain, hidden = (simulate(Program([[g]]), d, functional=False) for d in (G1, dbuf))
    assert plain.matrix_busy == 16 * (128 + 16) and hidden.matrix_busy == 16 * 128
    # the same weights twice in a row stay resident: the second gemm skips its preload ...
    small = Gemm("inorder", g.a, g.b, g.c, 128, 16, 16, "i8", "i32", False, 64, 64, 64)
    r = simulate(Program([[small, small]]), G1, functional=False)
    assert r.matrix_busy == (128 + 16) + 128
    # ... unless a DMA overwrote them in between
    over = DmaLoad("inorder", Addr("spad", 0x8000), Addr("dram", 0), 1, 16, "i8", 16, 16)
    r = simulate(Program([[small, over, small]]), G1, functional=False)
    assert r.matrix_busy == 2 * (128 + 16)


def test_dram_bandwidth_shared_between_cores() -> None:
    nbytes = 256 * 1024
    one = [DmaLoad("load", Addr("spad", 0), Addr("dram", 0), 256, 1024, "i8", 1024, 1024)]
    r1 = simulate(Program([one]), G3, functional=False)
    r4 = simulate(Program([one] * 4), G3, functional=False)
    assert r1.cycles == pytest.approx(nbytes / 128 + 120, abs=1)
    assert r4.cycles == pytest.approx(4 * nbytes / 128 + 120, abs=1)
    # the L2 is a separate (faster) channel
    l2 = [DmaLoad("load", Addr("spad", 0), Addr("l2", 0), 256, 1024, "i8", 1024, 1024)]
    r = simulate(Program([l2]), G3, functional=False)
    assert r.cycles == pytest.approx(nbytes / 256 + 24, abs=1) and r.dram_bytes == 0


def test_barrier_orders_cores_and_tokens_order_queues() -> None:
    long = Gemm("compute", Addr("spad", 0), Addr("spad", 0x4000), Addr("acc", 0), 1000, 64, 32, "i8", "i32", False,
                64, 32, 32)
    core0 = [long, Barrier("compute")]
    core1 = [Barrier("load"), DmaLoad("load", Addr("spad", 0), Addr("dram", 0), 1, 64, "i8", 64, 64)]
    r = simulate(Program([core0, core1]), G3, functional=False, trace=True)
    gemm_done = next(e for c, i, q, s, e in r.trace if (c, i) == (0, 0))
    load_start = next(s for c, i, q, s, e in r.trace if (c, i) == (1, 1))
    assert gemm_done == 1000 + 8 and load_start >= gemm_done
    # tokens: the store waits for the gemm's completion (latency included), not just its issue
    prog = [long, Signal("compute", 0), Wait("store", 0),
            DmaStore("store", Addr("dram", 0), Addr("acc", 0), 1, 32, "i32", "i32", 32, 32)]
    r = simulate(Program([prog]), G3, functional=False, trace=True)
    assert next(s for c, i, q, s, e in r.trace if i == 3) == 1000 + 8


def test_vector_throughput() -> None:
    v = Vec("vector", "exp", Addr("spad", 0), Addr("spad", 0), 1000, "f32", rows=3)
    r = simulate(Program([[v]]), G2, functional=False)
    assert r.vector_busy == 3 * math.ceil(1000 / 32) * 4 and r.cycles == r.vector_busy + 4


def test_tags_energy_and_utilization_bounds() -> None:
    r = simulate(_tiles(6, True, ("load", "compute", "store")), G2, functional=False)
    assert set(r.tags) == {f"t{i}" for i in range(6)}
    t0 = r.tags["t0"]
    assert t0.macs == 64 * 256 * 64 and t0.matrix_busy == 1024 and t0.cycles == 1024 + 64
    assert t0.compute_bound == pytest.approx(t0.macs / 1024) and t0.bound == "compute"
    e = G2.energy
    assert r.energy_pj is not None and r.energy_pj > r.macs * e.pj_per_mac + r.dram_bytes * e.pj_per_dram_byte
    assert 0 < r.utilization <= 1 and r.cycles >= r.bound_cycles
    assert r.seconds == pytest.approx(r.cycles / 1e9, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_random_programs_respect_physical_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prog = []
    for _ in range(200):
        kind = rng.integers(3)
        if kind == 0:
            rows, cols = int(rng.integers(1, 64)), int(rng.integers(1, 512))
            prog.append(DmaLoad("load", Addr("spad", 0), Addr("dram", 0), rows, cols, "i8", cols, cols))
        elif kind == 1:
            m, k, n = (int(x) for x in rng.integers(1, 200, 3))
            prog.append(Gemm("compute", Addr("spad", 0), Addr("spad", 0x10000), Addr("acc", 0), m, k, n, "bf16",
                             "f32", bool(rng.integers(2)), k, n, n))
        else:
            prog.append(Signal("load", 0) if rng.integers(2) else Wait("compute", 0))
    prog += [Signal("load", 0)] * 200
    r = simulate(Program([prog]), G2, functional=False)
    assert 0 < r.utilization <= 1 and r.cycles >= r.bound_cycles - 1e-9
    assert r.cycles >= max(r.queue_busy.values())


def test_brand_new_description_runs_a_gemm(tmp_path: Path) -> None:
    tiny = _desc(tmp_path, TINY, "tiny.toml")
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (20, 24)).astype(np.int8)
    b = rng.integers(-128, 128, (24, 12)).astype(np.int8)
    dram = np.zeros(4096, np.uint8)
    dram[:480] = encode(a, "i8")
    dram[512:800] = encode(b, "i8")
    prog = Program([[DmaLoad("load", Addr("spad", 0), Addr("dram", 0), 20, 24, "i8", 24, 24),
                     DmaLoad("load", Addr("spad", 1024), Addr("dram", 512), 24, 12, "i8", 12, 12),
                     Signal("load", 0), Wait("compute", 0),
                     Gemm("compute", Addr("spad", 0), Addr("spad", 1024), Addr("acc", 0), 20, 24, 12, "i8", "i32",
                          False, 24, 12, 12),
                     Signal("compute", 1), Wait("store", 1),
                     DmaStore("store", Addr("dram", 1024), Addr("acc", 0), 20, 12, "i32", "i8", 12, 12, scale=1 / 64,
                              act="relu")]])
    r = simulate(prog, tiny, dram)
    ref = np.clip(np.rint(np.maximum((a.astype(np.int64) @ b).astype(np.float32) / 64, 0)), -128, 127)
    np.testing.assert_array_equal(r.read(1024, (20, 12), "i8"), ref)
    assert r.folds == 3 * 2 and 0 < r.utilization < 1


def test_timing_only_speed() -> None:
    prog = _tiles(10000, True, ("load", "compute", "store"))   # 100k instructions
    t0 = time.perf_counter()
    r = simulate(prog, G2, functional=False)
    elapsed = time.perf_counter() - t0
    assert r.instructions == len(prog) >= 99_000
    assert elapsed / r.instructions < 30e-6, f"{1e6 * elapsed / r.instructions:.1f} us per instruction"


def test_in_order_machine_never_overlaps_dma_and_compute() -> None:
    load = DmaLoad("inorder", Addr("spad", 0), Addr("dram", 0), 64, 64, "i8", 64, 64)
    g = Gemm("inorder", Addr("spad", 0), Addr("spad", 0x2000), Addr("acc", 0), 64, 16, 16, "i8", "i32", False,
             64, 16, 16)
    g2 = Gemm("inorder", Addr("spad", 16), Addr("spad", 0x3000), Addr("acc", 0), 64, 16, 16, "i8", "i32", True,
              64, 16, 16)
    store = DmaStore("inorder", Addr("dram", 0x4000), Addr("acc", 0), 64, 16, "i32", "i8", 16, 16, scale=0.5)
    r = simulate(Program([[load, g, g2, store]]), G1, functional=False, trace=True)
    (_, _, _, s0, d0), (_, _, _, s1, d1), (_, _, _, s2, d2), (_, _, _, s3, d3) = r.trace
    assert (s0, d0) == (0, 64 * 64 / 16 + 64)
    assert s1 == d0 and d1 == s1 + 64 + 16 + 32     # waits for the load's data; stream m + preload k + fill
    assert s2 == s1 + 64 + 16 and d2 == s2 + 80 + 32  # the next gemm streams right behind (no drain between)
    assert s3 == d2 and r.cycles == d3 == s3 + 64 * 16 / 16 + 64


def test_config_switches_the_dataflow(tmp_path: Path) -> None:
    from tessera.npu import Config

    tiny = _desc(tmp_path, TINY)
    g = Gemm("compute", Addr("spad", 0), Addr("spad", 0x1000), Addr("acc", 0), 8, 24, 16, "i8", "i32", False, 24,
             16, 16)
    ws = simulate(Program([[g]]), tiny, functional=False)   # the description's first dataflow
    os_ = simulate(Program([[Config("compute", "dataflow", "output-stationary"), g]]), tiny, functional=False)
    assert (ws.folds, ws.matrix_busy) == (6, 96) and (os_.folds, os_.matrix_busy) == (2, 64)


def test_energy_formula() -> None:
    load = DmaLoad("inorder", Addr("spad", 0), Addr("dram", 0), 64, 64, "i8", 64, 64, pad=(1, 1, 0, 0))
    g = Gemm("inorder", Addr("spad", 0), Addr("spad", 0x2000), Addr("acc", 0), 64, 16, 16, "i8", "i32", True,
             64, 16, 16)
    r = simulate(Program([[load, g]]), G1, functional=False)
    e = G1.energy
    sram = 66 * 64 + (64 * 16 + 16 * 16) + 2 * 64 * 16 * 4
    assert r.energy_pj == pytest.approx(64 * 16 * 16 * e.pj_per_mac + 4096 * e.pj_per_dram_byte
                                        + sram * e.pj_per_sram_byte)
