"""Event-driven, cycle-approximate NPU simulator with optional functional execution.

Model (per-instruction formulas: :mod:`tessera.npu.sim.costs`):

- Each core's program is split by queue; every queue executes its instructions in order, and queues run
  concurrently (decoupled machines). An in-order machine (``execution.decoupled = false``) has one queue:
  an instruction of another kind than its predecessor (e.g. a gemm after DMA loads) waits until everything
  before it is complete (latency included), so DMA and compute never overlap; back-to-back instructions of
  the same kind pipeline like on a decoupled queue (consecutive gemms stream through the array without
  draining it, consecutive DMAs overlap their latencies).
- Dependencies between queues exist only through tokens: ``signal`` fires once everything earlier in its
  queue is complete (latency included) without stalling its own queue (completion is tracked by a
  scoreboard); ``wait`` consumes one signal (a counting semaphore) and stalls its queue until that signal
  has fired. Queue depth is unbounded (no dispatch back-pressure).
- ``barrier`` splits every core's program into phases: nothing of phase p+1 starts before every queue of
  every core has completed phase p.
- DRAM (and the L2, when present) is one channel shared by all cores, reserved first-come first-served in
  simulated-time order; the per-core matrix and vector units are owned by the queues that use them.
- Events are processed in time order (a heap of queue wake-up times); a queue keeps running without touching
  the heap while it is the earliest, which keeps the cost per instruction at a few microseconds.

In functional mode each instruction's effect is applied (NumPy) when it starts, in simulated-time order.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from tessera.npu.dtypes import DTYPES, decode
from tessera.npu.hw import NpuDescription, load_description
from tessera.npu.isa import (
    Barrier,
    Config,
    DmaLoad,
    DmaStore,
    Gemm,
    NpuProgramError,
    Program,
    Signal,
    Vec,
    Wait,
    region_bytes,
    validate,
)
from tessera.npu.sim.costs import DmaCost, gemm_cycles, vec_cycles
from tessera.npu.sim.functional import Memories, execute
from tessera.npu.sim.races import RaceChecker


@dataclass
class TagStats:
    """Figures of the instructions carrying one tag: span from first start to last completion, useful MACs,
    matrix-unit busy cycles, DRAM bytes and the roofline bound of that work."""

    start: float = math.inf
    end: float = 0.0
    macs: int = 0
    matrix_busy: float = 0.0
    dram_bytes: int = 0
    instructions: int = 0
    compute_bound: float = 0.0
    memory_bound: float = 0.0

    @property
    def cycles(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def bound_cycles(self) -> float:
        return max(self.compute_bound, self.memory_bound)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_bound >= self.memory_bound else "memory"


@dataclass
class SimResult:
    """Outcome of :func:`simulate`. ``utilization`` = useful MACs / (rows * cols * cores * cycles);
    ``bound_cycles`` = max(compute-bound, DRAM-bound) cycles for the same work (the roofline);
    ``queue_busy`` sums busy cycles of each queue over the cores; DRAM bytes are bytes moved on the DRAM bus
    (whole bursts), ``folds`` counts array folds of all gemms (see :mod:`tessera.npu.sim.costs`)."""

    description: str
    cycles: int
    seconds: float
    macs: int
    utilization: float
    queue_busy: dict[str, float]
    matrix_busy: float
    vector_busy: float
    dram_read_bytes: int
    dram_write_bytes: int
    compute_bound_cycles: float
    memory_bound_cycles: float
    energy_pj: float | None
    instructions: int
    folds: int
    tags: dict[str, TagStats] = field(default_factory=dict)
    trace: list[tuple[int, int, str, float, float]] | None = None
    memories: Memories | None = field(default=None, repr=False)

    @property
    def dram(self) -> np.ndarray | None:
        return self.memories.dram if self.memories is not None else None

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes

    @property
    def bound_cycles(self) -> float:
        return max(self.compute_bound_cycles, self.memory_bound_cycles)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_bound_cycles >= self.memory_bound_cycles else "memory"

    def read(self, addr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """Values of a dense array in the final DRAM (functional mode)."""
        if self.memories is None:
            raise NpuProgramError("no memory contents: the simulation ran in timing-only mode")
        return decode(self.memories.dram, addr, shape, dtype)


class _Queue:
    __slots__ = ("core", "name", "items", "pos", "free", "done", "busy", "last")

    def __init__(self, core: int, name: str) -> None:
        self.core, self.name = core, name
        self.items: list[tuple[int, object, str]] = []  # (program index, instruction | None = barrier, dataflow)
        self.pos = 0
        self.free = 0.0   # when the next instruction may start
        self.done = 0.0   # when everything issued so far is complete
        self.busy = 0.0
        self.last: type | None = None  # kind of the previous instruction (in-order machines)


def _split(program: Program, desc: NpuDescription) -> list[list[_Queue]]:
    cores = []
    for ci, core in enumerate(program.cores):
        queues = {name: _Queue(ci, name) for name in desc.execution.queues}
        dataflow = desc.matrix.dataflows[0]
        for i, ins in enumerate(core):
            t = type(ins)
            if t is Barrier:
                for q in queues.values():
                    q.items.append((i, None, ""))
                continue
            if t is Config:
                dataflow = ins.value
            queues[ins.queue].items.append((i, ins, (ins.dataflow or dataflow) if t is Gemm else ""))
        cores.append(list(queues.values()))
    return cores


def simulate(program: Program, desc: NpuDescription | str, dram: np.ndarray | bytes | int | None = None, *,
             functional: bool = True, check: bool = True, trace: bool = False,
             races: bool | None = None) -> SimResult:
    """Run ``program`` on the chip ``desc``.

    ``dram``: initial DRAM contents (uint8 array or bytes; copied) or a size in bytes (zeros); required in
    functional mode. ``functional=False`` only counts cycles (no data). ``check`` validates the program
    against the description first. ``trace`` records (core, index, queue, start, end) per instruction.
    ``races`` (default: in functional mode) raises :class:`NpuProgramError` when two queues or cores touch the
    same bytes (one writing) at overlapping times: a missing signal/wait or barrier."""
    desc = load_description(desc)
    if isinstance(dram, int) and not isinstance(dram, bool):
        dram_arr = np.zeros(dram, np.uint8) if functional else None
        dram_size: int | None = dram
    elif dram is None:
        if functional:
            raise NpuProgramError("functional simulation needs the initial DRAM contents (or its size)")
        dram_arr, dram_size = None, None
    else:
        dram_arr = np.array(np.frombuffer(dram, np.uint8) if isinstance(dram, (bytes, bytearray))
                            else np.asarray(dram).reshape(-1).view(np.uint8), dtype=np.uint8, copy=True)
        dram_size = dram_arr.size
    if check:
        validate(program, desc, dram_size)
    return _Engine(program, desc, Memories(desc, dram_arr, len(program.cores)) if functional else None,
                   trace, functional if races is None else races).run()


class _Engine:
    def __init__(self, program: Program, desc: NpuDescription, mem: Memories | None, trace: bool,
                 races: bool) -> None:
        self.program, self.desc, self.mem = program, desc, mem
        self.races = RaceChecker() if races else None
        self.trace: list[tuple[int, int, str, float, float]] | None = [] if trace else None

    def run(self) -> SimResult:  # noqa: C901 - one hot loop, kept flat for speed
        desc, mem, trace, races = self.desc, self.mem, self.trace, self.races
        cores = _split(self.program, desc)
        all_queues = [q for qs in cores for q in qs]
        inorder = not desc.execution.decoupled
        dma = DmaCost(desc)
        rows, cols = desc.matrix.rows, desc.matrix.cols
        dbuf = desc.matrix.double_buffered_weights
        fill = desc.matrix.fill_latency
        vlanes = desc.vector.lanes if desc.vector else 1
        vcycles = dict(desc.vector.cycles) if desc.vector else {}
        vlat = desc.vector.latency if desc.vector else 0
        ntok = max(desc.execution.tokens, 1)
        tokens = [[deque() for _ in range(ntok)] for _ in cores]
        waiters: dict[tuple[int, int], list[_Queue]] = {}
        resident: list[tuple | None] = [None] * len(cores)   # stationary operand left in each core's array
        resident_range = [(0, 0)] * len(cores)
        chan_free = {"dram": 0.0, "l2": 0.0}
        dram_rd = dram_wr = 0
        sram = 0.0
        macs = folds_total = 0
        matrix_busy = vector_busy = 0.0
        tags: dict[str, TagStats] = {}
        barrier_arrived: list[float] = []
        heap: list[tuple[float, int, _Queue]] = []
        seq = 0
        for q in all_queues:
            heap.append((0.0, seq, q))
            seq += 1
        heapq.heapify(heap)
        push, pop = heapq.heappush, heapq.heappop

        while heap:
            t, _, q = pop(heap)
            items, core = q.items, q.core
            while q.pos < len(items):
                idx, ins, df = items[q.pos]
                if ins is None:  # barrier: arrive once everything issued by this queue is complete
                    barrier_arrived.append(max(t, q.done))
                    if len(barrier_arrived) == len(all_queues):
                        release = max(barrier_arrived)
                        barrier_arrived.clear()
                        for w in all_queues:
                            w.pos += 1
                            w.free = w.done = max(w.free, release)
                            push(heap, (release, seq, w))
                            seq += 1
                    break
                tp = type(ins)
                if tp is Wait:
                    dq = tokens[core][ins.token]
                    if not dq:
                        waiters.setdefault((core, ins.token), []).append(q)
                        break
                    t = max(t, dq.popleft())
                    q.free = max(q.free, t)
                    if trace is not None:
                        trace.append((core, idx, q.name, t, t))
                    q.pos += 1
                    if heap and heap[0][0] < t:
                        push(heap, (t, seq, q))
                        seq += 1
                        break
                    continue
                if tp is Signal:  # fires at completion of the queue's earlier work; the queue goes on issuing
                    s = t if t > q.done else q.done
                    tokens[core][ins.token].append(s)
                    for w in waiters.pop((core, ins.token), ()):
                        push(heap, (s, seq, w))
                        seq += 1
                    if trace is not None:
                        trace.append((core, idx, q.name, s, s))
                    q.pos += 1
                    continue
                start = t if t > q.free else q.free
                if inorder and tp is not q.last:
                    if q.done > start:
                        start = q.done
                    q.last = tp
                lat = 0
                tag_dram = 0
                tag_macs = 0
                if tp is Gemm:
                    key = (ins.b.addr, ins.b_stride, ins.k, ins.n, ins.dtype, df)
                    occ, folds = gemm_cycles(ins, df, rows, cols, dbuf, resident[core] == key)
                    if df != "output-stationary" and folds == 1:
                        size = DTYPES[ins.dtype].size
                        resident[core] = key
                        resident_range[core] = (ins.b.addr, ins.b.addr + region_bytes(ins.k, ins.n, ins.b_stride,
                                                                                      size))
                    else:
                        resident[core] = None
                    lat = fill
                    tag_macs = ins.m * ins.k * ins.n
                    macs += tag_macs
                    folds_total += folds
                    matrix_busy += occ
                    sram += (ins.m * ins.k + ins.k * ins.n) * DTYPES[ins.dtype].size + \
                        ins.m * ins.n * DTYPES[ins.acc_dtype].size * (1 + ins.accumulate)
                elif tp is DmaLoad or tp is DmaStore:
                    chan, traffic, chan_cycles, local_bytes, local, lat = \
                        dma.load(ins) if tp is DmaLoad else dma.store(ins)
                    cf = chan_free[chan]
                    if cf > start:
                        start = cf
                    chan_free[chan] = start + chan_cycles
                    occ = chan_cycles if chan_cycles > local else local
                    sram += local_bytes
                    if chan == "dram":
                        if tp is DmaLoad:
                            dram_rd += traffic
                        else:
                            dram_wr += traffic
                        tag_dram = traffic
                    if tp is DmaLoad and ins.dst.space == "spad" and resident[core] is not None:
                        lo, hi = resident_range[core]
                        if ins.dst.addr < hi and ins.dst.addr + region_bytes(
                                ins.rows + ins.pad[0] + ins.pad[1], ins.cols + ins.pad[2] + ins.pad[3],
                                ins.dst_stride, DTYPES[ins.dtype].size) > lo:
                            resident[core] = None
                elif tp is Vec:
                    occ = vec_cycles(ins, vlanes, vcycles)
                    lat = vlat
                    vector_busy += occ
                    sram += ins.rows * ins.n * DTYPES[ins.dtype].size * (2 + (ins.src1 is not None))
                    if ins.dst.space == "spad" and resident[core] is not None:
                        lo, hi = resident_range[core]
                        if ins.dst.addr < hi:
                            resident[core] = None
                elif tp is Config:
                    occ = 1
                else:  # Finish
                    occ = 0
                end = start + occ
                done = end + lat
                q.busy += occ
                q.free = end
                if done > q.done:
                    q.done = done
                if races is not None:
                    races.check(core, q.name, idx, ins, start, done)
                if mem is not None:
                    execute(mem, core, ins)
                if trace is not None:
                    trace.append((core, idx, q.name, start, done))
                if ins.tag:
                    ts = tags.get(ins.tag)
                    if ts is None:
                        ts = tags[ins.tag] = TagStats()
                    if start < ts.start:
                        ts.start = start
                    if done > ts.end:
                        ts.end = done
                    ts.macs += tag_macs
                    ts.dram_bytes += tag_dram
                    ts.instructions += 1
                    if tp is Gemm:
                        ts.matrix_busy += occ
                q.pos += 1
                t = q.free
                if heap and heap[0][0] < t:
                    push(heap, (t, seq, q))
                    seq += 1
                    break

        stuck = [q for q in all_queues if q.pos < len(q.items)]
        if stuck:
            q = stuck[0]
            idx, ins, _ = q.items[q.pos]
            what = "a barrier" if ins is None else f"{ins.OPCODE} token={getattr(ins, 'token', '?')}"
            raise NpuProgramError(f"deadlock: core {q.core} queue {q.name!r} is blocked at instruction {idx} "
                                  f"({what}); no queue can make progress")

        cycles = max((q.done for q in all_queues), default=0.0)
        peak = desc.peak_macs_per_cycle
        qbusy: dict[str, float] = {}
        for q in all_queues:
            qbusy[q.name] = qbusy.get(q.name, 0.0) + q.busy
        dram_total = dram_rd + dram_wr
        bw = desc.dram.bytes_per_cycle
        for ts in tags.values():
            ts.compute_bound = ts.macs / peak
            ts.memory_bound = ts.dram_bytes / bw
        energy = None
        if desc.energy is not None:
            e = desc.energy
            energy = macs * e.pj_per_mac + dram_total * e.pj_per_dram_byte + sram * e.pj_per_sram_byte
        return SimResult(
            description=desc.name, cycles=math.ceil(cycles), seconds=cycles / (desc.chip.clock_ghz * 1e9),
            macs=macs, utilization=macs / (peak * cycles) if cycles else 0.0, queue_busy=qbusy,
            matrix_busy=matrix_busy, vector_busy=vector_busy, dram_read_bytes=dram_rd, dram_write_bytes=dram_wr,
            compute_bound_cycles=macs / peak, memory_bound_cycles=dram_total / bw, energy_pj=energy,
            instructions=len(self.program), folds=folds_total, tags=tags, trace=trace, memories=mem)
