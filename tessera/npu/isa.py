"""The NPU instruction set: one frozen dataclass per instruction, :class:`Program` (one instruction list per
core) and :func:`validate`, which checks every field of every instruction against an :class:`NpuDescription`.

Memory model: address spaces ``dram`` (flat, per program), ``l2`` (shared by the cores, optional), ``spad``
and ``acc`` (per core). Addresses are byte offsets; shapes and strides count elements of the stated dtype.
A 2-D region (addr, rows, cols, stride) covers bytes ``[addr, addr + ((rows-1)*stride + cols) * size)``.

Every instruction names the queue it runs on (one of the description's ``execution.queues``) and may carry
a ``tag`` (an identifier such as a layer name) for per-region cycle reports. Semantics are in the docstrings;
the text form is in :mod:`tessera.npu.asm`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

from tessera.errors import TesseraError
from tessera.npu.dtypes import DTYPES
from tessera.npu.hw import VECTOR_OPS, NpuDescription

SPACES = ("dram", "l2", "spad", "acc")
ACTS = ("none", "relu", "relu6", "clip")
DATAFLOWS = ("weight-stationary", "output-stationary", "channel-reduction")
BINARY_VECTOR_OPS = ("add", "sub", "mul", "max", "min")
BCAST = ("none", "row", "col")
CONFIG_KEYS = ("dataflow",)
_TAG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*\Z")


class NpuProgramError(TesseraError, ValueError):
    """An NPU program is malformed or does not fit the description (the message names core, index and field)."""


def sanitize_tag(name: str) -> str:
    """A valid instruction tag derived from any name (e.g. a graph node name)."""
    tag = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return tag if tag and (tag[0].isalpha() or tag[0] == "_") else f"_{tag}"


@dataclass(frozen=True, slots=True)
class Addr:
    """A byte address in a memory space; text form ``space:0xADDR``."""

    space: str
    addr: int

    def __str__(self) -> str:
        return f"{self.space}:0x{self.addr:x}"


@dataclass(frozen=True, slots=True)
class DmaLoad:
    """2-D strided copy ``src`` (rows x cols, row stride ``src_stride``; 0 repeats one row) into ``dst``.

    With ``pad = (top, bottom, left, right)`` the destination region is (rows+top+bottom) x
    (cols+left+right) at ``dst_stride``; the border is written with zeros. ``src`` in dram|l2, ``dst`` in
    spad|acc|l2 (not both l2). A pure byte copy: no type conversion."""

    OPCODE: ClassVar[str] = "dma.load"
    queue: str
    dst: Addr
    src: Addr
    rows: int
    cols: int
    dtype: str
    src_stride: int
    dst_stride: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    tag: str = ""


@dataclass(frozen=True, slots=True)
class DmaStore:
    """2-D strided copy ``src`` (acc|spad) into ``dst`` (dram|l2) through the store path, per element::

        y = cast(act((x + bias[col]) * scale[col]), dst_dtype)

    computed in f32 (int32 inputs convert to f32); ``bias``/``scale`` vectors are f32 in spad, one per
    column; ``scale`` may instead be one float. ``cast`` rounds half to even and saturates into integers and
    rounds to nearest even into bf16. ``act`` is none | relu | relu6 | clip (bounds ``lo``, ``hi``)."""

    OPCODE: ClassVar[str] = "dma.store"
    queue: str
    dst: Addr
    src: Addr
    rows: int
    cols: int
    src_dtype: str
    dst_dtype: str
    src_stride: int
    dst_stride: int
    bias: Addr | None = None
    scale: float | Addr | None = None
    act: str = "none"
    lo: float = 0.0
    hi: float = 0.0
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Gemm:
    """``C[m x n] (+)= A[m x k] @ B[k x n]``; A, B row-major in spad (row strides ``a_stride``,
    ``b_stride``), C in acc (``c_stride``). ``accumulate`` adds to C, else overwrites it. int8 inputs
    accumulate exactly in int32 (wrapping); bf16 inputs accumulate in f32. Sizes beyond the array are
    folded by the hardware (see the simulator's timing model). ``dataflow`` "" = the core's current one
    (the last ``config dataflow=``, else the description's first)."""

    OPCODE: ClassVar[str] = "gemm"
    queue: str
    a: Addr
    b: Addr
    c: Addr
    m: int
    k: int
    n: int
    dtype: str
    acc_dtype: str
    accumulate: bool
    a_stride: int
    b_stride: int
    c_stride: int
    dataflow: str = ""
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Vec:
    """Vector op on ``rows`` rows of ``n`` elements (strides in elements; 0 = ``n``, dense).

    Binary ops (add sub mul max min) take ``src1`` (``src1_bcast``: none = full 2-D operand, row = one
    element per row, col = one row of n reused by every row) or else the scalar ``imm``. Unary: relu, exp,
    rsqrt, recip, copy, cast (to ``out_dtype``), shift (arithmetic right shift by ``imm``, left if negative;
    integers). reduce_sum / reduce_max write one element per row, densely. Float math is f32 with results
    rounded to the destination dtype; integer math is exact and saturates on the cast to the destination.
    ``out_dtype`` "" = ``dtype``. ``dst``/``src*`` in spad or acc."""

    OPCODE: ClassVar[str] = "vec"
    queue: str
    op: str
    dst: Addr
    src0: Addr
    n: int
    dtype: str
    src1: Addr | None = None
    imm: float | None = None
    rows: int = 1
    dst_stride: int = 0
    src_stride: int = 0
    src1_bcast: str = "none"
    out_dtype: str = ""
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """Increment dependency token ``token`` of this core once every earlier instruction of this queue has
    completed (its results are visible); the queue itself goes on issuing."""

    OPCODE: ClassVar[str] = "signal"
    queue: str
    token: int
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Wait:
    """Block this queue until token ``token`` is positive, then decrement it (a counting semaphore)."""

    OPCODE: ClassVar[str] = "wait"
    queue: str
    token: int
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Barrier:
    """Fence across all cores: every instruction before the k-th barrier of every core (all queues)
    completes before any instruction after it starts. Every core must have the same number of barriers."""

    OPCODE: ClassVar[str] = "barrier"
    queue: str
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """Set a core state: ``dataflow`` (one of the description's matrix dataflows) for later gemms."""

    OPCODE: ClassVar[str] = "config"
    queue: str
    key: str
    value: str
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    """End of the core's program (optional; nothing may follow it)."""

    OPCODE: ClassVar[str] = "finish"
    queue: str
    tag: str = ""


Instruction = DmaLoad | DmaStore | Gemm | Vec | Signal | Wait | Barrier | Config | Finish
INSTRUCTION_TYPES: tuple[type, ...] = (DmaLoad, DmaStore, Gemm, Vec, Signal, Wait, Barrier, Config, Finish)
OPCODES = {t.OPCODE: t for t in INSTRUCTION_TYPES}


@dataclass
class Program:
    """One instruction list per core (``cores[i]`` runs on core i; fewer lists than cores leave cores idle)."""

    cores: list[list[Instruction]] = field(default_factory=lambda: [[]])

    def __len__(self) -> int:
        return sum(len(c) for c in self.cores)

    def instructions(self) -> list[tuple[int, int, Instruction]]:
        """(core, index, instruction) for every instruction."""
        return [(ci, i, ins) for ci, core in enumerate(self.cores) for i, ins in enumerate(core)]


# --- validation -------------------------------------------------------------------------------------

def region_bytes(rows: int, cols: int, stride: int, size: int) -> int:
    """Bytes spanned by a 2-D region (0 when empty)."""
    if rows <= 0 or cols <= 0:
        return 0
    return ((rows - 1) * stride + cols) * size


class _Validator:
    def __init__(self, desc: NpuDescription, dram_bytes: int | None) -> None:
        self.desc = desc
        self.dram_bytes = dram_bytes
        self.queues = frozenset(desc.execution.queues)
        self.sizes = {"spad": desc.scratchpad.bytes, "acc": desc.accumulator.bytes,
                      "l2": desc.l2.bytes if desc.l2 else None, "dram": dram_bytes}
        self.where = ""

    def fail(self, msg: str) -> NpuProgramError:
        return NpuProgramError(f"{self.where}: {msg}")

    def posint(self, value: object, name: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{name} must be an integer >= {minimum}, got {value!r}")
        return value

    def dtype(self, value: object, name: str) -> int:
        if value not in DTYPES:
            raise self.fail(f"{name}: unknown dtype {value!r} (known: {', '.join(DTYPES)})")
        return DTYPES[value].size

    def region(self, addr: object, spaces: tuple[str, ...], name: str, rows: int, cols: int, stride: int,
               size: int) -> None:
        if not isinstance(addr, Addr):
            raise self.fail(f"{name} must be an address, got {addr!r}")
        if addr.space not in spaces:
            raise self.fail(f"{name} must be in {' or '.join(spaces)}, got {addr.space!r}")
        if isinstance(addr.addr, bool) or not isinstance(addr.addr, int) or addr.addr < 0:
            raise self.fail(f"{name} address must be a non-negative integer, got {addr.addr!r}")
        if addr.addr % size:
            raise self.fail(f"{name} address {addr} is not aligned to the {size}-byte element")
        limit = self.sizes[addr.space]
        if addr.space == "l2" and limit is None:
            raise self.fail(f"{name} uses l2 but the description {self.desc.name!r} has no [memory.l2]")
        end = addr.addr + region_bytes(rows, cols, stride, size)
        if limit is not None and end > limit:
            raise self.fail(f"{name} region {addr} .. 0x{end:x} ({rows}x{cols}, stride {stride}) exceeds "
                            f"{addr.space} ({limit} bytes)")

    def stride(self, value: object, name: str, cols: int, rows: int, allow_zero: bool = False) -> int:
        v = self.posint(value, name, 0)
        if rows > 1 and v < cols and not (allow_zero and v == 0):
            raise self.fail(f"{name}={v} is smaller than the row length {cols}")
        return v

    def check(self, ins: Instruction, dataflow: str) -> str:
        """Check one instruction; return the core's dataflow after it."""
        d = self.desc
        if ins.queue not in self.queues:
            raise self.fail(f"queue {ins.queue!r} is not one of the description's queues "
                            f"({', '.join(d.execution.queues)})")
        if ins.tag and not _TAG_RE.match(ins.tag):
            raise self.fail(f"tag {ins.tag!r} is not an identifier (use sanitize_tag)")
        t = type(ins)
        if t is DmaLoad:
            size = self.dtype(ins.dtype, "dtype")
            rows, cols = self.posint(ins.rows, "rows"), self.posint(ins.cols, "cols")
            if rows > d.dma.max_rows:
                raise self.fail(f"rows={rows} exceeds dma.max_rows={d.dma.max_rows}")
            pad = ins.pad
            if not (isinstance(pad, tuple) and len(pad) == 4 and all(isinstance(p, int) and p >= 0 for p in pad)):
                raise self.fail(f"pad must be 4 non-negative integers (top,bottom,left,right), got {pad!r}")
            if any(pad) and not d.dma.padding:
                raise self.fail(f"pad={pad} but the description's DMA has no padding (dma.padding = false)")
            drows, dcols = rows + pad[0] + pad[1], cols + pad[2] + pad[3]
            self.stride(ins.src_stride, "src_stride", cols, rows, allow_zero=True)
            self.stride(ins.dst_stride, "dst_stride", dcols, drows)
            self.region(ins.src, ("dram", "l2"), "src", rows, cols, ins.src_stride, size)
            self.region(ins.dst, ("spad", "acc", "l2"), "dst", drows, dcols, ins.dst_stride, size)
            if ins.src.space == "l2" and ins.dst.space == "l2":
                raise self.fail("dma.load from l2 to l2")
        elif t is DmaStore:
            ssize, dsize = self.dtype(ins.src_dtype, "src_dtype"), self.dtype(ins.dst_dtype, "dst_dtype")
            rows, cols = self.posint(ins.rows, "rows"), self.posint(ins.cols, "cols")
            if rows > d.dma.max_rows:
                raise self.fail(f"rows={rows} exceeds dma.max_rows={d.dma.max_rows}")
            self.stride(ins.src_stride, "src_stride", cols, rows)
            self.stride(ins.dst_stride, "dst_stride", cols, rows)
            self.region(ins.src, ("acc", "spad"), "src", rows, cols, ins.src_stride, ssize)
            self.region(ins.dst, ("dram", "l2"), "dst", rows, cols, ins.dst_stride, dsize)
            ops = []
            if ins.bias is not None:
                ops.append("bias")
                self.region(ins.bias, ("spad",), "bias", 1, cols, cols, 4)
            if isinstance(ins.scale, Addr):
                ops.append("scale")
                self.region(ins.scale, ("spad",), "scale", 1, cols, cols, 4)
            elif ins.scale is not None:
                if isinstance(ins.scale, bool) or not isinstance(ins.scale, (int, float)):
                    raise self.fail(f"scale must be a number or a spad address, got {ins.scale!r}")
                ops.append("scale")
            if ins.act not in ACTS:
                raise self.fail(f"act must be one of {', '.join(ACTS)}, got {ins.act!r}")
            if ins.act != "none":
                ops.append(ins.act)
            if ins.act == "clip" and not ins.lo <= ins.hi:
                raise self.fail(f"clip bounds lo={ins.lo} > hi={ins.hi}")
            if ins.src_dtype != ins.dst_dtype:
                ops.append("cast")
            for op in ops:
                if op not in d.dma.store_ops:
                    raise self.fail(f"store-path op {op!r} is not supported by the description (dma.store_ops = "
                                    f"{list(d.dma.store_ops)})")
        elif t is Gemm:
            isz, asz = self.dtype(ins.dtype, "dtype"), self.dtype(ins.acc_dtype, "acc_dtype")
            if not d.matrix.supports(ins.dtype, ins.acc_dtype):
                raise self.fail(f"dtype pair ({ins.dtype}, {ins.acc_dtype}) is not supported by the matrix unit "
                                f"(matrix.dtypes = {[list(p) for p in d.matrix.dtypes]})")
            m, k, n = self.posint(ins.m, "m"), self.posint(ins.k, "k"), self.posint(ins.n, "n")
            df = ins.dataflow or dataflow
            if df not in d.matrix.dataflows:
                raise self.fail(f"dataflow {df!r} is not supported (matrix.dataflows = {list(d.matrix.dataflows)})")
            if not isinstance(ins.accumulate, bool):
                raise self.fail(f"accumulate must be a bool, got {ins.accumulate!r}")
            self.stride(ins.a_stride, "a_stride", k, m)
            self.stride(ins.b_stride, "b_stride", n, k)
            self.stride(ins.c_stride, "c_stride", n, m)
            self.region(ins.a, ("spad",), "a", m, k, ins.a_stride, isz)
            self.region(ins.b, ("spad",), "b", k, n, ins.b_stride, isz)
            self.region(ins.c, ("acc",), "c", m, n, ins.c_stride, asz)
        elif t is Vec:
            v = d.vector
            if v is None:
                raise self.fail(f"vec {ins.op}: the description {d.name!r} has no vector unit")
            if ins.op not in VECTOR_OPS:
                raise self.fail(f"unknown vector op {ins.op!r} (known: {', '.join(VECTOR_OPS)})")
            if v.op_cycles(VECTOR_OPS[ins.op]) is None:
                raise self.fail(f"vector op {ins.op!r} is not supported (vector.cycles has no "
                                f"{VECTOR_OPS[ins.op]!r})")
            size = self.dtype(ins.dtype, "dtype")
            out = ins.out_dtype or ins.dtype
            osize = self.dtype(out, "out_dtype")
            for dt in {ins.dtype, out}:
                if dt not in v.dtypes:
                    raise self.fail(f"vector unit does not support dtype {dt!r} (vector.dtypes = {list(v.dtypes)})")
            if ins.out_dtype and ins.out_dtype != ins.dtype and ins.op not in ("cast", "reduce_sum", "reduce_max"):
                raise self.fail(f"out_dtype differs from dtype: only cast and reductions convert (op {ins.op!r})")
            if ins.op in ("exp", "rsqrt", "recip") and not DTYPES[ins.dtype].is_float:
                raise self.fail(f"vector op {ins.op!r} needs a float dtype, got {ins.dtype!r}")
            if ins.op == "shift" and DTYPES[ins.dtype].is_float:
                raise self.fail(f"vector op 'shift' needs an integer dtype, got {ins.dtype!r}")
            rows, n = self.posint(ins.rows, "rows"), self.posint(ins.n, "n")
            sst = self.posint(ins.src_stride, "src_stride", 0) or n
            dst_ = self.posint(ins.dst_stride, "dst_stride", 0) or n
            if rows > 1 and sst < n:
                raise self.fail(f"src_stride={sst} is smaller than the row length {n}")
            self.region(ins.src0, ("spad", "acc"), "src0", rows, n, sst, size)
            reduce = ins.op.startswith("reduce")
            if reduce:
                self.region(ins.dst, ("spad", "acc"), "dst", 1, rows, rows, osize)
            else:
                if rows > 1 and dst_ < n:
                    raise self.fail(f"dst_stride={dst_} is smaller than the row length {n}")
                self.region(ins.dst, ("spad", "acc"), "dst", rows, n, dst_, osize)
            if ins.src1_bcast not in BCAST:
                raise self.fail(f"src1_bcast must be one of {', '.join(BCAST)}, got {ins.src1_bcast!r}")
            if ins.op in BINARY_VECTOR_OPS:
                if (ins.src1 is None) == (ins.imm is None):
                    raise self.fail(f"binary vector op {ins.op!r} needs exactly one of src1 and imm")
                if ins.src1 is not None:
                    shape = {"none": (rows, n, sst), "row": (1, rows, rows), "col": (1, n, n)}[ins.src1_bcast]
                    self.region(ins.src1, ("spad", "acc"), "src1", *shape, size)
            else:
                if ins.src1 is not None:
                    raise self.fail(f"vector op {ins.op!r} takes no src1")
                if ins.op == "shift" and ins.imm is None:
                    raise self.fail("shift needs an integer imm (the shift amount)")
            if ins.imm is not None:
                if isinstance(ins.imm, bool) or not isinstance(ins.imm, (int, float)) or not math.isfinite(ins.imm):
                    raise self.fail(f"imm must be a finite number, got {ins.imm!r}")
                if not DTYPES[ins.dtype].is_float and ins.imm != int(ins.imm):
                    raise self.fail(f"imm={ins.imm!r} must be an integer for integer dtype {ins.dtype!r}")
        elif t is Signal or t is Wait:
            tok = self.posint(ins.token, "token", 0)
            if tok >= d.execution.tokens:
                raise self.fail(f"token {tok} out of range (execution.tokens = {d.execution.tokens})")
        elif t is Config:
            if ins.key not in CONFIG_KEYS:
                raise self.fail(f"unknown config key {ins.key!r} (known: {', '.join(CONFIG_KEYS)})")
            if ins.value not in d.matrix.dataflows:
                raise self.fail(f"dataflow {ins.value!r} is not supported (matrix.dataflows = "
                                f"{list(d.matrix.dataflows)})")
            return ins.value
        elif t not in (Barrier, Finish):
            raise self.fail(f"not an instruction: {ins!r}")
        return dataflow


def validate(program: Program, desc: NpuDescription, dram_bytes: int | None = None) -> None:
    """Check every instruction of ``program`` against ``desc``; raise :class:`NpuProgramError` naming the core,
    the instruction index, its opcode/tag and the offending field. ``dram_bytes`` bounds dram addresses."""
    if not isinstance(program, Program) or not isinstance(program.cores, list) or not program.cores:
        raise NpuProgramError(f"expected a Program with at least one core, got {program!r}")
    if len(program.cores) > desc.chip.cores:
        raise NpuProgramError(f"program has {len(program.cores)} cores but {desc.name!r} has {desc.chip.cores}")
    v = _Validator(desc, dram_bytes)
    barriers = []
    for ci, core in enumerate(program.cores):
        dataflow = desc.matrix.dataflows[0]
        nb = 0
        for i, ins in enumerate(core):
            v.where = f"core {ci}, instruction {i} ({getattr(ins, 'OPCODE', type(ins).__name__)}" + \
                      (f", tag {ins.tag}" if getattr(ins, "tag", "") else "") + ")"
            if type(ins) not in OPCODES.values():
                raise v.fail(f"not an instruction: {ins!r}")
            dataflow = v.check(ins, dataflow)
            nb += type(ins) is Barrier
            if type(ins) is Finish and i != len(core) - 1:
                raise v.fail("instructions follow finish")
        barriers.append(nb)
    if len(set(barriers)) > 1:
        raise NpuProgramError(f"cores have different numbers of barriers: {barriers}")
