"""Elementwise layers on the vector unit: ``out = act(a + b)`` over two runtime tensors of one shape.

The tensors are viewed as ``rows x width`` (``width`` a multiple of the vector lanes; the host pads the
tail with zeros) and streamed through the scratchpad in chunks of rows: load both operands, one
``vec add``, store (the activation rides on the store path when it has it, else a ``vec relu``). On
decoupled machines chunks are double buffered with three counting tokens (load -> vector ``FULL``,
vector -> store ``DONE``, store -> load ``FREE``); multi-core chips split the chunks across cores.
Computed in bf16 when the vector unit has it (else f32)."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.codegen.npu.gemm import SIZES
from tessera.codegen.npu.machine import Machine
from tessera.errors import CompileError
from tessera.npu.isa import Addr, DmaLoad, DmaStore, Instruction, Signal, Vec, Wait

FULL, DONE, FREE = 0, 1, 2
ALIGN = 64


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def vector_dtype(m: Machine) -> str | None:
    """The dtype elementwise layers compute in on ``m`` (None: no vector add)."""
    return next((dt for dt in ("bf16", "f32") if m.has_vector("add", dt)), None)


@dataclass(frozen=True)
class EltwiseSpec:
    """``rows x width`` elements of ``dtype`` at DRAM ``a_addr``, ``b_addr`` -> ``out_addr``."""

    rows: int
    width: int
    dtype: str
    act: str  # none | relu
    a_addr: int
    b_addr: int
    out_addr: int

    @classmethod
    def for_numel(cls, numel: int, m: Machine, dtype: str, act: str, a: int, b: int, out: int) -> EltwiseSpec:
        width = min(m.vector_lanes * 32, -(-numel // m.vector_lanes) * m.vector_lanes)
        return cls(-(-numel // width), width, dtype, act, a, b, out)

    @property
    def nbytes(self) -> int:
        return self.rows * self.width * SIZES[self.dtype]


def emit_eltwise(spec: EltwiseSpec, m: Machine, tag: str) -> list[list[Instruction]]:
    """Instructions per core for ``spec`` (see module docstring)."""
    size = SIZES[spec.dtype]
    bufs = 2 if m.decoupled else 1
    row_bytes = _align(spec.width * size)
    chunk = min(spec.rows, m.dma_max_rows, m.spad_bytes // (3 * bufs * row_bytes))
    if chunk < 1:
        raise CompileError(f"layer {tag}: one {spec.width}-element row x 3 buffers does not fit the scratchpad")
    starts = list(range(0, spec.rows, chunk))
    per_core = [starts[c * len(starts) // m.cores:(c + 1) * len(starts) // m.cores] for c in range(m.cores)]
    store_act = spec.act if spec.act != "none" and spec.act in m.store_ops else "none"
    if spec.act != "none" and store_act == "none" and not m.has_vector(spec.act, spec.dtype):
        raise CompileError(f"layer {tag}: activation {spec.act} is neither a store-path nor a vector op")
    ql, qv, qs = m.queue_for("load"), m.queue_for("vector"), m.queue_for("store")
    sync = m.decoupled
    out: list[list[Instruction]] = []
    for chunks in per_core:
        loads: list[Instruction] = []
        vec: list[Instruction] = []
        stores: list[Instruction] = []
        for c, r0 in enumerate(chunks):
            rows = min(chunk, spec.rows - r0)
            slot = c % bufs
            base = slot * 3 * chunk * row_bytes
            a, b, o = base, base + chunk * row_bytes, base + 2 * chunk * row_bytes
            off = r0 * spec.width * size
            ld: list[Instruction] = []
            if sync and c >= bufs:
                ld.append(Wait(ql, FREE, tag))
            for src, dst in ((spec.a_addr, a), (spec.b_addr, b)):
                ld.append(DmaLoad(ql, Addr("spad", dst), Addr("dram", src + off), rows, spec.width, spec.dtype,
                                  spec.width, row_bytes // size, tag=tag))
            vc: list[Instruction] = []
            if sync:
                ld.append(Signal(ql, FULL, tag))
                vc.append(Wait(qv, FULL, tag))
            vc.append(Vec(qv, "add", Addr("spad", o), Addr("spad", a), spec.width, spec.dtype, Addr("spad", b),
                          rows=rows, dst_stride=row_bytes // size, src_stride=row_bytes // size, tag=tag))
            if spec.act != "none" and store_act == "none":
                vc.append(Vec(qv, spec.act, Addr("spad", o), Addr("spad", o), spec.width, spec.dtype, rows=rows,
                              dst_stride=row_bytes // size, src_stride=row_bytes // size, tag=tag))
            st: list[Instruction] = []
            if sync:
                vc.append(Signal(qv, DONE, tag))
                st.append(Wait(qs, DONE, tag))
            st.append(DmaStore(qs, Addr("dram", spec.out_addr + off), Addr("spad", o), rows, spec.width, spec.dtype,
                               spec.dtype, row_bytes // size, spec.width, act=store_act, tag=tag))
            if sync:
                st.append(Signal(qs, FREE, tag))
            if sync:
                loads += ld
                vec += vc
                stores += st
            else:
                loads += ld + vc + st
        out.append(loads + vec + stores)
    return out
