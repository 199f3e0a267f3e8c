"""Static memory planning: place every intermediate buffer at a fixed offset in one arena.

Two buffers may share bytes only when their live intervals (inclusive step ranges) are disjoint.
The planner is greedy: buffers are placed largest first, each into the smallest gap (best fit)
left between already-placed buffers whose lifetimes overlap it, or on top of them when no gap
fits. A few placement orders are tried and the smallest arena wins.

In-place hints (``inplace={out: in}``) let an output reuse the exact bytes of an input that dies
at the step producing it; aliased buffers are planned as one block.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BufferLife", "MemoryPlan", "plan_memory", "check_plan", "live_lower_bound"]


@dataclass(frozen=True)
class BufferLife:
    """A buffer of ``nbytes`` live from step ``first_use`` to step ``last_use`` (both inclusive)."""

    name: str
    nbytes: int
    first_use: int
    last_use: int

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            raise ValueError(f"buffer {self.name!r}: negative size {self.nbytes}")
        if self.last_use < self.first_use:
            raise ValueError(f"buffer {self.name!r}: last_use {self.last_use} < first_use {self.first_use}")


@dataclass
class MemoryPlan:
    """Arena offsets per buffer name; ``arena_bytes`` is the planned size, ``naive_bytes`` the size
    with no reuse at all (sum of aligned buffer sizes). ``aliases`` maps an in-place output to the
    buffer whose bytes it reuses."""

    offsets: dict[str, int]
    arena_bytes: int
    naive_bytes: int
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def saving(self) -> float:
        """Fraction of the naive size saved by reuse (0 when nothing to save)."""
        return 1.0 - self.arena_bytes / self.naive_bytes if self.naive_bytes else 0.0


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class _Block:
    """One unit of placement: a buffer, or a group of in-place aliased buffers."""

    members: list[str]
    size: int
    first: int
    last: int
    offset: int = -1


def _group_aliases(
    buffers: Sequence[BufferLife], inplace: Mapping[str, str], alignment: int
) -> tuple[list[_Block], dict[str, str]]:
    by_name = {b.name: b for b in buffers}
    block_of: dict[str, _Block] = {}
    blocks: list[_Block] = []
    for b in sorted(buffers, key=lambda b: (b.first_use, b.name)):
        blk = _Block([b.name], _align(b.nbytes, alignment), b.first_use, b.last_use)
        block_of[b.name] = blk
        blocks.append(blk)
    aliases: dict[str, str] = {}
    # Apply hints in producer order so chains (a -> b -> c in place) merge transitively.
    for out in sorted(inplace, key=lambda n: (by_name[n].first_use, n) if n in by_name else (0, n)):
        src = inplace[out]
        if out not in by_name or src not in by_name or out == src:
            continue
        o, s = by_name[out], by_name[src]
        grp, ogrp = block_of[src], block_of[out]
        # Safe only when the source (the group's last user) dies exactly where the output is born.
        if grp is ogrp or len(ogrp.members) != 1 or s.last_use != o.first_use or grp.last != s.last_use:
            continue
        grp.members.append(out)
        grp.size = max(grp.size, ogrp.size)
        grp.last = max(grp.last, o.last_use)
        blocks.remove(ogrp)
        block_of[out] = grp
        aliases[out] = src
    return blocks, aliases


def _place(blocks: list[_Block], order: Callable[[_Block], tuple]) -> int:
    """Place ``blocks`` in the given order (best fit among conflicting ones); return arena size."""
    placed: list[_Block] = []
    top = 0
    for blk in sorted(blocks, key=order):
        if blk.size == 0:
            blk.offset = 0
            continue
        spans = sorted((p.offset, p.offset + p.size) for p in placed if p.first <= blk.last and blk.first <= p.last)
        best, best_gap, cursor = -1, None, 0
        for lo, hi in spans:
            gap = lo - cursor
            if gap >= blk.size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        blk.offset = best if best >= 0 else cursor
        top = max(top, blk.offset + blk.size)
        placed.append(blk)
    return top


_ORDERS: tuple[Callable[[_Block], tuple], ...] = (
    lambda b: (-b.size, -(b.last - b.first), b.first, b.members[0]),
    lambda b: (-(b.last - b.first), -b.size, b.first, b.members[0]),
    lambda b: (b.first, -b.size, b.members[0]),
)


def plan_memory(
    buffers: Sequence[BufferLife], alignment: int = 64, inplace: Mapping[str, str] | None = None
) -> MemoryPlan:
    """Assign arena offsets (multiples of ``alignment``) so that buffers live at the same time
    never overlap. ``inplace`` optionally maps an output buffer to an input it may overwrite; the
    hint is honoured only when the input's last use is the output's first use."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a positive power of two, got {alignment}")
    names = [b.name for b in buffers]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate buffer names: {dup}")
    blocks, aliases = _group_aliases(buffers, inplace or {}, alignment)
    naive = sum(_align(b.nbytes, alignment) for b in buffers)
    bound = live_lower_bound(buffers, alignment, aliases)
    best_top, best_offsets = None, None
    for order in _ORDERS:
        top = _place(blocks, order)
        if best_top is None or top < best_top:
            best_top = top
            best_offsets = {name: blk.offset for blk in blocks for name in blk.members}
        if best_top == bound:
            break
    return MemoryPlan(best_offsets or {}, best_top or 0, naive, aliases)


def live_lower_bound(buffers: Sequence[BufferLife], alignment: int = 64, aliases: Mapping[str, str] = ()) -> int:
    """Largest total aligned size live at any single step: no valid plan can be smaller
    (aliased outputs are not counted, they share their source's bytes)."""
    aliased = set(aliases)
    events: list[tuple[int, int]] = []
    for b in buffers:
        if b.name in aliased:
            continue
        size = _align(b.nbytes, alignment)
        events.append((b.first_use, size))
        events.append((b.last_use + 1, -size))
    events.sort(key=lambda e: (e[0], e[1]))  # frees before allocations at the same step
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def check_plan(buffers: Sequence[BufferLife], plan: MemoryPlan, alignment: int = 64) -> None:
    """Raise ``AssertionError`` if any two simultaneously live buffers overlap in the arena, a
    buffer is unaligned or out of bounds. Aliases declared in the plan may share bytes."""

    def root(name: str) -> str:
        while name in plan.aliases:
            name = plan.aliases[name]
        return name

    items = sorted(buffers, key=lambda b: b.first_use)
    firsts = [b.first_use for b in items]
    for b in items:
        off = plan.offsets[b.name]
        if off % alignment:
            raise AssertionError(f"{b.name}: offset {off} not aligned to {alignment}")
        if off + b.nbytes > plan.arena_bytes:
            raise AssertionError(f"{b.name}: [{off}, {off + b.nbytes}) exceeds arena {plan.arena_bytes}")
    for i, a in enumerate(items):
        if a.nbytes == 0:
            continue
        a_off = plan.offsets[a.name]
        for b in items[i + 1 : bisect.bisect_right(firsts, a.last_use)]:
            if b.nbytes == 0 or b.first_use > a.last_use:
                continue
            if plan.aliases and root(a.name) == root(b.name):
                continue
            b_off = plan.offsets[b.name]
            if a_off < b_off + b.nbytes and b_off < a_off + a.nbytes:
                raise AssertionError(
                    f"{a.name} [{a_off},{a_off + a.nbytes}) steps {a.first_use}-{a.last_use} overlaps "
                    f"{b.name} [{b_off},{b_off + b.nbytes}) steps {b.first_use}-{b.last_use}"
                )
