"""Lower one (batched) GEMM layer to NPU instructions, for a given tiling.

A layer computes ``out[b] = epilogue(A[b] @ B[b])`` with A ``[M, K]``, B ``[K, N]`` and out
``[M, N]`` in DRAM, each *block-major* for the tiling (:func:`pack_blocks`): every ``mb x kb`` block of
A, ``kb x nb`` block of B and ``mb x nb`` block of out is contiguous, so each DMA moves whole bursts
(weights are packed at compile time, activations by the host's layout step).

A tiling picks the block sizes held on chip (``mb x kb`` of A and ``kb x nb`` of B in the scratchpad,
``mb x nb`` in the accumulator), the loop order over output blocks (``nm``: n-blocks outer, so a B panel
stays resident across m-blocks when ``kb == K``; ``mn``: the converse), the number of
scratchpad/accumulator buffers (2 = double buffering, only on machines whose queues run decoupled) and,
on multi-core chips, which output dim is split across cores. Each block step is one gemm instruction;
the array folds it (the simulator's timing model prices the folds per dataflow).

On decoupled machines the queues synchronize with counting tokens (``signal`` adds one,
``wait`` takes one): loads signal ``IN_FULL`` per step that loaded something; compute frees ring
slots with ``A_FREE``/``B_FREE`` after their last use; accumulator buffers go through
``ACC_FULL`` (compute -> store) and ``ACC_FREE`` (store -> compute). Because every queue is in
order and rings are FIFO, one token id per direction suffices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from tessera.codegen.npu.machine import Machine
from tessera.errors import CompileError
from tessera.npu.isa import Addr, DmaLoad, DmaStore, Gemm, Instruction, Signal, Wait

IN_FULL, A_FREE, B_FREE, ACC_FULL, ACC_FREE = 0, 1, 2, 3, 4
ALIGN = 64
SIZES = {"i8": 1, "i32": 4, "bf16": 2, "f32": 4}


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class GemmSpec:
    """One layer's GEMM: shapes, dtypes, epilogue and DRAM addresses (bytes)."""

    m: int
    k: int
    n: int
    batch: int
    in_dtype: str
    acc_dtype: str
    out_dtype: str
    act: str  # none | relu | relu6 | clip(lo,hi)
    a_addr: int
    b_addr: int
    out_addr: int
    bias_addr: int | None = None  # f32[N]
    scale_addr: int | None = None  # f32[N]
    b_shared: bool = True  # one B for every batch entry (weights) or one per entry

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n


@dataclass(frozen=True)
class Tiling:
    """Block sizes, loop order, buffering and multi-core split of a GEMM layer."""

    mb: int
    nb: int
    kb: int
    order: str = "nm"  # nm | mn
    buffers: int = 1
    split: str = "n"  # n | m

    def __str__(self) -> str:
        return f"mb={self.mb} nb={self.nb} kb={self.kb} order={self.order} buf={self.buffers} split={self.split}"


def pack_blocks(x: np.ndarray, rb: int, cb: int) -> np.ndarray:
    """``x[..., R, C]`` in block-major order (blocks of ``rb x cb``, row-major over blocks, each block
    row-major and contiguous; edge blocks are smaller), flattened per leading index."""
    *lead, r, c = x.shape
    x = x.reshape(-1, r, c)
    parts = [x[:, i:i + rb, j:j + cb].reshape(x.shape[0], -1) for i in range(0, r, rb) for j in range(0, c, cb)]
    return np.concatenate(parts, axis=1).reshape(*lead, r * c) if parts else x.reshape(*lead, 0)


def unpack_blocks(flat: np.ndarray, r: int, c: int, rb: int, cb: int) -> np.ndarray:
    """Inverse of :func:`pack_blocks`: ``flat[..., R*C]`` -> ``[..., R, C]``."""
    *lead, _ = flat.shape
    f = flat.reshape(-1, r * c)
    out = np.empty((f.shape[0], r, c), flat.dtype)
    pos = 0
    for i in range(0, r, rb):
        for j in range(0, c, cb):
            h, w = min(rb, r - i), min(cb, c - j)
            out[:, i:i + h, j:j + w] = f[:, pos:pos + h * w].reshape(-1, h, w)
            pos += h * w
    return out.reshape(*lead, r, c)


@dataclass(frozen=True)
class _Layout:
    vec: int
    a: tuple[int, ...]
    b: tuple[int, ...]
    acc: tuple[int, ...]


def spad_bytes(spec: GemmSpec, t: Tiling) -> int:
    """Scratchpad bytes a tiling needs (vectors for all N, A and B rings)."""
    isz = SIZES[spec.in_dtype]
    vec = 2 * _align(spec.n * 4) if (spec.bias_addr is not None or spec.scale_addr is not None) else 0
    return vec + t.buffers * (_align(t.mb * t.kb * isz) + _align(t.kb * t.nb * isz))


def acc_buffers(spec: GemmSpec, t: Tiling, m: Machine) -> int:
    """Accumulator buffers that fit (2 when double buffering and room), 0 if one block does not fit."""
    one = _align(t.mb * t.nb * SIZES[spec.acc_dtype])
    if one > m.acc_bytes:
        return 0
    return 2 if t.buffers == 2 and 2 * one <= m.acc_bytes else 1


def fits(spec: GemmSpec, t: Tiling, m: Machine) -> bool:
    return spad_bytes(spec, t) <= m.spad_bytes and acc_buffers(spec, t, m) > 0


def _layout(spec: GemmSpec, t: Tiling, m: Machine) -> _Layout:
    isz, asz = SIZES[spec.in_dtype], SIZES[spec.acc_dtype]
    pos = 2 * _align(spec.n * 4) if (spec.bias_addr is not None or spec.scale_addr is not None) else 0
    a, b = [], []
    for _ in range(t.buffers):
        a.append(pos)
        pos += _align(t.mb * t.kb * isz)
    for _ in range(t.buffers):
        b.append(pos)
        pos += _align(t.kb * t.nb * isz)
    one = _align(t.mb * t.nb * asz)
    return _Layout(0, tuple(a), tuple(b), tuple(k * one for k in range(acc_buffers(spec, t, m))))


def _tiles(spec: GemmSpec, t: Tiling) -> list[tuple[int, int, int]]:
    """Output blocks (batch, m-block, n-block) in loop order."""
    mbs, nbs = range(_cdiv(spec.m, t.mb)), range(_cdiv(spec.n, t.nb))
    if t.order == "nm":
        return [(b, i, j) for b in range(spec.batch) for j in nbs for i in mbs]
    return [(b, i, j) for b in range(spec.batch) for i in mbs for j in nbs]


def core_tiles(spec: GemmSpec, t: Tiling, cores: int) -> list[list[tuple[int, int, int]]]:
    """Output blocks per core: contiguous ranges of the split dim (then of batch entries)."""
    tiles = _tiles(spec, t)
    if cores == 1:
        return [tiles]
    count = _cdiv(spec.n, t.nb) if t.split == "n" else _cdiv(spec.m, t.mb)
    if count >= cores:
        def owner(tile: tuple[int, int, int]) -> int:
            idx = tile[2] if t.split == "n" else tile[1]
            return idx * cores // count
    else:  # too few blocks along the split dim: spread whole tiles round robin
        order = {tile: k for k, tile in enumerate(tiles)}

        def owner(tile: tuple[int, int, int]) -> int:
            return order[tile] * cores // len(tiles)
    out: list[list[tuple[int, int, int]]] = [[] for _ in range(cores)]
    for tile in tiles:
        out[owner(tile)].append(tile)
    return out


def emit_gemm(spec: GemmSpec, t: Tiling, m: Machine, tag: str) -> list[list[Instruction]]:
    """Instructions per core for ``spec`` under tiling ``t`` (see module docstring)."""
    if not fits(spec, t, m):
        raise CompileError(f"layer {tag}: tiling {t} does not fit the scratchpad ({m.spad_bytes} B) "
                           f"or accumulator ({m.acc_bytes} B)")
    if t.buffers > 1 and not m.decoupled:
        raise CompileError(f"layer {tag}: double buffering needs decoupled queues")
    return [_emit_core(spec, t, m, tag, tiles) for tiles in core_tiles(spec, t, m.cores)]


def _act(act: str) -> tuple[str, float, float]:
    if act.startswith("clip("):
        lo, hi = act[5:-1].split(",")
        return "clip", float(lo), float(hi)
    return act, 0.0, 0.0


def _ring_plan(keys: list[tuple[int, int, int]], buffers: int) -> tuple[list[int], list[bool], list[bool]]:
    """Per step: ring slot, whether the block must be loaded (differs from the previous step's), and
    whether this step is the block's last use."""
    slots, loads, last = [], [], [False] * len(keys)
    count, prev = -1, None
    for s, key in enumerate(keys):
        if key != prev:
            count += 1
            if s:
                last[s - 1] = True
        loads.append(key != prev)
        slots.append(count % buffers)
        prev = key
    if keys:
        last[-1] = True
    return slots, loads, last


def _emit_core(spec: GemmSpec, t: Tiling, m: Machine, tag: str,
               tiles: list[tuple[int, int, int]]) -> list[Instruction]:
    if not tiles:
        return []
    lay = _layout(spec, t, m)
    isz, asz, osz = SIZES[spec.in_dtype], SIZES[spec.acc_dtype], SIZES[spec.out_dtype]
    ql, qc, qs = m.queue_for("load"), m.queue_for("compute"), m.queue_for("store")
    sync = m.decoupled
    act, lo, hi = _act(spec.act)
    bias_on_store = spec.bias_addr is not None and "bias" in m.store_ops
    bias_in_acc = spec.bias_addr is not None and not bias_on_store

    def load(out: list[Instruction], dst: Addr, src: int, rows: int, cols: int, stride: int, dtype: str) -> None:
        size = SIZES[dtype]
        for r0 in range(0, rows, m.dma_max_rows):
            r = min(m.dma_max_rows, rows - r0)
            out.append(DmaLoad(ql, Addr(dst.space, dst.addr + r0 * cols * size), Addr("dram", src + r0 * stride * size),
                               r, cols, dtype, stride, cols, tag=tag))

    prologue: list[Instruction] = []
    if bias_on_store:
        load(prologue, Addr("spad", lay.vec), spec.bias_addr, 1, spec.n, spec.n, "f32")  # type: ignore[arg-type]
    if spec.scale_addr is not None:
        load(prologue, Addr("spad", lay.vec + _align(spec.n * 4)), spec.scale_addr, 1, spec.n, spec.n, "f32")

    ksteps = _cdiv(spec.k, t.kb)
    steps = [(ti, kk) for ti in range(len(tiles)) for kk in range(ksteps)]
    a_slot, a_load, a_last = _ring_plan([(tiles[ti][0], tiles[ti][1], kk) for ti, kk in steps], t.buffers)
    b_slot, b_load, b_last = _ring_plan(
        [((0 if spec.b_shared else tiles[ti][0]), tiles[ti][2], kk) for ti, kk in steps], t.buffers)
    n_acc = len(lay.acc)
    a_loads = b_loads = 0
    loads: list[Instruction] = []
    compute: list[Instruction] = []
    store: list[Instruction] = []
    out: list[Instruction] = prologue
    for s, (ti, kk) in enumerate(steps):
        b, i, j = tiles[ti]
        m0, n0, k0 = i * t.mb, j * t.nb, kk * t.kb
        me, ne, ke = min(t.mb, spec.m - m0), min(t.nb, spec.n - n0), min(t.kb, spec.k - k0)
        acc = lay.acc[ti % n_acc]
        ld: list[Instruction] = []
        if a_load[s]:
            if sync and a_loads >= t.buffers:
                ld.append(Wait(ql, A_FREE, tag))
            a_loads += 1
            load(ld, Addr("spad", lay.a[a_slot[s]]), spec.a_addr + (b * spec.m * spec.k + m0 * spec.k + k0 * me) * isz,
                 me, ke, ke, spec.in_dtype)
        if b_load[s]:
            if sync and b_loads >= t.buffers:
                ld.append(Wait(ql, B_FREE, tag))
            b_loads += 1
            boff = 0 if spec.b_shared else b * spec.k * spec.n
            load(ld, Addr("spad", lay.b[b_slot[s]]), spec.b_addr + (boff + k0 * spec.n + n0 * ke) * isz,
                 ke, ne, ne, spec.in_dtype)
        if sync and (a_load[s] or b_load[s]):
            ld.append(Signal(ql, IN_FULL, tag))
        body: list[Instruction] = []
        if sync and (a_load[s] or b_load[s]):
            body.append(Wait(qc, IN_FULL, tag))
        if kk == 0 and sync and ti >= n_acc:
            body.append(Wait(qc, ACC_FREE, tag))
        if kk == 0 and bias_in_acc:  # broadcast the bias row into the accumulator block, then accumulate
            for r0 in range(0, me, m.dma_max_rows):
                r = min(m.dma_max_rows, me - r0)
                body.append(DmaLoad(qc, Addr("acc", acc + r0 * ne * asz),
                                    Addr("dram", spec.bias_addr + n0 * asz), r, ne, spec.acc_dtype, 0, ne,  # type: ignore[operator]
                                    tag=tag))
        body.append(Gemm(qc, Addr("spad", lay.a[a_slot[s]]), Addr("spad", lay.b[b_slot[s]]), Addr("acc", acc),
                         me, ke, ne, spec.in_dtype, spec.acc_dtype, bool(kk > 0 or bias_in_acc), ke, ne, ne,
                         tag=tag))
        if sync and a_last[s]:
            body.append(Signal(qc, A_FREE, tag))
        if sync and b_last[s]:
            body.append(Signal(qc, B_FREE, tag))
        st: list[Instruction] = []
        if kk == ksteps - 1:
            if sync:
                body.append(Signal(qc, ACC_FULL, tag))
                st.append(Wait(qs, ACC_FULL, tag))
            bias = Addr("spad", lay.vec + n0 * 4) if bias_on_store else None
            scale = Addr("spad", lay.vec + _align(spec.n * 4) + n0 * 4) if spec.scale_addr is not None else None
            for r0 in range(0, me, m.dma_max_rows):
                r = min(m.dma_max_rows, me - r0)
                dst = spec.out_addr + (b * spec.m * spec.n + m0 * spec.n + n0 * me + r0 * ne) * osz
                st.append(DmaStore(qs, Addr("dram", dst), Addr("acc", acc + r0 * ne * asz), r, ne, spec.acc_dtype,
                                   spec.out_dtype, ne, ne, bias, scale, act, lo, hi, tag))
            if sync:
                st.append(Signal(qs, ACC_FREE, tag))
        if sync:
            loads += ld
            compute += body
            store += st
        else:
            out += ld + body + st
    return out + loads + compute + store


def candidate_tilings(spec: GemmSpec, m: Machine) -> list[Tiling]:
    """Tilings that fit the machine's memories, from block sizes that are multiples of the array."""
    lm, lk, ln = m.tile_limits()

    def sizes(total: int, unit: int | None, extra: tuple[int, ...]) -> list[int]:
        u = unit or 16
        out = {total}
        v = u
        while v < total:
            out.add(v)
            v *= 2
        out.update(x for x in extra if x < total and x % u == 0)
        # equal split in 2..4 blocks, rounded up to the unit
        for parts in (2, 3, 4):
            out.add(min(total, _cdiv(_cdiv(total, parts), u) * u))
        return sorted(out)

    mbs = sizes(spec.m, lm, (64, 128, 256, 384, 512, 768, 1024, 2048))
    nbs = sizes(spec.n, ln, (64, 128, 256, 512))
    kbs = sizes(spec.k, lk, (64, 128, 256, 512, 1024))
    orders = ("nm", "mn")
    bufs = (1, 2) if m.decoupled else (1,)
    splits = ("n", "m") if m.cores > 1 else ("n",)
    out = []
    for mb, nb, kb, order, buf, split in itertools.product(mbs, nbs, kbs, orders, bufs, splits):
        t = Tiling(mb, nb, kb, order, buf, split)
        if fits(spec, t, m):
            out.append(t)
    return out


def estimate_cycles(spec: GemmSpec, t: Tiling, m: Machine) -> float:
    """A quick analytic estimate used to prune candidates before simulating: per gemm, array folds
    times the streamed length plus the fill latency; DMA bytes (a block is reloaded when the previous
    step used another one) over the DRAM bandwidth shared by the cores; overlapped when double
    buffered. The slowest core counts."""
    lm, lk, ln = m.tile_limits()
    isz, osz, asz = SIZES[spec.in_dtype], SIZES[spec.out_dtype], SIZES[spec.acc_dtype]
    ksteps = _cdiv(spec.k, t.kb)
    kes = np.array([min(t.kb, spec.k - kk * t.kb) for kk in range(ksteps)])
    bias_acc = spec.bias_addr is not None and "bias" not in m.store_ops
    worst = total_dram = 0.0
    for tiles in core_tiles(spec, t, m.cores):
        if not tiles:
            continue
        tl = np.array(tiles)
        me = np.minimum(t.mb, spec.m - tl[:, 1] * t.mb)
        ne = np.minimum(t.nb, spec.n - tl[:, 2] * t.nb)
        dram = float((me * ne).sum()) * (osz + (asz if bias_acc else 0))
        bkey = np.stack([tl[:, 0] * (0 if spec.b_shared else 1), tl[:, 2]], 1)
        if ksteps == 1:  # a block stays when consecutive tiles share it
            a_new = np.r_[True, np.any(tl[1:, :2] != tl[:-1, :2], axis=1)]
            b_new = np.r_[True, np.any(bkey[1:] != bkey[:-1], axis=1)]
        else:
            a_new = b_new = np.ones(len(tl), bool)
        dram += float((me[a_new]).sum()) * spec.k * isz + float((ne[b_new]).sum()) * spec.k * isz
        mf = -(-me // lm) if lm else 1
        nf = -(-ne // ln) if ln else 1
        comp = 0.0
        for ke in kes:
            kf = -(-ke // lk) if lk else 1
            stream = me if lm is None else (ke if lk is None else ne)
            comp += float((mf * nf * kf * stream).sum()) + m.fill_latency * len(tl)
        total_dram += dram
        dma = dram / m.dram_bytes_per_cycle
        worst = max(worst, max(comp, dma) if t.buffers == 2 else comp + dma)
    return max(worst, total_dram / m.dram_bytes_per_cycle)
