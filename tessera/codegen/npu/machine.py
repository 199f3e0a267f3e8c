"""The compiler's view of an NPU description: the few numbers lowering and tiling read.

This is the only module of the back-end that reads :class:`tessera.npu.hw.NpuDescription`
fields, so the rest of the back-end depends on capabilities (array limits per dataflow, memory
sizes, queues, store-path ops), never on a description's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# dataflow -> which GEMM dims the array bounds: (M, K, N); None = streamed (unbounded)
_LIMITS = {
    "weight-stationary": ("-", "rows", "cols"),
    "output-stationary": ("rows", "-", "cols"),
    "channel-reduction": ("-", "rows", "cols"),
}


@dataclass(frozen=True)
class Machine:
    """Capabilities of one NPU (per core unless stated)."""

    name: str
    clock_ghz: float
    cores: int
    rows: int
    cols: int
    dataflows: tuple[str, ...]
    dtype_pairs: tuple[tuple[str, str], ...]
    fill_latency: int
    spad_bytes: int
    acc_bytes: int
    l2_bytes: int
    dram_bytes_per_cycle: float
    dma_max_rows: int
    dma_padding: bool
    store_ops: frozenset[str]
    queues: tuple[str, ...]
    decoupled: bool
    vector_lanes: int
    vector_dtypes: tuple[str, ...]
    vector_ops: frozenset[str]

    @property
    def dataflow(self) -> str:
        return self.dataflows[0]

    @property
    def macs_per_cycle(self) -> int:
        """Peak MACs per cycle of the whole chip."""
        return self.rows * self.cols * self.cores

    def tile_limits(self, dataflow: str | None = None) -> tuple[int | None, int | None, int | None]:
        """The largest (M, K, N) of one gemm instruction (None: streamed, any size)."""
        df = dataflow or self.dataflow
        size = {"rows": self.rows, "cols": self.cols, "-": None}
        return tuple(size[s] for s in _LIMITS[df])  # type: ignore[return-value]

    def queue_for(self, unit: str) -> str:
        """The queue an instruction of ``unit`` (load, compute, vector, store) goes to."""
        return unit if self.decoupled and unit in self.queues else self.queues[0]

    def supports(self, in_dtype: str, acc_dtype: str) -> bool:
        return (in_dtype, acc_dtype) in self.dtype_pairs

    def has_vector(self, op: str, dtype: str) -> bool:
        return self.vector_lanes > 0 and dtype in self.vector_dtypes and op in self.vector_ops


def machine_from(desc: Any) -> Machine:
    """Read a :class:`tessera.npu.hw.NpuDescription` into a :class:`Machine`."""
    m, vec, ex = desc.matrix, desc.vector, desc.execution
    return Machine(
        name=desc.name,
        clock_ghz=float(desc.chip.clock_ghz),
        cores=int(desc.chip.cores),
        rows=int(m.rows),
        cols=int(m.cols),
        dataflows=tuple(m.dataflows),
        dtype_pairs=tuple(tuple(p) for p in m.dtypes),
        fill_latency=int(m.fill_latency),
        spad_bytes=int(desc.scratchpad.bytes),
        acc_bytes=int(desc.accumulator.bytes),
        l2_bytes=int(desc.l2.bytes) if desc.l2 is not None else 0,
        dram_bytes_per_cycle=float(desc.dram.bytes_per_cycle),
        dma_max_rows=int(desc.dma.max_rows),
        dma_padding=bool(desc.dma.padding),
        store_ops=frozenset(desc.dma.store_ops),
        queues=tuple(ex.queues),
        decoupled=bool(ex.decoupled),
        vector_lanes=int(vec.lanes) if vec is not None else 0,
        vector_dtypes=tuple(vec.dtypes) if vec is not None else (),
        vector_ops=frozenset(op for op, _ in vec.cycles) if vec is not None else frozenset(),
    )
