"""Race detection for functional simulation: two instructions of different queues (or cores) that touch the
same bytes, at least one writing, while their [start, completion) intervals overlap in the simulated
schedule. Such a pair lacks a signal/wait (or barrier) between them; the hardware result would depend on
timing, so the simulator reports it instead of silently picking one order.
"""

from __future__ import annotations

import numpy as np

from tessera.npu.dtypes import DTYPES
from tessera.npu.isa import Addr, DmaLoad, DmaStore, Gemm, Instruction, NpuProgramError, Vec

# (memory key, lo, hi, rows, row_bytes, stride_bytes, is_write)
Access = tuple[tuple[str, int], int, int, int, int, int, bool]


def _region(core: int, addr: Addr, rows: int, cols: int, stride: int, size: int, write: bool) -> Access:
    key = (addr.space, core if addr.space in ("spad", "acc") else -1)
    row_bytes, stride_bytes = cols * size, stride * size
    hi = addr.addr + (rows - 1) * stride_bytes + row_bytes
    return key, addr.addr, hi, rows, row_bytes, stride_bytes, write


def accesses(core: int, ins: Instruction) -> list[Access]:
    """Memory regions an instruction reads and writes."""
    t = type(ins)
    if t is DmaLoad:
        size = DTYPES[ins.dtype].size
        top, bottom, left, right = ins.pad
        return [_region(core, ins.src, ins.rows, ins.cols, ins.src_stride, size, False),
                _region(core, ins.dst, ins.rows + top + bottom, ins.cols + left + right, ins.dst_stride, size, True)]
    if t is DmaStore:
        out = [_region(core, ins.src, ins.rows, ins.cols, ins.src_stride, DTYPES[ins.src_dtype].size, False),
               _region(core, ins.dst, ins.rows, ins.cols, ins.dst_stride, DTYPES[ins.dst_dtype].size, True)]
        for vec in (ins.bias, ins.scale):
            if isinstance(vec, Addr):
                out.append(_region(core, vec, 1, ins.cols, ins.cols, 4, False))
        return out
    if t is Gemm:
        isz, asz = DTYPES[ins.dtype].size, DTYPES[ins.acc_dtype].size
        out = [_region(core, ins.a, ins.m, ins.k, ins.a_stride, isz, False),
               _region(core, ins.b, ins.k, ins.n, ins.b_stride, isz, False),
               _region(core, ins.c, ins.m, ins.n, ins.c_stride, asz, True)]
        if ins.accumulate:
            out.append(out[2][:-1] + (False,))
        return out
    if t is Vec:
        size = DTYPES[ins.dtype].size
        osize = DTYPES[ins.out_dtype or ins.dtype].size
        n, rows = ins.n, ins.rows
        sst = ins.src_stride or n
        out = [_region(core, ins.src0, rows, n, sst, size, False)]
        if ins.op.startswith("reduce"):
            out.append(_region(core, ins.dst, 1, rows, rows, osize, True))
        else:
            out.append(_region(core, ins.dst, rows, n, ins.dst_stride or n, osize, True))
        if ins.src1 is not None:
            shape = {"none": (rows, n, sst), "row": (1, rows, rows), "col": (1, n, n)}[ins.src1_bcast]
            out.append(_region(core, ins.src1, *shape, size, False))
        return out
    return []


def _rows_overlap(a: Access, b: Access) -> bool:
    """Exact byte overlap of two strided row sets whose bounding ranges overlap."""
    _, a0, _, ra, wa, sa, _ = a
    _, b0, _, rb, wb, sb, _ = b
    if (ra == 1 or sa == wa) and (rb == 1 or sb == wb):
        return True  # both contiguous
    if sb < wb or sa < wa:
        return True  # stride 0 / overlapping rows: be conservative
    starts_a = a0 + sa * np.arange(ra, dtype=np.int64)
    # last B row starting before each A row ends
    j = np.floor_divide(starts_a + wa - 1 - b0, sb)
    valid = (j >= 0)
    j = np.clip(j, 0, rb - 1)
    b_start = b0 + sb * j
    return bool(np.any(valid & (b_start + wb > starts_a) & (b_start < starts_a + wa)))


class RaceChecker:
    """Remembers in-flight accesses and raises :class:`NpuProgramError` on a conflicting pair."""

    def __init__(self) -> None:
        self.inflight: list[tuple[float, float, str, int, int, Instruction, list[Access]]] = []

    def check(self, core: int, queue: str, idx: int, ins: Instruction, start: float, done: float) -> None:
        acc = accesses(core, ins)
        if not acc:
            return
        live = [r for r in self.inflight if r[1] > start]
        for r_start, r_done, r_queue, r_core, r_idx, r_ins, r_acc in live:
            if (r_queue == queue and r_core == core) or r_start >= done:
                continue
            for x in acc:
                for y in r_acc:
                    if x[0] == y[0] and (x[6] or y[6]) and x[1] < y[2] and y[1] < x[2] and _rows_overlap(x, y):
                        kind = "writes" if x[6] else "reads"
                        raise NpuProgramError(
                            f"race: core {core} instruction {idx} ({ins.OPCODE}, queue {queue}, cycles "
                            f"{start:g}..{done:g}) {kind} {x[0][0]} bytes 0x{max(x[1], y[1]):x}.. while core "
                            f"{r_core} instruction {r_idx} ({r_ins.OPCODE}, queue {r_queue}, cycles "
                            f"{r_start:g}..{r_done:g}) {'writes' if y[6] else 'reads'} them; a signal/wait "
                            "(or barrier) is missing between them")
        live.append((start, done, queue, core, idx, ins, acc))
        self.inflight = live
