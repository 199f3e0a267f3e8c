"""Per-instruction timing formulas of the cycle-approximate model (all in core clock cycles).

Every instruction has an *occupancy* (cycles its queue, and the unit behind it, are busy; the next instruction
of the same queue may start after it) and a *latency* (further cycles until its results are visible to other
queues: a ``signal`` or ``barrier`` after it waits for them; an in-order machine waits for them before every
next instruction).

DMA (``dma.load`` / ``dma.store``)
    payload   = rows * cols * elem_bytes
    traffic   = bytes moved on the external side. DRAM moves whole bursts: a contiguous region
                (stride == cols) costs ceil(payload / burst) * burst; a strided one rows * ceil(row_bytes /
                burst) * burst; a stride-0 source (one row repeated) reads its row once. L2 moves whole L2 rows
                the same way.
    channel   = traffic / bytes_per_cycle of DRAM or L2. Both are shared by all cores: each transfer reserves
                the channel first-come first-served, so concurrent transfers split the bandwidth.
    local     = bytes written/read on chip (padding included) / (banks * row_bytes) of the local memory
    occupancy = max(channel, local) (+ waiting for the shared channel), latency = dram.latency (or l2.latency)
GEMM (``gemm`` m, k, n on an R x C array; F = matrix.fill_latency)
    weight-stationary: B is stationary; folds over (ceil(k/R), ceil(n/C)); each fold streams m input rows
                       (m cycles); swapping in a fold's weights takes k_f cycles (one weight row per cycle).
    output-stationary: C is stationary; folds over (ceil(m/R), ceil(n/C)); each fold streams k cycles; the
                       swap drains the finished outputs in m_f cycles, plus m_f more to preload the partial
                       sums when ``accumulate``.
    channel-reduction: (dot-product array) B columns are stationary; folds over (ceil(k/R), ceil(n/C));
                       each fold streams m rows; the swap loads n_f weight columns, one per cycle.
    fold cost = stream + swap, or max(stream, swap) with matrix.double_buffered_weights (the next fold's swap
    hides under this fold's stream). A weight/column-stationary gemm whose stationary operand is exactly the
    one left in the array by the previous gemm of the core (one fold, same spad region, not overwritten
    since) skips its first swap. occupancy = sum of fold costs; latency = F (pipeline fill + drain).
    MAC utilization counts m * k * n useful MACs against rows * cols * cores per cycle.
Vector (``vec``) on L lanes: occupancy = rows * ceil(n / L) * vector.cycles[op class]; latency = vector.latency.
``config``: 1 cycle. ``signal``/``wait``/``barrier``/``finish``: no occupancy (they only order).
Energy (with an [energy] table) = MACs * pj_per_mac + DRAM bus bytes * pj_per_dram_byte + on-chip bytes *
pj_per_sram_byte, on-chip bytes being: the local side of every DMA (padding included), every gemm's A and B
read once plus C written (and read too when accumulating), and every vector op's operands and result.
"""

from __future__ import annotations

from tessera.npu.dtypes import DTYPES
from tessera.npu.hw import NpuDescription
from tessera.npu.isa import VECTOR_OPS, DmaLoad, DmaStore, Gemm, Vec


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def transfer_bytes(rows: int, cols: int, stride: int, size: int, granule: int) -> int:
    """External-side bytes of a 2-D transfer rounded up to whole ``granule`` (burst / L2 row) units."""
    row = cols * size
    if stride == 0:
        return _ceil(row, granule) * granule
    if stride == cols or rows == 1:
        return _ceil(rows * row, granule) * granule
    return rows * _ceil(row, granule) * granule


class DmaCost:
    """Precomputed bandwidth figures of one description (per-instruction math stays O(1))."""

    def __init__(self, desc: NpuDescription) -> None:
        self.dram_bw = desc.dram.bytes_per_cycle
        self.dram_lat = desc.dram.latency
        self.burst = desc.dram.burst_bytes
        self.l2_bw = desc.l2.bytes_per_cycle if desc.l2 else 0.0
        self.l2_lat = desc.l2.latency if desc.l2 else 0
        self.l2_row = desc.l2.row_bytes if desc.l2 else 1
        self.local_bw = {"spad": desc.scratchpad.banks * desc.scratchpad.row_bytes,
                         "acc": desc.accumulator.banks * desc.accumulator.row_bytes,
                         "l2": self.l2_bw or 1.0}

    def load(self, ins: DmaLoad) -> tuple[str, int, float, int, float, int]:
        """(channel "dram"|"l2", traffic bytes, channel cycles, local bytes, local cycles, latency) of a load."""
        size = DTYPES[ins.dtype].size
        t, b, lft, r = ins.pad
        nbytes = (ins.rows + t + b) * (ins.cols + lft + r) * size
        local = nbytes / self.local_bw[ins.dst.space]
        if ins.src.space == "dram":
            traffic = transfer_bytes(ins.rows, ins.cols, ins.src_stride, size, self.burst)
            return "dram", traffic, traffic / self.dram_bw, nbytes, local, self.dram_lat
        traffic = transfer_bytes(ins.rows, ins.cols, ins.src_stride, size, self.l2_row)
        return "l2", traffic, traffic / self.l2_bw, nbytes, local, self.l2_lat

    def store(self, ins: DmaStore) -> tuple[str, int, float, int, float, int]:
        """(channel, traffic bytes, channel cycles, local bytes, local cycles, latency) of a store."""
        size = DTYPES[ins.dst_dtype].size
        nbytes = ins.rows * ins.cols * DTYPES[ins.src_dtype].size
        local = nbytes / self.local_bw[ins.src.space]
        if ins.dst.space == "dram":
            traffic = transfer_bytes(ins.rows, ins.cols, ins.dst_stride, size, self.burst)
            return "dram", traffic, traffic / self.dram_bw, nbytes, local, self.dram_lat
        traffic = transfer_bytes(ins.rows, ins.cols, ins.dst_stride, size, self.l2_row)
        return "l2", traffic, traffic / self.l2_bw, nbytes, local, self.l2_lat


def _fold_sum(stream: int, swap_dim: int, tile: int, other_folds: int, double_buffered: bool,
              skip_first_swap: bool, swap_per_unit: int = 1) -> tuple[int, int]:
    """(cycles, folds) for folds over ``swap_dim`` (split into tiles of ``tile``) x ``other_folds``; each fold
    streams ``stream`` cycles and swaps ``swap_per_unit`` cycles per unit of that fold's extent of ``swap_dim``."""
    full, rem = divmod(swap_dim, tile)
    folds = (full + (rem > 0)) * other_folds
    sw_full, sw_rem = tile * swap_per_unit, rem * swap_per_unit
    if double_buffered:
        cycles = other_folds * (full * max(stream, sw_full) + (max(stream, sw_rem) if rem else 0))
    else:
        cycles = other_folds * (full * (stream + sw_full) + ((stream + sw_rem) if rem else 0))
    if skip_first_swap:
        first = sw_full if full else sw_rem
        cycles -= max(stream, first) - stream if double_buffered else first
    return cycles, folds


def gemm_cycles(ins: Gemm, dataflow: str, rows: int, cols: int, double_buffered: bool,
                weights_resident: bool) -> tuple[int, int]:
    """(occupancy cycles, folds) of a gemm under ``dataflow`` (formulas in the module docstring)."""
    m, k, n = ins.m, ins.k, ins.n
    if dataflow == "output-stationary":
        return _fold_sum(k, m, rows, _ceil(n, cols), double_buffered, False, 2 if ins.accumulate else 1)
    if dataflow == "weight-stationary":
        return _fold_sum(m, k, rows, _ceil(n, cols), double_buffered, weights_resident)
    # channel-reduction: k over the reduction lanes, n over the dot-product units; swap = n_f columns
    return _fold_sum(m, n, cols, _ceil(k, rows), double_buffered, weights_resident)


def vec_cycles(ins: Vec, lanes: int, cycles: dict[str, int]) -> int:
    """Occupancy of a vector op: rows * ceil(n / lanes) * cycles per chunk."""
    return ins.rows * _ceil(ins.n, lanes) * cycles[VECTOR_OPS[ins.op]]
