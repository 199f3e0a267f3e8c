"""Functional execution of NPU instructions on byte-addressed NumPy memories.

Each instruction is executed atomically when the timing engine starts it, so a correctly synchronized program
(tokens, barriers) gives the same result as any legal schedule. Arithmetic is the hardware's: int8 x int8
products accumulate exactly into wrapping int32; bf16 values are exact in f32 and bf16 results are rounded to
nearest even; the store path and vector float math run in f32; casts into integers round half to even and
saturate.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tessera.npu.dtypes import DTYPES, from_values, to_values
from tessera.npu.hw import NpuDescription
from tessera.npu.isa import Addr, DmaLoad, DmaStore, Gemm, Instruction, Vec, region_bytes


class Memories:
    """All memories of one simulated chip: ``dram`` and ``l2`` shared, ``spad``/``acc`` one per core."""

    def __init__(self, desc: NpuDescription, dram: np.ndarray, cores: int) -> None:
        self.dram = dram
        self.l2 = np.zeros(desc.l2.bytes, np.uint8) if desc.l2 else None
        self.spad = [np.zeros(desc.scratchpad.bytes, np.uint8) for _ in range(cores)]
        self.acc = [np.zeros(desc.accumulator.bytes, np.uint8) for _ in range(cores)]

    def buffer(self, core: int, addr: Addr) -> np.ndarray:
        space = addr.space
        if space == "dram":
            return self.dram
        if space == "spad":
            return self.spad[core]
        if space == "acc":
            return self.acc[core]
        assert self.l2 is not None
        return self.l2

    def view(self, core: int, addr: Addr, rows: int, cols: int, stride: int, dtype: str) -> np.ndarray:
        """A (rows, cols) strided view of raw elements (storage dtype) at ``addr``; writable."""
        info = DTYPES[dtype]
        buf = self.buffer(core, addr)
        nbytes = region_bytes(rows, cols, stride, info.size)
        if addr.addr + nbytes > buf.size:
            raise IndexError(f"{addr} + {nbytes} bytes is outside {addr.space} ({buf.size} bytes)")
        flat = buf[addr.addr:addr.addr + nbytes].view(info.storage)
        return as_strided(flat, shape=(rows, cols), strides=(stride * info.size, info.size))


def _wrap_i32(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def _dma_load(mem: Memories, core: int, ins: DmaLoad) -> None:
    src = mem.view(core, ins.src, ins.rows, ins.cols, ins.src_stride, ins.dtype)
    top, bottom, left, right = ins.pad
    if top or bottom or left or right:
        dst = mem.view(core, ins.dst, ins.rows + top + bottom, ins.cols + left + right, ins.dst_stride, ins.dtype)
        data = src.copy()
        dst[...] = 0
        dst[top:top + ins.rows, left:left + ins.cols] = data
    else:
        mem.view(core, ins.dst, ins.rows, ins.cols, ins.dst_stride, ins.dtype)[...] = src.copy()


def _dma_store(mem: Memories, core: int, ins: DmaStore) -> None:
    raw = mem.view(core, ins.src, ins.rows, ins.cols, ins.src_stride, ins.src_dtype)
    dst = mem.view(core, ins.dst, ins.rows, ins.cols, ins.dst_stride, ins.dst_dtype)
    plain = ins.bias is None and ins.scale is None and ins.act == "none"
    if plain and ins.src_dtype == ins.dst_dtype:
        dst[...] = raw.copy()
        return
    x = to_values(raw, ins.src_dtype).astype(np.float32)
    if ins.bias is not None:
        x = x + mem.view(core, ins.bias, 1, ins.cols, ins.cols, "f32")
    if isinstance(ins.scale, Addr):
        x = x * mem.view(core, ins.scale, 1, ins.cols, ins.cols, "f32")
    elif ins.scale is not None:
        x = x * np.float32(ins.scale)
    if ins.act == "relu":
        x = np.maximum(x, np.float32(0))
    elif ins.act == "relu6":
        x = np.clip(x, np.float32(0), np.float32(6))
    elif ins.act == "clip":
        x = np.clip(x, np.float32(ins.lo), np.float32(ins.hi))
    dst[...] = from_values(x, ins.dst_dtype)


def _gemm(mem: Memories, core: int, ins: Gemm) -> None:
    a = to_values(mem.view(core, ins.a, ins.m, ins.k, ins.a_stride, ins.dtype), ins.dtype)
    b = to_values(mem.view(core, ins.b, ins.k, ins.n, ins.b_stride, ins.dtype), ins.dtype)
    c = mem.view(core, ins.c, ins.m, ins.n, ins.c_stride, ins.acc_dtype)
    # float64 products and sums of int8 are exact (|sum| < 2**53); bf16 products are exact in f32
    prod = a.astype(np.float64) @ b.astype(np.float64)
    if ins.acc_dtype == "i32":
        acc = prod.astype(np.int64) + (c.astype(np.int64) if ins.accumulate else 0)
        c[...] = _wrap_i32(acc)
    else:
        c[...] = (prod + c.astype(np.float64)).astype(np.float32) if ins.accumulate else prod.astype(np.float32)


def _vec(mem: Memories, core: int, ins: Vec) -> None:
    n, rows = ins.n, ins.rows
    sst = ins.src_stride or n
    is_float = DTYPES[ins.dtype].is_float
    work = np.float32 if is_float else np.int64
    x = to_values(mem.view(core, ins.src0, rows, n, sst, ins.dtype), ins.dtype).astype(work)
    out_dtype = ins.out_dtype or ins.dtype
    op = ins.op
    if op.startswith("reduce"):
        r = x.sum(axis=1) if op == "reduce_sum" else x.max(axis=1)
        mem.view(core, ins.dst, 1, rows, rows, out_dtype)[...] = from_values(r[None, :], out_dtype)
        return
    if op in ("add", "sub", "mul", "max", "min"):
        if ins.src1 is not None:
            shape = {"none": (rows, n, sst), "row": (1, rows, rows), "col": (1, n, n)}[ins.src1_bcast]
            y = to_values(mem.view(core, ins.src1, *shape, ins.dtype), ins.dtype).astype(work)
            if ins.src1_bcast == "row":
                y = y.reshape(rows, 1)
        else:
            y = work(ins.imm)
        r = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
             "min": np.minimum}[op](x, y)
    elif op == "relu":
        r = np.maximum(x, work(0))
    elif op == "exp":
        r = np.exp(x)
    elif op == "rsqrt":
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.float32(1) / np.sqrt(x)
    elif op == "recip":
        with np.errstate(divide="ignore"):
            r = np.float32(1) / x
    elif op == "shift":
        s = int(ins.imm)
        r = x >> s if s >= 0 else x << -s
    else:  # copy, cast
        r = x
    if op == "copy" and out_dtype == ins.dtype:
        r_raw = mem.view(core, ins.src0, rows, n, sst, ins.dtype).copy()
    else:
        r_raw = from_values(r, out_dtype)
    mem.view(core, ins.dst, rows, n, ins.dst_stride or n, out_dtype)[...] = r_raw


EXECUTORS = {DmaLoad: _dma_load, DmaStore: _dma_store, Gemm: _gemm, Vec: _vec}


def execute(mem: Memories, core: int, ins: Instruction) -> None:
    """Apply one instruction's effect on the memories (synchronization instructions have none)."""
    fn = EXECUTORS.get(type(ins))
    if fn is not None:
        fn(mem, core, ins)
